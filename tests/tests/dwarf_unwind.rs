//! DWARF unwinding (`--unwind dwarf`) of fixtures built with
//! `-O2 -g -fomit-frame-pointer`: every expected caller must be present in
//! at least 99% of the samples of the leaf.

use sprofd_tests::*;

const DWARF: &[&str] = &["--unwind", "dwarf"];

fn assert_leaf_ratio(
    p: &Profile,
    leaf: &str,
    what: &str,
    min_samples: u64,
    pred: impl Fn(&[String]) -> bool,
) {
    let (ok, total) = leaf_ratio(&p.folded, leaf, pred);
    assert!(
        total >= min_samples,
        "only {total} samples with leaf {leaf}{}",
        p.context()
    );
    assert!(
        ok as f64 >= 0.99 * total as f64,
        "{what} in only {ok} of {total} samples with leaf {leaf} (need 99%){}",
        p.context()
    );
}

#[live_test]
fn dwarf_cratio_no_frame_pointers() {
    let exe = c_fixture("cratio", NO_FP);
    let p = record_profile("dwarf-cratio", DWARF, &[exe.as_os_str(), "1.5".as_ref()]);
    for chain in [
        ["main", "a1", "a2", "a3_hot"],
        ["main", "b1", "b2", "b3_cold"],
    ] {
        assert_leaf_ratio(&p, chain[3], &chain.join(";"), 50, |f| has_chain(f, &chain));
    }
    let total = p.folded.total();
    for (name, expected) in [("a3_hot", 0.75), ("b3_cold", 0.25)] {
        let share = p.folded.share_containing(name);
        let tol = share_tolerance(expected, total, 0.03);
        assert!(
            (share - expected).abs() <= tol,
            "share of {name} is {share:.3}, expected {expected} ± {tol:.3}{}",
            p.context()
        );
    }
}

#[live_test]
fn dwarf_qsort_comparator_through_libc() {
    let exe = c_fixture("qsort", NO_FP);
    let p = record_profile("dwarf-qsort", DWARF, &[exe.as_os_str(), "1.5".as_ref()]);
    assert_leaf_ratio(&p, "cmp_slow", "main … sort_loop … cmp_slow", 50, |f| {
        has_in_order(f, &["main", "sort_loop", "cmp_slow"])
    });
    // libc's qsort machinery sits between sort_loop and the comparator.
    assert_leaf_ratio(
        &p,
        "cmp_slow",
        "a frame between sort_loop and cmp_slow",
        50,
        |f| {
            let s = f.iter().position(|x| frame_is(x, "sort_loop"));
            let c = f.iter().position(|x| frame_is(x, "cmp_slow"));
            matches!((s, c), (Some(s), Some(c)) if c > s + 1)
        },
    );
}

fn sigprof_run() -> &'static Profile {
    static RUN: std::sync::OnceLock<Profile> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        let exe = c_fixture("sigprof", NO_FP);
        record_profile("dwarf-sigprof", DWARF, &[exe.as_os_str(), "1.5".as_ref()])
    })
}

#[live_test]
fn dwarf_signal_handler_frames() {
    let p = sigprof_run();
    assert_leaf_ratio(
        p,
        "handler_spin",
        "main … on_sigprof;handler_spin",
        30,
        |f| {
            has_in_order(f, &["main", "on_sigprof"])
                && has_chain(f, &["on_sigprof", "handler_spin"])
        },
    );
    // Through the signal frame: the interrupted function sits below the
    // handler (main_loop_spin, or main itself between two calls), with at
    // least one frame (__restore_rt) between it and on_sigprof.
    assert_leaf_ratio(
        p,
        "handler_spin",
        "interrupted frame … on_sigprof",
        30,
        |f| {
            let h = f.iter().position(|x| frame_is(x, "on_sigprof"));
            let m = f
                .iter()
                .rposition(|x| frame_is(x, "main_loop_spin") || frame_is(x, "main"));
            matches!((m, h), (Some(m), Some(h)) if h > m + 1)
        },
    );
    assert_leaf_ratio(p, "main_loop_spin", "main;main_loop_spin", 30, |f| {
        has_chain(f, &["main", "main_loop_spin"])
    });
}

/// Only `[unknown]` and `[truncated]` are bracketed frames of the format.
#[live_test]
fn dwarf_signal_handler_frame_names_in_format() {
    let p = sigprof_run();
    let bad = nonstandard_frames(&p.folded);
    assert!(
        bad.is_empty(),
        "frames outside the folded format: {bad:?}{}",
        p.context()
    );
}

#[live_test]
fn dwarf_threads_no_frame_pointers() {
    let exe = c_fixture("threads", NO_FP);
    let p = record_profile(
        "dwarf-threads",
        DWARF,
        &[exe.as_os_str(), "1.0".as_ref(), "0".as_ref()],
    );
    for (entry, spin) in [
        ("worker_a_main", "worker_a_spin"),
        ("worker_b_main", "worker_b_spin"),
    ] {
        assert_leaf_ratio(&p, spin, &format!("{entry};{spin}"), 50, |f| {
            has_chain(f, &[entry, spin])
        });
    }
}

#[live_test]
fn dwarf_deep_recursion_truncated() {
    let exe = c_fixture("deep", NO_FP);
    let p = record_profile("dwarf-deep", DWARF, &[exe.as_os_str(), "1.0".as_ref()]);
    assert_leaf_ratio(
        &p,
        "deep_leaf",
        "[truncated] … recurse;deep_leaf",
        50,
        |f| {
            let t = f.iter().position(|x| x == "[truncated]");
            let r = f.iter().position(|x| frame_is(x, "recurse"));
            matches!((t, r), (Some(t), Some(r)) if t < r) && has_chain(f, &["recurse", "deep_leaf"])
        },
    );
}

/// `--unwind auto` (the default) uses DWARF CFI for modules that have it, so
/// the no-frame-pointer build unwinds completely without `--unwind dwarf`.
#[live_test]
fn auto_unwind_cratio_no_frame_pointers() {
    let exe = c_fixture("cratio", NO_FP);
    let p = record_profile("auto-cratio", &[], &[exe.as_os_str(), "1.5".as_ref()]);
    for chain in [
        ["main", "a1", "a2", "a3_hot"],
        ["main", "b1", "b2", "b3_cold"],
    ] {
        assert_leaf_ratio(&p, chain[3], &chain.join(";"), 50, |f| has_chain(f, &chain));
    }
}

/// With DWARF unwinding the frame-pointer build must unwind just as well.
#[live_test]
fn dwarf_cratio_with_frame_pointers() {
    let exe = c_fixture("cratio", FP);
    let p = record_profile("dwarf-cratio-fp", DWARF, &[exe.as_os_str(), "1.0".as_ref()]);
    for chain in [
        ["main", "a1", "a2", "a3_hot"],
        ["main", "b1", "b2", "b3_cold"],
    ] {
        assert_leaf_ratio(&p, chain[3], &chain.join(";"), 50, |f| has_chain(f, &chain));
    }
}

/// A rustc-built (lld-linked) PIE has its executable segment start inside the last file page
/// of the read-only one; the DWARF walk must still go all the way from the Rust leaf through
/// std's runtime and libc to `_start`, in both CFI modes.
#[live_test]
fn dwarf_rust_binary_unwinds_to_start() {
    let exe = rust_fixture();
    for (name, mode) in [("dwarf-rust", DWARF), ("auto-rust", &[][..])] {
        let p = record_profile(name, mode, &[exe.as_os_str(), "1.0".as_ref()]);
        let chain = [
            "_start",
            "main",
            "std::rt::lang_start_internal",
            "rust_fixture::main",
            "rust_fixture::hot::outer",
            "rust_fixture::hot::spin",
        ];
        // The leaf itself is an inlined frame inside `spin`, so samples are counted by `spin`.
        let in_spin = |f: &[String]| f.iter().any(|x| frame_is(x, "rust_fixture::hot::spin"));
        let total = p.folded.count_where(in_spin);
        let ok = p.folded.count_where(|f| {
            in_spin(f)
                && f.get(1).is_some_and(|x| x == "_start")
                && has_in_order(f, &chain)
                && !f.iter().any(|x| x == "[truncated]")
        });
        assert!(total >= 50, "only {total} samples in spin{}", p.context());
        assert!(
            ok as f64 >= 0.99 * total as f64,
            "{} in only {ok} of {total} samples in spin (need 99%){}",
            chain.join(" … "),
            p.context()
        );
    }
}
