//! One Python process: discovery ([`detect`]) and the per-thread stack reader
//! ([`PythonProcess::read_thread`], and [`PythonProcess::read_thread_at`] /
//! [`PythonProcess::recover_returned`] for reads anchored to a sample's stack copy).
//!
//! Owns the per-process state that makes a read cheap: the tid → thread-state map (validated on
//! every use, rebuilt on a miss), the code-object cache (keyed by address and a checksum of
//! immutable fields, so a freed and reused address is noticed), and scratch buffers.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::time::{Duration, Instant};

use crate::elf::{self, ElfInfo};
mod asyncio;
pub use asyncio::{AsyncOffsets, TaskStack};

use crate::layout::{
    EntryMark, FrameRoot, GilAt, Instr, Layout, LineFormat, DEBUG_OFFSETS_LEN, OWNER_CSTACK,
    OWNER_GENERATOR, PTHREAD_TID,
};
use crate::mem::{check_range, Mem};
use crate::{linetable, strings, CodeId, CodeTable, Detection, MappedFile, PyError, PyFrame};

/// Frames per thread, threads per interpreter, interpreters per process (§9 caps).
const MAX_FRAMES: usize = 4096;
const MAX_THREADS: usize = 4096;
const MAX_INTERPRETERS: usize = 64;
/// Largest `co_linetable` we fetch (py-spy's bytes cap); beyond it lines are unknown.
const MAX_LINETABLE: u64 = 64 * 1024;
/// Code objects cached per process before the cache is dropped and refilled.
const MAX_CACHED_CODES: usize = 1 << 16;
/// How long a tid found without a thread state is answered from memory, so a C-extension
/// thread does not trigger a thread-list walk on every sample.
const NO_TSTATE_TTL: Duration = Duration::from_millis(250);
/// Bytes read below each frame read, in the same syscall, hoping to catch its callers (data
/// stack frames are adjacent). A larger read costs a few µs more; another syscall costs more.
const SPECULATE: usize = 8192;
/// Extra walks after one that failed in a way a running target explains (see `is_race`).
const MAX_RETRIES: u32 = 4;

/// Counters since the process was detected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// `read_thread` calls.
    pub reads: u64,
    /// `read_thread` calls that returned an error.
    pub errors: u64,
    /// `process_vm_readv` calls, detection included.
    pub syscalls: u64,
    /// Python frames returned.
    pub frames: u64,
    /// Code objects (re)read because they were new or failed the checksum.
    pub code_misses: u64,
    /// Walks of the thread list.
    pub thread_rebuilds: u64,
    /// Chains cut at the frame cap.
    pub truncated: u64,
    /// 3.13 frames whose executable was not a code object (skipped).
    pub skipped_frames: u64,
    /// Walks repeated because the chain changed under the reader.
    pub retries: u64,
    /// `read_thread_at` calls whose chain was anchored to the sample's stack copy.
    pub anchored: u64,
    /// Anchored reads where the thread had moved since the sample: the anchored frame was not
    /// the thread's innermost frame at read time (newer frames were dropped).
    pub anchor_moved: u64,
    /// Successful [`PythonProcess::recover_returned`] calls.
    pub recovered: u64,
    /// `read_thread_at` calls that fell back to the read-time chain: no anchor in the copy
    /// (3.8-3.10 and 3.13 always; on 3.11/3.12 the thread returned past the copy, the
    /// anchored frame's memory was reused, or a read failed).
    pub unanchored: u64,
}

/// The sample's view of the thread's stack: its user stack pointer and the copy of the user
/// stack the kernel took with the sample (`bytes[0]` is the byte at `sp`).
#[derive(Clone, Copy, Debug)]
pub struct SampleStack<'a> {
    pub sp: u64,
    pub bytes: &'a [u8],
}

/// Candidate cframe chains `recover_returned` walks before giving up.
const MAX_CANDIDATES: usize = 16;
/// How far from the anchored frame a recovered activation's frame may lie: frames of one
/// thread share its data stack (chunks of 16 KiB and up, allocated as it grows).
const RECOVER_SPAN: u64 = 1 << 20;
/// `_PyCFrame`s followed outwards from `tstate->cframe` before giving up on an anchor.
const MAX_CFRAME_STEPS: usize = 64;

#[derive(Clone, Copy, Debug)]
struct Tstate {
    addr: u64,
    interp: u64,
    /// ≤ 3.10: the thread's `pthread_t` (its glibc `struct pthread`), 0 otherwise.
    pthread: u64,
}

struct CachedCode {
    checksum: u64,
    id: CodeId,
    first_line: i32,
    linetable: Box<[u8]>,
}

/// What the last anchored read anchored on, for `recover_returned`.
#[derive(Clone, Copy, Debug)]
struct LastAnchor {
    tid: u32,
    sp: u64,
    /// The anchor cframe's address and its `current_frame` in the copy.
    cframe: u64,
    frame: u64,
}

/// Where a walk from popped frames must meet the live chain (`walk_frames`).
#[derive(Clone, Copy)]
struct Rejoin {
    at: u64,
    top: u64,
}

#[derive(Clone, Copy)]
struct RawFrame {
    /// The frame's address (a 3.12 shim frame is never a `RawFrame`).
    addr: u64,
    code: u64,
    /// Instruction offset in the unit the version's line table wants; -1 = not started.
    addrq: i64,
    entry: bool,
}

/// A detected, supported Python process; see the crate docs.
/// What [`PythonProcess::thread_flags`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadFlags {
    /// Whether the thread held the GIL; `None` where the layout does not say (≤ 3.10).
    pub holds_gil: Option<bool>,
    /// Whether the interpreter was collecting garbage.
    pub gc: bool,
}

pub struct PythonProcess {
    pid: u32,
    version: (u8, u8, u8),
    layout: Layout,
    mem: Mem,
    runtime: u64,
    code_type: Option<u64>,
    /// `PyUnicode_Type`, `PyLong_Type` (absolute).
    str_type: Option<u64>,
    int_type: Option<u64>,
    eval: Vec<Range<u64>>,
    gil_take: Vec<Range<u64>>,
    /// 3.12: the interpreter's `ceval.gil` pointer, read once.
    gil_struct: Option<u64>,
    ranges: Vec<Range<u64>>,
    eval_span: Range<u64>,
    namespaced: bool,
    ns_tids: HashMap<u32, u32>,
    threads: HashMap<u32, Tstate>,
    /// The thread state `tstate_buf` was read from.
    current_tstate: u64,
    no_tstate: HashMap<u32, Instant>,
    codes: HashMap<u64, CachedCode>,
    stats: ReadStats,
    // Scratch, reused across reads.
    tstate_buf: Vec<u8>,
    frame_buf: Vec<u8>,
    /// Frames read speculatively: `block[i]` is the byte at `block_base + i`; bytes in
    /// `[block_lo, block_hi)` are valid for the current walk only.
    block: Vec<u8>,
    block_base: u64,
    block_lo: u64,
    block_hi: u64,
    raw: Vec<RawFrame>,
    code_addrs: Vec<u64>,
    windows: Vec<u8>,
    visited: HashSet<u64>,
    last_anchor: Option<LastAnchor>,
    text: String,
}

impl std::fmt::Debug for PythonProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonProcess")
            .field("pid", &self.pid)
            .field("version", &self.version)
            .field("runtime", &format_args!("{:#x}", self.runtime))
            .field("namespaced", &self.namespaced)
            .finish_non_exhaustive()
    }
}

fn basename(path: &str) -> &str {
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    path.rsplit('/').next().unwrap_or(path)
}

fn is_libpython(name: &str) -> bool {
    name.starts_with("libpython3.") && elf::version_from_name(name).is_some()
}

fn is_python_exe(name: &str) -> bool {
    name == "python3" || (name.starts_with("python3.") && elf::version_from_name(name).is_some())
}

/// Finds and validates the interpreter among `files`; see [`Detection`].
pub fn detect(pid: u32, files: &[MappedFile<'_>]) -> Detection {
    // The lowest-offset mapping of the first file that matches: the load bias is computed from it.
    let pick = |pred: fn(&str) -> bool| {
        let first = files.iter().find(|f| pred(basename(f.path)))?;
        files
            .iter()
            .filter(|f| f.path == first.path)
            .min_by_key(|f| f.file_offset)
    };
    let Some(file) = pick(is_libpython).or_else(|| pick(is_python_exe)) else {
        return Detection::NotPython;
    };
    let name = basename(file.path);
    let name_version = elf::version_from_name(name);
    if let Some((minor, true)) = name_version {
        return Detection::Unsupported(format!(
            "python 3.{minor}t (free-threaded): unsupported, native frames only"
        ));
    }
    let info = match elf::inspect(file.bytes, file.segments) {
        Ok(info) => info,
        Err(e) => return Detection::Unsupported(format!("{name}: {e}")),
    };
    let version = match (info.py_version, name_version) {
        (Some(hex), from_name) => {
            let v = ((hex >> 24) as u8, (hex >> 16) as u8, (hex >> 8) as u8);
            if let Some((minor, _)) = from_name.filter(|&(m, _)| m != v.1) {
                return Detection::Unsupported(format!(
                    "{name}: Py_Version says {}.{} but the file is 3.{minor}",
                    v.0, v.1
                ));
            }
            v
        }
        (None, Some((minor, _))) => (3, minor, 0),
        (None, None) => {
            return Detection::Unsupported(format!("{name}: python version unknown"));
        }
    };
    let (major, minor, _) = version;
    if major != 3 || !(8..=15).contains(&minor) {
        let why = if major == 3 && minor < 8 {
            "unsupported layout"
        } else {
            "not yet supported"
        };
        return Detection::Unsupported(format!(
            "python {major}.{minor}: {why}, native frames only"
        ));
    }
    match PythonProcess::open(pid, file, &info, version) {
        Ok(Some(p)) => Detection::Python(p),
        Ok(None) => Detection::NotReady,
        Err(why) => Detection::Unsupported(format!("python {major}.{minor}: {why}")),
    }
}

impl PythonProcess {
    /// `Ok(None)`: not initialised yet.
    fn open(
        pid: u32,
        file: &MappedFile<'_>,
        info: &ElfInfo,
        version: (u8, u8, u8),
    ) -> Result<Option<PythonProcess>, String> {
        let runtime_link = info.runtime.ok_or("_PyRuntime not found")?;
        let bias = elf::load_bias(info, file)
            .ok_or("mapping does not match the file's segments")?;
        let runtime = runtime_link.wrapping_add(bias);
        let mut mem = Mem::new(pid);
        let layout = match version.1 {
            8 | 9 => Layout::v38(version.1),
            10 => Layout::v310(),
            11 => Layout::v311(),
            12 => Layout::v312(),
            _ => {
                let mut raw = vec![0u8; DEBUG_OFFSETS_LEN];
                mem.read("_Py_DebugOffsets", runtime, &mut raw)
                    .map_err(|e| format!("cannot read target memory: {e}"))?;
                Layout::from_debug_offsets(&raw, version.1)?
            }
        };
        let head = mem
            .read_u64("interpreters.head", runtime + layout.interpreters_head)
            .map_err(|e| format!("cannot read target memory: {e}"))?;
        if head == 0 {
            return Ok(None);
        }
        let abs = |(s, e): (u64, u64)| s.wrapping_add(bias)..e.wrapping_add(bias);
        let eval: Vec<Range<u64>> = info.eval.iter().copied().map(abs).collect();
        let gil_take: Vec<Range<u64>> = info.gil_take.iter().copied().map(abs).collect();
        let ranges: Vec<Range<u64>> = file
            .segments
            .iter()
            .filter(|l| l.executable)
            .map(|l| abs((l.vaddr, l.vaddr.saturating_add(l.memsz))))
            .collect();
        let eval_span = match (
            eval.iter().map(|r| r.start).min(),
            eval.iter().map(|r| r.end).max(),
        ) {
            (Some(s), Some(e)) => s..e,
            _ => 0..0,
        };
        let namespaced = nspid_of(&format!("/proc/{pid}/status")).is_some_and(|v| v.len() > 1);
        Ok(Some(PythonProcess {
            pid,
            version,
            tstate_buf: vec![0; layout.tstate_len()],
            frame_buf: vec![0; layout.frame_len()],
            block: vec![0; SPECULATE + layout.frame_len()],
            block_base: 0,
            block_lo: 0,
            block_hi: 0,
            layout,
            mem,
            runtime,
            code_type: info.code_type.map(|t| t.wrapping_add(bias)),
            str_type: info.str_type.map(|t| t.wrapping_add(bias)),
            int_type: info.int_type.map(|t| t.wrapping_add(bias)),
            eval,
            gil_take,
            gil_struct: None,
            ranges,
            eval_span,
            namespaced,
            ns_tids: HashMap::new(),
            threads: HashMap::new(),
            current_tstate: 0,
            no_tstate: HashMap::new(),
            codes: HashMap::new(),
            stats: ReadStats::default(),
            raw: Vec::new(),
            code_addrs: Vec::new(),
            windows: Vec::new(),
            visited: HashSet::new(),
            last_anchor: None,
            text: String::new(),
        }))
    }

    /// `(major, minor, micro)`, from `Py_Version` (or the file name when the symbol is absent).
    pub fn version(&self) -> (u8, u8, u8) {
        self.version
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// True when `addr` lies in `_PyEval_EvalFrameDefault` or a clone of it (`.cold`, …).
    /// Clones are only known when the file has `.symtab`; stripped builds (Debian's) expose the
    /// main body through `.dynsym` only.
    pub fn is_eval_address(&self, addr: u64) -> bool {
        self.eval_span.contains(&addr) && self.eval.iter().any(|r| r.contains(&addr))
    }

    /// Whether `addr` is in a function a thread waits in for the GIL (`take_gil` and the
    /// exported functions that call it).
    pub fn is_gil_take_address(&self, addr: u64) -> bool {
        self.gil_take.iter().any(|r| r.contains(&addr))
    }

    /// What the thread read last (by a successful [`read_thread`](Self::read_thread) or
    /// [`read_thread_at`](Self::read_thread_at)) is doing besides running its frames: whether
    /// it holds the GIL and whether the interpreter is collecting garbage. One batched read,
    /// right after the frames, so as close to the sample as they are.
    pub fn thread_flags(&mut self) -> Result<ThreadFlags, PyError> {
        let l = self.layout;
        let tstate = self.current_tstate;
        let interp = le_u64(&self.tstate_buf, l.ts_interp);
        if tstate == 0 || interp == 0 {
            return Ok(ThreadFlags::default());
        }
        // Up to three 8-byte windows: the GIL's holder and lock word (or the thread's own
        // flag), and the collector's flag.
        let mut addrs = [0u64; 3];
        let mut n = 0;
        let mut push = |a: u64| {
            addrs[n] = a;
            n += 1;
        };
        match l.gil {
            Some(GilAt::RuntimeCurrent(o)) => push(self.runtime + o),
            Some(GilAt::InterpPointer {
                gil,
                holder,
                locked,
            }) => {
                let g = match self.gil_struct {
                    Some(g) => g,
                    None => {
                        let g = self.mem.read_u64("ceval.gil", interp + gil)?;
                        self.gil_struct = Some(g);
                        g
                    }
                };
                push(g + holder);
                push(g + locked);
            }
            Some(GilAt::Interp { holder, locked }) => {
                push(interp + holder);
                push(interp + locked);
            }
            Some(GilAt::Thread { holds_gil }) => push(tstate + holds_gil),
            None => {}
        }
        if let Some(o) = l.gc_collecting {
            push(interp + o);
        }
        if n == 0 {
            return Ok(ThreadFlags::default());
        }
        let mut buf = [0u8; 24];
        self.mem
            .read_uniform("GIL and GC state", &addrs[..n], 8, &mut buf[..n * 8])?;
        let word = |i: usize| le_u64(&buf, (i * 8) as u64);
        let int = |i: usize| le_i32(&buf, (i * 8) as u64) != 0;
        let holds_gil = match l.gil {
            Some(GilAt::RuntimeCurrent(_)) => Some(word(0) == tstate),
            Some(GilAt::InterpPointer { .. } | GilAt::Interp { .. }) => {
                Some(int(1) && word(0) == tstate)
            }
            Some(GilAt::Thread { .. }) => Some(int(0)),
            None => None,
        };
        let gc = l.gc_collecting.is_some() && int(n - 1);
        Ok(ThreadFlags { holds_gil, gc })
    }

    /// Executable segments of the interpreter module, absolute.
    pub fn interpreter_ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }

    pub fn stats(&self) -> ReadStats {
        ReadStats {
            syscalls: self.mem.syscalls,
            ..self.stats
        }
    }

    /// Forgets what is cached about `tid` (call on thread exit: tids are reused).
    pub fn forget_thread(&mut self, tid: u32) {
        if let Some(ns) = self.ns_tids.remove(&tid) {
            self.threads.remove(&ns);
        } else {
            self.threads.remove(&tid);
        }
        self.no_tstate.remove(&tid);
    }

    /// Drops the code cache (e.g. after the engine saw the process exec or unmap code).
    pub fn clear_code_cache(&mut self) {
        self.codes.clear();
    }

    /// Reads thread `tid`'s Python frames now, innermost first, into `out` (cleared first).
    /// `Ok(false)`: the thread has no Python thread state. On `Err`, `out` is empty.
    pub fn read_thread(
        &mut self,
        tid: u32,
        codes: &mut CodeTable,
        out: &mut Vec<PyFrame>,
    ) -> Result<bool, PyError> {
        out.clear();
        self.stats.reads += 1;
        self.last_anchor = None;
        let r = self.read_inner(tid, None, codes, out);
        match &r {
            Ok(_) => self.stats.frames += out.len() as u64,
            Err(_) => {
                self.stats.errors += 1;
                out.clear();
            }
        }
        r
    }

    /// Reads thread `tid`'s Python frames **as of the sample** whose stack copy is `at`, when
    /// the copy allows it, else as [`read_thread`](Self::read_thread) does; same results and
    /// errors. [`ReadStats::anchored`] / [`ReadStats::unanchored`] count which happened.
    ///
    /// On 3.11 and 3.12 each `_PyEval_EvalFrameDefault` activation keeps its `_PyCFrame` on
    /// the C stack, and its `current_frame` field is that activation's innermost frame. The
    /// reader finds the innermost activation that is live now and whose cframe lies in the
    /// copy, takes `current_frame` **from the copy** (its value at the sample), and walks the
    /// frames outwards from there in live memory. Frames the thread pushed after the sample are
    /// so left out, in its innermost activation and in activations it entered since. What stays
    /// read-time: the contents of the anchored frame (its line, and its code if the frame was
    /// popped and its memory reused after the sample, see `walk_anchored`), and activations the
    /// thread has *returned* from since the sample, which are missing (the merge then reports
    /// their eval frames as unavailable rather than pairing them with wrong frames; given
    /// their number, [`recover_returned`](Self::recover_returned) can find them in the copy).
    ///
    /// 3.8-3.10 and 3.13 have nothing in the copy that pins the innermost frame (see the crate
    /// docs) and always fall back. Cost on 3.11/3.12: one read of the cframe (the read-time
    /// path reads it too), one more per activation entered since the sample; when the thread
    /// has moved, the read-time chain is walked as well to check the anchored one against it.
    pub fn read_thread_at(
        &mut self,
        tid: u32,
        at: SampleStack<'_>,
        codes: &mut CodeTable,
        out: &mut Vec<PyFrame>,
    ) -> Result<bool, PyError> {
        out.clear();
        self.stats.reads += 1;
        self.last_anchor = None;
        let r = self.read_inner(tid, Some(at), codes, out);
        match &r {
            Ok(_) => self.stats.frames += out.len() as u64,
            Err(_) => {
                self.stats.errors += 1;
                out.clear();
            }
        }
        r
    }

    fn read_inner(
        &mut self,
        tid: u32,
        at: Option<SampleStack<'_>>,
        codes: &mut CodeTable,
        out: &mut Vec<PyFrame>,
    ) -> Result<bool, PyError> {
        let ns_tid = self.ns_tid(tid)?;
        if !self.load_tstate(ns_tid)? {
            if let Some(at) = self.no_tstate.get(&tid) {
                if at.elapsed() < NO_TSTATE_TTL {
                    return Ok(false);
                }
            }
            let complete = self.rebuild_threads()?;
            if !self.load_tstate(ns_tid)? {
                if complete {
                    self.no_tstate.insert(tid, Instant::now());
                }
                // The tid may have been reused by a new thread in the namespace.
                self.ns_tids.remove(&tid);
                return Ok(false);
            }
        }
        self.no_tstate.remove(&tid);

        if let Some(at) = at {
            // Any failure of the anchored walk falls back to the read-time one below, which
            // retries races on its own.
            if let Ok(true) = self.read_anchored(at, codes, out) {
                self.stats.anchored += 1;
                if let Some(a) = &mut self.last_anchor {
                    a.tid = tid;
                }
                return Ok(true);
            }
            self.last_anchor = None;
            out.clear();
            self.stats.unanchored += 1;
        }

        // The target keeps running, so a walk can meet a frame being pushed or popped (a stale
        // `previous`, a half-written frame). Such a walk is retried from a fresh thread state:
        // it is cheap and turns most races into a slightly later but consistent chain.
        let mut attempt = 0;
        loop {
            let r = self.read_chain(codes, out);
            match r {
                Err(ref e) if attempt < MAX_RETRIES && e.is_race() => {
                    attempt += 1;
                    self.stats.retries += 1;
                    out.clear();
                    self.mem
                        .read("thread state", self.current_tstate, &mut self.tstate_buf)?;
                }
                r => return r,
            }
        }
    }

    /// Reads the chain of the thread state in `tstate_buf`.
    fn read_chain(
        &mut self,
        codes: &mut CodeTable,
        out: &mut Vec<PyFrame>,
    ) -> Result<bool, PyError> {
        let l = &self.layout;
        let frame = match l.frame_root {
            FrameRoot::CFrame {
                cframe,
                current_frame,
                ..
            } => {
                let cf = le_u64(&self.tstate_buf, cframe);
                if cf == 0 {
                    // Thread starting or finishing: a thread state without frames.
                    return Ok(true);
                }
                check_range("cframe", cf, 8)?;
                self.mem
                    .read_u64("cframe.current_frame", cf + current_frame)?
            }
            FrameRoot::Direct { current_frame } => le_u64(&self.tstate_buf, current_frame),
        };

        self.walk_frames(frame, None)?;
        self.resolve_frames(codes, out)?;
        Ok(true)
    }

    /// Completes the last [`read_thread_at`](Self::read_thread_at) of `tid` with `at`, when it
    /// was anchored and the sample's native stack has `missing` more eval frames than its
    /// chain has groups: the thread returned from `missing` activations between the sample
    /// and the read. Their cframes may still be in the copy, and the native stack (unwound
    /// from the same copy) says how many there were, which is what makes them findable.
    ///
    /// The reader looks in the copy, below the anchor cframe, for chains of `missing` cframes
    /// linked to it by `previous` whose frames lie within 1 MiB of the anchored frame (the
    /// thread's data stack; generator frames are not recovered), at most 16 candidates, and
    /// walks from each one's innermost `current_frame` (as in the copy) outwards. The walk
    /// reads popped frames (3.12 shims, on the C stack, from the copy) and must cross from
    /// each activation into the next exactly at the frame the next cframe had current in the
    /// copy, the last into the anchored frame. Exactly one candidate must pass; else nothing
    /// changes and it returns false. On success the recovered frames (innermost first) are
    /// put in front of `out` and it returns true.
    ///
    /// Caveats: a popped frame's memory reused by a call at the same depth through the same
    /// kind of entry passes the checks (that call's function is then reported; for a key
    /// function called again, the same one). A stale cframe image cannot be told from a live
    /// one, which is why this runs only when the native stack says activations are missing:
    /// e.g. a sample in the prologue of a new activation, before its cframe is linked, gets
    /// the previous call's image, whose frame is usually the new call's (same address).
    pub fn recover_returned(
        &mut self,
        tid: u32,
        at: SampleStack<'_>,
        missing: usize,
        codes: &mut CodeTable,
        out: &mut Vec<PyFrame>,
    ) -> bool {
        let Some(a) = self.last_anchor.filter(|a| a.tid == tid && a.sp == at.sp) else {
            return false;
        };
        let FrameRoot::CFrame {
            current_frame,
            previous,
            ..
        } = self.layout.frame_root
        else {
            return false;
        };
        if missing == 0 || missing > 16 {
            return false;
        }
        let need = (current_frame.max(previous) + 8) as usize;
        // Candidate chains of cframes, outermost first: each one's `previous` is the one
        // before (the first's, the anchor), each lower on the stack. Any word pair in the copy
        // can look like a cframe (a saved cframe pointer next to any pointer), so every
        // candidate is walked and exactly one must pass.
        let mut chains: Vec<Vec<(u64, u64)>> = vec![Vec::new()];
        for _ in 0..missing {
            let mut next = Vec::new();
            for chain in &chains {
                let parent = chain.last().map_or(a.cframe, |c| c.0);
                let mut p = at.sp.next_multiple_of(8);
                while p + need as u64 <= parent {
                    let off = (p - at.sp) as usize;
                    let Some(cf) = at.bytes.get(off..off + need) else {
                        break;
                    };
                    let cur = le_u64(cf, current_frame);
                    if le_u64(cf, previous) == parent
                        && cur.is_multiple_of(8)
                        && cur.abs_diff(a.frame) <= RECOVER_SPAN
                        && check_range("frame", cur, 8).is_ok()
                    {
                        if next.len() >= MAX_CANDIDATES {
                            return false;
                        }
                        let mut c = chain.clone();
                        c.push((p, cur));
                        next.push(c);
                    }
                    p += 8;
                }
            }
            chains = next;
        }
        let mut passed = None;
        for (i, chain) in chains.iter().enumerate() {
            if self.walk_returned(chain, a.frame, at) {
                if passed.is_some() {
                    return false;
                }
                passed = Some(i);
            }
        }
        let Some(i) = passed else {
            return false;
        };
        if chains.len() > 1 && !self.walk_returned(&chains[i], a.frame, at) {
            return false;
        }
        let mut extra = Vec::with_capacity(self.raw.len() + out.len());
        if self.resolve_frames(codes, &mut extra).is_err() {
            return false;
        }
        self.stats.frames += extra.len() as u64;
        self.stats.recovered += 1;
        extra.append(out);
        *out = extra;
        true
    }

    /// The walk of `recover_returned`: from the innermost cframe's frame (`chain` is outermost
    /// first) through each activation, into `self.raw`. At each activation's entry the next
    /// frame must be the outer cframe's `current_frame` in the copy (`anchor` for the last).
    fn walk_returned(&mut self, chain: &[(u64, u64)], anchor: u64, at: SampleStack<'_>) -> bool {
        let l = self.layout;
        self.raw.clear();
        self.visited.clear();
        self.block_hi = 0;
        let mut level = chain.len();
        let Some(&(_, mut addr)) = chain.last() else {
            return false;
        };
        let mut in_group = 0usize;
        while self.raw.len() < MAX_FRAMES {
            if !addr.is_multiple_of(8) || !self.visited.insert(addr) {
                return false;
            }
            // Frames in the copy (3.12 shims live on the C stack) as they were at the sample.
            let len = self.frame_buf.len() as u64;
            let in_copy = addr >= at.sp
                && addr
                    .checked_add(len)
                    .is_some_and(|e| e <= at.sp + at.bytes.len() as u64);
            if in_copy {
                let off = (addr - at.sp) as usize;
                self.frame_buf
                    .copy_from_slice(&at.bytes[off..off + len as usize]);
            } else if self.frame_at(addr).is_err() {
                return false;
            }
            let (owner, previous, code, addrq) = self.frame_fields();
            let boundary = match (l.entry, owner) {
                (EntryMark::ShimOwner, OWNER_CSTACK) => {
                    let Some(last) = self.raw.last_mut() else {
                        return false;
                    };
                    last.entry = true;
                    true
                }
                (_, 0..=2) => {
                    let entry = match l.entry {
                        EntryMark::IsEntry(off) => self.frame_buf[off as usize] != 0,
                        EntryMark::ShimOwner | EntryMark::EveryFrame => false,
                    };
                    self.raw.push(RawFrame {
                        addr,
                        code,
                        addrq,
                        entry,
                    });
                    in_group += 1;
                    entry
                }
                _ => return false,
            };
            if boundary {
                if in_group == 0 {
                    return false;
                }
                in_group = 0;
                level -= 1;
                let expect = if level == 0 {
                    anchor
                } else {
                    chain[level - 1].1
                };
                if previous != expect {
                    return false;
                }
                if level == 0 {
                    return true;
                }
            }
            addr = previous;
        }
        false
    }

    /// The anchored read of [`read_thread_at`](Self::read_thread_at), from the thread state in
    /// `tstate_buf`. `Ok(false)`: no usable anchor, read the chain at read time instead.
    ///
    /// Why the anchor is the innermost cframe that is live now and lies in the copy, and not
    /// simply the innermost cframe-looking bytes in the copy: at the sample, every live
    /// activation's cframe lies at or above `sp` (the C stack grows down, and the eval loop is
    /// never a leaf, so nothing of it sits in the red zone), innermost lowest. But the copy
    /// also holds the images of cframes of activations that had returned *before* the sample,
    /// in slots the live frames below their caller have not overwritten — e.g. `list.sort`
    /// comparing keys after its key-function calls returned leaves the last call's cframe,
    /// with a valid `previous`, under its own frame. A scan of the copy cannot tell those from
    /// a live activation (nothing in a cframe or a frame dates it), so the reader only trusts
    /// cframe addresses it reaches from `tstate->cframe` now:
    ///
    /// * below `sp`: entered after the sample, skipped (follow `previous` in live memory);
    /// * in the copy and the copy's `previous` equals the live one: an activation with this
    ///   parent at this address was live at the sample (stack discipline: its parent is live
    ///   now, so it was never popped, and the slot at the cframe's address belonged to the
    ///   activation at the sample unless the copy's bytes are such a stale image — a residual
    ///   risk: an activation entered after the sample at the exact address and with the same
    ///   parent as a stale image; the merge then sees one Python group more than eval frames);
    /// * in the copy but another `previous`: the bytes were something else at the sample, so
    ///   this activation is newer too: go outwards;
    /// * beyond the copy, or none left: the thread returned past the copy; fall back.
    ///
    /// If the thread returned from activations after the sample, the anchor is an outer one
    /// and their frames are missing: the merge reports their eval frames as unavailable.
    fn read_anchored(
        &mut self,
        at: SampleStack<'_>,
        codes: &mut CodeTable,
        out: &mut Vec<PyFrame>,
    ) -> Result<bool, PyError> {
        let FrameRoot::CFrame {
            cframe,
            current_frame,
            previous,
        } = self.layout.frame_root
        else {
            return Ok(false);
        };
        let need = (current_frame.max(previous) + 8) as usize;
        let mut buf = [0u8; 24];
        let Some(buf) = buf.get_mut(..need) else {
            return Ok(false);
        };
        if at.bytes.len() < need {
            return Ok(false);
        }
        let Some(end) = at.sp.checked_add(at.bytes.len() as u64) else {
            return Ok(false);
        };
        // The highest cframe address whose fields lie entirely in the copy.
        let last = end - need as u64;
        let mut c = le_u64(&self.tstate_buf, cframe);
        // The thread's innermost frame now (the innermost cframe's current_frame).
        let mut live_inner = None;
        for _ in 0..MAX_CFRAME_STEPS {
            if c == 0
                || c > last
                || check_range("cframe", c, need).is_err()
                || self.mem.read("cframe", c, buf).is_err()
            {
                return Ok(false);
            }
            let live_cur = le_u64(buf, current_frame);
            let live_prev = le_u64(buf, previous);
            let live_inner = *live_inner.get_or_insert(live_cur);
            if c >= at.sp {
                let off = (c - at.sp) as usize;
                let copy = &at.bytes[off..off + need];
                let copy_cur = le_u64(copy, current_frame);
                let copy_prev = le_u64(copy, previous);
                // `previous` is never null for a stack cframe (the outermost points at
                // `tstate->root_cframe`), which also keeps a copy that runs into the heap from
                // anchoring on the root cframe itself.
                if copy_prev == live_prev
                    && copy_prev != 0
                    && copy_cur.is_multiple_of(8)
                    && check_range("frame", copy_cur, 8).is_ok()
                {
                    if !self.walk_anchored(copy_cur, live_cur, live_inner)? {
                        return Ok(false);
                    }
                    self.resolve_frames(codes, out)?;
                    if copy_cur != live_inner {
                        self.stats.anchor_moved += 1;
                    }
                    self.last_anchor = Some(LastAnchor {
                        tid: 0,
                        sp: at.sp,
                        cframe: c,
                        frame: copy_cur,
                    });
                    return Ok(true);
                }
            }
            if live_prev == c {
                return Ok(false);
            }
            c = live_prev;
        }
        Ok(false)
    }

    /// Walks the chain from `anchor`, the anchored activation's frame at the sample, into
    /// `self.raw`. `live_cur` is that activation's frame now, `live_inner` the thread's
    /// innermost frame now. False: the anchored frame cannot be trusted (fall back).
    ///
    /// Only the frame's *address* is as of the sample; frame memory is read now, and a frame
    /// popped after the sample may have been overwritten by one pushed at the same address
    /// (nothing in a frame dates it). So:
    /// * `anchor` is on the read-time chain (the thread called deeper since, or nothing moved):
    ///   the read-time chain minus the frames newer than `anchor`. If the frame at `anchor` was
    ///   popped and another pushed at the same address since, that is the new frame's chain: a
    ///   chain the thread had at some moment between the sample and the read (with a key
    ///   function called again, the same code at the same depth).
    /// * `anchor` was popped since (not on the read-time chain): popped frames stay mapped and
    ///   intact until something is pushed over them. Trusted only when they all lie at or
    ///   above the data stack's top, the walk rejoins the live chain exactly at the thread's
    ///   innermost frame (which must be this activation's), and the popped frame it passes
    ///   last lies exactly at the top, where the innermost frame's callee goes. Residual risk,
    ///   not detectable from outside: frames pushed and popped above the top between sample
    ///   and read (they overwrote the popped frames), or the innermost frame itself popped and
    ///   re-pushed by a function with the same frame size; then the result can mix both.
    /// * anything else (the anchor inside the live part of the data stack, a generator frame,
    ///   another chunk): fall back.
    fn walk_anchored(
        &mut self,
        anchor: u64,
        live_cur: u64,
        live_inner: u64,
    ) -> Result<bool, PyError> {
        if anchor == live_cur {
            // The activation's current frame did not change: the read-time chain from it.
            self.walk_frames(anchor, None)?;
            return Ok(true);
        }
        self.walk_frames(live_inner, None)?;
        if let Some(i) = self.raw.iter().position(|f| f.addr == anchor) {
            self.raw.drain(..i);
            return Ok(true);
        }
        if self.visited.contains(&anchor) {
            // A 3.12 shim: the activation was entering or leaving; no frame of its own.
            self.walk_frames(anchor, None)?;
            return Ok(true);
        }
        let Some(top) = self.layout.ts_datastack_top else {
            return Ok(false);
        };
        let top = le_u64(&self.tstate_buf, top);
        if live_cur != live_inner || top <= live_inner || anchor < top {
            return Ok(false);
        }
        Ok(self
            .walk_frames(
                anchor,
                Some(Rejoin {
                    at: live_inner,
                    top,
                }),
            )
            .is_ok())
    }

    /// Host tid → the tid the target's namespace sees (what `native_thread_id` holds).
    fn ns_tid(&mut self, tid: u32) -> Result<u32, PyError> {
        if !self.namespaced {
            return Ok(tid);
        }
        if let Some(&ns) = self.ns_tids.get(&tid) {
            return Ok(ns);
        }
        let path = format!("/proc/{}/task/{tid}/status", self.pid);
        let ns = nspid_of(&path)
            .and_then(|v| v.last().copied())
            .ok_or_else(|| PyError::Namespace {
                tid,
                reason: format!("no NSpid in {path}"),
            })?;
        self.ns_tids.insert(tid, ns);
        Ok(ns)
    }

    /// Reads the cached thread state of `ns_tid` into `tstate_buf` and checks it still belongs
    /// to that thread. False when there is none or it failed validation (entry dropped).
    fn load_tstate(&mut self, ns_tid: u32) -> Result<bool, PyError> {
        let Some(ts) = self.threads.get(&ns_tid).copied() else {
            return Ok(false);
        };
        self.current_tstate = ts.addr;
        let l = &self.layout;
        let valid = if l.tid_via_pthread {
            // One syscall: the thread state and the tid in its (cached) pthread struct.
            let mut tid = [0u8; 4];
            self.mem
                .read_vectored(
                    "thread state",
                    &mut [
                        (ts.addr, &mut self.tstate_buf[..]),
                        (ts.pthread + PTHREAD_TID, &mut tid[..]),
                    ],
                )
                .is_ok()
                && le_u64(&self.tstate_buf, l.ts_native_tid) == ts.pthread
                && u32::from_le_bytes(tid) == ns_tid
        } else {
            self.mem
                .read("thread state", ts.addr, &mut self.tstate_buf)
                .is_ok()
                && le_u64(&self.tstate_buf, l.ts_native_tid) == u64::from(ns_tid)
        } && le_u64(&self.tstate_buf, l.ts_interp) == ts.interp;
        if !valid {
            self.threads.remove(&ns_tid);
        }
        Ok(valid)
    }

    /// Walks every interpreter's thread list and rebuilds the tid → thread-state map.
    /// False when a list was torn (a thread being created or destroyed) and the map is partial.
    fn rebuild_threads(&mut self) -> Result<bool, PyError> {
        self.stats.thread_rebuilds += 1;
        self.threads.clear();
        let l = &self.layout;
        let mut interp = self
            .mem
            .read_u64("interpreters.head", self.runtime + l.interpreters_head)?;
        let mut seen_interps = 0;
        let mut complete = true;
        while interp != 0 && seen_interps < MAX_INTERPRETERS {
            seen_interps += 1;
            check_range("interpreter", interp, 8)?;
            let mut ts = self.mem.read_u64("threads.head", interp + l.threads_head)?;
            let mut n = 0;
            while ts != 0 && n < MAX_THREADS {
                n += 1;
                check_range("thread state", ts, self.tstate_buf.len())?;
                self.mem.read("thread state", ts, &mut self.tstate_buf)?;
                if le_u64(&self.tstate_buf, l.ts_interp) != interp {
                    // Torn list: keep what we have.
                    complete = false;
                    break;
                }
                let ident = le_u64(&self.tstate_buf, l.ts_native_tid);
                let next = le_u64(&self.tstate_buf, l.ts_next);
                let (tid, pthread) = if l.tid_via_pthread {
                    let mut tid = [0u8; 4];
                    match self
                        .mem
                        .read("pthread.tid", ident.wrapping_add(PTHREAD_TID), &mut tid)
                    {
                        Ok(()) => (u64::from(u32::from_le_bytes(tid)), ident),
                        // A thread state whose thread is gone: skip it, keep walking.
                        Err(_) => (0, 0),
                    }
                } else {
                    (ident, 0)
                };
                if let Ok(tid) = u32::try_from(tid) {
                    if tid != 0 {
                        self.threads.insert(
                            tid,
                            Tstate {
                                addr: ts,
                                interp,
                                pthread,
                            },
                        );
                    }
                }
                ts = next;
            }
            interp = self
                .mem
                .read_u64("interpreter.next", interp + l.interp_next)?;
        }
        Ok(complete)
    }

    /// Follows `previous` from `first`, one read per frame, into `self.raw` (innermost first).
    ///
    /// A complete chain ends at the thread's first C→Python entry: on 3.11 a frame with
    /// `is_entry`, on 3.12+ a shim frame. Ending anywhere else means we followed a `previous`
    /// that was cleared or rewritten under us (a generator yielding, a frame popping): torn.
    /// ≤ 3.10 frame objects carry no such mark, so a torn chain there goes unnoticed.
    ///
    /// With `rejoin`, the walk starts at a popped frame (`walk_anchored`): every frame before
    /// `rejoin.at` must lie at or above `rejoin.top`, the last of them exactly at `top`, and
    /// the walk must reach `rejoin.at`; else the chain is reported torn.
    fn walk_frames(&mut self, first: u64, rejoin: Option<Rejoin>) -> Result<(), PyError> {
        let l = self.layout;
        self.raw.clear();
        self.visited.clear();
        self.block_hi = 0;
        let mut addr = first;
        let mut last = 0;
        let mut at_bottom = true;
        let mut joined = rejoin.is_none();
        while addr != 0 {
            if let (false, Some(r)) = (joined, rejoin) {
                if addr == r.at && last == r.top {
                    joined = true;
                } else if addr < r.top {
                    return Err(PyError::TornChain { addr });
                }
            }
            if self.raw.len() >= MAX_FRAMES {
                self.stats.truncated += 1;
                return Ok(());
            }
            if !addr.is_multiple_of(8) {
                return Err(PyError::BadPointer {
                    what: "frame",
                    addr,
                });
            }
            if !self.visited.insert(addr) {
                return Err(PyError::FrameLoop { addr });
            }
            self.frame_at(addr)?;
            let (owner, previous, code, addrq) = self.frame_fields();
            last = addr;
            match (l.entry, owner) {
                (EntryMark::ShimOwner, OWNER_CSTACK) => {
                    // The shim closes the activation whose innermost frames we pushed last.
                    if let Some(last) = self.raw.last_mut() {
                        last.entry = true;
                    }
                    at_bottom = true;
                }
                (_, 0..=2) => {
                    let entry = match l.entry {
                        EntryMark::IsEntry(off) => self.frame_buf[off as usize] != 0,
                        EntryMark::ShimOwner => false,
                        EntryMark::EveryFrame => true,
                    };
                    // 3.11 has no shim, and a generator resumed from C carries `is_entry`
                    // too: one whose `previous` was just cleared on a yield looks like a
                    // complete chain. A thread's first frame is never a generator's.
                    at_bottom = entry && !(l.minor == 11 && owner == OWNER_GENERATOR);
                    self.raw.push(RawFrame {
                        addr,
                        code,
                        addrq,
                        entry,
                    });
                }
                _ => return Err(PyError::BadFrame { addr, owner }),
            }
            addr = previous;
        }
        if at_bottom && joined {
            Ok(())
        } else {
            Err(PyError::TornChain { addr: last })
        }
    }

    /// `(owner, previous, code, instruction offset)` of the frame in `frame_buf`.
    fn frame_fields(&self) -> (u8, u64, u64, i64) {
        let l = &self.layout;
        let owner = l.fr_owner.map_or(0, |o| self.frame_buf[o as usize]);
        let previous = le_u64(&self.frame_buf, l.fr_previous);
        let code = le_u64(&self.frame_buf, l.fr_code) & !l.fr_code_tag;
        let addrq = match l.instr {
            Instr::Pointer => {
                let base = code.wrapping_add(l.co_code_adaptive);
                let instr = le_u64(&self.frame_buf, l.fr_instr);
                if instr < base {
                    -1
                } else {
                    i64::try_from((instr - base) / 2).unwrap_or(i64::MAX)
                }
            }
            Instr::LastiUnits => i64::from(le_i32(&self.frame_buf, l.fr_instr)).max(-1) * 2,
            Instr::LastiBytes => i64::from(le_i32(&self.frame_buf, l.fr_instr)).max(-1),
        };
        (owner, previous, code, addrq)
    }

    /// Puts the frame at `addr` into `frame_buf`: from the block read for an inner frame of
    /// this walk when it lies there, else with a new read that also fetches the memory below.
    fn frame_at(&mut self, addr: u64) -> Result<(), PyError> {
        if !self.layout.speculate {
            // ≤ 3.10 frame objects are scattered over the heap.
            return self.mem.read("frame", addr, &mut self.frame_buf);
        }
        let len = self.frame_buf.len() as u64;
        let cached =
            addr >= self.block_lo && addr.checked_add(len).is_some_and(|e| e <= self.block_hi);
        if !cached {
            let valid_below =
                self.mem
                    .read_with_below("frame", addr, SPECULATE, &mut self.block)?;
            self.block_base = addr.wrapping_sub(SPECULATE as u64);
            self.block_lo = addr - valid_below as u64;
            self.block_hi = addr + len;
        }
        let at = addr.wrapping_sub(self.block_base) as usize;
        self.frame_buf
            .copy_from_slice(&self.block[at..at + len as usize]);
        Ok(())
    }

    /// Validates every frame's code object with one batched read, loads unknown ones, and
    /// emits `PyFrame`s.
    fn resolve_frames(
        &mut self,
        codes: &mut CodeTable,
        out: &mut Vec<PyFrame>,
    ) -> Result<(), PyError> {
        let w = self.layout.code_window();
        self.code_addrs.clear();
        for f in &self.raw {
            check_range("code object", f.code, w)?;
            self.code_addrs.push(f.code);
        }
        self.windows.resize(self.code_addrs.len() * w, 0);
        self.mem
            .read_uniform("code object", &self.code_addrs, w, &mut self.windows)?;
        if self.codes.len() > MAX_CACHED_CODES {
            self.codes.clear();
        }
        for i in 0..self.raw.len() {
            let f = self.raw[i];
            let window = &self.windows[i * w..(i + 1) * w];
            let l = &self.layout;
            if let Some(t) = self.code_type {
                if le_u64(window, l.ob_type) != t {
                    if l.minor >= 13 {
                        // f_executable may legitimately be something else on 3.13.
                        self.stats.skipped_frames += 1;
                        if f.entry {
                            if let Some(last) = out.last_mut() {
                                last.entry = true;
                            }
                        }
                        continue;
                    }
                    return Err(PyError::NotCode { addr: f.code });
                }
            }
            let sum = checksum(l, window);
            let fresh = self.codes.get(&f.code).is_some_and(|c| c.checksum == sum);
            if !fresh {
                let window = window.to_vec();
                let c = self.load_code(f.code, &window, sum, codes)?;
                self.codes.insert(f.code, c);
            }
            let Some(c) = self.codes.get(&f.code) else {
                continue;
            };
            let line = match self.layout.line_format {
                LineFormat::Locations => linetable::line_for(&c.linetable, c.first_line, f.addrq),
                LineFormat::Pep626 => {
                    linetable::line_for_pep626(&c.linetable, c.first_line, f.addrq)
                }
                LineFormat::Lnotab => {
                    linetable::line_for_lnotab(&c.linetable, c.first_line, f.addrq)
                }
            }
            .unwrap_or(0);
            out.push(PyFrame {
                addr: f.addr,
                code: c.id,
                line,
                entry: f.entry,
            });
        }
        Ok(())
    }

    /// Reads a code object's strings and location table: two batched syscalls.
    fn load_code(
        &mut self,
        addr: u64,
        window: &[u8],
        checksum: u64,
        codes: &mut CodeTable,
    ) -> Result<CachedCode, PyError> {
        self.stats.code_misses += 1;
        let l = self.layout;
        let first_line = le_i32(window, l.co_firstlineno);
        // Before 3.11 there is no co_qualname: the name is read twice and stands in for it.
        let ptrs = [
            le_u64(window, l.co_qualname.unwrap_or(l.co_name)),
            le_u64(window, l.co_name),
            le_u64(window, l.co_filename),
        ];
        let table = le_u64(window, l.co_linetable);
        let str_head = l.ascii_size as usize;
        let bytes_head = l.bytes_sval as usize;
        for &p in &ptrs {
            check_range("str", p, str_head)?;
        }
        check_range("co_linetable", table, bytes_head)?;

        // 1: the three string headers and the bytes header.
        let mut heads = vec![0u8; 3 * str_head + bytes_head];
        {
            let (s, b) = heads.split_at_mut(3 * str_head);
            let mut it = s.chunks_mut(str_head);
            let (Some(h0), Some(h1), Some(h2)) = (it.next(), it.next(), it.next()) else {
                return Err(PyError::BadString {
                    addr,
                    reason: "header",
                });
            };
            self.mem.read_vectored(
                "code object strings",
                &mut [(ptrs[0], h0), (ptrs[1], h1), (ptrs[2], h2), (table, b)],
            )?;
        }
        let mut spans = [(0u64, 0usize, 0u8); 4];
        for (i, &p) in ptrs.iter().enumerate() {
            let h = &heads[i * str_head..(i + 1) * str_head];
            let state = le_u32(h, l.str_state);
            let layout = strings::layout(state, l.ascii_size, l.compact_size)
                .map_err(|reason| PyError::BadString { addr: p, reason })?;
            let len = le_u64(h, l.str_length);
            let chars = usize::try_from(len)
                .unwrap_or(usize::MAX)
                .min(strings::MAX_CHARS);
            spans[i] = (
                p + layout.data_offset,
                chars * usize::from(layout.kind),
                layout.kind,
            );
        }
        let table_len = le_u64(&heads[3 * str_head..], l.bytes_size);
        let table_len = if table_len <= MAX_LINETABLE {
            table_len as usize
        } else {
            0
        };
        spans[3] = (table + l.bytes_sval, table_len, 1);

        // 2: the character data and the table.
        let total: usize = spans.iter().map(|s| s.1).sum();
        let mut data = vec![0u8; total];
        {
            let mut rest = &mut data[..];
            let mut reqs: Vec<(u64, &mut [u8])> = Vec::with_capacity(4);
            for &(a, n, _) in &spans {
                let (head, tail) = rest.split_at_mut(n);
                rest = tail;
                if n > 0 {
                    reqs.push((a, head));
                }
            }
            self.mem.read_vectored("code object strings", &mut reqs)?;
        }
        let mut texts: [String; 3] = Default::default();
        let mut at = 0;
        for (i, t) in texts.iter_mut().enumerate() {
            let (_, n, kind) = spans[i];
            strings::decode(kind, &data[at..at + n], &mut self.text);
            t.push_str(&self.text);
            at += n;
        }
        let linetable = data[at..].to_vec().into_boxed_slice();
        let [qualname, name, filename] = texts;
        let first = u32::try_from(first_line).unwrap_or(0);
        let id = codes.intern(&qualname, &name, &filename, first);
        Ok(CachedCode {
            checksum,
            id,
            first_line,
            linetable,
        })
    }
}

/// FNV-1a over fields that never change during a code object's life: type, flags, argument
/// count, first line, and the name/file/table pointers. A different object at a reused address
/// differs in at least one of these in practice.
fn checksum(l: &Layout, window: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |v: u64| {
        for b in v.to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    mix(le_u64(window, l.ob_type));
    mix(u64::from(le_u32(window, l.co_flags)));
    if let Some(o) = l.co_argcount {
        mix(u64::from(le_u32(window, o)));
    }
    mix(u64::from(le_u32(window, l.co_firstlineno)));
    for o in [
        l.co_filename,
        l.co_name,
        l.co_qualname.unwrap_or(l.co_name),
        l.co_linetable,
    ] {
        mix(le_u64(window, o));
    }
    h
}

/// Little-endian field readers over buffers sized by `Layout` (so in bounds); an out-of-bounds
/// offset reads as 0 rather than panicking.
fn le_u64(buf: &[u8], off: u64) -> u64 {
    let off = off as usize;
    buf.get(off..off + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn le_u32(buf: &[u8], off: u64) -> u32 {
    let off = off as usize;
    buf.get(off..off + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn le_i32(buf: &[u8], off: u64) -> i32 {
    le_u32(buf, off) as i32
}

/// The `NSpid:` fields of a `/proc/.../status` file.
fn nspid_of(path: &str) -> Option<Vec<u32>> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().map(|f| f.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sprof_core::Segments;

    /// The segments of the files these tests pass as garbage (no ELF, none).
    static NO_SEGMENTS: Segments = Segments::empty();

    fn file<'a>(path: &'a str, bytes: &'a [u8]) -> MappedFile<'a> {
        file_with(path, bytes, &NO_SEGMENTS)
    }

    fn file_with<'a>(path: &'a str, bytes: &'a [u8], segments: &'a Segments) -> MappedFile<'a> {
        MappedFile {
            path,
            start: 0x40_0000,
            end: 0x50_0000,
            file_offset: 0,
            executable: false,
            bytes,
            segments,
        }
    }

    fn reason(d: Detection) -> String {
        match d {
            Detection::Unsupported(why) => why,
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    /// A pid that cannot exist (above pid_max's ceiling), so nothing is ever read.
    const NO_PID: u32 = 0x7fff_fff0;

    #[test]
    fn not_python() {
        assert!(matches!(detect(NO_PID, &[]), Detection::NotPython));
        let files = [
            file("/usr/lib/libpython3.so", b""),
            file("/usr/bin/python3-config", b""),
            file("/usr/lib/libc.so.6", b""),
        ];
        assert!(matches!(detect(NO_PID, &files), Detection::NotPython));
    }

    #[test]
    fn unsupported_reasons() {
        let why = reason(detect(NO_PID, &[file("/x/libpython3.13t.so.1.0", b"")]));
        assert!(why.contains("free-threaded"), "{why}");
        let why = reason(detect(
            NO_PID,
            &[file("/x/python3.11 (deleted)", b"garbage")],
        ));
        assert!(why.starts_with("python3.11: not a readable ELF"), "{why}");
        for (ver, minor) in [("3.7.16", 7), ("3.6.15", 6)] {
            let path = format!("/root/.pyenv/versions/{ver}/lib/libpython3.{minor}m.so.1.0");
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let segments = Segments::parse(&bytes);
            let why = reason(detect(NO_PID, &[file_with(&path, &bytes, &segments)]));
            assert_eq!(
                why,
                format!("python 3.{minor}: unsupported layout, native frames only")
            );
        }
    }

    #[test]
    fn libpython_wins_over_the_executable() {
        let path = "/root/.pyenv/versions/3.12.1/lib/libpython3.12.so.1.0";
        let Ok(bytes) = std::fs::read(path) else {
            return;
        };
        // The executable's bytes are garbage: picking it would fail differently.
        let segments = Segments::parse(&bytes);
        let files = [
            file("/root/.pyenv/versions/3.12.1/bin/python3.12", b"x"),
            file_with(path, &bytes, &segments),
        ];
        let why = reason(detect(NO_PID, &files));
        assert!(
            why.starts_with("python 3.12: cannot read target memory"),
            "{why}"
        );
    }
}
