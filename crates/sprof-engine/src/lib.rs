//! sprofd's session engine: events in, unwound and aggregated stacks out.
//!
//! Every way of profiling (`attach`, `record`, `--dump-every`, a live view, the daemon's
//! windows) is a driver around the same [`Engine`]: the driver picks an
//! [`EventSource`](sprof_core::EventSource), a stop condition and what to do with
//! snapshots, and [`run`] pumps the source into the engine.
//!
//! # What the caller provides
//!
//! * **Events**, one at a time, to [`Engine::handle`]: samples (borrowing their stack bytes
//!   from wherever they were read), mmap, comm, fork, exit, lost and throttle records. The
//!   state of a process that existed before sampling arrives as synthetic events, so there
//!   is no other way in.
//! * **A [`ModuleLoader`]** that reads the bytes of a newly mapped file (the live loader goes
//!   through `/proc/PID/map_files`; tests hand over fixture files).
//! * Optionally, **[`SampleHook`]s**: per-sample extension points that see the sample
//!   (registers, stack copy, tid, time) and the native frames, and may replace or add frames
//!   (interpreter frames, e.g. Python) or change the sample's weight (wall-clock durations).
//!
//! # What the engine does
//!
//! It keeps an address space per process (mappings, framehop modules) and the names of live
//! threads and processes, current from the events; walks each sample's stack (frame
//! pointers or DWARF CFI, [`sprof_unwind`]); runs the hooks; and interns the stack into a
//! [`ProfileBuilder`]. JIT frames are named later from the process's perf map, which the
//! engine reads (through the loader) while the process is alive: when a sampled JIT address
//! is not in it yet, it is read again at the end of the drain, at most every
//! [`sprof_core::jit::REFRESH_INTERVAL`], and kept after the process exits until its frames
//! are symbolized. An exiting or exec'ing process's address space and names are dropped
//! at once; module bytes that no live process maps are released at the next
//! [`Engine::take_window`] (after the window that refers to them has been handed out), so
//! memory follows the live set rather than the history.
//!
//! [`Engine::snapshot`] copies out everything gathered so far without disturbing sampling
//! (a dump, a live view); [`Engine::take_window`] hands out the current window and starts
//! the next (interned frames and stacks are kept, counts start again). Both return a
//! [`RawProfile`] of addresses: symbolization happens elsewhere, against
//! [`Engine::modules`].
//!
//! # Cost
//!
//! Once warm, handling a sample allocates nothing: the frame buffer is reused, stacks are
//! interned by id, and thread entries are created once (tested with a counting allocator).

pub mod handoff;
mod memory;
mod names;
mod offcpu;
pub mod replay;

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use sprof_core::{
    Event, EventSource, FrameKey, InterpFunction, ModuleLoader, ModuleTable, ProfileBuilder,
    RawProfile, Sample, SampleKind,
};
use sprof_unwind::{StackWalker, UnwindMode, UnwindStats};

pub use memory::MemoryStats;
pub use names::Names;
pub use offcpu::{OffCpu, OffCpuStats};

/// How the engine unwinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    pub unwind: UnwindMode,
    /// Keep kernel frames (the source must have recorded them).
    pub kernel_frames: bool,
    /// Measure the time each unwind takes (for `--verbose` and the benchmark).
    pub time_unwind: bool,
}

/// What a hook may use while it looks at a sample.
pub struct HookContext<'a> {
    /// Address spaces and modules, as of this sample.
    pub walker: &'a StackWalker,
    /// Where interpreted functions are interned for [`FrameKey::Interp`] frames.
    pub functions: &'a mut dyn FnMut(InterpFunction) -> u32,
}

/// A per-sample extension point.
///
/// Hooks run in the order they were added, on the sampling thread, right after the native
/// walk, while the sample's bytes are still in the ring buffer: a hook that reads the target
/// (interpreter frames) does so as close to the sample as the engine can get it.
pub trait SampleHook {
    /// Sees every non-sample event after the engine has applied it.
    fn on_event(&mut self, _event: &Event<'_>, _walker: &StackWalker) {}

    /// May rewrite `frames` (leaf first, as unwound) and `weight` (the sample's period).
    fn on_sample(
        &mut self,
        sample: &Sample<'_>,
        cx: &mut HookContext<'_>,
        frames: &mut Vec<FrameKey>,
        weight: &mut u64,
    );

    /// Lines for `--verbose` and the table footer, e.g. `python: 5120 frames, ...`.
    fn report(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Most unwind timings kept per window; beyond it the percentiles describe the first ones.
const MAX_TIMINGS: usize = 1 << 20;

/// The session engine.
pub struct Engine {
    config: EngineConfig,
    walker: StackWalker,
    loader: Box<dyn ModuleLoader>,
    builder: ProfileBuilder,
    names: Names,
    hooks: Vec<Box<dyn SampleHook>>,
    frames: Vec<FrameKey>,
    unwind_ns: Vec<u32>,
    offcpu: OffCpu,
    filter: Option<Filter>,
    limits: Option<Limits>,
    /// Perf maps refused (owner, permissions), each reported once; see
    /// [`Engine::take_jit_warnings`].
    jit_warnings: Vec<String>,
    /// Processes whose mappings should be read again, with when they last were asked for.
    resyncs: Resyncs,
    /// Mmap records taken per process in this window (with [`Limits::mmaps_per_window`]).
    mmaps: std::collections::HashMap<sprof_core::Pid, u32>,
    /// Mmap records skipped over that limit, this session.
    pub mmaps_skipped: u64,
    /// Memory mode: the sampled pages not given back yet.
    residency: memory::Residency,
}

/// Processes sampled in code no known mapping covers: their mmap records were lost (an mmap
/// flood fills the ring buffer), so their mappings are read again from /proc, at most every
/// [`RESYNC_INTERVAL`] per process.
#[derive(Default)]
struct Resyncs {
    asked: std::collections::HashMap<sprof_core::Pid, Instant>,
    due: Vec<sprof_core::Pid>,
}

const RESYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// Processes remembered as asked for before the oldest are forgotten.
const MAX_RESYNCS: usize = 4096;

impl Resyncs {
    fn ask(&mut self, pid: sprof_core::Pid, now: Instant) {
        if self
            .asked
            .get(&pid)
            .is_some_and(|t| now.saturating_duration_since(*t) < RESYNC_INTERVAL)
        {
            return;
        }
        if self.asked.len() >= MAX_RESYNCS {
            self.asked
                .retain(|_, t| now.saturating_duration_since(*t) < RESYNC_INTERVAL);
        }
        self.asked.insert(pid, now);
        self.due.push(pid);
    }
}

/// Which processes' samples are kept: a predicate on (pid, process name).
pub type ProcessFilter = Box<dyn Fn(sprof_core::Pid, &str) -> bool>;

/// A [`ProcessFilter`] and its decisions so far (made once per process and name).
struct Filter {
    keep: ProcessFilter,
    decided: std::collections::HashMap<sprof_core::Pid, bool>,
    /// Samples dropped by the filter.
    dropped: u64,
}

/// Caps that bound the engine's memory whatever the sampled host does (the daemon's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Unique stack nodes per window; samples beyond go to `[other]`.
    pub stack_nodes: usize,
    /// Windows a module stays loaded after no process maps it any more.
    pub module_grace: u32,
    /// Address spaces kept at most (processes); beyond it the one sampled longest ago goes.
    pub processes: usize,
    /// Mmap records taken per process per window; beyond it they are skipped and the
    /// process's maps are read again later ([`EventSource::resync`]), so that one process
    /// mapping in a loop costs a bounded share of the engine's time.
    pub mmaps_per_window: u32,
}

/// Counters of a session, for status lines, `--verbose` and metrics.
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    pub unwind: UnwindStats,
    /// Unwind time per sample in nanoseconds (median, 99th percentile) and how many were
    /// measured; zero unless [`EngineConfig::time_unwind`].
    pub unwind_median_ns: u32,
    pub unwind_p99_ns: u32,
    pub unwind_timed: usize,
    /// Processes with a live address space.
    pub processes: usize,
    /// Threads with samples in the current window.
    pub threads_sampled: usize,
    /// Bytes of module files held.
    pub module_bytes: usize,
    pub modules: usize,
}

impl Engine {
    pub fn new(config: EngineConfig, loader: Box<dyn ModuleLoader>) -> Engine {
        Engine {
            config,
            walker: StackWalker::new(config.unwind, config.kernel_frames),
            loader,
            builder: ProfileBuilder::new(),
            names: Names::default(),
            hooks: Vec::new(),
            frames: Vec::with_capacity(256),
            unwind_ns: Vec::new(),
            offcpu: OffCpu::default(),
            filter: None,
            limits: None,
            jit_warnings: Vec::new(),
            resyncs: Resyncs::default(),
            mmaps: std::collections::HashMap::new(),
            mmaps_skipped: 0,
            residency: memory::Residency::default(),
        }
    }

    /// Memory mode with a source that reports memory given back ([`Event::Release`]): page
    /// fault samples are counted under `[kept]` and move to `[freed]` when their page is.
    pub fn track_releases(&mut self) {
        self.residency.tracking = true;
    }

    /// Memory mode's kept/freed counters so far.
    pub fn memory_stats(&self) -> MemoryStats {
        self.residency.stats
    }

    /// Keeps only the samples of processes `keep` accepts (asked once per process, and again
    /// when it execs or renames itself); the others are not even unwound.
    pub fn set_filter(&mut self, keep: ProcessFilter) {
        self.filter = Some(Filter {
            keep,
            decided: std::collections::HashMap::new(),
            dropped: 0,
        });
    }

    /// Samples the filter dropped so far.
    pub fn filtered(&self) -> u64 {
        self.filter.as_ref().map_or(0, |f| f.dropped)
    }

    /// Bounds the aggregation for a long-running session: at most `stack_nodes` unique stack
    /// nodes per window (the rest counted in `[other]`), and the interner starts afresh
    /// at every window. For on-CPU sampling only (see
    /// [`ProfileBuilder::take_window_compacting`]).
    pub fn set_limits(&mut self, limits: Limits) {
        self.builder.set_stack_limit(Some(limits.stack_nodes));
        self.walker.modules.set_release_grace(limits.module_grace);
        self.walker.set_max_spaces(Some(limits.processes));
        self.limits = Some(limits);
    }

    /// Counts an mmap record of `pid`; true once the process is over its budget.
    fn over_mmap_budget(&mut self, pid: sprof_core::Pid) -> bool {
        let Some(limit) = self.limits.as_ref().map(|l| l.mmaps_per_window) else {
            return false;
        };
        let n = self.mmaps.entry(pid).or_insert(0);
        *n = n.saturating_add(1);
        *n > limit
    }

    /// Whether the filter keeps `pid`'s samples.
    fn keeps(&mut self, pid: sprof_core::Pid) -> bool {
        let Some(f) = &mut self.filter else {
            return true;
        };
        let keep = match f.decided.get(&pid) {
            Some(&k) => k,
            None => {
                let k = (f.keep)(pid, self.names.process(pid).unwrap_or(""));
                f.decided.insert(pid, k);
                k
            }
        };
        if !keep {
            f.dropped += 1;
        }
        keep
    }

    /// Keeps the timer samples in time order (at most `cap`), for outputs that show them as
    /// they happened (speedscope's time order); see [`ProfileBuilder::keep_timeline`].
    pub fn keep_timeline(&mut self, cap: usize) {
        self.builder.keep_timeline(cap);
    }

    /// Adds a hook; it sees samples from now on.
    pub fn add_hook(&mut self, hook: Box<dyn SampleHook>) {
        self.hooks.push(hook);
    }

    /// Takes one event.
    pub fn handle(&mut self, event: Event<'_>) {
        match event {
            Event::Sample(s) => self.on_sample(&s),
            Event::Release(r) => self.residency.on_release(&mut self.builder, &r),
            Event::Lost { count } => self.builder.stats.lost += count,
            Event::Throttle { unthrottle } => {
                if !unthrottle {
                    self.builder.stats.throttled += 1;
                }
            }
            Event::Switch(sw) => {
                for (pid, tid) in self.offcpu.on_switch(&mut self.builder, &sw) {
                    self.names.name_thread(pid, tid, &mut self.builder);
                }
            }
            Event::Mmap(m) if self.over_mmap_budget(m.pid) => {
                self.mmaps_skipped += 1;
                self.resyncs.ask(m.pid, Instant::now());
            }
            e => {
                match &e {
                    Event::Exit(x) => {
                        self.offcpu.forget(x.tid);
                        if x.pid.0 == x.tid.0 {
                            // A last read for what it wrote since the last one, while its
                            // files may still be reachable.
                            if self.walker.modules.jit.has_misses(x.pid) {
                                self.refresh_jit_of(Some(x.pid));
                            }
                            self.walker.modules.jit.close(x.pid);
                            self.loader.forget_process(x.pid);
                            self.residency.forget(x.pid);
                        }
                    }
                    Event::Comm(c) if c.exec => {
                        self.residency.forget(c.pid);
                        self.walker.modules.jit.reset(c.pid);
                        self.loader.forget_process(c.pid);
                    }
                    Event::Mmap(m) if sprof_core::jitdump::is_jitdump_path(&m.mapping.path) => {
                        self.walker.modules.jit.add_jitdump(m.pid, &m.mapping);
                    }
                    _ => {}
                }
                self.walker.on_event(&e, self.loader.as_mut());
                self.names.on_event(&e, &mut self.builder);
                if let (
                    Some(f),
                    Event::Comm(sprof_core::CommEvent { pid, .. })
                    | Event::Exit(sprof_core::ExitEvent { pid, .. }),
                ) = (&mut self.filter, &e)
                {
                    // Decided again under its new name (or for the next process of that pid).
                    f.decided.remove(pid);
                }
                for h in &mut self.hooks {
                    h.on_event(&e, &self.walker);
                }
            }
        }
    }

    fn on_sample(&mut self, s: &Sample<'_>) {
        if !self.keeps(s.pid) {
            return;
        }
        let t0 = (self.config.time_unwind && self.unwind_ns.len() < MAX_TIMINGS).then(Instant::now);
        let stats = self.walker.stats;
        self.walker.unwind(s, &mut self.frames);
        if self.jit_read_due(s.pid) {
            // The walk stopped in JIT code the perf map does not describe yet, and how to
            // step out of some JIT frames depends on their entry: read it now and walk again
            // (counted once).
            self.refresh_jit_of(Some(s.pid));
            self.walker.stats = stats;
            self.walker.unwind(s, &mut self.frames);
        }
        if let Some(t0) = t0 {
            self.unwind_ns
                .push(t0.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
        }
        for f in &self.frames {
            match *f {
                FrameKey::Jit { pid, addr } => {
                    self.walker
                        .modules
                        .jit
                        .note_address(pid, addr.lookup_address());
                }
                FrameKey::Unmapped(_) => self.resyncs.ask(s.pid, Instant::now()),
                _ => {}
            }
        }
        let mut weight = s.period;
        if !self.hooks.is_empty() {
            let builder = &mut self.builder;
            let mut intern = |f: InterpFunction| builder.intern_function(f);
            let mut cx = HookContext {
                walker: &self.walker,
                functions: &mut intern,
            };
            for h in &mut self.hooks {
                h.on_sample(s, &mut cx, &mut self.frames, &mut weight);
            }
        }
        let new_thread = match s.kind {
            // A hook may leave a sample out by zeroing its weight (`--mode gil`).
            SampleKind::Timer if weight == 0 => false,
            SampleKind::Timer => {
                self.builder
                    .add_sample_at(s.time, s.pid, s.tid, &self.frames, weight)
                    .new_thread
            }
            // A switch-out sample: its weight, the time until the thread is back on a CPU, is
            // known once its switch-in record is (see offcpu).
            SampleKind::Switch => {
                if let Some(stack) = self.builder.note_sample(&self.frames) {
                    self.offcpu
                        .on_sample((s.pid, s.tid), stack, s.time, s.period);
                }
                false
            }
            SampleKind::Fault => {
                self.frames.extend(self.residency.root_marker());
                let added = self
                    .builder
                    .add_sample_at(s.time, s.pid, s.tid, &self.frames, weight);
                if let Some(stack) = added.stack {
                    self.residency.on_fault(s, stack, weight);
                }
                added.new_thread
            }
            // Delivered as `Event::Release` by the sampler.
            SampleKind::Release => false,
        };
        if new_thread {
            self.names.name_thread(s.pid, s.tid, &mut self.builder);
        }
    }

    /// Whether the walk just done ended at a JIT frame of `pid` that its perf map does not
    /// cover, and reading the map is allowed now.
    fn jit_read_due(&mut self, pid: sprof_core::Pid) -> bool {
        let [.., FrameKey::Jit { addr, .. }, FrameKey::Marker(sprof_core::Marker::Truncated)] =
            self.frames[..]
        else {
            return false;
        };
        let jit = &mut self.walker.modules.jit;
        jit.note_address(pid, addr.lookup_address());
        jit.refresh_due(pid, Instant::now())
    }

    /// Tells the engine that a source's drain is complete: what waited for the rest of the
    /// drain (off-CPU intervals and their samples) is paired now. [`run`] calls it.
    pub fn end_of_drain(&mut self) {
        for (pid, tid) in self.offcpu.end_of_drain(&mut self.builder) {
            self.names.name_thread(pid, tid, &mut self.builder);
        }
        self.refresh_jit_of(None);
    }

    /// Reads the perf maps of processes whose sampled JIT addresses they did not name yet
    /// (rate-limited), or at once that of `pid`.
    fn refresh_jit_of(&mut self, pid: Option<sprof_core::Pid>) {
        let loader = self.loader.as_mut();
        let mut read = |pid, file: sprof_core::JitFile<'_>, offset, max, buf: &mut Vec<u8>| {
            loader.read_jit_file(pid, file, offset, max, buf)
        };
        let jit = &mut self.walker.modules.jit;
        match pid {
            Some(pid) => self
                .jit_warnings
                .extend(jit.refresh(pid, Instant::now(), &mut read)),
            None => self
                .jit_warnings
                .extend(jit.refresh_missed(Instant::now(), &mut read)),
        }
    }

    /// Gives threads still switched out at `now` (CLOCK_MONOTONIC nanoseconds, the clock of
    /// sample times) their off-CPU time so far; call once at the end of a session.
    pub fn settle(&mut self, now: u64) {
        for (pid, tid) in self.offcpu.settle(&mut self.builder, now) {
            self.names.name_thread(pid, tid, &mut self.builder);
        }
    }

    /// Off-CPU accounting so far.
    pub fn offcpu_stats(&self) -> OffCpuStats {
        self.offcpu.stats
    }

    /// Everything gathered so far; sampling goes on undisturbed.
    pub fn snapshot(&self) -> RawProfile {
        self.builder.snapshot()
    }

    /// The window gathered since the last call, and a new one begins. Module bytes that no
    /// live process maps and the returned window does not need are released.
    pub fn take_window(&mut self) -> RawProfile {
        self.mmaps.clear();
        self.residency.new_window();
        let raw = match self.limits {
            Some(_) => self.builder.take_window_compacting(),
            None => self.builder.take_window(),
        };
        self.unwind_ns.clear();
        let keep = raw.referenced_modules();
        self.walker.release_unused_modules(|id| keep.contains(&id));
        let keep_jit = raw.referenced_jit_processes();
        self.walker
            .modules
            .jit
            .release_closed(|pid| keep_jit.contains(&pid));
        raw
    }

    /// The modules that [`FrameKey::Module`] frames refer to.
    pub fn modules(&self) -> &ModuleTable {
        &self.walker.modules
    }

    pub fn walker(&self) -> &StackWalker {
        &self.walker
    }

    /// Samples so far in this window.
    pub fn samples(&self) -> u64 {
        self.builder.stats.samples
    }

    /// Threads with samples in this window.
    pub fn threads_sampled(&self) -> usize {
        self.builder.threads_sampled()
    }

    /// Processes whose mappings should be read again (sampled in code no known mapping
    /// covers), to hand to [`EventSource::resync`]; [`run`] does.
    pub fn take_resyncs(&mut self) -> Vec<sprof_core::Pid> {
        std::mem::take(&mut self.resyncs.due)
    }

    /// Lost records so far in this window.
    pub fn lost(&self) -> u64 {
        self.builder.stats.lost
    }

    /// Unwind time of each sample of this window so far, in nanoseconds (when
    /// [`EngineConfig::time_unwind`]; the first [`MAX_TIMINGS`] only).
    pub fn unwind_times(&self) -> &[u32] {
        &self.unwind_ns
    }

    pub fn stats(&self) -> EngineStats {
        let mut t = self.unwind_ns.clone();
        t.sort_unstable();
        let pct = |p: f64| {
            t.get(((t.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        EngineStats {
            unwind: self.walker.stats,
            unwind_median_ns: pct(0.5),
            unwind_p99_ns: pct(0.99),
            unwind_timed: t.len(),
            processes: self.walker.processes(),
            threads_sampled: self.builder.threads_sampled(),
            module_bytes: self.walker.modules.resident_bytes(),
            modules: self.walker.modules.iter().count(),
        }
    }

    /// The perf maps refused since the last call, each reason once (owner, permissions).
    /// The engine keeps them until taken: a long session must take them now and then.
    pub fn take_jit_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.jit_warnings)
    }

    /// What the hooks have to say (see [`SampleHook::report`]).
    pub fn hook_reports(&self) -> Vec<String> {
        self.hooks.iter().flat_map(|h| h.report()).collect()
    }
}

/// Pumps `source` into `engine` until `tick` breaks or the source is exhausted: wait for
/// events (at most `poll`), deliver them, call `tick`. On break, the source is disabled and
/// drained one last time, so nothing it already recorded is lost. Returns what `tick` broke
/// with, or `None` when the source ended first (a recording at its end; a live source never
/// does).
///
/// Every driver (attach, record, dumps, live views, the daemon's windows) is this loop with a
/// different `tick`: it checks stop conditions, updates a status line, writes snapshots.
pub fn run<T>(
    source: &mut dyn EventSource,
    engine: &mut Engine,
    poll: Duration,
    mut tick: impl FnMut(&mut Engine) -> ControlFlow<T>,
) -> Option<T> {
    loop {
        source.wait(poll);
        source.drain(&mut |e| engine.handle(e));
        engine.end_of_drain();
        for pid in engine.take_resyncs() {
            source.resync(pid);
        }
        let end = match tick(engine) {
            ControlFlow::Break(t) => Some(t),
            ControlFlow::Continue(()) if source.exhausted() => None,
            ControlFlow::Continue(()) => continue,
        };
        source.disable();
        source.drain(&mut |e| engine.handle(e));
        engine.end_of_drain();
        return end;
    }
}
