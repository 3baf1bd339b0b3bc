//! The engine's Python frame hook: per sample of a Python process, reads the sampled
//! thread's Python frames at once (the sample's bytes are still in the ring buffer) and puts
//! them in place of the interpreter's eval frames in the native stack.
//!
//! Detection runs once per process, at its first sample, and again after an exec or a new
//! mapping of the interpreter; an interpreter not initialised yet is retried every 20 ms.
//! Everything the hook learns is reported through [`SampleHook::report`]: frames found,
//! samples whose native and Python stacks disagreed (by kind), unreadable samples, and the
//! skew between the sample and the read.
//!
//! When the sample carries its user registers and a copy of the user stack (DWARF unwinding),
//! the read is anchored to the sample with [`PythonProcess::read_thread_at`], which on 3.11
//! and 3.12 takes the innermost frame from the copy instead of from the thread's state at read
//! time; otherwise (frame-pointer unwinding: no copy) it is [`PythonProcess::read_thread`].
//! When an anchored chain leaves eval frames of the native stack unpaired (the thread returned
//! from those activations since the sample), the hook asks
//! [`PythonProcess::recover_returned`] for them and merges again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sprof_core::{Event, FrameKey, InterpFunction, Marker, ModuleId, Pid, Sample, Tid};
use sprof_engine::{HookContext, SampleHook};
use sprof_unwind::StackWalker;

use crate::{
    detect, AsyncOffsets, CodeId, CodeTable, Detection, MappedFile, MergeMarker, Merged, PyFrame,
    PythonProcess, SampleStack, TaskStack,
};

/// How soon an interpreter that is not initialised yet is looked at again, for its first
/// [`STARTING`]: a starting Python is ready within tens of milliseconds, and every sample
/// before it is read without Python frames (a child that runs 0.3 s lost half of them when
/// the wait doubled from the first look).
const RETRY_NOT_READY: Duration = Duration::from_millis(20);
/// How long an interpreter may take to start before it is looked at less often.
const STARTING: Duration = Duration::from_secs(1);
/// The wait between looks after [`STARTING`]: a program that links libpython and never
/// starts it (perf, gdb, vim) is looked at once a second, not 50 times (~170 µs a look,
/// measured: 0.85% of a core for one `perf record` on the host).
const RETRY_NOT_READY_LATER: Duration = Duration::from_secs(1);
/// Skews kept for the percentiles (per session; beyond it the first ones speak).
const MAX_SKEWS: usize = 1 << 20;

enum ProcState {
    /// Not looked at yet, or to be looked at again (exec, new interpreter mapping).
    Unknown,
    NotPython,
    NotReady {
        next: Instant,
        /// When it was first found not ready.
        since: Instant,
    },
    Unsupported,
    Python(Box<Tracked>),
}

struct Tracked {
    reader: PythonProcess,
    /// Modules that hold the interpreter's code, where eval frames can be.
    interp_modules: Vec<ModuleId>,
    /// `--async`: the `_asyncio` module's task layout, once a mapped file published it.
    aio: Option<AsyncOffsets>,
    /// How many mappings the process had when `aio` was last looked for.
    aio_checked: usize,
    /// Tasks seen before, by their coroutine's frame address: when a thread switched tasks
    /// between the read of its frames and of its running task, the frames name their task.
    coro_tasks: HashMap<u64, u64>,
}

/// Most coroutine frames remembered per process.
const MAX_CORO_TASKS: usize = 4096;

/// Counters of what the hook did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PythonStats {
    pub processes: u64,
    /// Looks at processes whose libpython was mapped but not initialised (yet).
    pub not_ready_looks: u64,
    /// Samples of threads with a Python thread state.
    pub samples: u64,
    pub frames: u64,
    /// Samples whose native eval frames and Python groups matched one to one.
    pub consistent: u64,
    pub advanced: u64,
    pub unavailable: u64,
    pub no_eval_frame: u64,
    pub unreadable: u64,
    /// Reads anchored to the sample's stack copy ([`PythonProcess::read_thread_at`]).
    pub anchored: u64,
    /// Anchored reads of a thread that had moved on since the sample (newer frames dropped).
    pub anchor_moved: u64,
    /// Reads given a stack copy that fell back to the read-time chain.
    pub unanchored: u64,
    /// Anchored samples completed with activations the thread had returned from since
    /// ([`PythonProcess::recover_returned`]).
    pub recovered: u64,
    /// Reads of samples without a stack copy (`frame-pointer` unwinding): read-time chain.
    pub no_stack_copy: u64,
    /// Samples taken during a garbage collection (a `[gc]` frame under the Python frame).
    pub gc: u64,
    /// Samples `--mode gil` left out (the thread did not hold the GIL).
    pub gil_dropped: u64,
    /// `--async`: samples whose thread ran an asyncio task, with its chain spliced in.
    pub in_tasks: u64,
}

/// The hook; add it to an engine with [`sprof_engine::Engine::add_hook`].
pub struct PythonHook {
    procs: HashMap<Pid, ProcState>,
    codes: CodeTable,
    /// Engine function id of each code id.
    func_ids: Vec<Option<u32>>,
    py: Vec<PyFrame>,
    merged: Vec<Merged<FrameKey>>,
    native: Vec<FrameKey>,
    skews_ns: Vec<u64>,
    /// One-line notices for the user (`python 3.10: unsupported layout, ...`), said once.
    pub notices: Vec<String>,
    pub stats: PythonStats,
    /// `--mode gil`: keep only samples of threads holding the GIL.
    gil_only: bool,
    /// `--async`: asyncio task chains spliced into the Python frames (3.14+).
    async_tasks: bool,
    tasks: Vec<TaskStack>,
    /// Per thread: what its samples did with the GIL.
    gil: HashMap<(Pid, Tid), GilCounts>,
}

/// Most threads whose GIL use is tracked; later ones are counted under no thread.
const MAX_GIL_THREADS: usize = 4096;

/// One thread's samples by what they did with the GIL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GilCounts {
    /// Running with the GIL.
    pub holding: u64,
    /// Without it, in a function that waits for it (`take_gil` and its callers).
    pub waiting: u64,
    /// Without it, elsewhere: in C code that released it (I/O, hashing, compression).
    pub released: u64,
}

impl Default for PythonHook {
    fn default() -> Self {
        PythonHook::new()
    }
}

impl PythonHook {
    pub fn new() -> PythonHook {
        PythonHook {
            procs: HashMap::new(),
            codes: CodeTable::default(),
            func_ids: Vec::new(),
            py: Vec::with_capacity(256),
            merged: Vec::with_capacity(512),
            native: Vec::with_capacity(512),
            skews_ns: Vec::new(),
            notices: Vec::new(),
            stats: PythonStats::default(),
            gil_only: false,
            async_tasks: false,
            tasks: Vec::new(),
            gil: HashMap::new(),
        }
    }

    /// Splices each thread's asyncio task chain into its Python frames (`--async`): the
    /// running task's frames under `[task NAME]`, under the frames where the task awaiting
    /// it waits, up to the root task. CPython 3.14+; older ones say they cannot.
    pub fn async_tasks(mut self) -> PythonHook {
        self.async_tasks = true;
        self
    }

    /// Keeps only the samples taken while the sampled thread held the GIL (`--mode gil`).
    pub fn gil_only(mut self) -> PythonHook {
        self.gil_only = true;
        self
    }

    /// Per thread, what its samples did with the GIL (3.11+).
    pub fn gil_counts(&self) -> &HashMap<(Pid, Tid), GilCounts> {
        &self.gil
    }

    /// Skew between sample and read, nanoseconds: (median, 99th percentile, count).
    pub fn skew(&self) -> (u64, u64, usize) {
        let mut s = self.skews_ns.clone();
        s.sort_unstable();
        let pct = |p: f64| {
            s.get(((s.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        (pct(0.5), pct(0.99), s.len())
    }

    /// Looks for the interpreter of `pid`; `since`: when it was first found not ready (now,
    /// for a first look), which sets how soon a process still not ready is looked at again.
    fn detect(&mut self, pid: Pid, walker: &StackWalker, since: Instant) -> ProcState {
        let maps = walker.mappings(pid);
        let files: Vec<MappedFile<'_>> = maps
            .iter()
            .filter_map(|(m, id)| {
                let module = walker.modules.get(*id)?;
                Some(MappedFile {
                    path: &m.path,
                    start: m.start,
                    end: m.end,
                    file_offset: m.file_offset,
                    executable: m.executable,
                    bytes: module.bytes.as_deref()?,
                    segments: &module.segments,
                })
            })
            .collect();
        match detect(pid.0, &files) {
            Detection::NotPython => ProcState::NotPython,
            Detection::NotReady => {
                self.stats.not_ready_looks += 1;
                let now = Instant::now();
                let wait = if now.duration_since(since) < STARTING {
                    RETRY_NOT_READY
                } else {
                    RETRY_NOT_READY_LATER
                };
                ProcState::NotReady {
                    next: now + wait,
                    since,
                }
            }
            Detection::Unsupported(reason) => {
                if !self.notices.contains(&reason) {
                    eprintln!("sprofd: {reason}");
                    self.notices.push(reason);
                }
                ProcState::Unsupported
            }
            Detection::Python(reader) => {
                self.stats.processes += 1;
                let mut interp_modules: Vec<ModuleId> = maps
                    .iter()
                    .filter(|(m, _)| {
                        reader
                            .interpreter_ranges()
                            .iter()
                            .any(|r| r.start < m.end && m.start < r.end)
                    })
                    .map(|(_, id)| *id)
                    .collect();
                interp_modules.dedup();
                ProcState::Python(Box::new(Tracked {
                    reader,
                    interp_modules,
                    aio: None,
                    aio_checked: 0,
                    coro_tasks: HashMap::new(),
                }))
            }
        }
    }

    fn function_id(&mut self, code: CodeId, intern: &mut dyn FnMut(InterpFunction) -> u32) -> u32 {
        let i = code.0 as usize;
        if let Some(Some(id)) = self.func_ids.get(i) {
            return *id;
        }
        let info = self.codes.get(code);
        let id = intern(InterpFunction {
            name: info.qualname.clone(),
            file: info.filename.clone(),
            first_line: info.first_line,
        });
        if self.func_ids.len() <= i {
            self.func_ids.resize(i + 1, None);
        }
        self.func_ids[i] = Some(id);
        id
    }
}

/// Whether a native frame of `pid` is an eval frame of `reader`'s interpreter.
fn eval_pred<'a>(
    walker: &'a StackWalker,
    pid: Pid,
    modules: &'a [ModuleId],
    reader: &'a PythonProcess,
) -> impl Fn(&FrameKey) -> bool + 'a {
    move |k| frame_address(walker, pid, modules, k).is_some_and(|a| reader.is_eval_address(a))
}

/// The absolute address of a native frame of `pid`, when it is in one of `modules`.
fn frame_address(
    walker: &StackWalker,
    pid: Pid,
    modules: &[ModuleId],
    key: &FrameKey,
) -> Option<u64> {
    let FrameKey::Module { module, .. } = key else {
        return None;
    };
    if !modules.contains(module) {
        return None;
    }
    let (_, offset) = key.lookup_offset()?;
    walker
        .mappings(pid)
        .iter()
        .filter(|(_, id)| id == module)
        .find_map(|(m, _)| {
            let end = m.file_offset + (m.end - m.start);
            (m.file_offset <= offset && offset < end).then(|| m.start + (offset - m.file_offset))
        })
}

impl PythonHook {
    /// Detects the interpreter of `pid` when it is unknown, or not ready and due again.
    fn ensure_detected(&mut self, pid: Pid, walker: &StackWalker) {
        let state = self.procs.entry(pid).or_insert(ProcState::Unknown);
        let now = Instant::now();
        let since = match state {
            ProcState::Unknown => now,
            ProcState::NotReady { next, since } if now >= *next => *since,
            _ => return,
        };
        let s = self.detect(pid, walker, since);
        self.procs.insert(pid, s);
    }

    fn count_outcome(&mut self, outcome: &crate::MergeOutcome) {
        self.stats.frames += self.py.len() as u64;
        if outcome.consistent {
            self.stats.consistent += 1;
        }
        self.stats.advanced += u64::from(outcome.dropped_groups > 0);
        self.stats.unavailable += u64::from(outcome.unavailable_evals > 0);
        self.stats.no_eval_frame += u64::from(outcome.no_eval_frame);
    }

    /// The merged stack as engine frames, into `frames` (cleared first).
    fn emit(
        &mut self,
        frames: &mut Vec<FrameKey>,
        functions: &mut dyn FnMut(InterpFunction) -> u32,
    ) {
        frames.clear();
        for i in 0..self.merged.len() {
            let key = match self.merged[i] {
                Merged::Native(k) => k,
                Merged::Python(f) => FrameKey::Interp {
                    func: self.function_id(f.code, functions),
                    line: f.line,
                },
                Merged::Marker(m) => FrameKey::Marker(match m {
                    MergeMarker::StackAdvanced => Marker::InterpAdvanced,
                    MergeMarker::FrameUnavailable => Marker::InterpUnavailable,
                    MergeMarker::NoEvalFrame => Marker::InterpUnplaced,
                }),
            };
            frames.push(key);
        }
    }
}

/// Looks for the `_asyncio` module's task layout among `pid`'s mapped files (the interpreter
/// itself when the module is built in, as Debian's 3.15 has it; else `_asyncio*.so`, loaded
/// when the program imports asyncio), again only when the process mapped something new.
fn find_async_offsets(tracked: &mut Tracked, walker: &StackWalker, pid: Pid) {
    let maps = walker.mappings(pid);
    if tracked.aio.is_some() || maps.len() == tracked.aio_checked {
        return;
    }
    tracked.aio_checked = maps.len();
    let mut tried: Vec<ModuleId> = Vec::new();
    for (m, id) in maps {
        let short = m.short_name();
        if !(short.starts_with("_asyncio") || sprof_core::is_interpreter_module(short))
            || tried.contains(id)
        {
            continue;
        }
        tried.push(*id);
        let found = walker
            .modules
            .get(*id)
            .and_then(|module| module.bytes.as_deref())
            .and_then(AsyncOffsets::from_elf);
        if found.is_some() {
            tracked.aio = found;
            return;
        }
    }
}

/// Splices the task chain of the thread just read into `py` (innermost first), right outside
/// the running task's coroutine frame. Returns whether it did.
fn splice_tasks(
    tracked: &mut Tracked,
    codes: &mut CodeTable,
    py: &mut Vec<PyFrame>,
    tasks: &mut Vec<TaskStack>,
) -> bool {
    let Some(aio) = tracked.aio else {
        return false;
    };
    let found = |tasks: &[TaskStack], py: &[PyFrame]| {
        let first = tasks.first()?;
        py.iter().position(|f| f.addr == first.coro_frame)
    };
    let mut at = None;
    if tracked.reader.task_chain(&aio, None, codes, tasks).is_ok() {
        at = found(tasks, py);
    }
    if at.is_none() {
        // The running task changed between the two reads: the outermost frame of a task seen
        // before names the one these frames belong to.
        let known = py
            .iter()
            .rev()
            .find_map(|f| tracked.coro_tasks.get(&f.addr).copied());
        if let Some(task) = known {
            if tracked
                .reader
                .task_chain(&aio, Some(task), codes, tasks)
                .is_ok()
            {
                at = found(tasks, py);
            }
        }
    }
    let Some(at) = at else {
        return false;
    };
    if tracked.coro_tasks.len() >= MAX_CORO_TASKS {
        tracked.coro_tasks.clear();
    }
    for t in tasks.iter() {
        tracked.coro_tasks.insert(t.coro_frame, t.task);
    }
    let mut extra = Vec::new();
    for (k, t) in tasks.iter().enumerate() {
        if k > 0 {
            extra.extend(t.frames.iter().copied());
        }
        let label = format!("[task {}]", t.name);
        extra.push(PyFrame {
            addr: 0,
            code: codes.intern(&label, &label, "", 0),
            line: 0,
            entry: false,
        });
    }
    py.splice(at + 1..at + 1, extra);
    true
}

/// The footer's GIL lines: each thread's share of samples holding the GIL, waiting for it
/// and not needing it, busiest threads first (at most 16 lines).
fn gil_lines(gil: &HashMap<(Pid, Tid), GilCounts>) -> Vec<String> {
    let mut threads: Vec<(&(Pid, Tid), &GilCounts)> = gil.iter().collect();
    threads.sort_by_key(|(k, c)| (std::cmp::Reverse(c.holding + c.waiting + c.released), **k));
    let shown = threads.len().min(16);
    let mut lines: Vec<String> = threads[..shown]
        .iter()
        .map(|((pid, tid), c)| {
            let n = (c.holding + c.waiting + c.released).max(1) as f64;
            format!(
                "python: GIL, pid {} thread {}: holding {:.1}%, waiting {:.1}%, not needed {:.1}% of {} samples",
                pid.0,
                tid.0,
                100.0 * c.holding as f64 / n,
                100.0 * c.waiting as f64 / n,
                100.0 * c.released as f64 / n,
                c.holding + c.waiting + c.released
            )
        })
        .collect();
    if threads.len() > shown {
        lines.push(format!(
            "python: GIL: {} more threads",
            threads.len() - shown
        ));
    }
    lines
}

/// Reads thread `tid`'s Python frames, anchored to the sample's stack copy when there is one.
/// Returns the read and whether it was anchored.
fn read_stack(
    stats: &mut PythonStats,
    reader: &mut PythonProcess,
    codes: &mut CodeTable,
    out: &mut Vec<PyFrame>,
    tid: u32,
    at: Option<SampleStack<'_>>,
) -> (Result<bool, crate::PyError>, bool) {
    match at {
        Some(at) => {
            let before = reader.stats();
            let r = reader.read_thread_at(tid, at, codes, out);
            let after = reader.stats();
            stats.anchored += after.anchored - before.anchored;
            stats.anchor_moved += after.anchor_moved - before.anchor_moved;
            stats.unanchored += after.unanchored - before.unanchored;
            (r, after.anchored > before.anchored)
        }
        None => {
            let r = reader.read_thread(tid, codes, out);
            // Counted like the reader counts `unanchored`: threads with a thread state.
            stats.no_stack_copy += u64::from(!matches!(r, Ok(false)));
            (r, false)
        }
    }
}

impl SampleHook for PythonHook {
    fn on_event(&mut self, event: &Event<'_>, _walker: &StackWalker) {
        match event {
            Event::Mmap(m) => {
                // A new interpreter mapping (or any mapping before detection succeeded) may
                // change what detection finds.
                if let Some(state) = self.procs.get_mut(&m.pid) {
                    let interp = sprof_core::is_interpreter_module(m.mapping.short_name());
                    if interp && !matches!(state, ProcState::Python(_)) {
                        *state = ProcState::Unknown;
                    }
                }
            }
            Event::Comm(c) if c.exec => {
                self.procs.remove(&c.pid);
            }
            Event::Fork(f) if f.pid != f.ppid => {
                // A forked child runs the same interpreter at the same addresses; detect it
                // afresh (its thread states are its own).
                self.procs.remove(&f.pid);
            }
            Event::Exit(x) => {
                if x.pid.0 == x.tid.0 {
                    self.procs.remove(&x.pid);
                } else if let Some(ProcState::Python(t)) = self.procs.get_mut(&x.pid) {
                    t.reader.forget_thread(x.tid.0);
                }
            }
            _ => {}
        }
    }

    fn on_sample(
        &mut self,
        sample: &Sample<'_>,
        cx: &mut HookContext<'_>,
        frames: &mut Vec<FrameKey>,
        weight: &mut u64,
    ) {
        // `--mode gil`: a sample counts only once the thread is known to hold the GIL.
        let full_weight = *weight;
        if self.gil_only {
            *weight = 0;
            self.stats.gil_dropped += 1;
        }
        self.ensure_detected(sample.pid, cx.walker);
        let Some(ProcState::Python(tracked)) = self.procs.get_mut(&sample.pid) else {
            return;
        };
        let tracked = &mut **tracked;
        let at = sample
            .user_regs
            .filter(|_| !sample.user_stack.is_empty())
            .map(|regs| SampleStack {
                sp: regs.sp,
                bytes: sample.user_stack,
            });
        let (read, anchored) = read_stack(
            &mut self.stats,
            &mut tracked.reader,
            &mut self.codes,
            &mut self.py,
            sample.tid.0,
            at,
        );
        if self.skews_ns.len() < MAX_SKEWS && sample.time > 0 {
            self.skews_ns
                .push(sprof_perf::sys::monotonic_ns().saturating_sub(sample.time));
        }
        // Right after the frames, as close to the sample as they are.
        let flags = match read {
            Ok(true) => tracked.reader.thread_flags().ok(),
            _ => None,
        };
        let walker = cx.walker;
        if self.async_tasks && matches!(read, Ok(true)) {
            if tracked.reader.has_task_layout() {
                find_async_offsets(tracked, walker, sample.pid);
                if splice_tasks(tracked, &mut self.codes, &mut self.py, &mut self.tasks) {
                    self.stats.in_tasks += 1;
                }
            } else {
                let (major, minor, _) = tracked.reader.version();
                let why = format!(
                    "python {major}.{minor}: --async needs CPython 3.14+ (older interpreters publish no task layout); no task stacks"
                );
                if !self.notices.contains(&why) {
                    eprintln!("sprofd: {why}");
                    self.notices.push(why);
                }
            }
        }
        let modules = &tracked.interp_modules;
        let is_eval = eval_pred(walker, sample.pid, modules, &tracked.reader);
        match read {
            Ok(false) => return,
            Err(_) => {
                self.stats.samples += 1;
                self.stats.unreadable += 1;
                // The Python part is unknown: mark the outermost eval frame, keep the rest.
                if let Some(i) = frames.iter().rposition(is_eval) {
                    frames[i] = FrameKey::Marker(Marker::InterpUnreadable);
                }
                return;
            }
            Ok(true) => {}
        }
        self.stats.samples += 1;
        let truncated = frames.last() == Some(&FrameKey::Marker(Marker::Truncated));
        self.native.clear();
        self.native
            .extend_from_slice(&frames[..frames.len() - usize::from(truncated)]);
        let mut outcome = crate::merge(&self.native, is_eval, &self.py, &mut self.merged);
        if let (true, Some(at), n @ 1..) = (anchored, at, outcome.unavailable_evals) {
            // The thread returned from `n` activations since the sample: look for them in
            // the copy, now that the native stack says how many there were.
            let recovered =
                tracked
                    .reader
                    .recover_returned(sample.tid.0, at, n, &mut self.codes, &mut self.py);
            if recovered {
                self.stats.recovered += 1;
                let is_eval = eval_pred(walker, sample.pid, modules, &tracked.reader);
                outcome = crate::merge(&self.native, is_eval, &self.py, &mut self.merged);
            }
        }
        // Without the GIL, inside a function that takes it: waiting for it.
        let waiting = flags.and_then(|f| f.holds_gil) == Some(false)
            && self.native.iter().any(|k| {
                frame_address(walker, sample.pid, modules, k)
                    .is_some_and(|a| tracked.reader.is_gil_take_address(a))
            });
        self.count_outcome(&outcome);
        self.emit(frames, cx.functions);
        if truncated && !outcome.no_eval_frame {
            frames.push(FrameKey::Marker(Marker::Truncated));
        }
        let Some(flags) = flags else {
            return;
        };
        if flags.gc {
            // Under the Python frame whose allocation triggered the collection.
            self.stats.gc += 1;
            let at = frames
                .iter()
                .position(|f| matches!(f, FrameKey::Interp { .. }))
                .unwrap_or(0);
            frames.insert(at, FrameKey::Marker(Marker::Gc));
        }
        let Some(holds) = flags.holds_gil else {
            return;
        };
        let key = (sample.pid, sample.tid);
        if self.gil.len() < MAX_GIL_THREADS || self.gil.contains_key(&key) {
            let c = self.gil.entry(key).or_default();
            if holds {
                c.holding += 1;
            } else if waiting {
                c.waiting += 1;
            } else {
                c.released += 1;
            }
        }
        if self.gil_only && holds {
            *weight = full_weight;
            self.stats.gil_dropped -= 1;
        }
    }

    fn report(&self) -> Vec<String> {
        let s = self.stats;
        let mut not_ready = Vec::new();
        if s.not_ready_looks > 0 {
            not_ready.push(format!(
                "python: {} looks at interpreters not initialised (yet)",
                s.not_ready_looks
            ));
        }
        if s.processes == 0 {
            return [self.notices.clone(), not_ready].concat();
        }
        let (median, p99, n) = self.skew();
        let reads = s.anchored + s.unanchored + s.no_stack_copy;
        let mismatched = s.samples - s.consistent;
        let pct = |x: u64| 100.0 * x as f64 / s.samples.max(1) as f64;
        let mut lines = vec![
            format!(
                "python: {} frames in {} samples of {} process(es); {} samples ({:.1}%) mismatched ({} stack advanced, {} frame unavailable, {} no eval frame, {} unreadable)",
                s.frames, s.samples, s.processes, mismatched, pct(mismatched),
                s.advanced, s.unavailable, s.no_eval_frame, s.unreadable
            ),
            format!(
                "python: read skew after the sample median {:.1} µs, p99 {:.1} µs over {n} reads",
                median as f64 / 1e3,
                p99 as f64 / 1e3
            ),
            format!(
                "python: {} of {} reads ({:.1}%) anchored to the sample's stack copy ({} of them moved on since the sample, {} completed with returned activations from the copy), {} fell back to the read-time chain, {} without a stack copy",
                s.anchored,
                reads,
                100.0 * s.anchored as f64 / reads.max(1) as f64,
                s.anchor_moved,
                s.recovered,
                s.unanchored,
                s.no_stack_copy
            ),
        ];
        if s.gc > 0 {
            lines.push(format!(
                "python: {} samples ({:.1}%) during a garbage collection, under [gc]",
                s.gc,
                pct(s.gc)
            ));
        }
        if self.async_tasks && s.in_tasks > 0 {
            lines.push(format!(
                "python: {} samples ({:.1}%) in asyncio tasks, under [task NAME] frames",
                s.in_tasks,
                pct(s.in_tasks)
            ));
        }
        if self.gil_only {
            lines.push(format!(
                "python: --mode gil: {} samples of threads not holding the GIL left out",
                s.gil_dropped
            ));
        }
        lines.extend(gil_lines(&self.gil));
        lines.extend(self.notices.iter().cloned());
        lines.extend(not_ready);
        lines
    }
}
