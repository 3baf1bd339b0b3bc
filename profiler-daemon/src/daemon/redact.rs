//! Command lines as the daemon keeps them (`--cmdline redacted`, the default).
//!
//! The API serves every process's command line to every local user who can reach it, for the
//! whole retention period, and people do put secrets in argv. The rule is deliberately simple
//! so that users can predict it (docs/deployment.md states the same rule):
//!
//! 1. `argv[0]` is cut to its base name (`/opt/acme/bin/vault` → `vault`).
//! 2. In every later argument, the user-info of a URL (`scheme://USER:PASSWORD@host`) becomes
//!    `***` (`postgres://***@db/x`).
//! 3. An argument that contains `=` keeps what is up to the first `=` and loses the value:
//!    `--password=hunter2` → `--password=***`, `TOKEN=abc` → `TOKEN=***`.
//! 4. The argument right after a flag whose name mentions a secret (`-p`, or any flag that
//!    contains `pass`, `pwd`, `secret`, `token`, `key`, `auth`, `cred` or `cookie`, in any
//!    case) becomes `***`: `--token abc` → `--token ***`, `-p hunter2` → `-p ***`.
//! 5. A short `-p` with its value attached (`mysql -phunter2`) becomes `-p***`.
//!
//! Everything else is kept, so the shape of the command stays readable. It errs towards
//! hiding (`-p 8080` loses its port): a redacted value costs a look at the process, a leaked
//! one cannot be taken back. A process that rewrote its argv into one string with spaces
//! (setproctitle) has the rule applied to its space-separated words.

/// Words in a flag's name that mark its value as a secret.
const SECRET_WORDS: [&str; 8] = [
    "pass", "pwd", "secret", "token", "key", "auth", "cred", "cookie",
];

/// What replaces a hidden value.
const HIDDEN: &str = "***";

/// Longest command line kept, in characters.
pub const MAX_CMDLINE_CHARS: usize = 512;

/// `/proc/PID/cmdline` bytes (NUL-separated arguments) as one line, redacted or not.
pub fn cmdline(raw: &[u8], redact: bool) -> String {
    let mut args: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if redact {
        if args.len() == 1 && args[0].contains(' ') {
            args = args[0].split(' ').map(str::to_string).collect();
        }
        args = redacted(&args);
    }
    args.join(" ").chars().take(MAX_CMDLINE_CHARS).collect()
}

/// The arguments with secrets hidden, by the rule in the module's documentation.
pub fn redacted(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut hide_next = false;
    for (i, arg) in args.iter().enumerate() {
        if i == 0 {
            out.push(arg.rsplit('/').next().unwrap_or(arg).to_string());
            continue;
        }
        if std::mem::take(&mut hide_next) {
            out.push(HIDDEN.to_string());
            // `--password --token t`: taken as the password, and still a flag whose value
            // (`t`) is a secret.
            hide_next = is_secret_flag(arg);
            continue;
        }
        let arg = without_url_userinfo(arg);
        if let Some((name, _)) = arg.split_once('=') {
            out.push(format!("{name}={HIDDEN}"));
        } else if is_secret_flag(&arg) {
            hide_next = true;
            out.push(arg);
        } else if arg.starts_with("-p") && !arg.starts_with("--") && arg.len() > 2 {
            out.push(format!("-p{HIDDEN}"));
        } else {
            out.push(arg);
        }
    }
    out
}

/// `-p`, `--password`, `-api-key`, `--DB_PASS`, ...: a flag whose value is a secret.
fn is_secret_flag(arg: &str) -> bool {
    if !arg.starts_with('-') {
        return false;
    }
    let name = arg.trim_start_matches('-').to_ascii_lowercase();
    name == "p" || SECRET_WORDS.iter().any(|w| name.contains(w))
}

/// `scheme://user:password@host/...` with `user:password` replaced.
fn without_url_userinfo(arg: &str) -> String {
    let Some(at_scheme) = arg.find("://") else {
        return arg.to_string();
    };
    let rest = &arg[at_scheme + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}{HIDDEN}{}", &arg[..at_scheme + 3], &rest[at..]),
        None => arg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(args: &[&str]) -> String {
        let raw: Vec<u8> = args
            .iter()
            .flat_map(|a| [a.as_bytes(), b"\0"].concat())
            .collect();
        cmdline(&raw, true)
    }

    #[test]
    fn values_that_look_like_secrets_are_hidden_and_the_shape_is_kept() {
        assert_eq!(
            r(&[
                "/opt/acme/bin/vault",
                "serve",
                "--db-password=Hunter2",
                "-v"
            ]),
            "vault serve --db-password=*** -v"
        );
        assert_eq!(
            r(&["app", "--token", "abc", "--port", "80"]),
            "app --token *** --port 80"
        );
        assert_eq!(
            r(&["mysql", "-u", "root", "-p", "hunter2"]),
            "mysql -u root -p ***"
        );
        assert_eq!(
            r(&["mysql", "-uroot", "-phunter2", "db"]),
            "mysql -uroot -p*** db"
        );
        assert_eq!(
            r(&["env", "AWS_SECRET=xyz", "prog"]),
            "env AWS_SECRET=*** prog"
        );
        assert_eq!(
            r(&["psql", "postgres://alice:pw@db:5432/x?sslmode=require"]),
            "psql postgres://***@db:5432/x?sslmode=***"
        );
        assert_eq!(
            r(&["git", "clone", "https://TOKEN@github.com/a/b"]),
            "git clone https://***@github.com/a/b"
        );
        assert_eq!(
            r(&["cli", "--API-KEY", "k", "--Secret-File", "/s"]),
            "cli --API-KEY *** --Secret-File ***"
        );
        // Arguments without a secret's shape are kept as they are.
        assert_eq!(
            r(&["python3", "train.py", "--epochs", "3", "-v"]),
            "python3 train.py --epochs 3 -v"
        );
        assert_eq!(r(&["sh", "-c", "sleep 5"]), "sh -c sleep 5");
        // A flag right after a secret flag is taken as its value: hidden, and its own value too.
        assert_eq!(
            r(&["x", "--password", "--token", "t", "y"]),
            "x --password *** *** y"
        );
    }

    #[test]
    fn setproctitle_lines_are_redacted_word_by_word_and_full_keeps_everything() {
        assert_eq!(
            cmdline(b"worker --password=hunter2 idle", true),
            "worker --password=*** idle"
        );
        let raw = b"/usr/bin/app\0--password=hunter2\0";
        assert_eq!(cmdline(raw, false), "/usr/bin/app --password=hunter2");
        assert_eq!(cmdline(b"", true), "");
        let long = vec![b'a'; 2000];
        assert_eq!(cmdline(&long, true).chars().count(), MAX_CMDLINE_CHARS);
    }
}
