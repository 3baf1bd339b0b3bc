//! Python frames for sprofd: reads a CPython thread's stack from outside the process and
//! splices it into the native stack the unwinder produced. CPython 3.8–3.13 on Linux x86_64
//! (glibc); free-threaded builds and other versions are reported [`Detection::Unsupported`].
//!
//! # What the caller provides
//!
//! * For [`detect`]: the target's pid and its file-backed mappings as [`MappedFile`]s — the
//!   `/proc/PID/maps` line plus the file's bytes, read through `/proc/PID/map_files/…` so deleted
//!   and container binaries work. The executable mappings are enough. Detection is per process;
//!   redo it after an exec or when the interpreter's mapping changes, and retry after
//!   [`Detection::NotReady`] (py-spy retries 20 × 20 ms).
//! * For [`PythonProcess::read_thread`]: the sampled thread's host TID, as soon as possible
//!   after the sample (before unwinding or symbolising), and a [`CodeTable`] shared by all
//!   processes. Call [`PythonProcess::forget_thread`] when a thread exits. When the sample
//!   carries its user sp and a copy of the user stack, call
//!   [`PythonProcess::read_thread_at`] with them instead (see below).
//! * For [`merge`]: the unwound native frames, leaf first, and a predicate telling which of them
//!   are eval frames — normally [`PythonProcess::is_eval_address`] on the frame's address.
//!
//! # What the crate does
//!
//! [`detect`] picks `libpython3.X*.so*` (else a `python3.X`/`python3` executable) among the
//! files, locates `_PyRuntime` (`.symtab`/`.dynsym`, then the `.PyRuntime` section), computes
//! the load bias, and reads the version (`Py_Version`, else the file name — then the micro
//! version is reported as 0). 3.13 layouts come from the `_Py_DebugOffsets` table the target
//! publishes, validated before use; 3.8–3.12 layouts are built in.
//!
//! [`PythonProcess::read_thread`] reads with `process_vm_readv` only: no ptrace, the target is
//! never paused or signalled. It reads the thread's `PyThreadState` (cached per tid and
//! re-validated on every use — `native_thread_id`, or on ≤ 3.10 the tid in glibc's
//! `struct pthread`, and `interp` must match — else the thread list is walked again), then the
//! frame chain, then one batched read that checks every frame's code object against a
//! per-process cache keyed by address and a checksum of immutable fields (so a reused address
//! is noticed). A new code object costs two more reads, for its names and line table. On 3.11+
//! each frame read also fetches the 8 KiB below the frame in the same syscall, which usually
//! holds the callers (the data stack grows upwards), so a 17-frame chain costs ~5 syscalls.
//! Lines come from the version's line table. Every pointer is checked, chains are capped at
//! 4096 frames, loops detected, and on 3.11+ a chain that does not end at the thread's first
//! entry frame is recognised as torn by a concurrent push/pop and re-read (up to 4 times).
//! Failures are per-thread [`PyError`]s. Host TIDs are translated through `NSpid` when the
//! target runs in its own pid namespace.
//!
//! The chain is read *after* the sample, so the innermost frames may have moved on: [`merge`]
//! matches eval activations from the root and reports every mismatch with a [`MergeMarker`].
//!
//! # Reads anchored to the sample: [`PythonProcess::read_thread_at`]
//!
//! A perf sample with `PERF_SAMPLE_STACK_USER` holds a copy of the top of the user stack as
//! it was at the sample ([`SampleStack`]: sp and bytes). What that copy pins, per version:
//!
//! * **3.11, 3.12: anchored.** Every `_PyEval_EvalFrameDefault` activation keeps a
//!   `_PyCFrame` as a local, linked from `tstate->cframe` outwards, whose `current_frame` is
//!   the activation's innermost frame. The reader follows the live cframe chain past the
//!   activations entered after the sample (cframes below `sp`) to the first one that lies in
//!   the copy with the same `previous` there as now, and takes its `current_frame` from the
//!   copy: the activation's frame at the moment of the sample. Frames the thread pushed after
//!   the sample are left out.
//!   * When that frame is still on the thread's chain at read time and was not popped in
//!     between (the thread only went deeper, or did not move), the chain is exactly the
//!     sample's, except the innermost frame's line, which is read now.
//!   * If it was popped and another frame pushed at the same address, the result is that
//!     frame's chain: one the thread had between the sample and the read (for a key function
//!     called again, the same code at the same depth).
//!   * When the frame is popped at read time, its memory is used only if nothing was pushed
//!     over it as far as the reader can see (it lies above the data stack's top and rejoins
//!     the live chain at the thread's innermost frame, right under it); otherwise, and when
//!     the thread returned past the copy, the read falls back.
//!   * Activations the thread *returned* from since the sample are missing from an anchored
//!     chain: their cframes may still be in the copy, but so are images of cframes that had
//!     returned before the sample (and any word pair that looks like one), so the read does
//!     not look for them on its own; [`merge`] marks their eval frames
//!     [`MergeMarker::FrameUnavailable`]. Given how many eval frames were left unpaired (the
//!     native stack is unwound from the same copy, so that number is exact),
//!     [`PythonProcess::recover_returned`] looks for that many cframes below the anchor in
//!     the copy, walks each candidate (at most 16), and adds the frames of the one candidate
//!     whose walk crosses every activation boundary exactly where the copy says; else
//!     nothing. [`PythonHook`] does this.
//!   * Honest gaps that remain: a sample in an eval activation's prologue or epilogue, or
//!     (3.12) while it runs its entry trampoline, has no Python frame of its own at that
//!     instant, and stays unavailable.
//!
//!   Frame memory reused at the same address between the sample and the read cannot always
//!   be seen from outside (nothing in a frame dates it); the residual cases are in the docs
//!   of `PythonProcess::walk_anchored` and [`PythonProcess::recover_returned`].
//! * **3.13: falls back.** There is no `_PyCFrame`: the innermost frame is only in
//!   `tstate->current_frame` (heap) and in the eval loop's registers. The copy does hold each
//!   activation's on-stack entry (shim) frame, whose `previous` is the *calling* activation's
//!   frame at the call, so it pins every activation's frame but the innermost one's, the one
//!   that moves fastest. Trimming activations whose shim lies below `sp` (entered after the
//!   sample) would be sound but still leaves the innermost activation read-time; not done.
//! * **3.8-3.10: falls back.** Frames are heap `PyFrameObject`s, `tstate->frame` is in the
//!   heap, and 3.10's on-stack `CFrame` has no frame pointer (only `use_tracing` and
//!   `previous`); the eval loop's `f` lives in a register or an unnamed spill slot, not
//!   findable reliably.
//!
//! A fallback is exactly [`PythonProcess::read_thread`]. [`ReadStats::anchored`],
//! [`ReadStats::anchor_moved`] (anchored reads where the thread had moved since the sample),
//! [`ReadStats::unanchored`] and [`ReadStats::recovered`] count what happened.
//!
//! Cost: the same syscalls as `read_thread` when the thread has not moved (the cframe read
//! replaces the `current_frame` read; parked threads in `tests/live.rs`: 15-19 µs and 5-7
//! syscalls per read with warm caches, as `read_thread`), one more per activation entered
//! since the sample, and when it has moved one more walk (the read-time chain, to check the
//! anchored frame against it), mostly served by the same speculative block reads.
//! `recover_returned` scans the copy (16 KiB: 2048 words per level) and walks each
//! candidate, a few syscalls. Measured end to end (`sprofd record -F 999`, the `native` mode
//! of `tests/fixtures/python/workload.py`: `sorted(key=key_fn)` with 20 000 calls per sort,
//! 3 s, 2-vCPU VM, three runs each against `read_thread`): samples whose native and Python
//! stacks disagreed went from 19-21 % to 3.6-4.2 % on pyenv 3.11.7, from 20-21 % to 12-13 %
//! on Debian's 3.11.2 and from 23 % to 12-13 % on 3.12.1; "stack advanced" nearly vanishes,
//! what remains is mostly "frame unavailable" for the transitions above (a key function's
//! activation spends much of its short life in the eval loop's prologue and epilogue).
//!
//! [`PythonHook`] is all of this as an engine [`SampleHook`](sprof_engine::SampleHook): the
//! engine calls it per sample, right after the native walk, and it replaces each eval frame
//! with the Python frames it ran (`FrameKey::Interp`), marking every mismatch. It reads with
//! [`PythonProcess::read_thread_at`] when the sample has user registers and a stack copy
//! (DWARF unwinding), else (`frame-pointer` mode) with [`PythonProcess::read_thread`].
//!
//! # Cost
//!
//! Measured on a 2-vCPU VM with `tests/live.rs` (`busy_*`: 1000 reads of a thread that is
//! running a 17-frame recursion with a generator at the leaf; all code objects cached):
//! 3.11–3.13 ≈ 16–28 µs and 5–6 syscalls per read; 3.10 (one read per frame object)
//! ≈ 26 µs and 16 syscalls for 14 frames. A code-cache miss adds 2 syscalls per new code
//! object; a tid without a thread state answers from a negative cache for 250 ms.
//!
//! # Meaning of `PyFrame::entry`
//!
//! `entry` closes a group of frames run by one native `_PyEval_EvalFrameDefault` activation
//! (cpython-frames.md §7). On 3.11 it is the frame's own `is_entry` flag. On 3.12/3.13 it is set
//! on the frame just inside a shim frame (`owner == 3`, which is dropped). On ≤ 3.10 every frame
//! is its own activation, so every frame has it. A 3.13 frame whose executable is not a code
//! object is skipped and passes its flag to the next inner frame.
//!
//! # Names
//!
//! [`CodeInfo::qualname`] is `co_qualname` on 3.11+; before 3.11 code objects have no qualname
//! and it equals [`CodeInfo::name`] (`co_name`).

mod codes;
mod debug_offsets;
mod elf;
mod hook;
mod layout;
mod linetable;
mod mem;
mod merge;
mod process;
mod strings;

use sprof_core::Segments;

pub use codes::{CodeInfo, CodeTable};
pub use hook::{GilCounts, PythonHook, PythonStats};
pub use merge::{merge, MergeMarker, MergeOutcome, Merged};
pub use process::{
    detect, AsyncOffsets, PythonProcess, ReadStats, SampleStack, TaskStack, ThreadFlags,
};

/// One file-backed mapping of the target process (a `/proc/PID/maps` line), plus the file's
/// bytes as read via `/proc/PID/map_files` and their load segments (the module table's).
#[derive(Clone, Copy, Debug)]
pub struct MappedFile<'a> {
    pub path: &'a str,
    pub start: u64,
    pub end: u64,
    pub file_offset: u64,
    /// The mapping's `x` permission: which of two segments sharing a page it maps.
    pub executable: bool,
    pub bytes: &'a [u8],
    pub segments: &'a Segments,
}

/// What [`detect`] found.
// Detection happens once per process and the reader is moved out at once; boxing it would only
// add an indirection to every read.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Detection {
    /// No `python3.X` executable or `libpython3.X*.so*` among the files.
    NotPython,
    /// An interpreter is there but not initialised yet (`interpreters.head == 0`): retry later.
    NotReady,
    /// A Python the crate cannot read, with a one-line reason (e.g. "python 3.7: unsupported
    /// layout, native frames only"). Keep profiling it natively.
    Unsupported(String),
    Python(PythonProcess),
}

/// One Python frame as read from the target.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PyFrame {
    /// The `_PyInterpreterFrame`'s (or frame object's) address in the target; 0 for frames
    /// that stand for something else (an asyncio task's `[task NAME]`).
    pub addr: u64,
    pub code: CodeId,
    /// Source line; 0 = unknown.
    pub line: u32,
    /// Closes an eval-activation group (see the crate docs and [`merge`]).
    pub entry: bool,
}

/// A code object's identity in a [`CodeTable`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct CodeId(pub u32);

/// Why one thread's Python stack could not be read. The sample keeps its native frames.
#[derive(thiserror::Error, Debug)]
pub enum PyError {
    #[error("reading {what} at {addr:#x} failed (errno {errno})")]
    Read {
        what: &'static str,
        addr: u64,
        errno: i32,
    },
    #[error("{what} pointer {addr:#x} is not a plausible user-space address")]
    BadPointer { what: &'static str, addr: u64 },
    #[error("frame chain ends at {addr:#x}, short of the thread's first entry frame")]
    TornChain { addr: u64 },
    #[error("frame chain revisits {addr:#x}")]
    FrameLoop { addr: u64 },
    #[error("frame {addr:#x} has unknown owner {owner}")]
    BadFrame { addr: u64, owner: u8 },
    #[error("{addr:#x} is not a code object")]
    NotCode { addr: u64 },
    #[error("str at {addr:#x}: {reason}")]
    BadString { addr: u64, reason: &'static str },
    #[error("cannot map host tid {tid} into the target's pid namespace: {reason}")]
    Namespace { tid: u32, reason: String },
}

impl PyError {
    /// Failures that a target changing under the reader explains (the walk is worth retrying),
    /// as opposed to a thread-namespace problem.
    pub fn is_race(&self) -> bool {
        !matches!(self, PyError::Namespace { .. })
    }
}
