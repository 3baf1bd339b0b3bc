//! `--dump-every` and SIGUSR1: outputs written while sampling goes on, each write atomic and
//! each holding everything gathered so far.

use std::time::{Duration, Instant};

use sprofd_tests::*;

/// Waits until `path` holds a parseable folded profile, up to `timeout`.
fn wait_for_folded(path: &std::path::Path, timeout: Duration) -> Option<Folded> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(f) = Folded::parse(&text) {
                if f.total() > 0 {
                    return Some(f);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[live_test]
fn dump_every_rewrites_growing_outputs_while_attached() {
    let target = Target::spawn(&c_fixture("cratio", FP), &["0"]);
    let dir = TempDir::new("dump-every");
    let folded = dir.join("live.folded");
    let svg = dir.join("live.svg");
    let run = Running::spawn(
        sprofd()
            .args([
                "attach",
                &target.pid_arg(),
                "-F",
                FREQ,
                "-q",
                "-d",
                "3",
                "--dump-every",
                "0.5",
                "-o",
            ])
            .arg(&folded)
            .arg("-o")
            .arg(&svg),
    );
    let first = wait_for_folded(&folded, Duration::from_secs(2)).expect("a dump within 2 s");
    std::thread::sleep(Duration::from_millis(1200));
    let later = Folded::read(&folded);
    assert!(svg.exists(), "every output is dumped");
    let out = run.wait(TIMEOUT);
    assert!(out.status.success(), "{}", out.describe());
    let last = Folded::read(&folded);
    assert!(
        first.total() < later.total() && later.total() < last.total(),
        "dumps grow: {} < {} < {}{}",
        first.total(),
        later.total(),
        last.total(),
        out.describe()
    );
    assert!(out.stderr.contains("sprofd: dump "), "{}", out.describe());
    // Atomic writes: no temporary file is left, and every dump was a whole profile.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(
        later.share_containing("a3_hot") > 0.5,
        "{}",
        later.excerpt()
    );
}

#[live_test]
fn sigusr1_dumps_at_once() {
    let target = Target::spawn(&c_fixture("cratio", FP), &["0"]);
    let dir = TempDir::new("dump-usr1");
    let folded = dir.join("now.folded");
    let run = Running::spawn(
        sprofd()
            .args([
                "attach",
                &target.pid_arg(),
                "-F",
                FREQ,
                "-q",
                "-d",
                "4",
                "-o",
            ])
            .arg(&folded),
    );
    std::thread::sleep(Duration::from_millis(800));
    assert!(!folded.exists(), "no output before the signal");
    run.signal(libc::SIGUSR1);
    let dumped = wait_for_folded(&folded, Duration::from_secs(1)).expect("dump after SIGUSR1");
    assert!(dumped.total() > 100, "{}", dumped.excerpt());
    let out = run.wait(TIMEOUT);
    assert!(out.status.success(), "{}", out.describe());
    assert!(Folded::read(&folded).total() > dumped.total());
}
