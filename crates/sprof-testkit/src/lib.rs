//! Test helpers shared by sprofd's crates, for their tests only (a dev-dependency):
//!
//! * [`FileLoader`]: module bytes read from the mapped path on disk, as the live loader reads
//!   them from the process;
//! * [`record`] and [`Recorded`]: one "sample" a fixture program takes of itself (registers,
//!   stack copy, maps; `fixtures/selfdump.c` and its Rust twin `selfdump.rs`), what a perf
//!   sample with `PERF_SAMPLE_REGS_USER | PERF_SAMPLE_STACK_USER` carries, replayed without
//!   root or perf; [`Recorded::sample`] turns it into a [`Sample`];
//! * [`profile`] and [`stack`]: hand-built [`SymbolizedProfile`]s for the exporters' and
//!   views' tests;
//! * [`not_found_server`]: a loopback HTTP server that has nothing (a debuginfod server
//!   without the file) and keeps what it was asked.
//!
//! The end-to-end helpers (running the binary, fixture processes, the live gate) are
//! `sprofd-tests`'; this crate holds what tests of the library crates share.

use std::path::Path;
use std::process::Command;

use sprof_core::{
    FileBytes, Frame, Mapping, ModuleLoader, Pid, Sample, SampleKind, SampledStack,
    SymbolizedProfile, Tid, UserRegs,
};

/// Reads mapped files from disk (the path the mapping names).
pub struct FileLoader;

impl ModuleLoader for FileLoader {
    fn load(&mut self, _pid: Pid, mapping: &Mapping) -> Option<FileBytes> {
        FileBytes::open(&mapping.path, None).ok()
    }
}

/// What a self-recording fixture saw of itself at one point of its run.
pub struct Recorded {
    pub regs: UserRegs,
    /// The copy of its stack from `regs.sp` up (at most 64 KiB).
    pub stack: Vec<u8>,
    pub maps: Vec<Mapping>,
    /// Holds the fixture's executable, which `maps` names, until the recording is dropped.
    _dir: tempfile::TempDir,
}

/// Builds `fixtures/<fixture>` (`selfdump.c` with `cc`, `selfdump.rs` with `rustc`) with
/// `compiler` and `flags`, and runs it once to record itself.
pub fn record(compiler: &str, fixture: &str, flags: &[&str]) -> Recorded {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(fixture);
    let dir = tempfile::Builder::new()
        .prefix("sprof-testkit-")
        .tempdir()
        .expect("temporary directory");
    let exe = dir.path().join("selfdump");
    let st = Command::new(compiler)
        .args(flags)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("{compiler} runs: {e}"));
    assert!(st.success(), "compiling {fixture} failed");
    let prefix = dir.path().join("sample");
    let st = Command::new(&exe)
        .arg(&prefix)
        .status()
        .expect("fixture runs");
    assert!(st.success(), "{fixture} failed");
    let regs = std::fs::read_to_string(prefix.with_extension("regs")).expect("regs");
    let v: Vec<u64> = regs
        .split_whitespace()
        .map(|x| u64::from_str_radix(x, 16).expect("hex register"))
        .collect();
    let maps = std::fs::read_to_string(prefix.with_extension("maps")).expect("maps");
    Recorded {
        regs: UserRegs {
            ip: v[0],
            sp: v[1],
            bp: v[2],
        },
        stack: std::fs::read(prefix.with_extension("stack")).expect("stack"),
        maps: sprof_core::parse_maps(maps.as_bytes())
            .expect("maps parse")
            .mappings,
        _dir: dir,
    }
}

impl Recorded {
    /// A timer sample (period 1 ms) of thread `tid` of `pid` at `time`, with the recorded
    /// registers and `stack` (the recorded copy, or part of it) as its stack copy.
    pub fn sample<'a>(&self, pid: u32, tid: u32, time: u64, stack: &'a [u8]) -> Sample<'a> {
        Sample {
            kind: SampleKind::Timer,
            pid: Pid(pid),
            tid: Tid(tid),
            time,
            cpu: 0,
            period: 1_000_000,
            ip: self.regs.ip,
            kernel_chain: &[],
            user_chain: &[],
            user_regs: Some(self.regs),
            user_stack: stack,
            user_stack_requested: 65528,
            addr: 0,
        }
    }
}

/// A stack of `frames` (indices into the profile's frames, root first) counted `samples`
/// times with a total `period`, of no particular thread.
pub fn stack(frames: &[u32], samples: u64, period: u64) -> SampledStack {
    SampledStack {
        frames: frames.to_vec(),
        samples,
        period,
        thread: None,
    }
}

/// A profile of `frames` and `(stack, samples)` pairs, each sample weighing
/// `period_per_sample`; everything else default.
pub fn profile(
    frames: Vec<Frame>,
    stacks: &[(&[u32], u64)],
    period_per_sample: u64,
) -> SymbolizedProfile {
    SymbolizedProfile {
        frames,
        stacks: stacks
            .iter()
            .map(|&(f, n)| stack(f, n, n * period_per_sample))
            .collect(),
        ..Default::default()
    }
}

/// A loopback HTTP server that answers 404 to every request and keeps each request line
/// (`GET /buildid/<hex>/debuginfo HTTP/1.1`), so a test can say what was asked. Returns its
/// URL and the lines; the server lives as long as the test process.
pub fn not_found_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = asked.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let Ok(read_half) = conn.try_clone() else {
                return;
            };
            let mut reader = BufReader::new(read_half);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            log.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(line.trim().to_string());
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let _ = conn.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (url, asked)
}
