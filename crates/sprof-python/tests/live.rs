//! Live tests: real interpreters on this machine, read from outside while parked (checked
//! against the target's own `faulthandler` dump, and the merge rule against gdb's native
//! stacks) or busy (reads must keep succeeding while frames change under the reader).
//!
//! The fixture is `tests/scripts/parked.py`. The tests need root (process_vm_readv and
//! /proc/PID/map_files on another process). Without it they print "skipped: needs root"; with
//! `SPROFD_REQUIRE_LIVE=1` they fail instead, and so does an absent interpreter. Absent gdb
//! only skips the gdb comparison. `--nocapture` shows µs and syscalls per read.
//!
//! `parked_at_*` and `moved_*` exercise `read_thread_at`: a thread blocked in a syscall has
//! its user sp in `/proc/PID/task/TID/syscall`, so copying 16 KiB from there is what a perf
//! sample taken at that moment would hold.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sprof_core::Segments;
use sprof_python::{
    detect, merge, CodeTable, Detection, MappedFile, Merged, PyFrame, PythonProcess, SampleStack,
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
/// Each executable file's bytes and load segments, by path.
type Files = HashMap<String, (Vec<u8>, Segments)>;

fn load_files(pid: u32) -> (Vec<Mapping>, Files) {
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
                let segments = Segments::parse(&b);
                bytes.insert(path.clone(), (b, segments));
            }
        }
        out.push(m);
    }
    (out, bytes)
}

/// The executable mappings `load_files` found, with their files' bytes.
fn mapped_files<'a>(maps: &'a [Mapping], files: &'a Files) -> Vec<MappedFile<'a>> {
    maps.iter()
        .filter_map(|m| {
            let (bytes, segments) = files.get(&m.path)?;
            Some(MappedFile {
                path: &m.path,
                start: m.start,
                end: m.end,
                file_offset: m.offset,
                executable: true,
                bytes,
                segments,
            })
        })
        .collect()
}

fn detect_python(pid: u32) -> PythonProcess {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (maps, bytes) = load_files(pid);
        let files = mapped_files(&maps, &bytes);
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
    let (mut errors, mut empty, mut whole) = (0u64, 0u64, 0u64);
    let mut last_error = None;
    let before = py.stats();
    let t0 = Instant::now();
    for _ in 0..READS {
        match py.read_thread(tid, &mut codes, &mut frames) {
            Ok(true) if !frames.is_empty() => {
                // A chain that reaches the thread's `busy` frame; on 3.10 and older a walk
                // torn by the running thread cannot be told from a whole one, so this is
                // counted rather than asserted per read.
                whole += u64::from(frames.iter().any(|f| codes.get(f.code).name == "busy"));
            }
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
    // Before 3.11 a generator's frame is a heap object whose f_back is cleared each time it
    // is suspended, so a walk that starts in the busy generator while it yields stops there
    // (measured: ~79 % of 3.10 chains whole in this loop, against all of them on 3.11+).
    let old = label.starts_with("3.8") || label.starts_with("3.9") || label.starts_with("3.10");
    let need = if old { READS / 2 } else { READS * 9 / 10 };
    assert!(
        whole >= need,
        "{label}: only {whole} of {READS} chains reach busy (last: {names:?})"
    );
}

/// A thread blocked in a syscall: its number, arguments and user sp, from
/// `/proc/PID/task/TID/syscall` ("nr a0 … a5 sp pc"; root sees the values). `None` while it
/// runs.
fn blocked_in(pid: u32, tid: u32) -> Option<(u64, [u64; 6], u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    let f: Vec<u64> = text
        .split_whitespace()
        .map(|w| {
            w.strip_prefix("0x")
                .map_or_else(|| w.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
        })
        .collect::<Option<_>>()?;
    if f.len() != 9 {
        return None;
    }
    Some((f[0], [f[1], f[2], f[3], f[4], f[5], f[6]], f[7]))
}

/// Up to `len` bytes of the target's memory from `addr`, page by page (process_vm_readv does
/// not split an iovec), stopping where the mapping ends: what perf copies with a sample.
fn copy_remote(pid: u32, addr: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut local = Vec::new();
    let mut remote = Vec::new();
    let (mut at, end) = (addr, addr + len as u64);
    while at < end {
        let next = ((at & !4095) + 4096).min(end);
        let n = (next - at) as usize;
        let off = (at - addr) as usize;
        local.push(libc::iovec {
            iov_base: out[off..].as_mut_ptr().cast(),
            iov_len: n,
        });
        remote.push(libc::iovec {
            iov_base: at as usize as *mut libc::c_void,
            iov_len: n,
        });
        at = next;
    }
    // SAFETY: every local iovec covers a distinct part of `out`, which outlives the call;
    // the remote addresses are only read by the kernel.
    let got = unsafe {
        libc::process_vm_readv(
            pid as libc::pid_t,
            local.as_ptr(),
            local.len() as libc::c_ulong,
            remote.as_ptr(),
            remote.len() as libc::c_ulong,
            0,
        )
    };
    out.truncate(got.max(0) as usize);
    out
}

/// Versions whose reads `read_thread_at` anchors to the stack copy.
fn anchors(py: &PythonProcess) -> bool {
    matches!(py.version(), (3, 11 | 12, _))
}

const STACK_COPY: usize = 16 * 1024;

/// Every parked thread read with a stack copy taken where it blocks: the chain must equal
/// faulthandler's, anchored on 3.11/3.12, fallen back elsewhere; a copy that holds no cframe
/// (zeros) must fall back and still be right.
fn parked_at(label: &str) {
    let Some(python) = interpreter(label) else {
        return;
    };
    let target = Target::spawn(&python, "parked", label, false);
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
    let pid = target.pid();
    let mut py = detect_python(pid);
    let anchored = anchors(&py);
    let mut codes = CodeTable::default();
    let mut frames = Vec::new();
    for pass in 0..2 {
        let (mut micros, mut syscalls) = (0.0, 0);
        for &(tid, ident) in &ids {
            let (nr, _, sp) = blocked_in(pid, tid).expect("a parked thread is in a syscall");
            let stack = copy_remote(pid, sp, STACK_COPY);
            assert!(
                stack.len() >= 4096,
                "{label}: tid {tid}: copied {}",
                stack.len()
            );
            let want = oracle
                .get(&ident)
                .unwrap_or_else(|| panic!("no oracle for {ident:#x}"));
            let before = py.stats();
            let t0 = Instant::now();
            let at = SampleStack { sp, bytes: &stack };
            assert!(py.read_thread_at(tid, at, &mut codes, &mut frames).unwrap());
            micros += t0.elapsed().as_secs_f64() * 1e6;
            let after = py.stats();
            syscalls += after.syscalls - before.syscalls;
            assert_eq!(&chain_of(&frames, &codes), want, "{label}: tid {tid}");
            let d = (
                after.anchored - before.anchored,
                after.anchor_moved - before.anchor_moved,
                after.unanchored - before.unanchored,
            );
            let expect = if anchored { (1, 0, 0) } else { (0, 0, 1) };
            assert_eq!(
                d, expect,
                "{label}: tid {tid}: (anchored, moved, unanchored)"
            );
            if pass == 0 {
                eprintln!(
                    "{label}: tid {tid}: syscall {nr}, sp {sp:#x}, {} bytes copied, {} frames, anchored {}",
                    stack.len(),
                    frames.len(),
                    d.0 == 1
                );
            }

            // The same sp with a copy that holds no cframe: a fallback, still right.
            let zeros = vec![0u8; stack.len()];
            let before = py.stats();
            let at = SampleStack { sp, bytes: &zeros };
            assert!(py.read_thread_at(tid, at, &mut codes, &mut frames).unwrap());
            assert_eq!(
                &chain_of(&frames, &codes),
                want,
                "{label}: tid {tid}: zeros"
            );
            assert_eq!(py.stats().unanchored - before.unanchored, 1);
        }
        eprintln!(
            "{label}: read_thread_at pass {pass}: {:.1} µs/read, {:.1} syscalls/read",
            micros / ids.len() as f64,
            syscalls as f64 / ids.len() as f64
        );
    }
}

/// Waits until `tid` blocks in openat(2) on `path` (the argument read from the target).
fn wait_open(pid: u32, tid: u32, path: &Path) -> u64 {
    const OPENAT: u64 = 257;
    let want = path.as_os_str().as_encoded_bytes();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((OPENAT, args, sp)) = blocked_in(pid, tid) {
            let name = copy_remote(pid, args[1], want.len() + 1);
            if name.len() == want.len() + 1 && &name[..want.len()] == want && name[want.len()] == 0
            {
                return sp;
            }
        }
        assert!(
            Instant::now() < deadline,
            "tid {tid} never blocked opening {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Frames without the lines of the frames at `skip` (read at read time, so they moved).
fn shape_but(chain: &Chain, skip: &[usize]) -> Vec<(String, Option<u32>, String)> {
    chain
        .iter()
        .enumerate()
        .map(|(i, (f, l, n))| (f.clone(), (!skip.contains(&i)).then_some(*l), n.clone()))
        .collect()
}

/// Frames without the innermost frame's line.
fn shape(chain: &Chain) -> Vec<(String, Option<u32>, String)> {
    shape_but(chain, &[0])
}

/// A stack copy taken while a thread parks in chain 1, used after it moved to chain 2.
///
/// "deeper": chain 1's frames stay live and the thread goes deeper through a new eval
/// activation: on 3.11/3.12 the read must be anchored and give chain 1 (the innermost frame's
/// line is read-time, so it is not compared). "sideways": chain 1 returned and chain 2 was
/// pushed where it was, over part of it (frame memory reuse). The anchored frame is popped
/// then: trusted only if it lies above the data stack's top and its walk rejoins the live
/// chain at the innermost frame right under the top, so the result must be chain 1
/// (anchored) or chain 2 (a counted fallback), never a mix; here side_other (smaller than
/// side1, whose address it took) leaves side2's popped frame off the top, so in practice it
/// falls back. Without the exact-top check the walk returned side3, side2, side_other,
/// sideways (seen on 3.12.1): a chain that never existed. "returned": the inner frames of
/// chain 1 were popped and nothing was pushed over them, the thread parks in their caller:
/// anchored, chain 1 (the popped innermost frame's line and the caller's are not compared).
/// "activation": the key function's eval activation returned: the anchored read lacks it
/// (one group short of the native stack at the sample), and `recover_returned(.., 1, ..)`,
/// which the hook calls when the merge says one eval frame is unpaired, must find it in the
/// copy and give chain 1. Elsewhere: fallbacks giving chain 2.
fn moved(label: &str) {
    let Some(python) = interpreter(label) else {
        return;
    };
    let target = Target::spawn(&python, "moved", label, false);
    let tids: HashMap<String, u32> = target
        .wait_for("moved.txt")
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_once(' ')?;
            Some((a.to_string(), b.parse().ok()?))
        })
        .collect();
    let pid = target.pid();
    let mut py = detect_python(pid);
    let anchored = anchors(&py);
    let mut codes = CodeTable::default();
    let mut frames = Vec::new();
    for name in ["deeper", "sideways", "returned", "activation"] {
        let tid = tids[name];
        let first = target.dir.join(format!("{name}1"));
        let sp = wait_open(pid, tid, &first);
        let stack = copy_remote(pid, sp, STACK_COPY);
        assert!(py.read_thread(tid, &mut codes, &mut frames).unwrap());
        let old = chain_of(&frames, &codes);
        let at = SampleStack { sp, bytes: &stack };
        assert!(py.read_thread_at(tid, at, &mut codes, &mut frames).unwrap());
        assert_eq!(
            chain_of(&frames, &codes),
            old,
            "{label}: {name}: before moving"
        );

        // Let it move on: opening the FIFO for writing completes its open().
        drop(
            std::fs::OpenOptions::new()
                .write(true)
                .open(&first)
                .unwrap(),
        );
        wait_open(pid, tid, &target.dir.join(format!("{name}2")));
        assert!(py.read_thread(tid, &mut codes, &mut frames).unwrap());
        let new = chain_of(&frames, &codes);
        assert_ne!(shape(&old), shape(&new));

        let before = py.stats();
        assert!(py.read_thread_at(tid, at, &mut codes, &mut frames).unwrap());
        let after = py.stats();
        let got = chain_of(&frames, &codes);
        let d = (
            after.anchored - before.anchored,
            after.anchor_moved - before.anchor_moved,
            after.unanchored - before.unanchored,
        );
        let inner = |c: &Chain| c.first().map(|f| f.2.clone()).unwrap_or_default();
        eprintln!(
            "{label}: {name}: old copy after moving: (anchored, moved, unanchored) = {d:?}, {} frames, innermost {} (chain 1 innermost {}, chain 2 innermost {})",
            got.len(),
            inner(&got),
            inner(&old),
            inner(&new)
        );
        match (anchored, name) {
            (true, "deeper") => {
                assert_eq!(d, (1, 1, 0), "{label}: {name}");
                assert_eq!(shape(&got), shape(&old), "{label}: {name}");
            }
            (true, "returned") => {
                assert_eq!(d, (1, 1, 0), "{label}: {name}");
                assert_eq!(shape_but(&got, &[0, 2]), shape_but(&old, &[0, 2]));
            }
            (true, "activation") => {
                // Anchored on the caller, which has not moved since the sample (it was
                // blocked in sorted()); the key function's group is missing.
                assert_eq!(d, (1, 0, 0), "{label}: {name}");
                let groups = |f: &[PyFrame]| f.iter().filter(|f| f.entry).count();
                assert_eq!(shape(&got), shape(&old[1..].to_vec()), "{label}: {name}");
                let before = py.stats();
                assert!(
                    py.recover_returned(tid, at, 1, &mut codes, &mut frames),
                    "{label}: {name}: recover_returned"
                );
                assert_eq!(py.stats().recovered - before.recovered, 1);
                let got = chain_of(&frames, &codes);
                eprintln!(
                    "{label}: {name}: recovered {} frames, {} groups, innermost {}",
                    got.len(),
                    groups(&frames),
                    inner(&got)
                );
                assert_eq!(shape_but(&got, &[0, 1]), shape_but(&old, &[0, 1]));
                // And nothing is recovered when nothing is missing in the copy.
                assert!(!py.recover_returned(tid, at, 2, &mut codes, &mut frames));
            }
            (true, _) if d == (1, 1, 0) => {
                assert_eq!(shape(&got), shape(&old), "{label}: {name}");
            }
            _ => {
                assert_eq!(d, (0, 0, 1), "{label}: {name}");
                assert_eq!(got, new, "{label}: {name}");
            }
        }
    }
}

#[test]
fn parked_at_pyenv_3_8_18() {
    parked_at("3.8.18");
}

#[test]
fn parked_at_pyenv_3_10_13() {
    parked_at("3.10.13");
}

#[test]
fn parked_at_pyenv_3_11_7() {
    parked_at("3.11.7");
}

#[test]
fn parked_at_pyenv_3_12_1() {
    parked_at("3.12.1");
}

#[test]
fn parked_at_pyenv_3_13_0() {
    parked_at("3.13.0");
}

#[test]
fn parked_at_debian_3_11() {
    parked_at("debian-3.11");
}

#[test]
fn moved_pyenv_3_10_13() {
    moved("3.10.13");
}

#[test]
fn moved_pyenv_3_11_7() {
    moved("3.11.7");
}

#[test]
fn moved_pyenv_3_12_1() {
    moved("3.12.1");
}

#[test]
fn moved_pyenv_3_13_0() {
    moved("3.13.0");
}

#[test]
fn moved_debian_3_11() {
    moved("debian-3.11");
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
    let files = mapped_files(&maps, &bytes);
    match detect(target.pid(), &files) {
        Detection::Unsupported(why) => assert!(why.starts_with("python 3.7"), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// `py-spy dump` output → native tid → (qualname, file base name, line), innermost first.
fn parse_pyspy(text: &str) -> HashMap<u32, Vec<(String, String, u32)>> {
    let mut out: HashMap<u32, Vec<(String, String, u32)>> = HashMap::new();
    let mut current = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Thread ") {
            current = rest
                .split_whitespace()
                .next()
                .and_then(|t| t.parse::<u32>().ok());
            if let Some(t) = current {
                out.entry(t).or_default();
            }
        } else if let (Some(t), Some(frame)) = (current, line.strip_prefix("    ")) {
            // `qualname (file.py:line)`
            let Some((name, loc)) = frame.rsplit_once(" (") else {
                continue;
            };
            let loc = loc.trim_end_matches(')');
            let Some((file, l)) = loc.rsplit_once(':') else {
                continue;
            };
            let base = file.rsplit('/').next().unwrap_or(file).to_string();
            out.entry(t)
                .or_default()
                .push((name.to_string(), base, l.parse().unwrap_or(0)));
        }
    }
    out
}

/// The parked fixture's threads read by sprof-python agree with `py-spy dump` (an oracle
/// nobody here wrote; it pauses the target to read, which is fine for a parked one).
fn against_pyspy(label: &str) {
    let Some(python) = interpreter(label) else {
        return;
    };
    let have = Command::new("py-spy")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        skip("py-spy is absent (pip install py-spy)");
        return;
    }
    let target = Target::spawn(&python, "parked", label, false);
    target.wait_for("threads.txt");
    let pid = target.pid();
    let dump = Command::new("py-spy")
        .args(["dump", "--pid", &pid.to_string()])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{label}: py-spy dump: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let oracle = parse_pyspy(&String::from_utf8_lossy(&dump.stdout));
    let mut py = detect_python(pid);
    let mut codes = CodeTable::default();
    let mut frames = Vec::new();
    let mut compared = 0;
    for (tid, want) in &oracle {
        if want.is_empty()
            || !py
                .read_thread(*tid, &mut codes, &mut frames)
                .unwrap_or(false)
        {
            continue;
        }
        let got: Vec<(String, String, u32)> = frames
            .iter()
            .map(|f| {
                let c = codes.get(f.code);
                let base = c
                    .filename
                    .rsplit('/')
                    .next()
                    .unwrap_or(&c.filename)
                    .to_string();
                (c.qualname.clone(), base, f.line)
            })
            .collect();
        // The reporter thread may have moved on; the parked ones must match exactly.
        if got.iter().any(|(n, _, _)| n == "reporter") {
            continue;
        }
        assert_eq!(&got, want, "{label}: tid {tid}");
        compared += 1;
    }
    assert!(
        compared >= 3,
        "{label}: only {compared} threads compared with py-spy"
    );
}

#[test]
fn pyspy_agrees_pyenv_3_11_7() {
    against_pyspy("3.11.7");
}

#[test]
fn pyspy_agrees_pyenv_3_12_1() {
    against_pyspy("3.12.1");
}
