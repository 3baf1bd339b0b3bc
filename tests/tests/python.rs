//! Python frames, end to end: real CPython 3.8, 3.9, 3.10, 3.11 (pyenv's PIE build with a
//! shared libpython, and Debian's stripped non-PIE `/usr/bin/python3.11`), 3.12 and 3.13, profiled by
//! `sprofd record` and `sprofd attach` on `tests/fixtures/python/workload.py`, whose CPU split
//! is known by construction. The targets are started normally: no `-X perf`, no ptrace.

use std::path::PathBuf;

use sprofd_tests::*;

/// The interpreters to test: `(label, path)`. A missing one skips (fails under
/// `SPROFD_REQUIRE_LIVE=1`).
fn interpreters(test: &str) -> Vec<(&'static str, PathBuf)> {
    let root = std::process::Command::new("pyenv")
        .arg("root")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("{}/.pyenv", std::env::var("HOME").unwrap_or_default()));
    let candidates = [
        (
            "3.8",
            PathBuf::from(format!("{root}/versions/3.8.18/bin/python3.8")),
        ),
        (
            "3.9",
            PathBuf::from(format!("{root}/versions/3.9.18/bin/python3.9")),
        ),
        (
            "3.10",
            PathBuf::from(format!("{root}/versions/3.10.13/bin/python3.10")),
        ),
        (
            "3.11",
            PathBuf::from(format!("{root}/versions/3.11.7/bin/python3.11")),
        ),
        (
            "3.12",
            PathBuf::from(format!("{root}/versions/3.12.1/bin/python3.12")),
        ),
        (
            "3.13",
            PathBuf::from(format!("{root}/versions/3.13.0/bin/python3.13")),
        ),
        ("debian-3.11", PathBuf::from("/usr/bin/python3.11")),
    ];
    let mut found = Vec::new();
    for (label, path) in candidates {
        if path.is_file() {
            found.push((label, path));
        } else if std::env::var("SPROFD_REQUIRE_LIVE").as_deref() == Ok("1") {
            panic!(
                "{test}: interpreter {} missing (SPROFD_REQUIRE_LIVE=1)",
                path.display()
            );
        } else {
            eprintln!("SKIP {test} on {label}: {} missing", path.display());
        }
    }
    found
}

fn script() -> String {
    fixtures_dir()
        .join("python/workload.py")
        .display()
        .to_string()
}

/// Whether folded frame `frame` is the Python function `name` (`name (file.py:line)`).
fn py_is(frame: &str, name: &str) -> bool {
    frame
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix(" ("))
        .is_some_and(|rest| rest.contains(".py:") && rest.ends_with(')'))
}

/// Whether `names` occur as consecutive Python frames of `frames`.
fn py_chain(frames: &[String], names: &[&str]) -> bool {
    frames
        .windows(names.len())
        .any(|w| w.iter().zip(names).all(|(f, n)| py_is(f, n)))
}

/// The line of `def NAME(` in the workload script.
fn def_line(name: &str) -> usize {
    let src = std::fs::read_to_string(script()).unwrap();
    1 + src
        .lines()
        .position(|l| l.starts_with(&format!("def {name}(")))
        .unwrap_or_else(|| panic!("def {name} not in the script"))
}

/// Whether `names` occur as Python frames of `frames` in this order, other frames (native
/// calls such as `builtin_sum`) allowed between them.
fn py_in_order(frames: &[String], names: &[&str]) -> bool {
    let mut it = frames.iter();
    names.iter().all(|n| it.any(|f| py_is(f, n)))
}

/// Whether a stack runs in a `threading.Thread` (its bootstrap frames are in threading.py;
/// before 3.11 they are named without their class, `run` rather than `Thread.run`).
fn in_thread(frames: &[String]) -> bool {
    frames.iter().any(|f| f.contains(" (threading.py:"))
}

fn count_py(p: &Profile, pred: impl Fn(&[String]) -> bool) -> u64 {
    p.folded.count_where(pred)
}

#[test]
fn python_split_shares_and_chains_on_every_interpreter() {
    if !live("python_split_shares_and_chains_on_every_interpreter") {
        return;
    }
    let _serial = serial();
    for (label, py) in interpreters("python_split") {
        let p = record_profile(
            &format!("py-split-{label}"),
            &["-o", "out.txt"],
            &[
                py.display().to_string(),
                script(),
                "split".into(),
                "1.5".into(),
            ],
        );
        let work = count_py(&p, |f| f.iter().any(|x| py_is(x, "work")));
        assert!(
            work >= 500,
            "{label}: {work} samples in work{}",
            p.context()
        );
        let a = count_py(&p, |f| {
            py_chain(f, &["<module>", "main", "work", "hot_a", "burn"])
        });
        let b = count_py(&p, |f| {
            py_chain(f, &["<module>", "main", "work", "hot_b", "burn"])
        });
        let share = a as f64 / work as f64;
        let tol = share_tolerance(0.75, work, 0.06);
        assert!(
            (share - 0.75).abs() <= tol,
            "{label}: hot_a share {share:.3} (hot_b {b}) of {work}, expected 0.75 ± {tol:.3}{}",
            p.context()
        );
        assert!(
            (a + b) as f64 >= 0.9 * work as f64,
            "{label}: complete chains {a}+{b} of {work}{}",
            p.context()
        );
        // The python view hides the interpreter between Python frames (a sample whose Python
        // frames could not be read keeps its native stack, marked).
        let eval = p.folded.count_containing("_PyEval_EvalFrameDefault");
        assert!(
            eval * 50 <= work,
            "{label}: {eval} samples with eval frames left{}",
            p.context()
        );
        // Table rows are Python functions, named by their definition line.
        let text = std::fs::read_to_string(p.file("out.txt")).unwrap();
        let table = Table::parse(&text).unwrap_or_else(|e| panic!("{label}: {e}\n{text}"));
        let def = def_line("hot_a");
        let row = table
            .row(&format!("hot_a (workload.py:{def})"))
            .unwrap_or_else(|| panic!("{label}: no hot_a row in {:?}", table.rows));
        assert!(row.cumulative > 0.5, "{label}: {row:?}");
        let footer = std::fs::read_to_string(p.file("out.txt")).unwrap();
        assert!(footer.contains("python: "), "{label}: footer {footer}");
    }
}

#[test]
fn python_attach_sees_threads_started_later() {
    if !live("python_attach_sees_threads_started_later") {
        return;
    }
    let _serial = serial();
    for (label, py) in interpreters("python_attach_threads") {
        let target = Target::spawn(&py, &[script(), "threads".into(), "3".into()]);
        let p = attach_profile(&format!("py-threads-{label}"), target.pid, &["-d", "1.5"]);
        let a = count_py(&p, |f| {
            in_thread(f) && py_chain(f, &["worker_a", "spin_a", "burn"])
        });
        let b = count_py(&p, |f| {
            in_thread(f) && py_chain(f, &["worker_b", "spin_b", "burn"])
        });
        assert!(a >= 100, "{label}: worker-a {a}{}", p.context());
        assert!(
            b >= 50,
            "{label}: worker-b (started after attach) {b}{}",
            p.context()
        );
    }
}

#[test]
fn python_calls_into_c_show_native_frames_under_the_caller() {
    if !live("python_calls_into_c_show_native_frames_under_the_caller") {
        return;
    }
    let _serial = serial();
    for (label, py) in interpreters("python_native") {
        let p = record_profile(
            &format!("py-native-{label}"),
            &[],
            &[
                py.display().to_string(),
                script(),
                "native".into(),
                "1.5".into(),
            ],
        );
        // zlib.compress: the extension module and libz under compress_loop.
        let zlib = count_py(&p, |f| {
            let Some(i) = f.iter().position(|x| py_is(x, "compress_loop")) else {
                return false;
            };
            f[i + 1..].iter().any(|x| {
                x.contains("deflate") || x.contains("zlib_Compress") || x.contains("compress")
            })
        });
        assert!(
            zlib >= 50,
            "{label}: zlib under compress_loop {zlib}{}",
            p.context()
        );
        // sorted(key=...): the key function runs under sort_loop, below builtin_sorted where
        // the interpreter has symbols for it (Debian's stripped build does not).
        let key = count_py(&p, |f| {
            f.windows(3).any(|w| {
                py_is(&w[0], "sort_loop") && w[1] == "builtin_sorted" && py_is(&w[2], "key_fn")
            }) || (label.starts_with("debian") && py_chain(f, &["sort_loop", "key_fn"]))
        });
        assert!(
            key >= 10,
            "{label}: key_fn under sort_loop {key}{}",
            p.context()
        );
        // The C function that sorts stays visible below the innermost Python frame.
        if label.starts_with("debian") {
            continue;
        }
        let sort_c = count_py(&p, |f| {
            f.iter()
                .position(|x| py_is(x, "sort_loop"))
                .is_some_and(|i| {
                    f[i + 1..]
                        .iter()
                        .any(|x| x.contains("sort") && !x.contains(" ("))
                })
        });
        assert!(
            sort_c >= 10,
            "{label}: list sort C frames {sort_c}{}",
            p.context()
        );
    }
}

#[test]
fn python_mixed_and_native_views() {
    if !live("python_mixed_and_native_views") {
        return;
    }
    let _serial = serial();
    let found = interpreters("python_views");
    let Some((label, py)) = found
        .iter()
        .find(|(l, _)| *l == "3.11")
        .or(found.first())
        .cloned()
    else {
        return;
    };
    let args = [
        py.display().to_string(),
        script(),
        "split".into(),
        "1".into(),
    ];
    let mixed = record_profile(
        &format!("py-mixed-{label}"),
        &["--python-view", "mixed"],
        &args,
    );
    // Python frames replace the eval frames; the interpreter's C frames stay.
    let both = count_py(&mixed, |f| {
        py_chain(f, &["hot_a", "burn"]) || f.iter().any(|x| py_is(x, "hot_a"))
    });
    assert!(both >= 300, "{}", mixed.context());
    assert!(
        mixed.folded.count_where(|f| f
            .iter()
            .any(|x| x.starts_with("Py") || x.starts_with("_Py")))
            > 0,
        "mixed view keeps interpreter frames{}",
        mixed.context()
    );
    let native = record_profile(
        &format!("py-native-view-{label}"),
        &["--python-view", "native"],
        &args,
    );
    assert!(
        native.folded.count_containing("_PyEval_EvalFrameDefault") > 300,
        "{}",
        native.context()
    );
    assert_eq!(
        native
            .folded
            .count_where(|f| f.iter().any(|x| py_is(x, "hot_a"))),
        0
    );
}

#[test]
fn python_unicode_names_generators_and_coroutines() {
    if !live("python_unicode_names_generators_and_coroutines") {
        return;
    }
    let _serial = serial();
    for (label, py) in interpreters("python_unicode") {
        let p = record_profile(
            &format!("py-unicode-{label}"),
            &[],
            &[
                py.display().to_string(),
                script(),
                "unicode".into(),
                "1.5".into(),
            ],
        );
        let uni = count_py(&p, |f| py_chain(f, &["coro_main", "функция_ü", "burn"]));
        assert!(uni >= 50, "{label}: функция_ü {uni}{}", p.context());
        // sum() over the generator: builtin_sum sits between the two Python frames.
        let gen = count_py(&p, |f| py_in_order(f, &["consume_generator", "gen_values"]));
        assert!(gen >= 3, "{label}: generator {gen}{}", p.context());
        let coro = count_py(&p, |f| py_chain(f, &["coro_main", "coro_step", "burn"]));
        assert!(coro >= 50, "{label}: coroutine {coro}{}", p.context());
    }
}

#[test]
fn python_target_exiting_mid_profile_keeps_its_profile() {
    if !live("python_target_exiting_mid_profile_keeps_its_profile") {
        return;
    }
    let _serial = serial();
    let Some((label, py)) = interpreters("python_exit").into_iter().last() else {
        return;
    };
    let target = Target::spawn(&py, &[script(), "split".into(), "1".into()]);
    let p = attach_profile(&format!("py-exit-{label}"), target.pid, &["-d", "10"]);
    assert!(
        p.out.stderr.contains("exited"),
        "sprofd should report the exit{}",
        p.context()
    );
    let hot = count_py(&p, |f| py_chain(f, &["work", "hot_a"]));
    assert!(hot >= 200, "{label}: {hot}{}", p.context());
}

#[test]
fn python_subprocesses_get_their_own_detection() {
    if !live("python_subprocesses_get_their_own_detection") {
        return;
    }
    let _serial = serial();
    let Some((label, py)) = interpreters("python_subprocess")
        .into_iter()
        .find(|(l, _)| *l == "3.12")
    else {
        return;
    };
    // A Python parent that only waits, and a Python child doing the work.
    let parent = format!(
        "import subprocess, sys; subprocess.run([sys.executable, {:?}, 'split', '1.5'], check=True)",
        script()
    );
    let p = record_profile(
        &format!("py-subprocess-{label}"),
        &[],
        &[py.display().to_string(), "-c".into(), parent],
    );
    let child = count_py(&p, |f| py_chain(f, &["<module>", "main", "work", "hot_a"]));
    assert!(
        child >= 300,
        "{label}: child Python frames {child}{}",
        p.context()
    );
}
