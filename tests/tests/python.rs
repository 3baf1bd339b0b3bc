//! Python frames, end to end: real CPython 3.8, 3.9, 3.10, 3.11 (pyenv's PIE build with a
//! shared libpython, and Debian's stripped non-PIE `/usr/bin/python3.11`), 3.12 and 3.13, profiled by
//! `sprofd record` and `sprofd attach` on `tests/fixtures/python/workload.py`, whose CPU split
//! is known by construction. The targets are started normally: no `-X perf`, no ptrace.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sprofd_tests::*;

/// The Debian unstable root with python3.14 and 3.15 (tests/deps.sh builds it).
const SID_ROOT: &str = "/srv/sid";

/// One interpreter to test, and how to run the workload with it.
#[derive(Clone)]
struct Interp {
    label: &'static str,
    /// The command before the script: the interpreter, or `chroot ROOT pythonX.Y`.
    argv: Vec<String>,
    /// The workload's path as the interpreter sees it.
    script: String,
}

impl Interp {
    /// The full command line: interpreter, script, `args`.
    fn cmd(&self, args: &[&str]) -> Vec<String> {
        let mut v = self.argv.clone();
        v.push(self.script.clone());
        v.extend(args.iter().map(|a| a.to_string()));
        v
    }

    /// Starts the workload with `args` (the pid is the interpreter's: chroot execs it).
    fn spawn(&self, args: &[&str]) -> Target {
        let cmd = self.cmd(args);
        Target::spawn(Path::new(&cmd[0]), &cmd[1..])
    }
}

/// The interpreters to test. A missing one skips (fails under `SPROFD_REQUIRE_LIVE=1`).
/// 3.14 and 3.15 run in the sid root, a container-like target whose files are reachable only
/// through `/proc/PID/root`; the workload is copied in.
fn interpreters(test: &str) -> Vec<Interp> {
    let root = std::process::Command::new("pyenv")
        .arg("root")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("{}/.pyenv", std::env::var("HOME").unwrap_or_default()));
    let pyenv = |v: &str| {
        format!(
            "{root}/versions/{v}/bin/python{}",
            &v[..v.rfind('.').unwrap()]
        )
    };
    let mut candidates: Vec<(&'static str, PathBuf, Vec<String>)> = [
        ("3.8", "3.8.18"),
        ("3.9", "3.9.18"),
        ("3.10", "3.10.13"),
        ("3.11", "3.11.7"),
        ("3.12", "3.12.1"),
        ("3.13", "3.13.0"),
    ]
    .into_iter()
    .map(|(label, v)| (label, PathBuf::from(pyenv(v)), vec![pyenv(v)]))
    .collect();
    candidates.push((
        "debian-3.11",
        PathBuf::from("/usr/bin/python3.11"),
        vec!["/usr/bin/python3.11".into()],
    ));
    for (label, v) in [("sid-3.14", "3.14"), ("sid-3.15", "3.15")] {
        let argv = vec!["chroot".into(), SID_ROOT.into(), format!("python{v}")];
        candidates.push((
            label,
            PathBuf::from(format!("{SID_ROOT}/usr/bin/python{v}")),
            argv,
        ));
    }
    let mut found = Vec::new();
    for (label, path, argv) in candidates {
        if !path.is_file() {
            if std::env::var("SPROFD_REQUIRE_LIVE").as_deref() == Ok("1") {
                panic!(
                    "{test}: interpreter {} missing (SPROFD_REQUIRE_LIVE=1)",
                    path.display()
                );
            }
            eprintln!("SKIP {test} on {label}: {} missing", path.display());
            continue;
        }
        let script = if label.starts_with("sid-") {
            sid_script()
        } else {
            script()
        };
        found.push(Interp {
            label,
            argv,
            script,
        });
    }
    found
}

/// Debian's interpreters are stripped: only `.dynsym` names their C functions.
fn stripped(label: &str) -> bool {
    label.starts_with("debian") || label.starts_with("sid")
}

fn script() -> String {
    fixtures_dir()
        .join("python/workload.py")
        .display()
        .to_string()
}

/// The workload copied into the sid root; its path inside the root.
fn sid_script() -> String {
    let inside = "/tmp/sprofd-tests/workload.py";
    let host = format!("{SID_ROOT}{inside}");
    std::fs::create_dir_all(Path::new(&host).parent().unwrap()).unwrap();
    let tmp = format!("{host}.{}", std::process::id());
    std::fs::copy(script(), &tmp).unwrap();
    std::fs::rename(&tmp, &host).unwrap();
    inside.into()
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

#[live_test]
fn python_split_shares_and_chains_on_every_interpreter() {
    let _serial = serial();
    for py in interpreters("python_split") {
        let label = py.label;
        let p = record_profile(
            &format!("py-split-{label}"),
            &["-o", "out.txt"],
            &py.cmd(&["split", "1.5"]),
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

#[live_test]
fn python_attach_sees_threads_started_later() {
    let _serial = serial();
    for py in interpreters("python_attach_threads") {
        let label = py.label;
        let target = py.spawn(&["threads", "3"]);
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

#[live_test]
fn python_calls_into_c_show_native_frames_under_the_caller() {
    let _serial = serial();
    for py in interpreters("python_native") {
        let label = py.label;
        let p = record_profile(
            &format!("py-native-{label}"),
            &[],
            &py.cmd(&["native", "1.5"]),
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
            }) || (stripped(label) && py_chain(f, &["sort_loop", "key_fn"]))
        });
        assert!(
            key >= 10,
            "{label}: key_fn under sort_loop {key}{}",
            p.context()
        );
        // The C function that sorts stays visible below the innermost Python frame.
        if stripped(label) {
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

#[live_test]
fn python_mixed_and_native_views() {
    let _serial = serial();
    let found = interpreters("python_views");
    let Some(py) = found
        .iter()
        .find(|p| p.label == "3.11")
        .or(found.first())
        .cloned()
    else {
        return;
    };
    let label = py.label;
    let args = py.cmd(&["split", "1"]);
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

#[live_test]
fn python_unicode_names_generators_and_coroutines() {
    let _serial = serial();
    for py in interpreters("python_unicode") {
        let label = py.label;
        let p = record_profile(
            &format!("py-unicode-{label}"),
            &[],
            &py.cmd(&["unicode", "1.5"]),
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

#[live_test]
fn python_target_exiting_mid_profile_keeps_its_profile() {
    let _serial = serial();
    let Some(py) = interpreters("python_exit").into_iter().last() else {
        return;
    };
    let label = py.label;
    let target = py.spawn(&["split", "1"]);
    let p = attach_profile(&format!("py-exit-{label}"), target.pid, &["-d", "10"]);
    assert!(
        p.out.stderr.contains("exited"),
        "sprofd should report the exit{}",
        p.context()
    );
    let hot = count_py(&p, |f| py_chain(f, &["work", "hot_a"]));
    assert!(hot >= 200, "{label}: {hot}{}", p.context());
}

#[live_test]
fn python_subprocesses_get_their_own_detection() {
    let _serial = serial();
    let Some(py) = interpreters("python_subprocess")
        .into_iter()
        .find(|p| p.label == "3.12")
    else {
        return;
    };
    let label = py.label;
    // A Python parent that only waits, and a Python child doing the work.
    let parent = format!(
        "import subprocess, sys; subprocess.run([sys.executable, {:?}, 'split', '1.5'], check=True)",
        script()
    );
    let p = record_profile(
        &format!("py-subprocess-{label}"),
        &[],
        &[py.argv[0].clone(), "-c".into(), parent],
    );
    let child = count_py(&p, |f| py_chain(f, &["<module>", "main", "work", "hot_a"]));
    assert!(
        child >= 300,
        "{label}: child Python frames {child}{}",
        p.context()
    );
}

/// The footer's per-thread GIL lines: `(thread, holding, waiting, not needed)` in percent.
fn gil_lines(footer: &str) -> Vec<(u32, f64, f64, f64)> {
    footer
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("python: GIL, pid ")?;
            let tid = rest
                .split(" thread ")
                .nth(1)?
                .split(':')
                .next()?
                .parse()
                .ok()?;
            let pct = |key: &str| -> Option<f64> {
                rest.split(key)
                    .nth(1)?
                    .split('%')
                    .next()?
                    .trim()
                    .parse()
                    .ok()
            };
            Some((tid, pct("holding ")?, pct("waiting ")?, pct("not needed ")?))
        })
        .collect()
}

#[live_test]
fn python_gil_mode_and_per_thread_gil_shares() {
    let _serial = serial();
    for py in interpreters("python_gil") {
        let label = py.label;
        if ["3.8", "3.9", "3.10"].contains(&label) {
            continue; // no GIL holder in the supported layouts before 3.11
        }
        // Wall mode: both threads' time, running or not; the footer says what each did with
        // the GIL. The hashing thread waits for it after each buffer (the other thread gives
        // it up only every switch interval, 5 ms) and hashes without it.
        let wall = record_profile(
            &format!("py-gil-wall-{label}"),
            &["--mode", "wall", "-o", "out.txt"],
            &py.cmd(&["gil", "1.5"]),
        );
        let footer = std::fs::read_to_string(wall.file("out.txt")).unwrap();
        let mut lines = gil_lines(&footer);
        lines.sort_by(|a, b| b.1.total_cmp(&a.1));
        assert!(lines.len() >= 2, "{label}: GIL lines {footer}");
        let (py_thread, hash_thread) = (lines[0], lines[1]);
        assert!(
            py_thread.1 >= 60.0,
            "{label}: pure-Python thread {py_thread:?}\n{footer}"
        );
        assert!(
            hash_thread.2 >= 10.0 && hash_thread.3 >= 30.0 && hash_thread.1 <= 40.0,
            "{label}: hashing thread {hash_thread:?}\n{footer}"
        );
        let hash_all = count_py(&wall, |f| f.iter().any(|x| py_is(x, "hash_spin")));
        assert!(
            hash_all >= 100,
            "{label}: hash_spin {hash_all}{}",
            wall.context()
        );
        // GIL mode: only samples holding the GIL, so the hashing thread nearly vanishes.
        let gil = record_profile(
            &format!("py-gil-{label}"),
            &["--mode", "gil", "-o", "out.txt"],
            &py.cmd(&["gil", "1.5"]),
        );
        let hash = count_py(&gil, |f| f.iter().any(|x| py_is(x, "hash_spin")));
        let spin = count_py(&gil, |f| f.iter().any(|x| py_is(x, "py_spin")));
        assert!(spin >= 300, "{label}: py_spin {spin}{}", gil.context());
        let share = hash as f64 / (hash + spin) as f64;
        assert!(
            share < 0.2,
            "{label}: GIL-holding share of the hashing thread {share:.3} ({hash} of {}){}",
            hash + spin,
            gil.context()
        );
        let text = std::fs::read_to_string(gil.file("out.txt")).unwrap();
        assert!(text.contains("--mode gil: "), "{label}: {text}");
    }
}

#[live_test]
fn python_gc_frames_under_the_triggering_python_frame() {
    let _serial = serial();
    for py in interpreters("python_gc") {
        let label = py.label;
        if ["3.8", "3.9", "3.10"].contains(&label) {
            continue;
        }
        let p = record_profile(
            &format!("py-gc-{label}"),
            &["-o", "out.txt"],
            &py.cmd(&["gc", "1.5"]),
        );
        let total = count_py(&p, |f| f.iter().any(|x| py_is(x, "collect_cycles")));
        let gc = p.folded.count_where(|f| f.iter().any(|x| x == "[gc]"));
        let under = count_py(&p, |f| {
            f.windows(2)
                .any(|w| py_is(&w[0], "collect_cycles") && w[1] == "[gc]")
        });
        assert!(
            gc * 10 >= total && total >= 300,
            "{label}: {gc} [gc] samples of {total}{}",
            p.context()
        );
        assert!(
            under * 10 >= gc * 9,
            "{label}: {under} of {gc} [gc] frames under collect_cycles{}",
            p.context()
        );
        let text = std::fs::read_to_string(p.file("out.txt")).unwrap();
        assert!(
            text.contains("during a garbage collection"),
            "{label}: {text}"
        );
    }
}

/// `attach --subprocesses`: multiprocessing pools (fork, spawn, forkserver) started before
/// the attach (existing descendants) and after it (followed as they fork), each worker with
/// its own Python frames. The workers run all the Python work; the parent only waits.
#[live_test]
fn python_attach_subprocesses_sees_pool_workers() {
    let _serial = serial();
    let found = interpreters("python_pool");
    let picks = ["3.12", "sid-3.15"];
    for py in found.iter().filter(|p| picks.contains(&p.label)) {
        let label = py.label;
        for mode in [
            "pool-fork-early",
            "pool-spawn-early",
            "pool-fork-late",
            "pool-spawn-late",
        ] {
            let mut target = py.spawn(&[mode, "3.5"]);
            let p = attach_profile(
                &format!("py-{mode}-{label}"),
                target.pid,
                &["-d", "2.5", "--subprocesses"],
            );
            // Let the pool finish: killing the parent would break its workers' result pipes.
            target.wait_exit(Duration::from_secs(10));
            let workers = count_py(&p, |f| py_chain(f, &["pool_task", "burn"]));
            // Two workers busy for most of 2.5 s on 2 CPUs at 99 Hz: ~400 samples.
            assert!(
                workers >= 200,
                "{label} {mode}: {workers} worker samples with Python frames{}",
                p.context()
            );
        }
    }
}

/// CPython 3.15's own sampling profiler (Tachyon) and sprofd attached to the same 3.15 process
/// at the same rate agree on the function and line shares. Tachyon needs the target's `/proc`
/// inside the root, so the target runs in its own mount namespace and Tachyon joins it.
#[live_test]
fn python_315_agrees_with_tachyon() {
    let _serial = serial();
    let Some(py) = interpreters("python_tachyon")
        .into_iter()
        .find(|p| p.label == "sid-3.15")
    else {
        return;
    };
    let inner = format!(
        "mount -t proc proc {SID_ROOT}/proc && exec chroot {SID_ROOT} python3.15 {} split 4",
        py.script
    );
    let target = Target::spawn(Path::new("unshare"), &["-m", "sh", "-c", &inner]);
    let pid = target.pid.to_string();
    let out_inside = format!("/tmp/sprofd-tests/tachyon-{pid}.folded");
    let tachyon = {
        let (pid, out_inside) = (pid.clone(), out_inside.clone());
        std::thread::spawn(move || {
            run_ok(
                Command::new("nsenter")
                    .args(["-t", &pid, "-m", "chroot", SID_ROOT])
                    .args([
                        "python3.15",
                        "-m",
                        "profiling.sampling",
                        "attach",
                        "-d",
                        "2",
                        "-r",
                        "999",
                        "--mode",
                        "cpu",
                        "--collapsed",
                        "-o",
                        &out_inside,
                        &pid,
                    ]),
            )
        })
    };
    let p = attach_profile("py-tachyon-sid-3.15", target.pid, &["-d", "2", "-F", "999"]);
    tachyon.join().unwrap();
    let host = format!("{SID_ROOT}{out_inside}");
    let text = std::fs::read_to_string(&host).unwrap();
    let _ = std::fs::remove_file(&host);
    // Tachyon's frames read `file.py:function:line`, root first after a `tid:N` frame.
    let theirs = Folded::parse(&text).unwrap();
    let t_is = |f: &str, name: &str| f.split(':').nth(1) == Some(name);
    let t_line = |f: &str| f.rsplit(':').next().and_then(|l| l.parse::<u32>().ok());
    let t_work = theirs.count_where(|f| f.iter().any(|x| t_is(x, "work")));
    let t_a = theirs.count_where(|f| f.iter().any(|x| t_is(x, "hot_a")));
    let ours_work = count_py(&p, |f| f.iter().any(|x| py_is(x, "work")));
    let ours_a = count_py(&p, |f| f.iter().any(|x| py_is(x, "hot_a")));
    assert!(
        t_work >= 1000 && ours_work >= 1000,
        "tachyon {t_work}, sprofd {ours_work}{}",
        p.context()
    );
    let (t_share, o_share) = (t_a as f64 / t_work as f64, ours_a as f64 / ours_work as f64);
    assert!(
        (t_share - o_share).abs() <= 0.05,
        "hot_a: tachyon {t_share:.3} of {t_work}, sprofd {o_share:.3} of {ours_work}{}",
        p.context()
    );
    // The innermost line of burn: the loop header against its body.
    let body = def_line("burn") as u32 + 3;
    let t_body = theirs.count_where(|f| {
        f.last()
            .is_some_and(|x| t_is(x, "burn") && t_line(x) == Some(body))
    });
    let o_body = count_py(&p, |f| {
        f.iter()
            .rev()
            .find(|x| x.contains(".py:"))
            .is_some_and(|x| py_is(x, "burn") && x.ends_with(&format!(":{body})")))
    });
    let (t_body, o_body) = (
        t_body as f64 / t_work as f64,
        o_body as f64 / ours_work as f64,
    );
    eprintln!(
        "tachyon vs sprofd on 3.15: hot_a {t_share:.3} vs {o_share:.3} ({t_work} vs {ours_work} samples), burn line {body} {t_body:.3} vs {o_body:.3}"
    );
    assert!(
        (t_body - o_body).abs() <= 0.06,
        "burn line {body}: tachyon {t_body:.3}, sprofd {o_body:.3}{}\n{text}",
        p.context()
    );
}

/// `--show-from`: stacks start at the outermost frame that matches (a notebook cell, a
/// handler), the process's root frame kept; a bad expression is one line and exit 2.
#[live_test]
fn python_show_from_starts_stacks_at_the_match() {
    let _serial = serial();
    let Some(py) = interpreters("python_show_from")
        .into_iter()
        .find(|p| p.label == "3.12")
    else {
        return;
    };
    let p = record_profile(
        "py-show-from",
        &["--show-from", "^work$"],
        &py.cmd(&["split", "1"]),
    );
    let work = count_py(&p, |f| f.iter().any(|x| py_is(x, "work")));
    let at_root = count_py(&p, |f| f.len() > 1 && py_is(&f[1], "work"));
    assert!(work >= 300, "{work}{}", p.context());
    assert_eq!(
        at_root,
        work,
        "every stack through work starts there{}",
        p.context()
    );
    assert_eq!(
        count_py(&p, |f| f.iter().any(|x| py_is(x, "main"))),
        0,
        "{}",
        p.context()
    );
    let out = run(sprofd().args(["record", "--show-from", "(", "--", "true"]));
    assert_eq!(out.status.code(), Some(2), "{}", out.describe());
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.describe());
}

/// Whether `frames` holds `names` in this order, each an exact frame (`[task alpha]`) or a
/// Python function (`alpha_loop (file.py:N)`), other frames allowed between.
fn in_order_exact(frames: &[String], names: &[&str]) -> bool {
    let mut it = frames.iter();
    names.iter().all(|n| it.any(|f| f == n || py_is(f, n)))
}

/// `--async` (3.14, 3.15): each task's coroutines sit under `[task NAME]`, under the frames
/// where the task awaiting it waits, up to the root task; the CPU split between the tasks is
/// the workload's. Older interpreters say once that they cannot.
#[live_test]
fn python_async_task_stacks() {
    let _serial = serial();
    for py in interpreters("python_async") {
        let label = py.label;
        if !["3.12", "sid-3.14", "sid-3.15"].contains(&label) {
            continue;
        }
        let p = record_profile(
            &format!("py-async-{label}"),
            &["--async", "-o", "out.txt"],
            &py.cmd(&["async", "2"]),
        );
        if label == "3.12" {
            assert!(
                p.out.stderr.contains("--async needs CPython 3.14+"),
                "{label}: {}",
                p.out.stderr
            );
            continue;
        }
        let loops = count_py(&p, |f| {
            f.iter()
                .any(|x| py_is(x, "alpha_loop") || py_is(x, "beta_loop"))
        });
        let chain = |task: &str, func: &str| {
            let names = ["[task root]", "supervisor", task, func];
            count_py(&p, |f| in_order_exact(f, &names))
        };
        let (alpha, beta) = (
            chain("[task alpha]", "alpha_loop"),
            chain("[task beta]", "beta_loop"),
        );
        assert!(
            loops >= 500,
            "{label}: {loops} samples in the loops{}",
            p.context()
        );
        assert!(
            (alpha + beta) as f64 >= 0.9 * loops as f64,
            "{label}: task chains {alpha}+{beta} of {loops}{}",
            p.context()
        );
        let share = alpha as f64 / (alpha + beta) as f64;
        let tol = share_tolerance(0.75, alpha + beta, 0.06);
        assert!(
            (share - 0.75).abs() <= tol,
            "{label}: alpha {share:.3} of {}, expected 0.75 ± {tol:.3}{}",
            alpha + beta,
            p.context()
        );
        let text = std::fs::read_to_string(p.file("out.txt")).unwrap();
        assert!(text.contains("in asyncio tasks"), "{label}: {text}");
    }
}

/// A program that links libpython and never starts it (perf, gdb and vim do) offers an
/// interpreter that is never ready. Looking again every 20 ms for as long as it runs cost the
/// daemon 0.85% of a core for one `perf record` on a busy host; after its first second it is
/// looked at once a second, so 6 s of it are looked at about 55 times, not 300.
#[live_test]
fn an_interpreter_never_started_is_looked_at_less_and_less() {
    let Some(lib) = ["/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        return skip(
            "an_interpreter_never_started_is_looked_at_less_and_less",
            "no libpython3.11.so.1.0 (Debian package libpython3.11, which perf depends on)",
        );
    };
    let exe = c_fixture("linkspy", &["-O1", "-Wl,--no-as-needed", lib]);
    let p = record_profile("linkspy", &["-v"], &[exe.to_str().unwrap(), "6"]);
    let looks: u64 = p
        .out
        .stderr_lines()
        .iter()
        .find_map(|l| {
            l.split("python: ")
                .nth(1)?
                .strip_suffix(" looks at interpreters not initialised (yet)")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no count of looks{}", p.context()));
    assert!(
        (1..=70).contains(&looks),
        "{looks} looks in 6 s{}",
        p.context()
    );
    assert!(p.folded.total() >= 100, "{}", p.context());
}
