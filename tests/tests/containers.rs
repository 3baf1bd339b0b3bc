//! Containers: a target in its own pid and mount namespaces whose files were deleted on the
//! host after it started. Binaries are read through /proc/PID/map_files, Python threads are
//! matched through NSpid (the interpreter stores namespace TIDs).

use std::path::Path;
use std::time::Duration;

use sprofd_tests::*;

/// Kills a process on drop: the target inside the namespace is pid 1 there and outlives a
/// killed unshare.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}

/// The one child of `pid` (unshare --fork's), waiting up to 5 s for it to appear.
fn only_child(pid: u32) -> u32 {
    for _ in 0..250 {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(c) = children.split_whitespace().next() {
            return c.parse().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("unshare {pid} has no child");
}

fn in_own_pid_namespace(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .is_some_and(|v| v.split_whitespace().count() == 2)
}

fn have_unshare(test: &str) -> bool {
    if euid() == 0 && Path::new("/usr/bin/unshare").exists() {
        return true;
    }
    skip(test, "needs root and unshare");
    false
}

#[live_test]
fn a_deleted_binary_in_its_own_namespaces_is_named() {
    if !have_unshare("containers native") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("container-native");
    let exe = dir.join("cratio-copy");
    std::fs::copy(c_fixture("cratio", FP), &exe).unwrap();
    let unshare = Target::spawn(
        Path::new("/usr/bin/unshare"),
        &["--pid", "--mount", "--fork", exe.to_str().unwrap(), "0"],
    );
    let pid = only_child(unshare.pid);
    let _inner = KillOnDrop(pid);
    assert!(in_own_pid_namespace(pid));
    std::fs::remove_file(&exe).unwrap();
    let p = attach_profile("container-native", pid, &["-d", "1.5"]);
    let share = p.folded.share_containing("a3_hot");
    let tol = share_tolerance(0.75, p.folded.total(), 0.05);
    assert!(
        (share - 0.75).abs() <= tol,
        "a3_hot share {share:.3}{}",
        p.context()
    );
    assert!(
        p.folded.count_containing("main") as f64 >= 0.95 * p.folded.total() as f64,
        "{}",
        p.context()
    );
}

#[live_test]
fn python_in_its_own_namespaces_with_a_deleted_libpython() {
    if !have_unshare("containers python") {
        return;
    }
    let _serial = serial();
    let root = std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".pyenv/versions/3.12.1");
    let (py, lib) = (
        root.join("bin/python3.12"),
        root.join("lib/libpython3.12.so.1.0"),
    );
    if !py.is_file() || !lib.is_file() {
        assert!(
            std::env::var("SPROFD_REQUIRE_LIVE").as_deref() != Ok("1"),
            "{} missing",
            py.display()
        );
        eprintln!("SKIP: {} missing", py.display());
        return;
    }
    // A private copy of libpython (the executable's RUNPATH yields to LD_LIBRARY_PATH), deleted
    // once the interpreter has mapped it.
    let dir = TempDir::new("container-python");
    std::fs::copy(&lib, dir.join("libpython3.12.so.1.0")).unwrap();
    let script = fixtures_dir().join("python/workload.py");
    let mut cmd = std::process::Command::new("/usr/bin/unshare");
    cmd.args(["--pid", "--mount", "--fork"])
        .arg(&py)
        .arg(&script)
        .args(["threads", "4"])
        .env("LD_LIBRARY_PATH", dir.path());
    let unshare = Running::spawn(&mut cmd);
    let pid = only_child(unshare.pid() as u32);
    let _inner = KillOnDrop(pid);
    std::thread::sleep(Duration::from_millis(700));
    assert!(in_own_pid_namespace(pid));
    std::fs::remove_file(dir.join("libpython3.12.so.1.0")).unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(maps.contains("libpython3.12.so.1.0 (deleted)"), "{maps}");
    let p = attach_profile("container-python", pid, &["-d", "1.5"]);
    for worker in ["worker_a (workload.py:", "worker_b (workload.py:"] {
        let n = p.folded.count_where(|f| {
            f.iter().any(|x| x.starts_with(worker))
                && f.iter().any(|x| x.starts_with("burn (workload.py:"))
        });
        assert!(n >= 50, "{worker} {n}{}", p.context());
    }
}
