//! Error cases: one line on stderr, non-zero exit, no panic, and (where the
//! error is about the arguments) before any sampling starts.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sprofd_tests::*;

/// Errors found before sampling must come quickly even with a long -d.
const FAST: Duration = Duration::from_secs(5);

/// A plain `sleep` process (no "ready" handshake), killed on drop.
struct Sleeper(Child);

impl Sleeper {
    fn new() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("60")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn sleep"),
        )
    }

    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn expect_error(cmd: &mut Command) -> RunOutput {
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    assert_clean_error(&out);
    out
}

fn expect_fast_error(cmd: &mut Command) -> RunOutput {
    let out = expect_error(cmd);
    assert!(
        out.elapsed < FAST,
        "the error must be reported before sampling (took {:?} with -d 10){}",
        out.elapsed,
        out.describe()
    );
    out
}

/// A pid that does not exist: a child that has been reaped.
fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().expect("spawn true");
    let pid = c.id();
    c.wait().expect("wait");
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    pid
}

#[test]
fn attach_no_such_pid() {
    let pid = dead_pid();
    expect_fast_error(sprofd().args(["attach", &pid.to_string(), "-d", "10"]));
}

/// A kernel thread: pid 2 (kthreadd) when visible, else any process with
/// the PF_KTHREAD flag.
fn kernel_thread_pid() -> Option<u32> {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let is_kthread = |pid: u32| -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let close = s.rfind(')')?;
                // fields after the comm: state(0) ppid pgrp session tty_nr tpgid flags(6)
                s[close + 1..]
                    .split_whitespace()
                    .nth(6)?
                    .parse::<u64>()
                    .ok()
            })
            .is_some_and(|f| f & PF_KTHREAD != 0)
    };
    if is_kthread(2) {
        return Some(2);
    }
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|&p| is_kthread(p))
}

#[test]
fn attach_kernel_thread() {
    let Some(pid) = kernel_thread_pid() else {
        eprintln!("SKIP attach_kernel_thread: no kernel thread visible in /proc");
        return;
    };
    expect_fast_error(sprofd().args(["attach", &pid.to_string(), "-d", "10"]));
}

#[test]
fn attach_zombie() {
    // A child we do not reap stays a zombie.
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while proc_state(pid) != Some('Z') {
        assert!(
            std::time::Instant::now() < deadline,
            "child never became a zombie"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = run_with_timeout(
        sprofd().args(["attach", &pid.to_string(), "-d", "10"]),
        Duration::from_secs(30),
    );
    let _ = child.wait();
    assert_clean_error(&out);
    assert!(
        out.elapsed < FAST,
        "took {:?}{}",
        out.elapsed,
        out.describe()
    );
}

fn max_sample_rate() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate")
        .expect("read perf_event_max_sample_rate")
        .trim()
        .parse()
        .expect("parse perf_event_max_sample_rate")
}

#[test]
fn frequency_zero_attach() {
    let s = Sleeper::new();
    expect_fast_error(sprofd().args(["attach", &s.pid(), "-F", "0", "-d", "10"]));
}

#[test]
fn frequency_zero_record() {
    expect_fast_error(sprofd().args(["record", "-F", "0", "-d", "10", "--", "sleep", "10"]));
}

#[test]
fn frequency_above_max_attach() {
    let s = Sleeper::new();
    let f = (max_sample_rate() + 1).to_string();
    expect_fast_error(sprofd().args(["attach", &s.pid(), "-F", &f, "-d", "10"]));
}

#[test]
fn frequency_above_max_record() {
    let f = (max_sample_rate() + 1).to_string();
    expect_fast_error(sprofd().args(["record", "-F", &f, "-d", "10", "--", "sleep", "10"]));
}

#[test]
fn dump_every_zero_or_negative() {
    let s = Sleeper::new();
    for bad in ["0", "-1", "nan"] {
        let arg = format!("--dump-every={bad}");
        let out = expect_fast_error(sprofd().args(["attach", &s.pid(), "-d", "10", &arg]));
        assert!(out.stderr.contains("--dump-every"), "{}", out.describe());
    }
}

#[test]
fn unknown_python_view() {
    let s = Sleeper::new();
    let out =
        expect_fast_error(sprofd().args(["attach", &s.pid(), "-d", "10", "--python-view", "ruby"]));
    assert!(out.stderr.contains("python-view"), "{}", out.describe());
}

#[test]
fn output_dir_missing() {
    let s = Sleeper::new();
    let dir = TempDir::new("err-missing");
    let missing = dir.join("no/such/dir/out.svg");
    expect_fast_error(
        sprofd()
            .args(["attach", &s.pid(), "-d", "10", "-o"])
            .arg(&missing),
    );
    // A parent that is a regular file.
    let file = dir.join("a-file");
    std::fs::write(&file, "x").unwrap();
    expect_fast_error(
        sprofd()
            .args(["attach", &s.pid(), "-d", "10", "-o"])
            .arg(file.join("out.folded")),
    );
    // One good and one bad output: still an error before sampling.
    expect_fast_error(
        sprofd()
            .args(["attach", &s.pid(), "-d", "10", "-o"])
            .arg(dir.join("good.folded"))
            .arg("-o")
            .arg(&missing),
    );
}

fn setpriv_nobody() -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    c
}

/// Whether uid 65534 can execute the sprofd binary (every directory on its
/// path must be searchable by others).
fn nobody_can_run(bin: &Path) -> bool {
    let mut p: Option<&Path> = Some(bin);
    while let Some(cur) = p {
        match std::fs::metadata(cur) {
            Ok(m) if m.permissions().mode() & 0o001 != 0 => {}
            _ => return false,
        }
        p = cur.parent().filter(|x| !x.as_os_str().is_empty());
    }
    true
}

#[test]
fn output_dir_not_writable() {
    if euid() != 0 {
        eprintln!("SKIP output_dir_not_writable: needs root to switch to uid 65534");
        return;
    }
    let bin = sprofd_bin();
    if !nobody_can_run(&bin) {
        eprintln!(
            "SKIP output_dir_not_writable: uid 65534 cannot execute {}",
            bin.display()
        );
        return;
    }
    let dir = TempDir::new("err-readonly");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ro = dir.join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    // root bypasses permission bits, so run sprofd as nobody, recording a
    // command of its own.
    let out = expect_fast_error(
        setpriv_nobody()
            .arg(&bin)
            .args(["record", "-d", "10", "-o"])
            .arg(ro.join("out.svg"))
            .args(["--", "sleep", "10"])
            .current_dir("/"),
    );
    assert!(!ro.join("out.svg").exists(), "{}", out.describe());
}

#[test]
fn unknown_output_extension() {
    let s = Sleeper::new();
    let dir = TempDir::new("err-ext");
    for name in ["out.png", "out", "out.svg.bak", "out.html"] {
        let out = expect_fast_error(
            sprofd()
                .args(["attach", &s.pid(), "-d", "10", "-o"])
                .arg(dir.join(name)),
        );
        assert!(
            !dir.join(name).exists(),
            "{name} must not be written{}",
            out.describe()
        );
    }
}

#[test]
fn record_nonexistent_command() {
    let dir = TempDir::new("err-nocmd");
    let missing: PathBuf = dir.join("no-such-program");
    expect_fast_error(
        sprofd()
            .args(["record", "-d", "10", "--"])
            .arg(&missing)
            .current_dir(dir.path()),
    );
    expect_fast_error(
        sprofd()
            .args([
                "record",
                "-d",
                "10",
                "--",
                "sprofd-test-no-such-command-xyz",
            ])
            .current_dir(dir.path()),
    );
}

#[test]
fn permission_denied_non_root_attaching_root_process() {
    if euid() != 0 {
        eprintln!("SKIP permission_denied_non_root_attaching_root_process: needs root");
        return;
    }
    let bin = sprofd_bin();
    if !nobody_can_run(&bin) {
        eprintln!(
            "SKIP permission_denied_non_root_attaching_root_process: uid 65534 cannot execute {}",
            bin.display()
        );
        return;
    }
    let s = Sleeper::new();
    let out = expect_fast_error(
        setpriv_nobody()
            .arg(&bin)
            .args([
                "attach",
                &s.pid(),
                "-d",
                "10",
                "-o",
                "/tmp/sprofd-never-written.svg",
            ])
            .current_dir("/"),
    );
    assert!(
        out.stderr.contains("perf_event_paranoid"),
        "the permission error should mention perf_event_paranoid{}",
        out.describe()
    );
}

#[test]
fn off_cpu_modes_without_privilege_say_what_is_needed() {
    if euid() != 0 {
        eprintln!("SKIP off_cpu_modes_without_privilege_say_what_is_needed: needs root");
        return;
    }
    let bin = sprofd_bin();
    if !nobody_can_run(&bin)
        || std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
            .is_ok_and(|p| p.trim().parse::<i32>().is_ok_and(|p| p <= 1))
    {
        eprintln!("SKIP off_cpu_modes_without_privilege_say_what_is_needed: uid 65534 cannot run sprofd, or paranoid <= 1 allows it");
        return;
    }
    for mode in ["wall", "off-cpu"] {
        let out = expect_fast_error(
            setpriv_nobody()
                .arg(&bin)
                .args([
                    "record",
                    "--mode",
                    mode,
                    "-d",
                    "10",
                    "-o",
                    "/tmp/sprofd-never.svg",
                    "--",
                    "sleep",
                    "10",
                ])
                .current_dir("/"),
        );
        assert!(
            out.stderr.contains("--mode wall and --mode off-cpu"),
            "{}",
            out.describe()
        );
        assert!(
            out.stderr.contains("perf_event_paranoid"),
            "{}",
            out.describe()
        );
    }
}
