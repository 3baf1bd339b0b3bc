//! `--mode wall` and `--mode off-cpu`: time switched out, weighed by how long, on fixtures
//! whose wall-clock split is known by construction (`wallsplit.c`: 40 ms compute, 30 ms
//! nanosleep, 30 ms blocked on a pipe per round; `workload.py wall`: the same with
//! time.sleep and socket.recv), and a pipe ping-pong that switches tens of thousands of
//! times a second.

use sprofd_tests::*;

/// Microseconds under stacks of `root` that also contain `part`, as a share of `root`'s.
fn share(p: &Profile, root: &str, part: &str) -> f64 {
    let total = p
        .folded
        .count_where(|f| f.iter().any(|x| x.starts_with(root)));
    let of = p.folded.count_where(|f| {
        f.iter().any(|x| x.starts_with(root)) && f.iter().any(|x| x.starts_with(part))
    });
    of as f64 / total.max(1) as f64
}

fn assert_near(what: &str, got: f64, want: f64, tol: f64, p: &Profile) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: {got:.3}, expected {want} ± {tol}{}",
        p.context()
    );
}

#[live_test(kernel)]
fn wall_mode_splits_compute_sleep_and_waiting() {
    let _serial = serial();
    let exe = c_fixture("wallsplit", FP);
    let p = record_profile(
        "wall-c",
        &["--mode", "wall", "-o", "out.txt"],
        &[exe.display().to_string(), "2".into()],
    );
    // Main thread: round_trip's parts (wait_pipe may be tail-called from round_trip).
    let main = |part: &str| share(&p, "main", part);
    assert_near("compute", main("compute"), 0.40, 0.05, &p);
    assert_near("nap", main("nap"), 0.30, 0.05, &p);
    assert_near("wait_pipe", main("wait_pipe"), 0.30, 0.05, &p);
    // Counts are microseconds: the main thread's add up to its wall time (2 s).
    let main_us = p.folded.count_where(|f| f.iter().any(|x| x == "main"));
    assert!(
        (1_700_000..=2_300_000).contains(&main_us),
        "main thread {main_us} µs{}",
        p.context()
    );
    let table = std::fs::read_to_string(p.file("out.txt")).unwrap();
    assert!(table.contains("off-CPU: "), "{table}");
    let t = Table::parse(&table).unwrap();
    assert!(
        t.total_time > 3.0,
        "two threads for 2 s of wall time: {}",
        t.total_time
    );
}

#[live_test(kernel)]
fn off_cpu_mode_shows_only_blocked_time() {
    let _serial = serial();
    let exe = c_fixture("wallsplit", FP);
    let p = record_profile(
        "offcpu-c",
        &["--mode", "off-cpu"],
        &[exe.display().to_string(), "2".into()],
    );
    let main = |part: &str| share(&p, "main", part);
    let (nap, wait) = (main("nap"), main("wait_pipe"));
    // Equal blocked times; compute is off the CPU only when preempted (a loaded machine).
    assert_near("nap of nap + wait", nap / (nap + wait), 0.50, 0.07, &p);
    assert!(
        nap + wait > 0.7,
        "blocked time dominates: {nap} + {wait}{}",
        p.context()
    );
}

#[live_test(kernel)]
fn wall_mode_on_python_names_sleep_and_socket_waits() {
    let _serial = serial();
    let py = std::path::Path::new(&std::env::var("HOME").unwrap_or_default())
        .join(".pyenv/versions/3.12.1/bin/python3.12");
    if !py.is_file() {
        assert!(
            std::env::var("SPROFD_REQUIRE_LIVE").as_deref() != Ok("1"),
            "{} missing",
            py.display()
        );
        eprintln!("SKIP: {} missing", py.display());
        return;
    }
    let script = fixtures_dir().join("python/workload.py");
    let p = record_profile(
        "wall-py",
        &["--mode", "wall"],
        &[
            py.display().to_string(),
            script.display().to_string(),
            "wall".into(),
            "2".into(),
        ],
    );
    let h = |part: &str| share(&p, "handler (", part);
    assert_near("compute_part", h("compute_part ("), 0.40, 0.05, &p);
    assert_near("sleep_part", h("sleep_part ("), 0.30, 0.05, &p);
    assert_near("recv_part", h("recv_part ("), 0.30, 0.05, &p);
    // What the Python frames wait in, natively.
    assert!(
        p.folded
            .count_where(|f| f.iter().any(|x| x.starts_with("sleep_part ("))
                && f.iter().any(|x| x == "time_sleep"))
            > 0,
        "{}",
        p.context()
    );
    assert!(
        p.folded
            .count_where(|f| f.iter().any(|x| x.starts_with("recv_part ("))
                && f.iter().any(|x| x.starts_with("sock_recv")))
            > 0,
        "{}",
        p.context()
    );
}

#[live_test(kernel)]
fn a_busy_switcher_is_thinned_and_says_so() {
    let _serial = serial();
    let target = Target::spawn(&c_fixture("pingpong", FP), &["0"]);
    let p = attach_profile(
        "offcpu-pingpong",
        target.pid,
        &["--mode", "off-cpu", "-d", "1.5", "-o", "out.txt"],
    );
    let table = std::fs::read_to_string(p.file("out.txt")).unwrap();
    assert!(table.contains("busy switchers thinned"), "{table}");
    // Both threads block in read or write; the totals come from switch records, so they stay
    // within the wall time of two threads.
    for side in ["ping_side", "pong_side"] {
        assert!(p.folded.count_containing(side) > 0, "{side}{}", p.context());
    }
    let total_us = p.folded.total();
    assert!(
        total_us <= 2 * 1_600_000,
        "{total_us} µs off-CPU for two threads in 1.5 s{}",
        p.context()
    );
    assert!(target_still_runs(target));
}

fn target_still_runs(mut t: Target) -> bool {
    t.is_running()
}

#[live_test(kernel)]
fn wall_profiles_are_wall_pprof() {
    let _serial = serial();
    let exe = c_fixture("wallsplit", FP);
    let p = record_profile(
        "wall-pprof",
        &["--mode", "wall", "-o", "out.pb.gz"],
        &[exe.display().to_string(), "1".into()],
    );
    let go = std::process::Command::new("go")
        .args(["tool", "pprof", "-raw"])
        .arg(p.file("out.pb.gz"))
        .output();
    match go {
        Ok(o) if o.status.success() => {
            let raw = String::from_utf8_lossy(&o.stdout);
            assert!(raw.contains("samples/count wall/nanoseconds"), "{raw}");
        }
        _ if std::env::var("SPROFD_REQUIRE_LIVE").as_deref() == Ok("1") => {
            panic!("go tool pprof unavailable")
        }
        _ => eprintln!("SKIP wall_profiles_are_wall_pprof: go tool pprof unavailable"),
    }
}
