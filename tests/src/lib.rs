//! Helpers for the end-to-end tests of the `sprofd` binary.
//!
//! * locating and running the binary ([`sprofd`], [`run`], [`run_ok`],
//!   [`Running`]) with timeouts and full diagnostics on failure;
//! * the [`live`] gate for tests that need perf sampling;
//! * building the C and Rust fixtures of `tests/fixtures/` at test time
//!   ([`c_fixture`], [`c_shared_fixture`], [`c_shared_lld_fixture`], [`rust_fixture`]);
//! * a [`Target`] guard for fixture processes;
//! * parsers for the folded ([`Folded`]), table ([`Table`]) and SVG
//!   ([`svg_titles`]) outputs.

pub mod daemon;
pub mod fuzz;
pub mod hostile;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Sampling frequency used by the tests.
pub const FREQ: &str = "999";

/// Default timeout for one sprofd run.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Compiler flags of the frame-pointer fixtures.
pub const FP: &[&str] = &["-O2", "-g", "-fno-omit-frame-pointer"];

/// Compiler flags of the fixtures without frame pointers (DWARF unwinding).
pub const NO_FP: &[&str] = &["-O2", "-g", "-fomit-frame-pointer", "-DSPROF_OMIT_FP"];

// ---------------------------------------------------------------------------
// Locations
// ---------------------------------------------------------------------------

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent directory")
        .to_path_buf()
}

/// `tests/fixtures/`.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Path of the sprofd binary: `$SPROFD_BIN`, else
/// `<workspace>/target/release/sprofd`. Panics with a clear message if it is
/// missing.
pub fn sprofd_bin() -> PathBuf {
    let path = match std::env::var_os("SPROFD_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root().join("target/release/sprofd"),
    };
    if !path.is_file() {
        panic!(
            "sprofd binary not found at {}: build it with `cargo build --release -p sprofd` \
             or point SPROFD_BIN at it",
            path.display()
        );
    }
    path
}

/// A `Command` for the sprofd binary.
pub fn sprofd() -> Command {
    let mut cmd = Command::new(sprofd_bin());
    // why: a login shell on Debian sets DEBUGINFOD_URLS (libdebuginfod-common); tests that
    // want a debuginfod server set their own.
    cmd.env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LOG")
        .env_remove("DEBUGINFOD_URLS");
    cmd
}

// ---------------------------------------------------------------------------
// Temp dirs
// ---------------------------------------------------------------------------

/// A temporary directory under `std::env::temp_dir()`, removed on drop
/// (kept when `SPROFD_KEEP_TMP=1`).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("sprofd-test-{}-{}-{}", name, std::process::id(), n));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("SPROFD_KEEP_TMP").is_none() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------
// Running sprofd
// ---------------------------------------------------------------------------

/// The result of one finished run.
pub struct RunOutput {
    pub cmdline: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl RunOutput {
    /// Everything about the run, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "\n\nCOMMAND: {}\nSTATUS: {}\nELAPSED: {:.2?}\n\nSTDOUT:\n{}\n\nSTDERR:\n{}\n",
            self.cmdline, self.status, self.elapsed, self.stdout, self.stderr
        )
    }

    /// Non-empty stderr lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

fn cmdline(cmd: &Command) -> String {
    let mut s = String::new();
    if let Some(dir) = cmd.get_current_dir() {
        let _ = write!(s, "(cd {}) ", dir.display());
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// A spawned process with its output collected in the background.
pub struct Running {
    child: Option<Child>,
    cmdline: String,
    start: Instant,
    stdout: Option<std::thread::JoinHandle<String>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

fn collect<R: Read + Send + 'static>(r: Option<R>) -> Option<std::thread::JoinHandle<String>> {
    r.map(|mut r| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    })
}

impl Running {
    /// Spawns `cmd` with stdin from /dev/null and stdout/stderr captured.
    pub fn spawn(cmd: &mut Command) -> Running {
        let line = cmdline(cmd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {line}: {e}"));
        let stdout = collect(child.stdout.take());
        let stderr = collect(child.stderr.take());
        Running {
            child: Some(child),
            cmdline: line,
            start: Instant::now(),
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("child").id() as i32
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        let r = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(r, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// Waits for the process to end; after `timeout` it is killed and the
    /// test panics with everything it printed.
    pub fn wait(mut self, timeout: Duration) -> RunOutput {
        let mut child = self.child.take().expect("child");
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait().expect("try_wait") {
                Some(st) => break st,
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let st = child.wait().expect("wait");
                    let out = self.finish(st);
                    panic!("timed out after {timeout:?}{}", out.describe());
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        self.finish(status)
    }

    fn finish(&mut self, status: ExitStatus) -> RunOutput {
        let elapsed = self.start.elapsed();
        let stdout = self
            .stdout
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        RunOutput {
            cmdline: self.cmdline.clone(),
            status,
            stdout,
            stderr,
            elapsed,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `cmd` to completion (at most `timeout`).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> RunOutput {
    Running::spawn(cmd).wait(timeout)
}

/// Runs `cmd` to completion (at most [`TIMEOUT`]).
pub fn run(cmd: &mut Command) -> RunOutput {
    run_with_timeout(cmd, TIMEOUT)
}

/// Runs `cmd` and asserts it exits 0 with no panic text.
pub fn run_ok(cmd: &mut Command) -> RunOutput {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "sprofd failed (expected exit 0){}",
        out.describe()
    );
    assert_no_panic(&out);
    out
}

/// Asserts that the output carries no Rust panic/backtrace text.
pub fn assert_no_panic(out: &RunOutput) {
    for needle in ["panicked at", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(
            !out.stderr.contains(needle) && !out.stdout.contains(needle),
            "output contains {needle:?}{}",
            out.describe()
        );
    }
}

/// Asserts a clean error: non-zero exit (not killed by a signal, not the
/// panic exit code 101), no panic text, and a non-empty stderr that is
/// either exactly one line or has a line starting with `sprofd:`/`error:`.
pub fn assert_clean_error(out: &RunOutput) {
    assert!(
        !out.status.success(),
        "expected a non-zero exit{}",
        out.describe()
    );
    assert!(
        out.status.signal().is_none(),
        "sprofd was killed by a signal instead of exiting with an error{}",
        out.describe()
    );
    assert_ne!(
        out.status.code(),
        Some(101),
        "exit code 101 is Rust's panic exit code{}",
        out.describe()
    );
    assert_no_panic(out);
    let lines = out.stderr_lines();
    assert!(!lines.is_empty(), "stderr is empty{}", out.describe());
    let prefixed = lines.iter().any(|l| {
        let l = l.trim_start().to_ascii_lowercase();
        l.starts_with("sprofd:") || l.starts_with("error:")
    });
    assert!(
        lines.len() == 1 || prefixed,
        "expected one stderr line or a line starting with `sprofd:`/`error:`, got {} lines{}",
        lines.len(),
        out.describe()
    );
}

// ---------------------------------------------------------------------------
// Live gate
// ---------------------------------------------------------------------------

/// The effective uid of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() }
}

fn paranoid() -> Option<i32> {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Opens a cpu-clock counter on this thread, to probe whether perf works.
fn probe_cpu_clock(exclude_kernel: bool) -> Result<(), String> {
    // struct perf_event_attr, PERF_ATTR_SIZE_VER5 = 112 bytes; zeroed u64s.
    let mut attr = [0u64; 16];
    // type = PERF_TYPE_SOFTWARE (1), size = 112
    attr[0] = 1 | (112u64 << 32);
    // config = PERF_COUNT_SW_CPU_CLOCK (0)
    attr[1] = 0;
    // flags at offset 40 (index 5): disabled(bit 0), exclude_kernel(bit 5), exclude_hv(bit 6)
    attr[5] = 1 | if exclude_kernel { 1 << 5 } else { 0 } | (1 << 6);
    // SAFETY: attr is a valid, zero-initialised perf_event_attr of the
    // declared size that outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            0 as libc::pid_t,
            -1 as libc::c_int,
            -1 as libc::c_int,
            0 as libc::c_ulong,
        )
    };
    if fd < 0 {
        return Err(format!(
            "perf_event_open(cpu-clock) failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd was just returned by perf_event_open and is owned here.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

fn live_reason(kernel: bool) -> Option<String> {
    let uid = euid();
    let par = paranoid();
    if uid != 0 {
        match par {
            Some(p) if p <= 2 && !kernel => {}
            Some(p) if p <= 1 => {}
            Some(p) => {
                return Some(format!(
                    "not root (euid {uid}) and perf_event_paranoid is {p}"
                ))
            }
            None => return Some("cannot read /proc/sys/kernel/perf_event_paranoid".into()),
        }
    }
    probe_cpu_clock(!kernel).err()
}

fn gate(test: &str, kernel: bool) -> bool {
    match live_reason(kernel) {
        None => true,
        Some(reason) => {
            if std::env::var("SPROFD_REQUIRE_LIVE").as_deref() == Ok("1") {
                panic!("{test}: live perf sampling required (SPROFD_REQUIRE_LIVE=1) but {reason}");
            }
            eprintln!("SKIP {test}: {reason}");
            false
        }
    }
}

/// Serializes the tests of one test binary that run CPU-bound targets and assert on shares:
/// two at once on a two-core machine starve each other's targets. Hold the guard for the
/// test's duration.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether perf sampling of our own processes works here. If not, panics
/// when `SPROFD_REQUIRE_LIVE=1`, else prints `SKIP <test>: <reason>` and
/// returns false (the test then returns early).
pub fn live(test: &str) -> bool {
    gate(test, false)
}

/// Like [`live`], for tests that also need kernel samples (`--kernel`).
pub fn live_kernel(test: &str) -> bool {
    gate(test, true)
}

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

fn build_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = std::env::temp_dir();
        // Remove fixture dirs left behind by earlier test processes.
        if let Ok(rd) = std::fs::read_dir(&base) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("sprofd-fixtures-") {
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let root = base.join(format!("sprofd-fixtures-{}", std::process::id()));
        std::fs::create_dir_all(&root).expect("create fixture build dir");
        root
    })
}

type BuildKey = (String, Vec<String>);

fn build_cache() -> &'static Mutex<HashMap<BuildKey, PathBuf>> {
    static CACHE: OnceLock<Mutex<HashMap<BuildKey, PathBuf>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn build_cached(key: BuildKey, build: impl FnOnce(&Path) -> PathBuf) -> PathBuf {
    // Builds are serialised by the lock; each happens once per process.
    let mut cache = build_cache().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = cache.get(&key) {
        return p.clone();
    }
    let dir = build_root().join(format!("{}-{}", key.0, cache.len()));
    std::fs::create_dir_all(&dir).expect("create fixture dir");
    let path = build(&dir);
    cache.insert(key, path.clone());
    path
}

fn run_build(cmd: &mut Command) {
    let line = cmdline(cmd);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {line}: {e}"));
    assert!(
        out.status.success(),
        "fixture build failed: {line}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compiles `tests/fixtures/<name>.c` with `cc <flags>` (cached per process)
/// and returns the executable, named `<name>` (so its comm is `<name>`).
pub fn c_fixture(name: &str, flags: &[&str]) -> PathBuf {
    let key = (
        format!("{name}.c"),
        flags.iter().map(|s| s.to_string()).collect(),
    );
    build_cached(key, |dir| {
        let out = dir.join(name);
        let src = fixtures_dir().join(format!("{name}.c"));
        run_build(
            Command::new("cc")
                .args(flags)
                .arg("-o")
                .arg(&out)
                .arg(&src)
                .args(["-lpthread", "-ldl"]),
        );
        out
    })
}

/// Compiles `tests/fixtures/<name>.c` into `lib<name>.so` (cached).
pub fn c_shared_fixture(name: &str, flags: &[&str]) -> PathBuf {
    let key = (
        format!("lib{name}.so"),
        flags.iter().map(|s| s.to_string()).collect(),
    );
    build_cached(key, |dir| {
        let out = dir.join(format!("lib{name}.so"));
        let src = fixtures_dir().join(format!("{name}.c"));
        run_build(
            Command::new("cc")
                .args(flags)
                .args(["-shared", "-fPIC", "-o"])
                .arg(&out)
                .arg(&src),
        );
        out
    })
}

/// Compiles `tests/fixtures/<name>.c` into `lib<name>.so` linked with lld (cached): the
/// system's `ld.lld` when installed, else the `rust-lld` every rustup toolchain ships,
/// through its `gcc-ld/ld.lld` wrapper (as rustc itself links).
pub fn c_shared_lld_fixture(name: &str, flags: &[&str]) -> PathBuf {
    let mut all: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    all.extend(lld_flags());
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    c_shared_fixture(name, &all)
}

/// The `cc` flags that link with lld.
fn lld_flags() -> Vec<String> {
    let on_path = Command::new("ld.lld")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        return vec!["-fuse-ld=lld".into()];
    }
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .args(["--print", "target-libdir"])
        .output()
        .expect("rustc runs");
    let libdir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    // <sysroot>/lib/rustlib/<host>/lib -> <sysroot>/lib/rustlib/<host>/bin/gcc-ld
    let gcc_ld = libdir.with_file_name("bin").join("gcc-ld");
    assert!(
        gcc_ld.join("ld.lld").exists(),
        "no ld.lld on PATH and no {} (tests/deps.sh installs the Rust toolchain)",
        gcc_ld.display()
    );
    vec![format!("-B{}", gcc_ld.display()), "-fuse-ld=lld".into()]
}

/// Loads the shared library `lib` into this process (for good: it is never closed) and
/// returns the address the loader gave its symbol `symbol`.
pub fn dlopen_symbol(lib: &Path, symbol: &str) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(lib.as_os_str().as_bytes()).expect("path without NUL");
    let name = std::ffi::CString::new(symbol).expect("symbol without NUL");
    // SAFETY: both strings are NUL-terminated and outlive the calls; the library is a test
    // fixture whose constructors (none) are safe to run; the handle is never closed, so the
    // address stays valid for the process's life.
    let addr = unsafe {
        let handle = libc::dlopen(path.as_ptr(), libc::RTLD_NOW);
        assert!(!handle.is_null(), "dlopen {} failed", lib.display());
        libc::dlsym(handle, name.as_ptr())
    };
    assert!(!addr.is_null(), "{symbol} not in {}", lib.display());
    addr as u64
}

/// Compiles `tests/fixtures/rust_fixture.rs` with `rustc -O -g` (cached).
pub fn rust_fixture() -> PathBuf {
    let key = ("rust_fixture.rs".to_string(), vec![]);
    build_cached(key, |dir| {
        let out = dir.join("rust_fixture");
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        run_build(
            Command::new(rustc)
                .args(["-O", "-g", "-C", "force-frame-pointers=yes", "-o"])
                .arg(&out)
                .arg(fixtures_dir().join("rust_fixture.rs")),
        );
        out
    })
}

/// Line numbers (1-based) of the definition of `func` in a fixture source:
/// `(definition line, closing brace line)`. The definition is the first line
/// containing `func(` followed by `{` on the same line.
pub fn fixture_fn_lines(file: &str, func: &str) -> (u32, u32) {
    let src = std::fs::read_to_string(fixtures_dir().join(file)).expect("read fixture source");
    let lines: Vec<&str> = src.lines().collect();
    let pat = format!(" {func}(");
    let start = lines
        .iter()
        .position(|l| l.contains(&pat) && l.trim_end().ends_with('{'))
        .unwrap_or_else(|| panic!("{func} not defined in {file}"));
    let end = (start..lines.len())
        .find(|&i| lines[i].starts_with('}') || (i == start && lines[i].trim_end().ends_with('}')))
        .unwrap_or(start);
    (start as u32 + 1, end as u32 + 1)
}

// ---------------------------------------------------------------------------
// Target processes
// ---------------------------------------------------------------------------

/// A fixture process; killed (SIGKILL) and reaped on drop.
pub struct Target {
    child: Child,
    pub pid: u32,
}

impl Target {
    /// Spawns `path args…` and waits (at most 10 s) until it prints "ready".
    pub fn spawn<S: AsRef<OsStr>>(path: &Path, args: &[S]) -> Target {
        Target::spawn_in(None, path, args)
    }

    /// [`Target::spawn`] in the directory `cwd`, for targets that leave files behind (node's
    /// `isolate-*-v8.log`).
    pub fn spawn_in<S: AsRef<OsStr>>(cwd: Option<&Path>, path: &Path, args: &[S]) -> Target {
        let mut cmd = Command::new(path);
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn fixture {}: {e}", path.display()));
        let pid = child.id();
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the fixture never blocks on a full pipe.
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink);
        });
        let target = Target { child, pid };
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line.trim() == "ready" => target,
            Ok(line) => panic!(
                "fixture {} printed {line:?} instead of \"ready\"",
                path.display()
            ),
            Err(_) => panic!("fixture {} did not print \"ready\"", path.display()),
        }
    }

    /// Waits up to `timeout` for the process to exit on its own (dropping kills it).
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn pid_arg(&self) -> String {
        self.pid.to_string()
    }

    /// Whether the process still exists and is not a zombie/stopped.
    pub fn is_running(&mut self) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return false;
        }
        proc_state(self.pid).is_some_and(|s| !matches!(s, 'Z' | 'X' | 'T' | 't'))
    }

    /// utime + stime of the whole process, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        proc_cpu_seconds(self.pid).expect("read /proc/<pid>/stat")
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.rfind(')')?;
    Some(
        stat[close + 1..]
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    )
}

/// The state letter of /proc/<pid>/stat.
pub fn proc_state(pid: u32) -> Option<char> {
    proc_stat_fields(pid)?.first()?.chars().next()
}

/// utime + stime of a process, in seconds.
pub fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let f = proc_stat_fields(pid)?;
    // fields after the comm: state is index 0, utime 11, stime 12
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

// ---------------------------------------------------------------------------
// Folded stacks
// ---------------------------------------------------------------------------

/// Whether folded frame `frame` is the function `name`: equal, or equal up to
/// the `_[i]` (inlined) or `_[k]` (kernel) suffix.
pub fn frame_is(frame: &str, name: &str) -> bool {
    frame == name
        || frame
            .strip_suffix("_[i]")
            .or_else(|| frame.strip_suffix("_[k]"))
            .is_some_and(|f| f == name)
}

/// Parsed collapsed stacks: `comm;frame;…;leaf COUNT` per line.
#[derive(Debug, Clone)]
pub struct Folded {
    pub text: String,
    pub stacks: Vec<(Vec<String>, u64)>,
}

impl Folded {
    /// Parses folded text, rejecting malformed lines.
    pub fn parse(text: &str) -> Result<Folded, String> {
        let mut stacks = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.is_empty() {
                return Err(format!("line {}: empty line", i + 1));
            }
            let (stack, count) = line
                .rsplit_once(' ')
                .ok_or_else(|| format!("line {}: no count: {line:?}", i + 1))?;
            let count: u64 = count
                .parse()
                .map_err(|_| format!("line {}: bad count: {line:?}", i + 1))?;
            if count == 0 {
                return Err(format!("line {}: zero count: {line:?}", i + 1));
            }
            let frames: Vec<String> = stack.split(';').map(str::to_string).collect();
            if frames.iter().any(|f| f.is_empty()) {
                return Err(format!("line {}: empty frame: {line:?}", i + 1));
            }
            stacks.push((frames, count));
        }
        Ok(Folded {
            text: text.to_string(),
            stacks,
        })
    }

    /// Reads and parses a folded file (panics with the content if invalid).
    pub fn read(path: &Path) -> Folded {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        Folded::parse(&text).unwrap_or_else(|e| {
            panic!(
                "{} is not valid folded output: {e}\n{}",
                path.display(),
                excerpt(&text)
            )
        })
    }

    /// Total sample count.
    pub fn total(&self) -> u64 {
        self.stacks.iter().map(|(_, c)| c).sum()
    }

    /// Samples whose stack satisfies `pred`.
    pub fn count_where(&self, pred: impl Fn(&[String]) -> bool) -> u64 {
        self.stacks
            .iter()
            .filter(|(f, _)| pred(f))
            .map(|(_, c)| c)
            .sum()
    }

    /// Samples whose stack contains the function `name`.
    pub fn count_containing(&self, name: &str) -> u64 {
        self.count_where(|f| f.iter().any(|x| frame_is(x, name)))
    }

    /// Share of all samples whose stack contains the function `name`.
    pub fn share_containing(&self, name: &str) -> f64 {
        let t = self.total();
        if t == 0 {
            0.0
        } else {
            self.count_containing(name) as f64 / t as f64
        }
    }

    /// Samples whose leaf (last frame) is `name`.
    pub fn count_leaf(&self, name: &str) -> u64 {
        self.count_where(|f| f.last().is_some_and(|l| frame_is(l, name)))
    }

    /// Short excerpt of the text for messages.
    pub fn excerpt(&self) -> String {
        excerpt(&self.text)
    }
}

/// Bracketed frames other than the two the format defines (`[unknown]` for
/// an unresolved address, `[truncated]` for a stack end that could not be
/// unwound), e.g. `[no unwind info]`; kernel/inline suffixes are ignored.
pub fn nonstandard_frames(folded: &Folded) -> Vec<String> {
    let mut bad: Vec<String> = folded
        .stacks
        .iter()
        .flat_map(|(f, _)| f.iter())
        .filter(|x| {
            let base = x
                .strip_suffix("_[k]")
                .or_else(|| x.strip_suffix("_[i]"))
                .unwrap_or(x);
            base.starts_with('[') && base != "[unknown]" && base != "[truncated]"
        })
        .cloned()
        .collect();
    bad.sort();
    bad.dedup();
    bad
}

/// Whether `chain` occurs in `frames` as consecutive frames, in order.
pub fn has_chain(frames: &[String], chain: &[&str]) -> bool {
    if chain.is_empty() {
        return true;
    }
    frames
        .windows(chain.len())
        .any(|w| w.iter().zip(chain).all(|(f, c)| frame_is(f, c)))
}

/// Whether `names` occur in `frames` in this order (not necessarily
/// adjacent).
pub fn has_in_order(frames: &[String], names: &[&str]) -> bool {
    let mut it = frames.iter();
    names.iter().all(|n| it.any(|f| frame_is(f, n)))
}

/// The first lines (and line count) of a long text.
pub fn excerpt(text: &str) -> String {
    let n = text.lines().count();
    let head: Vec<&str> = text.lines().take(40).collect();
    format!(
        "--- {n} lines ---\n{}{}",
        head.join("\n"),
        if n > 40 { "\n…" } else { "" }
    )
}

/// Tolerance for comparing an observed share with an expected share `p` at
/// `n` samples: 4 standard errors of a binomial, at least `floor`.
pub fn share_tolerance(p: f64, n: u64, floor: f64) -> f64 {
    let n = n.max(1) as f64;
    (4.0 * (p * (1.0 - p) / n).sqrt()).max(floor)
}

// ---------------------------------------------------------------------------
// statprof table
// ---------------------------------------------------------------------------

/// Header line 1 of the statprof table.
pub const TABLE_HEADER_1: &str = "  %   cumulative      self          ";
/// Header line 2 of the statprof table.
pub const TABLE_HEADER_2: &str = " time    seconds   seconds  name    ";

#[derive(Debug, Clone)]
pub struct TableRow {
    pub percent: f64,
    pub cumulative: f64,
    pub self_secs: f64,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub rows: Vec<TableRow>,
    pub sample_count: u64,
    pub total_time: f64,
    pub lost: Option<(u64, f64)>,
}

fn parse_fixed(field: &str, width: usize, what: &str, line: &str) -> Result<f64, String> {
    let v: f64 = field
        .trim()
        .parse()
        .map_err(|_| format!("bad {what} field {field:?} in row {line:?}"))?;
    if format!("{v:width$.2}") != field {
        return Err(format!(
            "{what} field {field:?} is not %{width}.2f in row {line:?}"
        ));
    }
    Ok(v)
}

/// Parses one row `%6.2f %9.2f %9.2f  name`.
pub fn parse_row(line: &str) -> Result<TableRow, String> {
    if line.len() < 29 || !line.is_char_boundary(28) {
        return Err(format!("row too short: {line:?}"));
    }
    let b = line.as_bytes();
    if b[6] != b' ' || b[16] != b' ' || &line[26..28] != "  " {
        return Err(format!("row is not `%6.2f %9.2f %9.2f  name`: {line:?}"));
    }
    let percent = parse_fixed(&line[0..6], 6, "%", line)?;
    let cumulative = parse_fixed(&line[7..16], 9, "cumulative", line)?;
    let self_secs = parse_fixed(&line[17..26], 9, "self", line)?;
    let name = line[28..].to_string();
    if name.trim().is_empty() || name != name.trim() {
        return Err(format!("bad name in row {line:?}"));
    }
    Ok(TableRow {
        percent,
        cumulative,
        self_secs,
        name,
    })
}

impl Table {
    /// Finds and parses the table in `text` (which may hold other lines
    /// before the table, e.g. the path of a written file).
    pub fn parse(text: &str) -> Result<Table, String> {
        let lines: Vec<&str> = text.lines().collect();
        let h = lines
            .iter()
            .position(|l| *l == TABLE_HEADER_1)
            .ok_or_else(|| format!("header line {TABLE_HEADER_1:?} not found (exactly)"))?;
        if lines.get(h + 1) != Some(&TABLE_HEADER_2) {
            return Err(format!(
                "second header line is {:?}, expected {TABLE_HEADER_2:?}",
                lines.get(h + 1)
            ));
        }
        let mut i = h + 2;
        let mut rows = Vec::new();
        while i < lines.len() && lines[i] != "---" {
            rows.push(parse_row(lines[i])?);
            i += 1;
        }
        if i >= lines.len() {
            return Err("footer `---` not found".into());
        }
        i += 1;
        let sample_count = lines
            .get(i)
            .and_then(|l| l.strip_prefix("Sample count: "))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("expected `Sample count: N`, got {:?}", lines.get(i)))?;
        i += 1;
        let total_time = lines
            .get(i)
            .and_then(|l| l.strip_prefix("Total time: "))
            .and_then(|l| l.strip_suffix(" seconds"))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("expected `Total time: X seconds`, got {:?}", lines.get(i)))?;
        i += 1;
        let mut lost = None;
        if let Some(l) = lines.get(i) {
            if let Some((n, rest)) = l.split_once(" samples lost (") {
                if let (Ok(n), Some(pct)) = (
                    n.parse::<u64>(),
                    rest.strip_suffix("%)").and_then(|p| p.parse::<f64>().ok()),
                ) {
                    lost = Some((n, pct));
                }
            }
        }
        Ok(Table {
            rows,
            sample_count,
            total_time,
            lost,
        })
    }

    pub fn row(&self, name: &str) -> Option<&TableRow> {
        self.rows.iter().find(|r| r.name == name)
    }
}

// ---------------------------------------------------------------------------
// SVG
// ---------------------------------------------------------------------------

/// Checks that `text` is well-formed XML with a single `<svg>` root and
/// returns the text of every `<title>` element.
pub fn svg_titles(text: &str) -> Result<Vec<String>, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut titles = Vec::new();
    let mut depth = 0usize;
    let mut roots = Vec::new();
    let mut in_title: Option<String> = None;
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| format!("XML error at byte {}: {e}", reader.buffer_position()))?;
        match ev {
            Event::Start(e) => {
                if depth == 0 {
                    roots.push(String::from_utf8_lossy(e.name().as_ref()).into_owned());
                }
                depth += 1;
                if e.name().as_ref() == b"title" {
                    in_title = Some(String::new());
                }
            }
            Event::Empty(e) if depth == 0 => {
                roots.push(String::from_utf8_lossy(e.name().as_ref()).into_owned());
            }
            Event::End(e) => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| "unbalanced end tag".to_string())?;
                if e.name().as_ref() == b"title" {
                    if let Some(t) = in_title.take() {
                        titles.push(t);
                    }
                }
            }
            Event::Text(t) => {
                let s = t.unescape().map_err(|e| format!("bad text: {e}"))?;
                if let Some(cur) = in_title.as_mut() {
                    cur.push_str(&s);
                } else if depth == 0 && !s.trim().is_empty() {
                    return Err(format!("text outside the root element: {s:?}"));
                }
            }
            Event::CData(t) => {
                if let Some(cur) = in_title.as_mut() {
                    cur.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("document ends with {depth} unclosed element(s)"));
    }
    if roots != ["svg"] {
        return Err(format!("expected a single <svg> root, got {roots:?}"));
    }
    Ok(titles)
}

/// Whether some title names the frame `name` (title text starting with the
/// frame name, optionally suffixed with `_[i]`/`_[k]`, then a space or end).
pub fn titles_have_frame(titles: &[String], name: &str) -> bool {
    titles.iter().any(|t| {
        let t = t.trim();
        [
            name.to_string(),
            format!("{name}_[i]"),
            format!("{name}_[k]"),
        ]
        .iter()
        .any(|n| {
            t.strip_prefix(n.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
        })
    })
}

// ---------------------------------------------------------------------------
// Profiling runs
// ---------------------------------------------------------------------------

/// One finished profiling run and its folded output.
pub struct Profile {
    pub out: RunOutput,
    pub folded: Folded,
    pub dir: TempDir,
}

impl Profile {
    /// Path of a file in the run's output dir.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Context for assertion messages: the run and the folded excerpt.
    pub fn context(&self) -> String {
        format!(
            "{}\nFOLDED:\n{}",
            self.out.describe(),
            self.folded.excerpt()
        )
    }
}

/// `-F 999` unless `extra` sets the frequency itself.
fn default_freq(extra: &[&str]) -> Vec<&'static str> {
    if extra
        .iter()
        .any(|a| *a == "-F" || a.starts_with("--frequency"))
    {
        vec![]
    } else {
        vec!["-F", FREQ]
    }
}

/// `sprofd attach <pid> -F 999 -q -o <dir>/out.folded <extra…>`; asserts
/// exit 0 and parses the folded output.
pub fn attach_profile(test: &str, pid: u32, extra: &[&str]) -> Profile {
    let dir = TempDir::new(test);
    let folded_path = dir.join("out.folded");
    let out = run_ok(
        sprofd()
            .arg("attach")
            .arg(pid.to_string())
            .args(default_freq(extra))
            .args(["-q", "-o"])
            .arg(&folded_path)
            .args(extra)
            .current_dir(dir.path()),
    );
    let folded = Folded::read(&folded_path);
    Profile { out, folded, dir }
}

/// `sprofd record -F 999 -q -o <dir>/out.folded <extra…> -- <cmd…>`;
/// asserts exit 0 and parses the folded output.
pub fn record_profile<S: AsRef<OsStr>>(test: &str, extra: &[&str], cmd: &[S]) -> Profile {
    let dir = TempDir::new(test);
    let folded_path = dir.join("out.folded");
    let out = run_ok(
        sprofd()
            .arg("record")
            .args(default_freq(extra))
            .args(["-q", "-o"])
            .arg(&folded_path)
            .args(extra)
            .arg("--")
            .args(cmd)
            .current_dir(dir.path()),
    );
    let folded = Folded::read(&folded_path);
    Profile { out, folded, dir }
}

/// Among the samples whose leaf is `leaf`, the number whose stack satisfies
/// `pred`, and the number of such samples.
pub fn leaf_ratio(folded: &Folded, leaf: &str, pred: impl Fn(&[String]) -> bool) -> (u64, u64) {
    let is_leaf = |f: &[String]| f.last().is_some_and(|l| frame_is(l, leaf));
    let total = folded.count_where(is_leaf);
    let ok = folded.count_where(|f| is_leaf(f) && pred(f));
    (ok, total)
}

/// `[start, end)` of symbol `sym` in `exe`, from `nm -S` (None if nm is
/// missing or the symbol is absent).
pub fn nm_symbol_range(exe: &Path, sym: &str) -> Option<(u64, u64)> {
    let out = Command::new("nm").arg("-S").arg(exe).output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() == 4 && f[3] == sym {
            let start = u64::from_str_radix(f[0], 16).ok()?;
            let size = u64::from_str_radix(f[1], 16).ok()?;
            Some((start, start + size))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_parse_and_queries() {
        let f = Folded::parse(
            "cratio;main;a1;a2;a3_hot 30\ncratio;main;b1;b2;b3_cold 10\nt;worker-a;x;inl_[i] 5\n",
        )
        .unwrap();
        assert_eq!(f.total(), 45);
        assert_eq!(f.count_containing("a3_hot"), 30);
        assert_eq!(f.count_containing("inl"), 5);
        assert_eq!(f.count_leaf("b3_cold"), 10);
        assert!(has_chain(&f.stacks[0].0, &["main", "a1", "a2", "a3_hot"]));
        assert!(!has_chain(&f.stacks[0].0, &["main", "a2"]));
        assert!(has_in_order(&f.stacks[0].0, &["main", "a2"]));
        assert!(!has_in_order(&f.stacks[0].0, &["a2", "main"]));
        assert!(Folded::parse("a;b\n").is_err());
        assert!(Folded::parse("a;;b 3\n").is_err());
        assert!(Folded::parse("a;b 0\n").is_err());
        assert!(frame_is("schedule_[k]", "schedule"));
        assert!(!frame_is("a3_hotter", "a3_hot"));
    }

    #[test]
    fn table_parse() {
        let text = format!(
            "written sprofd-x.svg\n{TABLE_HEADER_1}\n{TABLE_HEADER_2}\n 75.00      1.12      1.12  a3_hot (cratio.c:5)\n 25.00      0.38      0.38  b3_cold (cratio.c:13)\n---\nSample count: 1500\nTotal time: 1.50 seconds\n3 samples lost (0.20%)\n"
        );
        let t = Table::parse(&text).unwrap();
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[0].name, "a3_hot (cratio.c:5)");
        assert_eq!(t.sample_count, 1500);
        assert_eq!(t.lost, Some((3, 0.2)));
        assert!(parse_row("75.00 1.12 1.12 a3_hot").is_err());
        assert!(Table::parse(&text.replace("  name    ", "  name")).is_err());
    }

    #[test]
    fn svg_checks() {
        let ok = "<?xml version=\"1.0\"?><svg><g><title>a3_hot (3 samples, 75%)</title><rect/></g><title>x_[i] (1 samples)</title></svg>";
        let t = svg_titles(ok).unwrap();
        assert!(titles_have_frame(&t, "a3_hot"));
        assert!(titles_have_frame(&t, "x"));
        assert!(!titles_have_frame(&t, "a3"));
        assert!(svg_titles("<svg><g></svg>").is_err());
        assert!(svg_titles("<svg><g>").is_err());
        assert!(svg_titles("<html></html>").is_err());
    }

    #[test]
    fn tolerance() {
        assert!((share_tolerance(0.75, 1_000_000, 0.03) - 0.03).abs() < 1e-12);
        let t = share_tolerance(0.75, 100, 0.03);
        assert!((t - 4.0 * (0.75f64 * 0.25 / 100.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn fn_lines() {
        let (s, e) = fixture_fn_lines("cratio.c", "a3_hot");
        assert!(s < e);
        let src = std::fs::read_to_string(fixtures_dir().join("cratio.c")).unwrap();
        assert!(src.lines().nth(s as usize - 1).unwrap().contains("a3_hot("));
    }
}
