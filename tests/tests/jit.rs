//! JIT code, end to end: Node.js with `--perf-basic-prof --interpreted-frames-native-stack`
//! on `tests/fixtures/js/split.js` (a 75/25 CPU split between `jsHot` and `jsCold`), and
//! CPython 3.12 with `-X perf` on `tests/fixtures/python/workload.py split`. The JIT frames
//! must be named from the target's perf map, and the walk must go through them down to the
//! runtime's native frames (`node::Start`, `Py_RunMain`) instead of stopping.

use std::path::{Path, PathBuf};

use sprofd_tests::*;

const NODE_FLAGS: [&str; 2] = ["--perf-basic-prof", "--interpreted-frames-native-stack"];

/// `node`, or `None` (a skip, or a failure under `SPROFD_REQUIRE_LIVE=1`).
fn node(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("node"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        skip(test, "node not on PATH");
    }
    found
}

fn python312(test: &str) -> Option<PathBuf> {
    let home = std::env::var("HOME").unwrap_or_default();
    let path = PathBuf::from(format!("{home}/.pyenv/versions/3.12.1/bin/python3.12"));
    if path.is_file() {
        return Some(path);
    }
    skip(test, &format!("{} missing", path.display()));
    None
}

fn split_js() -> String {
    fixtures_dir().join("js/split.js").display().to_string()
}

/// Removes the perf map a target left in /tmp.
fn remove_perf_map(pid: u32) {
    let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
}

/// Removes the perf maps left by commands `sprofd record` launched (whose pids the test
/// does not know), found by what they mention.
fn remove_perf_maps_mentioning(needle: &str) {
    remove_tmp_files_mentioning("perf-", ".map", needle);
}

/// Removes `/tmp/<prefix>*<suffix>` files whose bytes contain `needle`.
fn remove_tmp_files_mentioning(prefix: &str, suffix: &str, needle: &str) {
    let Ok(dir) = std::fs::read_dir("/tmp") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.ends_with(suffix) {
            let p = e.path();
            let mentions = std::fs::read(&p)
                .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()));
            if mentions {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// Whether folded frame `frame` is the JIT function `name` as V8 names it:
/// `JS:<tier>name file:line:col_[j]`, the tier a `~` (interpreted), `^` (baseline) or `*`
/// (optimized) mark.
fn js_is(frame: &str, name: &str) -> bool {
    frame.strip_suffix("_[j]").is_some_and(|f| {
        f.strip_prefix("JS:")
            .map(|f| f.trim_start_matches(['~', '^', '*', '+']))
            .is_some_and(|f| f.split(' ').next() == Some(name))
    })
}

fn has_js(frames: &[String], name: &str) -> bool {
    frames.iter().any(|f| js_is(f, name))
}

fn truncated(frames: &[String]) -> bool {
    frames.iter().any(|f| f == "[truncated]")
}

/// The checks every Node profile of split.js must pass; returns (hot share, truncated share
/// of the JS samples) for the message.
fn check_node_profile(label: &str, folded: &Folded) -> (f64, f64) {
    let hot = folded.count_where(|f| has_js(f, "jsHot"));
    let cold = folded.count_where(|f| has_js(f, "jsCold"));
    let js = hot + cold;
    assert!(
        js >= 200,
        "{label}: too few samples in jsHot/jsCold ({hot} + {cold} of {}): are the JS names \
         read from the perf map?\n{}",
        folded.total(),
        folded.excerpt()
    );
    let share = hot as f64 / js as f64;
    let tol = share_tolerance(0.75, js, 0.07);
    assert!(
        (share - 0.75).abs() <= tol,
        "{label}: jsHot has {share:.3} of the JS samples, expected 0.75 ± {tol:.3}\n{}",
        folded.excerpt()
    );
    // Below the JS frames the stack goes on into node's own native code, to its entry.
    let in_js = |f: &[String]| has_js(f, "jsHot") || has_js(f, "jsCold");
    let rooted = folded.count_where(|f| {
        in_js(f) && !truncated(f) && f.iter().any(|x| x.starts_with("node::Start("))
    });
    let cut = folded.count_where(|f| in_js(f) && truncated(f));
    assert!(
        rooted as f64 >= 0.9 * js as f64,
        "{label}: only {rooted} of {js} JS samples reach node::Start ({cut} truncated)\n{}",
        folded.excerpt()
    );
    // The native frames sit below (rootward of) the JS frames, not beside them.
    let ordered = folded.count_where(|f| {
        let start = f.iter().position(|x| x.starts_with("node::Start("));
        let hot = f.iter().position(|x| js_is(x, "jsHot"));
        matches!((start, hot), (Some(s), Some(h)) if s < h)
    });
    assert!(
        ordered as f64 >= 0.9 * hot as f64,
        "{label}: node::Start is not below jsHot in most jsHot stacks ({ordered} of {hot})"
    );
    (share, cut as f64 / js as f64)
}

#[live_test]
fn node_record_names_js_functions_and_walks_to_node_start() {
    let test = "node_record_names_js_functions_and_walks_to_node_start";
    let Some(node) = node(test) else { return };
    let _guard = serial();
    for unwind in ["auto", "dwarf"] {
        let p = record_profile(
            test,
            &["-F", "499", "--unwind", unwind],
            &[
                node.display().to_string(),
                NODE_FLAGS[0].into(),
                NODE_FLAGS[1].into(),
                split_js(),
                "3".into(),
            ],
        );
        let (share, cut) = check_node_profile(&format!("record --unwind {unwind}"), &p.folded);
        eprintln!("record --unwind {unwind}: jsHot share {share:.3}, truncated {cut:.3}");
        remove_perf_maps_mentioning(&split_js());
    }
}

#[live_test]
fn node_attach_names_js_functions_and_counts_jit_samples() {
    let test = "node_attach_names_js_functions_and_counts_jit_samples";
    let Some(node) = node(test) else { return };
    let _guard = serial();
    let dir = TempDir::new(test);
    let target = Target::spawn_in(
        Some(dir.path()),
        &node,
        &[NODE_FLAGS[0], NODE_FLAGS[1], &split_js(), "0"],
    );
    let folded_path = dir.join("out.folded");
    let table_path = dir.join("out.txt");
    run_ok(
        sprofd()
            .arg("attach")
            .arg(target.pid_arg())
            .args(["-d", "3", "-F", "499", "-q", "-o"])
            .arg(&folded_path)
            .arg("-o")
            .arg(&table_path)
            .current_dir(dir.path()),
    );
    let folded = Folded::read(&folded_path);
    let (share, cut) = check_node_profile("attach", &folded);
    eprintln!("attach: jsHot share {share:.3}, truncated {cut:.3}");
    // The table's footer says how many samples ran through JIT code.
    let table = std::fs::read_to_string(&table_path).unwrap();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("jit: ") && l.contains("ran through JIT code")),
        "no jit line in the table footer:\n{}",
        excerpt(&table)
    );
    remove_perf_map(target.pid);
}

/// CPython 3.12's `-X perf` names each Python function's trampoline `py::qualname:file`;
/// with `--python-view native` those are the only Python names, and the walk must cross the
/// trampolines (which keep no frame pointer) down to `Py_RunMain`.
#[live_test]
fn cpython312_perf_trampolines_are_named_and_crossed() {
    let test = "cpython312_perf_trampolines_are_named_and_crossed";
    let Some(python) = python312(test) else {
        return;
    };
    let _guard = serial();
    let script = fixtures_dir().join("python/workload.py");
    let p = record_profile(
        test,
        &["-F", "499", "--python-view", "native"],
        &[
            python.display().to_string(),
            "-X".into(),
            "perf".into(),
            script.display().to_string(),
            "split".into(),
            "2".into(),
        ],
    );
    let folded = &p.folded;
    let py = |name: &str| {
        let frame = format!("py::{name}:{}_[j]", script.display());
        move |f: &[String]| f.contains(&frame)
    };
    let (a, b) = (
        folded.count_where(py("hot_a")),
        folded.count_where(py("hot_b")),
    );
    assert!(
        a + b >= 200,
        "too few samples under py::hot_a/py::hot_b ({a} + {b} of {})\n{}",
        folded.total(),
        folded.excerpt()
    );
    let share = a as f64 / (a + b) as f64;
    let tol = share_tolerance(0.75, a + b, 0.07);
    assert!(
        (share - 0.75).abs() <= tol,
        "py::hot_a has {share:.3} of hot_a + hot_b, expected 0.75 ± {tol:.3}"
    );
    let rooted = folded.count_where(|f| {
        (py("hot_a")(f) || py("hot_b")(f)) && !truncated(f) && f.iter().any(|x| x == "Py_RunMain")
    });
    assert!(
        rooted as f64 >= 0.9 * (a + b) as f64,
        "only {rooted} of {} py::hot_* samples reach Py_RunMain\n{}",
        a + b,
        folded.excerpt()
    );
    remove_perf_maps_mentioning(&script.display().to_string());
}

/// A perf map that is not the process's own to write is refused with one warning, and the
/// profile still comes out (JIT frames unnamed).
#[live_test]
fn node_perf_map_writable_by_others_is_ignored_with_a_warning() {
    let test = "node_perf_map_writable_by_others_is_ignored_with_a_warning";
    let Some(node) = node(test) else { return };
    let _guard = serial();
    let dir = TempDir::new(test);
    let target = Target::spawn_in(
        Some(dir.path()),
        &node,
        &[NODE_FLAGS[0], NODE_FLAGS[1], &split_js(), "0"],
    );
    let map = format!("/tmp/perf-{}.map", target.pid);
    set_mode(Path::new(&map), 0o666);
    let folded_path = dir.join("out.folded");
    let out = run_ok(
        sprofd()
            .arg("attach")
            .arg(target.pid_arg())
            .args(["-d", "1", "-F", "199", "-q", "-o"])
            .arg(&folded_path)
            .current_dir(dir.path()),
    );
    let warnings: Vec<_> = out
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("perf map ignored"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", out.describe());
    assert!(
        warnings[0].contains("writable by others"),
        "{}",
        warnings[0]
    );
    let folded = Folded::read(&folded_path);
    assert_eq!(folded.count_where(|f| has_js(f, "jsHot")), 0);
    assert!(folded.text.contains("[jit] 0x"), "{}", folded.excerpt());
    remove_perf_map(target.pid);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// CPython 3.13's `-X perf_jit` writes a jitdump instead of a perf map, and mmaps it so that
/// profilers find it: its JIT_CODE_LOAD records name the trampolines. CPython buffers the
/// file until exit, so the names arrive only then (read through the file sprofd kept open):
/// the frames are named, though walks stop at them (see docs/architecture.md).
#[live_test]
fn cpython313_jitdump_names_trampolines() {
    let test = "cpython313_jitdump_names_trampolines";
    let home = std::env::var("HOME").unwrap_or_default();
    let python = PathBuf::from(format!("{home}/.pyenv/versions/3.13.0/bin/python3.13"));
    if !python.is_file() {
        skip(test, &format!("{} missing", python.display()));
        return;
    }
    let _guard = serial();
    let script = fixtures_dir().join("python/workload.py");
    let p = record_profile(
        test,
        &["-F", "199", "--python-view", "native"],
        &[
            python.display().to_string(),
            "-X".into(),
            "perf_jit".into(),
            script.display().to_string(),
            "split".into(),
            "1".into(),
        ],
    );
    let burn = format!("py::burn:{}_[j]", script.display());
    let named = p.folded.count_where(|f| f.contains(&burn));
    assert!(
        named as f64 >= 0.5 * p.folded.total() as f64,
        "py::burn names {named} of {} samples\n{}",
        p.folded.total(),
        p.folded.excerpt()
    );
    remove_tmp_files_mentioning("jit-", ".dump", &script.display().to_string());
}
