//! Sanity checks of the fixtures themselves (no sprofd involved): they
//! build with both flag sets, print "ready", run for the requested time and
//! behave as the sprofd tests assume. A failure here is a fixture problem,
//! not an sprofd one.

use std::process::Command;
use std::time::{Duration, Instant};

use sprofd_tests::*;

const C_FIXTURES: &[&str] = &[
    "cratio", "inline", "threads", "dlopen", "exits", "forks", "syscalls", "qsort", "sigprof",
    "deep", "plt", "cshift",
];

#[test]
fn c_fixtures_build_and_exit_on_time() {
    let plugin = c_shared_fixture("plugin", FP);
    for flags in [FP, NO_FP] {
        for name in C_FIXTURES {
            let exe = c_fixture(name, flags);
            let mut cmd = Command::new(&exe);
            match *name {
                "dlopen" => cmd.arg(&plugin).arg("0.2"),
                "threads" => cmd.args(["0.2", "0"]),
                _ => cmd.arg("0.2"),
            };
            let start = Instant::now();
            let out = cmd.output().expect("run fixture");
            let took = start.elapsed();
            assert!(out.status.success(), "{name} {flags:?}: {out:?}");
            assert_eq!(String::from_utf8_lossy(&out.stdout), "ready\n", "{name}");
            let min = if *name == "dlopen" { 0.85 } else { 0.15 };
            assert!(
                took >= Duration::from_secs_f64(min) && took < Duration::from_secs(5),
                "{name} {flags:?} ran {took:?}"
            );
        }
    }
}

#[test]
fn rust_fixture_builds_and_runs() {
    let out = Command::new(rust_fixture()).arg("0.2").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ready\n");
}

#[test]
fn threads_fixture_names_its_threads_after_delay() {
    let t = Target::spawn(&c_fixture("threads", FP), &["0"]);
    let names = || -> Vec<String> {
        std::fs::read_dir(format!("/proc/{}/task", t.pid))
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
            .map(|s| s.trim().to_string())
            .collect()
    };
    assert_eq!(names(), ["threads"], "threads must start after a delay");
    std::thread::sleep(Duration::from_millis(1000));
    let mut n = names();
    n.sort();
    assert_eq!(n, ["threads", "worker-a", "worker-b"]);
}

#[test]
fn target_guard_kills_forever_fixture() {
    let pid;
    {
        let mut t = Target::spawn(&c_fixture("cratio", FP), &["0"]);
        pid = t.pid;
        assert!(t.is_running());
        // It burns CPU (polled: the machine may be busy).
        let deadline = Instant::now() + Duration::from_secs(10);
        while t.cpu_seconds() < 0.05 {
            assert!(Instant::now() < deadline, "cratio 0 uses no CPU");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(proc_state(pid).is_none(), "fixture survived its guard");
}

/// The leaf functions of the frame-pointer builds push %rbp (see FP_LEAF in
/// fixtures/common.h); the -fomit-frame-pointer builds do not.
#[test]
fn frame_pointer_builds_set_up_frames() {
    let dis = |exe: &std::path::Path, func: &str| -> String {
        let out = Command::new("objdump")
            .args(["-d", "--no-show-raw-insn"])
            .arg(exe)
            .output();
        let Ok(out) = out else {
            return String::new();
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let start = text
            .find(&format!("<{func}>:"))
            .unwrap_or_else(|| panic!("{func} not in {}", exe.display()));
        let body = &text[start..];
        body[..body.find("\n\n").unwrap_or(body.len())].to_string()
    };
    if Command::new("objdump").arg("--version").output().is_err() {
        eprintln!("SKIP frame_pointer_builds_set_up_frames: no objdump");
        return;
    }
    for func in ["a3_hot", "a2", "b3_cold"] {
        assert!(dis(&c_fixture("cratio", FP), func).contains("push   %rbp"));
        assert!(!dis(&c_fixture("cratio", NO_FP), func).contains("%rbp"));
    }
}
