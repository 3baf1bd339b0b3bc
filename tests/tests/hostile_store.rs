//! A data directory prepared by someone hostile (the red-team cases D7, D8 and D14): another
//! user's directory with a symlinked `windows/`, a FIFO or a symlink named like a window, an
//! output path that is a directory. Run as root, with an unprivileged user `sprofd-rt`
//! (created if missing) as the attacker; every step has a timeout, so a regression (a FIFO
//! opened) fails instead of hanging.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flamegraph_out::{Exporter, Pprof};
use sprof_core::{Frame, FrameKind, SampledStack, SymbolizedProfile};
use sprofd_tests::daemon::Daemon;
use sprofd_tests::hostile::{self, as_user};
use sprofd_tests::*;

/// Root is needed to act as two users; without it the test is skipped (or fails under
/// `SPROFD_REQUIRE_LIVE=1`).
fn root(test: &str) -> bool {
    if euid() == 0 {
        return true;
    }
    skip(test, "needs root");
    false
}

/// The attacker's uid, creating the account (no home, no shell) the first time.
fn attacker_uid() -> u32 {
    hostile::user().expect("create the unprivileged user").0
}

/// Runs a shell command as the attacker.
fn as_attacker(script: &str) {
    let out = run_with_timeout(
        as_user(Path::new("sh"))
            .args(["-c", script])
            .env_remove("HOME"),
        Duration::from_secs(10),
    );
    assert!(
        out.status.success(),
        "as {}: {script}{}",
        hostile::USER,
        out.describe()
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A gzipped pprof window whose one stack is `app;FUNCTION`.
fn window_bytes(function: &str) -> Vec<u8> {
    let profile = SymbolizedProfile {
        frames: vec![
            Frame::bare("app", FrameKind::Root),
            Frame::bare(function, FrameKind::Native),
        ],
        stacks: vec![SampledStack {
            frames: vec![0, 1],
            samples: 7,
            period: 7_000_000,
            thread: None,
        }],
        ..Default::default()
    };
    let mut bytes = Vec::new();
    Pprof::default().export(&profile, &mut bytes).unwrap();
    bytes
}

/// `windows/START-END.pb.gz` for a window that ended `ago_s` seconds ago.
fn window_name(ago_s: u64) -> String {
    let start = now_ms() - ago_s * 1000 - 10_000;
    format!("{start}-{}.pb.gz", start + 10_000)
}

fn mkfifo(path: &Path) {
    let out = run(Command::new("mkfifo").arg(path));
    assert!(out.status.success(), "{}", out.describe());
}

/// `sprofd report --data-dir DATA -o OUT`, which must end (rc 0) within 10 s.
fn report(data: &Path, out: &Path) -> RunOutput {
    let r = run_with_timeout(
        sprofd()
            .args(["report", "--data-dir"])
            .arg(data)
            .arg("-o")
            .arg(out),
        Duration::from_secs(10),
    );
    assert!(r.status.success(), "report failed{}", r.describe());
    assert_no_panic(&r);
    r
}

fn warnings(r: &RunOutput) -> Vec<&str> {
    r.stderr_lines()
        .into_iter()
        .filter(|l| l.contains("warning"))
        .collect()
}

#[live_test]
fn root_daemon_refuses_a_data_dir_another_user_built_and_touches_nothing() {
    let test = "root_daemon_refuses_a_data_dir_another_user_built_and_touches_nothing";
    if !root(test) {
        return;
    }
    let uid = attacker_uid();
    let tmp = TempDir::new("hostile-dir");
    // A /tmp-like directory and a root-owned directory the attacker wants chmod'ed and filled.
    let public = tmp.join("pub");
    std::fs::create_dir(&public).unwrap();
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let victim = tmp.join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = public.join("sprofd");
    as_attacker(&format!(
        "mkdir {0} && ln -s {1} {0}/windows",
        data.display(),
        victim.display()
    ));
    assert_eq!(std::fs::metadata(&data).unwrap().uid(), uid);
    let out = run_with_timeout(
        sprofd()
            .args(["daemon", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data),
        Duration::from_secs(10),
    );
    assert_clean_error(&out);
    assert_eq!(out.stderr_lines().len(), 1, "one line{}", out.describe());
    assert!(
        out.stderr.contains("untrusted data directory")
            && out.stderr.contains(&format!("uid {uid}")),
        "{}",
        out.describe()
    );
    let meta = std::fs::metadata(&victim).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o755, "the victim was chmod'ed");
    assert_eq!(
        std::fs::read_dir(&victim).unwrap().count(),
        0,
        "written into"
    );
}

#[live_test]
fn fifo_window_hangs_neither_report_nor_the_daemon() {
    let test = "fifo_window_hangs_neither_report_nor_the_daemon";
    if !root(test) {
        return;
    }
    let tmp = TempDir::new("hostile-fifo");
    let data = tmp.join("data");
    let windows = data.join("windows");
    std::fs::create_dir_all(&windows).unwrap();
    std::fs::write(windows.join(window_name(60)), window_bytes("stored_fn")).unwrap();
    let fifo = windows.join(window_name(30));
    mkfifo(&fifo);

    let out = tmp.join("r.folded");
    let r = report(&data, &out);
    let w = warnings(&r);
    assert_eq!(w.len(), 1, "one warning line{}", r.describe());
    assert!(w[0].contains("FIFO"), "{}", r.describe());
    assert!(std::fs::read_to_string(&out).unwrap().contains("stored_fn"));
    // The store is 0600: so is what report makes of it.
    assert_eq!(std::fs::metadata(&out).unwrap().mode() & 0o777, 0o600);

    // The daemon: serving within seconds (Daemon::start fails the test after 20 s, as when
    // it blocked on the FIFO), /healthz answered at once, the FIFO moved aside.
    let d = Daemon::start(&data, &[]);
    let t0 = Instant::now();
    assert_eq!(d.get("/healthz").status, 200);
    assert!(t0.elapsed() < Duration::from_secs(1));
    let r = d.get("/api/v1/profile?from=-5m&format=folded");
    assert_eq!(r.status, 200, "{}", r.text());
    let log = d.log();
    d.kill9();
    assert!(
        log.contains("FIFO") && log.contains("corrupt"),
        "one warning, moved aside:\n{log}"
    );
    assert!(data
        .join("corrupt")
        .join(fifo.file_name().unwrap())
        .exists());
}

#[test]
fn report_does_not_read_a_window_that_leads_to_a_root_only_file() {
    let test = "report_does_not_read_a_window_that_leads_to_a_root_only_file";
    if !root(test) {
        return;
    }
    let uid = attacker_uid();
    let tmp = TempDir::new("hostile-link");
    // Root's secret, shaped like a window so that reading it would show.
    let secret = tmp.join("secret.pb.gz");
    std::fs::write(&secret, window_bytes("ROOT_ONLY_SECRET_hunter2")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The attacker's store (as with `--data-dir` under their home), read by root's report:
    // one real window, a symlink to the secret, and a root-owned copy (a hard link would be
    // the same file).
    let data = tmp.join("data");
    let windows = data.join("windows");
    std::fs::create_dir_all(&windows).unwrap();
    let real = windows.join(window_name(90));
    std::fs::write(&real, window_bytes("stored_fn")).unwrap();
    std::os::unix::fs::symlink(&secret, windows.join(window_name(60))).unwrap();
    std::fs::copy(&secret, windows.join(window_name(30))).unwrap();
    for p in [&data, &windows, &real] {
        std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
    }
    let out = tmp.join("r.folded");
    let r = report(&data, &out);
    let w = warnings(&r);
    assert_eq!(w.len(), 2, "one warning line each{}", r.describe());
    assert!(w.iter().any(|l| l.contains("symbolic link")), "{w:?}");
    assert!(w.iter().any(|l| l.contains("owned by uid 0")), "{w:?}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("stored_fn"), "{text}");
    assert!(!text.contains("ROOT_ONLY_SECRET"), "{text}");
}

#[test]
fn output_that_is_a_directory_fails_before_sampling() {
    let tmp = TempDir::new("hostile-out");
    let dir = tmp.join("dir2.svg");
    std::fs::create_dir(&dir).unwrap();
    let mut target = Command::new("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let out = run_with_timeout(
        sprofd()
            .args(["attach", &target.id().to_string(), "-d", "10", "-o"])
            .arg(&dir),
        Duration::from_secs(20),
    );
    let took = t0.elapsed();
    let _ = target.kill();
    let _ = target.wait();
    assert_clean_error(&out);
    assert_eq!(out.stderr_lines().len(), 1, "{}", out.describe());
    assert!(out.stderr.contains("is a directory"), "{}", out.describe());
    assert!(
        took < Duration::from_secs(2),
        "took {took:?}: sampled first"
    );
}
