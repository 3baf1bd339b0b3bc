//! The command line's other faces: `--version` names the commit, shell completions load in a
//! real bash, and the man page renders with `man -l`, all generated from the one clap
//! definition that `--help` shows.

use std::process::Command;

use sprofd_tests::*;

#[test]
fn version_names_the_commit() {
    let out = run_ok(sprofd().arg("--version"));
    let line = out.stdout.trim();
    assert!(line.starts_with("sprofd "), "{line}");
    assert!(line.contains("(commit "), "{line}");
}

#[test]
fn bash_completions_load_and_complete_subcommands() {
    let out = run_ok(sprofd().args(["completions", "bash"]));
    let dir = TempDir::new("completions");
    let script = dir.join("sprofd.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    // Load the script in a real bash and ask it what `sprofd at<TAB>` completes to.
    let probe = format!(
        "set -e; source {}; COMP_WORDS=(sprofd at); COMP_CWORD=1; COMP_LINE='sprofd at'; COMP_POINT=9; _sprofd sprofd at sprofd; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let bash = Command::new("bash")
        .args(["-c", &probe])
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&bash.stdout);
    assert!(
        bash.status.success(),
        "{}",
        String::from_utf8_lossy(&bash.stderr)
    );
    assert!(stdout.lines().any(|l| l == "attach"), "{stdout}");
    for shell in ["zsh", "fish"] {
        let out = run_ok(sprofd().args(["completions", shell]));
        assert!(out.stdout.contains("attach"), "{shell}: {}", out.stdout);
    }
    let bad = run(sprofd().args(["completions", "tcsh"]));
    assert!(!bad.status.success());
}

#[test]
fn the_man_page_renders() {
    let out = run_ok(sprofd().arg("manpage"));
    assert!(
        out.stdout.starts_with(".ie") || out.stdout.contains(".TH sprofd"),
        "{}",
        &out.stdout[..200.min(out.stdout.len())]
    );
    let dir = TempDir::new("manpage");
    let page = dir.join("sprofd.1");
    std::fs::write(&page, &out.stdout).unwrap();
    match Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
    {
        Ok(man) if man.status.success() => {
            let text = String::from_utf8_lossy(&man.stdout);
            assert!(text.contains("sprofd"), "{text}");
            assert!(text.contains("attach"), "{text}");
        }
        _ if std::env::var("SPROFD_REQUIRE_LIVE").as_deref() == Ok("1") => {
            panic!("man -l failed or man is missing")
        }
        _ => eprintln!("SKIP the_man_page_renders: man -l unavailable"),
    }
}

/// `--ready-fd`: `ready` comes once the events are open and counting. The target burns 0.3 s
/// of CPU only after it is told to, which the test does on `ready`: nearly all of that burn
/// must be in the profile (at 999 Hz, ~300 samples), which it would not be if `ready` came
/// before sampling started.
#[live_test]
fn ready_fd_says_ready_once_sampling_has_started() {
    use std::io::Write;
    use std::process::Stdio;
    // Debian's interpreter, started directly (a pyenv shim would exec it after the attach).
    let python = std::path::Path::new("/usr/bin/python3.11");
    if !python.exists() {
        assert_ne!(
            std::env::var("SPROFD_REQUIRE_LIVE").as_deref(),
            Ok("1"),
            "ready_fd_says_ready_once_sampling_has_started: no /usr/bin/python3.11 (apt python3.11)"
        );
        eprintln!("SKIP ready_fd_says_ready_once_sampling_has_started: no /usr/bin/python3.11");
        return;
    }
    let _guard = serial();
    let dir = TempDir::new("ready-fd");
    let out = dir.join("ready.folded");
    let mut target = Command::new(python)
        .args([
            "-c",
            "import sys, time\nsys.stdin.readline()\nend = time.process_time() + 0.3\n\
             def burn():\n    while time.process_time() < end: pass\nburn()",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn python3");
    let sprofd = attach_when_ready(target.id(), &out);
    let mut stdin = target.stdin.take().unwrap();
    stdin.write_all(b"go\n").expect("tell the target to burn");
    drop(stdin);
    assert!(target.wait().expect("wait python3").success());
    // sprofd stops by itself when the target exits.
    let done = sprofd.wait_with_output().expect("wait sprofd");
    assert!(
        done.status.success(),
        "sprofd: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    let folded = Folded::read(&out);
    let burn = folded.count_where(|frames| frames.iter().any(|f| f.starts_with("burn (")));
    assert!(
        burn >= 240,
        "only {burn} samples in burn() for 0.3 s of CPU at 999 Hz{}",
        folded.excerpt()
    );
}
