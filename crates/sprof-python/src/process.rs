//! One Python process: discovery ([`detect`]) and the per-thread stack reader
//! ([`PythonProcess::read_thread`], and [`PythonProcess::read_thread_at`] /
//! [`PythonProcess::recover_returned`] for reads anchored to a sample's stack copy).
//!
//! This module owns the reader's state; its jobs are in submodules: [`detect`] (finding the
//! interpreter and opening the reader), `threads` (the tid → thread-state map), `walk` (the
//! chain of frames), `anchor` (reads as of the sample) and `code_cache` (code objects and
//! lines); `asyncio` adds the running task's awaiters.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::time::{Duration, Instant};

mod anchor;
mod asyncio;
mod code_cache;
mod detect;
mod threads;
mod walk;

pub use asyncio::{AsyncOffsets, TaskStack};
pub use detect::detect;

use crate::layout::Layout;
use crate::mem::{check_range, le_i32, le_u32, le_u64, Mem};
use crate::{strings, CodeId, CodeTable, MappedFile, PyError, PyFrame};

/// Frames per thread, threads per interpreter, interpreters per process (§9 caps).
const MAX_FRAMES: usize = 4096;
const MAX_THREADS: usize = 4096;
const MAX_INTERPRETERS: usize = 64;

/// Bytes read below each frame read, in the same syscall, hoping to catch its callers (data
/// stack frames are adjacent). A larger read costs a few µs more; another syscall costs more.
const SPECULATE: usize = 8192;

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

/// What [`PythonProcess::thread_flags`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadFlags {
    /// Whether the thread held the GIL; `None` where the layout does not say (≤ 3.10).
    pub holds_gil: Option<bool>,
    /// Whether the interpreter was collecting garbage.
    pub gc: bool,
}

/// A detected, supported Python process; see the crate docs.
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

impl PythonProcess {
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
}
