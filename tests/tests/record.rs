//! `sprofd record -- <COMMAND>`: launches the command and samples it, its
//! threads and its children from the start.

use std::time::Duration;

use sprofd_tests::*;

#[live_test]
fn record_ends_when_command_exits() {
    let exe = c_fixture("cratio", FP);
    let p = record_profile("record-cratio", &[], &[exe.as_os_str(), "1.5".as_ref()]);
    assert!(
        p.out.elapsed >= Duration::from_millis(1400) && p.out.elapsed < Duration::from_secs(10),
        "record without -d must end when the 1.5 s command exits (took {:?}){}",
        p.out.elapsed,
        p.context()
    );
    let total = p.folded.total();
    assert!(total >= 200, "too few samples{}", p.context());
    for (name, expected) in [("a3_hot", 0.75), ("b3_cold", 0.25)] {
        let share = p.folded.share_containing(name);
        let tol = share_tolerance(expected, total, 0.03);
        assert!(
            (share - expected).abs() <= tol,
            "share of {name} is {share:.3}, expected {expected} ± {tol:.3}{}",
            p.context()
        );
    }
    let (ok, leaf) = leaf_ratio(&p.folded, "a3_hot", |f| {
        has_chain(f, &["main", "a1", "a2", "a3_hot"])
    });
    assert!(
        ok as f64 >= 0.95 * leaf as f64,
        "main;a1;a2;a3_hot in only {ok} of {leaf} samples{}",
        p.context()
    );
    for (frames, _) in &p.folded.stacks {
        assert_eq!(
            frames[0],
            "cratio",
            "root frame must be the comm{}",
            p.context()
        );
    }
}

#[live_test]
fn record_samples_threads_from_start() {
    let exe = c_fixture("threads", FP);
    // 1 s of work per thread, no start delay.
    let p = record_profile(
        "record-threads",
        &[],
        &[exe.as_os_str(), "1.0".as_ref(), "0".as_ref()],
    );
    let total = p.folded.total();
    for spin in ["worker_a_spin", "worker_b_spin"] {
        let n = p.folded.count_containing(spin);
        assert!(
            n >= 50 && n as f64 >= 0.3 * total as f64,
            "{spin} has {n} of {total} samples{}",
            p.context()
        );
    }
}

#[live_test]
fn record_samples_forked_children() {
    let exe = c_fixture("forks", FP);
    let p = record_profile("record-forks", &[], &[exe.as_os_str(), "1.0".as_ref()]);
    let total = p.folded.total();
    for spin in ["parent_spin", "child_spin"] {
        let n = p.folded.count_containing(spin);
        assert!(
            n >= 50 && n as f64 >= 0.3 * total as f64,
            "{spin} has {n} of {total} samples (parent and forked child burn equally){}",
            p.context()
        );
    }
    let (ok, leaf) = leaf_ratio(&p.folded, "child_spin", |f| {
        f[0] == "forks" && has_chain(f, &["main", "child_spin"])
    });
    assert!(
        ok as f64 >= 0.95 * leaf as f64,
        "forks;…;main;child_spin in only {ok} of {leaf} child samples{}",
        p.context()
    );
}

#[live_test]
fn record_exit_status_zero_child() {
    let exe = c_fixture("exits", FP);
    let dir = TempDir::new("record-exit0");
    let out = run(sprofd()
        .arg("record")
        .args(["-F", FREQ, "-q", "-o", "out.folded", "--"])
        .arg(&exe)
        .arg("0.3")
        .current_dir(dir.path()));
    assert_eq!(
        out.status.code(),
        Some(0),
        "sprofd must exit 0 when the recorded command exits 0{}",
        out.describe()
    );
    assert_no_panic(&out);
    assert!(dir.join("out.folded").is_file(), "out.folded not written");
}

/// Frame-pointer unwinding of a 100000-deep recursion: the kernel callchain
/// is capped, so the stacks cannot reach main and must end in `[truncated]`.
#[live_test]
fn record_deep_recursion_fp_truncated() {
    let exe = c_fixture("deep", FP);
    let p = record_profile("record-deep-fp", &[], &[exe.as_os_str(), "1.0".as_ref()]);
    let (ok, leaf) = leaf_ratio(&p.folded, "deep_leaf", |f| {
        let t = f.iter().position(|x| x == "[truncated]");
        let r = f.iter().position(|x| x == "recurse");
        matches!((t, r), (Some(t), Some(r)) if t < r)
    });
    assert!(
        leaf >= 50,
        "only {leaf} samples in deep_leaf{}",
        p.context()
    );
    assert!(
        ok as f64 >= 0.99 * leaf as f64,
        "[truncated] before the recurse frames in only {ok} of {leaf} samples{}",
        p.context()
    );
}
