//! Live tests: real interpreters on this machine, read from outside while parked (checked
//! against the target's own `faulthandler` dump, and the merge rule against gdb's native
//! stacks) or busy (reads must keep succeeding while frames change under the reader).
//!
//! The fixture is `tests/scripts/parked.py`. The tests need root (process_vm_readv and
//! /proc/PID/map_files on another process). Without it they print "skipped: needs root"; with
//! `SPROFD_REQUIRE_LIVE=1` they fail instead, and so does an absent interpreter. Absent gdb
//! only skips the gdb comparison. `--nocapture` shows µs and syscalls per read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sprof_python::{
    detect, merge, CodeTable, Detection, MappedFile, Merged, PyFrame, PythonProcess,
};

fn require_live() -> bool {
    std::env::var("SPROFD_REQUIRE_LIVE").is_ok_and(|v| v == "1")
}

fn skip(why: &str) {
    if require_live() {
        panic!("SPROFD_REQUIRE_LIVE=1 but {why}");
    }
    eprintln!("skipped: {why}");
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn pyenv_root() -> PathBuf {
    if let Ok(r) = std::env::var("PYENV_ROOT") {
        return r.into();
    }
    Command::new("pyenv")
        .arg("root")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .unwrap_or_else(|| "/root/.pyenv".into())
}

/// The interpreter for a test label, or `None` (after `skip`) when the test cannot run.
fn interpreter(label: &str) -> Option<PathBuf> {
    if !is_root() {
        skip("needs root");
        return None;
    }
    let path = match label {
        "debian-3.11" => PathBuf::from("/usr/bin/python3.11"),
        v => pyenv_root().join("versions").join(v).join("bin/python3"),
    };
    if !path.exists() {
        skip(&format!("{} is absent", path.display()));
        return None;
    }
    Some(path)
}

/// The fixture process; killed and reaped on drop so a failing test leaves nothing behind.
struct Target {
    child: Child,
    dir: PathBuf,
    /// The Python process: the child itself, or under `unshare` the child's child.
    pid: u32,
}

impl Target {
    /// Runs the fixture; with `pid_ns`, as pid 1 of a new pid namespace (like a container).
    fn spawn(python: &Path, mode: &str, label: &str, pid_ns: bool) -> Target {
        // Tests run in parallel: every fixture gets its own directory.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sprof-python-live-{label}-{mode}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/parked.py");
        let mut cmd = if pid_ns {
            let mut c = Command::new("unshare");
            c.args(["--pid", "--fork", "--kill-child"]).arg(python);
            c
        } else {
            Command::new(python)
        };
        let child = cmd
            .arg(&script)
            .arg(&dir)
            .arg(mode)
            .spawn()
            .expect("spawn python");
        let mut target = Target {
            pid: child.id(),
            child,
            dir,
        };
        if pid_ns {
            target.pid = target.wait_child();
        }
        target
    }

    /// The first child of the spawned process (unshare's forked python).
    fn wait_child(&self) -> u32 {
        let path = format!("/proc/{0}/task/{0}/children", self.child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok());
            if let Some(pid) = found {
                return pid;
            }
            assert!(Instant::now() < deadline, "unshare never forked");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    fn wait_for(&self, file: &str) -> String {
        let path = self.dir.join(file);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(s) = std::fs::read_to_string(&path) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "fixture never wrote {}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if self.pid != self.child.id() {
            // SAFETY: kill(2) on a pid we spawned (unshare's child); no memory is involved.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Mapping {
    path: String,
    start: u64,
    end: u64,
    offset: u64,
}

/// Executable file-backed mappings and their files' bytes (via map_files, as the engine does).
fn load_files(pid: u32) -> (Vec<Mapping>, HashMap<String, Vec<u8>>) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let mut out = Vec::new();
    let mut bytes = HashMap::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms), Some(off), _, _) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let path: String = f.collect::<Vec<_>>().join(" ");
        if !perms.contains('x') || !path.starts_with('/') {
            continue;
        }
        let (s, e) = range.split_once('-').unwrap();
        let m = Mapping {
            path: path.clone(),
            start: u64::from_str_radix(s, 16).unwrap(),
            end: u64::from_str_radix(e, 16).unwrap(),
            offset: u64::from_str_radix(off, 16).unwrap(),
        };
        if !bytes.contains_key(&path) {
            // map_files names drop the leading zeros that maps prints.
            if let Ok(b) = std::fs::read(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end))
            {
                bytes.insert(path.clone(), b);
            }
        }
        out.push(m);
    }
    (out, bytes)
}

fn detect_python(pid: u32) -> PythonProcess {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (maps, bytes) = load_files(pid);
        let files: Vec<MappedFile<'_>> = maps
            .iter()
            .filter_map(|m| {
                Some(MappedFile {
                    path: &m.path,
                    start: m.start,
                    end: m.end,
                    file_offset: m.offset,
                    bytes: bytes.get(&m.path)?,
                })
            })
            .collect();
        match detect(pid, &files) {
            Detection::Python(p) => return p,
            Detection::NotReady | Detection::NotPython if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => panic!("detect: {other:?}"),
        }
    }
}

type Chain = Vec<(String, u32, String)>;

/// Undoes faulthandler's escaping of non-ASCII (`\xNN`, `\uNNNN`, `\UNNNNNNNN`).
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let n = match chars.next() {
            Some('x') => 2,
            Some('u') => 4,
            Some('U') => 8,
            Some(other) => {
                out.push('\\');
                out.push(other);
                continue;
            }
            None => break,
        };
        let hex: String = chars.by_ref().take(n).collect();
        out.push(
            u32::from_str_radix(&hex, 16)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('?'),
        );
    }
    out
}

/// faulthandler output → pthread ident → chain (innermost first), "Current thread" skipped.
fn parse_oracle(text: &str) -> HashMap<u64, Chain> {
    let mut map = HashMap::new();
    let mut cur: Option<u64> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Thread 0x") {
            let hex = rest.split_whitespace().next().unwrap();
            let id = u64::from_str_radix(hex, 16).unwrap();
            map.insert(id, Vec::new());
            cur = Some(id);
        } else if line.starts_with("Current thread") {
            cur = None;
        } else if let (Some(id), Some(rest)) = (cur, line.trim_start().strip_prefix("File \"")) {
            let (file, rest) = rest.split_once("\", line ").unwrap();
            let (lineno, name) = rest.split_once(" in ").unwrap();
            let lineno = lineno.parse().unwrap_or(0); // "???" = unknown
            map.get_mut(&id)
                .unwrap()
                .push((unescape(file), lineno, unescape(name)));
        }
    }
    map
}

fn chain_of(frames: &[PyFrame], codes: &CodeTable) -> Chain {
    frames
        .iter()
        .map(|f| {
            let c = codes.get(f.code);
            (c.filename.clone(), f.line, c.name.clone())
        })
        .collect()
}

fn task_tids(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The last `NSpid:` field of a task: its tid as its own pid namespace sees it (`None` once
/// the task has exited).
fn ns_tid(pid: u32, tid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
}

fn parked(label: &str, pid_ns: bool) {
    let Some(python) = interpreter(label) else {
        return;
    };
    if pid_ns && Command::new("unshare").arg("--version").output().is_err() {
        skip("unshare is absent");
        return;
    }
    let target = Target::spawn(&python, "parked", label, pid_ns);
    let oracle = parse_oracle(&target.wait_for("oracle.txt"));
    let ids: Vec<(u32, u64)> = target
        .wait_for("threads.txt")
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_once(' ')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect();
    assert_eq!(ids.len(), 4, "fixture threads");
    // The fixture reports tids as its namespace sees them; the reader gets host tids.
    let host_of: HashMap<u32, u32> = task_tids(target.pid())
        .into_iter()
        .filter_map(|t| Some((ns_tid(target.pid(), t)?, t)))
        .collect();
    let ids: Vec<(u32, u64)> = ids
        .into_iter()
        .map(|(ns, ident)| (host_of.get(&ns).copied().unwrap_or(ns), ident))
        .collect();
    if pid_ns {
        assert!(ids
            .iter()
            .any(|&(host, _)| Some(host) != ns_tid(target.pid(), host)));
    }
    let mut py = detect_python(target.pid());
    eprintln!("{label}: detected {:?}", py.version());
    let mut codes = CodeTable::default();
    let mut frames = Vec::new();

    for tid in task_tids(target.pid()) {
        // The reporter thread may be exiting; any answer but an error is fine for it.
        let r = py.read_thread(tid, &mut codes, &mut frames);
        assert!(r.is_ok(), "{label}: tid {tid}: {r:?}");
    }
    for pass in 0..2 {
        let before = py.stats();
        let t0 = Instant::now();
        for &(tid, ident) in &ids {
            let has = py.read_thread(tid, &mut codes, &mut frames).unwrap();
            assert!(has, "{label}: tid {tid} has no thread state");
            let want = oracle
                .get(&ident)
                .unwrap_or_else(|| panic!("no oracle for {ident:#x}"));
            let got = chain_of(&frames, &codes);
            assert_eq!(&got, want, "{label}: tid {tid}");
            assert!(
                frames.last().is_some_and(|f| f.entry),
                "{label}: outermost frame closes a group"
            );
            let entries = frames.iter().filter(|f| f.entry).count();
            eprintln!(
                "{label}: tid {tid}: {} frames, {entries} eval groups",
                frames.len()
            );
        }
        let after = py.stats();
        let n = ids.len() as f64;
        eprintln!(
            "{label}: pass {pass}: {:.1} µs/read, {:.1} syscalls/read, {} code misses",
            t0.elapsed().as_secs_f64() * 1e6 / n,
            (after.syscalls - before.syscalls) as f64 / n,
            after.code_misses - before.code_misses
        );
    }
    // 3.11.7 (pyenv) and 3.13 ship `.symtab`, so the `.cold` clone (where one exists) is known.
    assert!(!py.interpreter_ranges().is_empty());
}

fn busy(label: &str) {
    let Some(python) = interpreter(label) else {
        return;
    };
    let target = Target::spawn(&python, "busy", label, false);
    let tid: u32 = target.wait_for("ready").trim().parse().unwrap();
    let mut py = detect_python(target.pid());
    let mut codes = CodeTable::default();
    let mut frames = Vec::new();
    const READS: u64 = 1000;
    let (mut errors, mut empty) = (0u64, 0u64);
    let mut last_error = None;
    let before = py.stats();
    let t0 = Instant::now();
    for _ in 0..READS {
        match py.read_thread(tid, &mut codes, &mut frames) {
            Ok(true) if !frames.is_empty() => {}
            Ok(_) => empty += 1,
            Err(e) => {
                errors += 1;
                last_error = Some(e);
            }
        }
    }
    let elapsed = t0.elapsed();
    let after = py.stats();
    eprintln!(
        "{label}: busy: {READS} reads, {errors} errors ({last_error:?}), {empty} empty, {:.1} µs/read, {:.1} syscalls/read, {:.1} frames/read, {} retried walks, {} code misses, {} distinct codes",
        elapsed.as_secs_f64() * 1e6 / READS as f64,
        (after.syscalls - before.syscalls) as f64 / READS as f64,
        (after.frames - before.frames) as f64 / READS as f64,
        after.retries - before.retries,
        after.code_misses - before.code_misses,
        codes.len()
    );
    assert!(errors <= READS / 50, "{label}: too many errors: {errors}");
    assert!(
        empty <= READS / 50,
        "{label}: too many empty reads: {empty}"
    );
    let names: Vec<&str> = frames
        .iter()
        .map(|f| codes.get(f.code).name.as_str())
        .collect();
    assert!(names.contains(&"busy"), "{label}: last chain {names:?}");
}

/// One gdb frame: the pc if gdb printed one, and the function name.
type GdbFrame = (Option<u64>, String);

/// gdb's view of every thread: LWP → frames leaf first.
/// gdb stops the target while it unwinds; only this test oracle does that, never the crate.
fn gdb_stacks(pid: u32) -> Option<HashMap<u32, Vec<GdbFrame>>> {
    let out = Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut stacks: HashMap<u32, Vec<GdbFrame>> = HashMap::new();
    let mut cur = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Thread ") {
            cur = rest
                .split("LWP ")
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok());
            if let Some(t) = cur {
                stacks.insert(t, Vec::new());
            }
        } else if let (Some(t), Some(rest)) = (cur, line.strip_prefix('#')) {
            // "#3  0x00007f… in name (args…" or "#0  name (args…"
            let rest = rest.split_once(' ').map_or("", |r| r.1).trim_start();
            let (pc, name) = match rest.strip_prefix("0x") {
                Some(hex) => {
                    let (a, after) = hex.split_once(" in ").unwrap_or((hex, ""));
                    (u64::from_str_radix(a, 16).ok(), after)
                }
                None => (None, rest),
            };
            let name = name.split([' ', '(']).next().unwrap_or("").to_string();
            stacks.get_mut(&t).unwrap().push((pc, name));
        }
    }
    Some(stacks)
}

/// The merge rule against gdb: every thread's native eval frames pair up with its Python
/// groups (cpython-frames.md §7's invariant), and `is_eval_address` agrees with gdb's symbols.
fn merge_vs_gdb(label: &str) {
    let Some(python) = interpreter(label) else {
        return;
    };
    if Command::new("gdb").arg("--version").output().is_err() {
        eprintln!("skipped: gdb is absent");
        return;
    }
    let target = Target::spawn(&python, "parked", label, false);
    target.wait_for("oracle.txt");
    let mut py = detect_python(target.pid());
    let stacks = gdb_stacks(target.pid()).expect("gdb output");
    let mut codes = CodeTable::default();
    let (mut frames, mut out) = (Vec::new(), Vec::new());
    let mut merged_threads = 0;
    for (tid, natives) in &stacks {
        let is_eval_name = |n: &GdbFrame| n.1.starts_with("_PyEval_EvalFrameDefault");
        // gdb prints a pc once per physical frame: on the innermost of its inlined frames, so
        // an eval frame with inlined callees shows its pc on a callee's line.
        let mut last_pc = None;
        let (mut eval_pcs, mut eval_names) = (0, 0);
        for n in natives {
            if let Some(pc) = n.0 {
                last_pc = Some(pc);
                eval_pcs += usize::from(py.is_eval_address(pc));
            }
            if is_eval_name(n) {
                eval_names += 1;
                let pc = last_pc.expect("pc of an eval frame");
                assert!(py.is_eval_address(pc), "{label}: {pc:#x} {}", n.1);
            }
        }
        assert_eq!(
            eval_pcs, eval_names,
            "{label}: tid {tid}: is_eval_address vs gdb"
        );
        if !py.read_thread(*tid, &mut codes, &mut frames).unwrap() {
            continue;
        }
        // `merge` wants Copy frames: merge references to gdb's.
        let refs: Vec<&GdbFrame> = natives.iter().collect();
        let o = merge(&refs, |n| is_eval_name(n), &frames, &mut out);
        assert!(o.consistent, "{label}: tid {tid}: {o:?}");
        let pythons = out
            .iter()
            .filter(|m| matches!(m, Merged::Python(_)))
            .count();
        assert_eq!(pythons, frames.len());
        eprintln!(
            "{label}: tid {tid}: {} eval frames = {} groups",
            o.eval_frames, o.python_groups
        );
        merged_threads += 1;
    }
    assert!(
        merged_threads >= 4,
        "{label}: merged {merged_threads} threads"
    );
}

#[test]
fn merge_vs_gdb_pyenv_3_10_13() {
    merge_vs_gdb("3.10.13");
}

#[test]
fn merge_vs_gdb_pyenv_3_11_7() {
    merge_vs_gdb("3.11.7");
}

#[test]
fn merge_vs_gdb_pyenv_3_12_1() {
    merge_vs_gdb("3.12.1");
}

#[test]
fn merge_vs_gdb_pyenv_3_13_0() {
    merge_vs_gdb("3.13.0");
}

#[test]
fn merge_vs_gdb_debian_3_11() {
    merge_vs_gdb("debian-3.11");
}

#[test]
fn parked_pyenv_3_11_7() {
    parked("3.11.7", false);
}

#[test]
fn parked_pyenv_3_12_1() {
    parked("3.12.1", false);
}

#[test]
fn parked_pyenv_3_13_0() {
    parked("3.13.0", false);
}

#[test]
fn parked_debian_3_11() {
    parked("debian-3.11", false);
}

#[test]
fn parked_pyenv_3_12_1_in_pid_namespace() {
    parked("3.12.1", true);
}

#[test]
fn parked_pyenv_3_13_0_in_pid_namespace() {
    parked("3.13.0", true);
}

#[test]
fn parked_pyenv_3_8_18() {
    parked("3.8.18", false);
}

#[test]
fn parked_pyenv_3_9_18() {
    parked("3.9.18", false);
}

#[test]
fn parked_pyenv_3_10_13() {
    parked("3.10.13", false);
}

#[test]
fn parked_pyenv_3_10_13_in_pid_namespace() {
    parked("3.10.13", true);
}

#[test]
fn busy_pyenv_3_10_13() {
    busy("3.10.13");
}

#[test]
fn busy_pyenv_3_11_7() {
    busy("3.11.7");
}

#[test]
fn busy_pyenv_3_12_1() {
    busy("3.12.1");
}

#[test]
fn busy_pyenv_3_13_0() {
    busy("3.13.0");
}

#[test]
fn busy_debian_3_11() {
    busy("debian-3.11");
}

#[test]
fn older_pythons_are_reported_unsupported() {
    let Some(python) = interpreter("3.7.16") else {
        return;
    };
    let target = Target::spawn(&python, "busy", "3.7.16", false);
    target.wait_for("ready");
    let (maps, bytes) = load_files(target.pid());
    let files: Vec<MappedFile<'_>> = maps
        .iter()
        .filter_map(|m| {
            Some(MappedFile {
                path: &m.path,
                start: m.start,
                end: m.end,
                file_offset: m.offset,
                bytes: bytes.get(&m.path)?,
            })
        })
        .collect();
    match detect(target.pid(), &files) {
        Detection::Unsupported(why) => assert!(why.starts_with("python 3.7"), "{why}"),
        other => panic!("{other:?}"),
    }
}
