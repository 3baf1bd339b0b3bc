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
