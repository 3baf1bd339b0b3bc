//! The aggregator: interned frames, stacks as a prefix tree, counts per thread and stack.
//!
//! The sampling thread feeds it one unwound stack per sample. Frames are keyed by module and
//! file offset (never by name: names are resolved once per unique frame at export), and stacks
//! are interned root first, so the many samples that share a prefix share its nodes and a
//! repeated stack costs one hash lookup per frame and no allocation.

use std::collections::HashMap;

use crate::{FrameAddr, Pid, Tid};

/// Index of a module (a mapped file, the vdso, ...) in the module table of whoever owns the
/// address spaces; the aggregator treats it as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleId(pub u32);

/// Index of an interned frame in [`RawProfile::frames`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameId(pub u32);

/// Index of an interned stack node in [`RawProfile::stacks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackId(pub u32);

/// A function of interpreted code, as its interpreter names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InterpFunction {
    /// Qualified name, e.g. `Handler.get`.
    pub name: String,
    pub file: String,
    /// Line of the definition (`co_firstlineno`).
    pub first_line: u32,
}

/// Why a stack ends where it does, when that is not the program's entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Marker {
    /// The walk stopped before the root: the copied stack ended, unwind information was
    /// missing or wrong, or code without unwind information (JIT) was reached.
    Truncated,
    /// The sample had no user-space part (a kernel thread, or a thread in the kernel whose
    /// user registers were not captured).
    NoUserStack,
    /// The interpreter's frames had moved on (deeper) between the sample and their read; the
    /// surplus inner frames are dropped here.
    InterpAdvanced,
    /// An interpreter activation on the native stack whose interpreted frames had already
    /// returned when they were read.
    InterpUnavailable,
    /// The interpreter's frames could not be read for this sample.
    InterpUnreadable,
    /// Interpreted frames were read but the native walk found no interpreter activation to
    /// put them in (the native walk broke): they are appended here.
    InterpUnplaced,
    /// Off-CPU time of a thread before its first context-switch sample.
    OffCpuUnsampled,
    /// The interpreter was collecting garbage, triggered under the Python frame above.
    Gc,
    /// Samples whose stacks did not fit under the profile's cap on unique stacks
    /// ([`ProfileBuilder::set_stack_limit`]).
    Other,
    /// Memory mode, at a stack's root: memory faulted in that was still resident at the end
    /// (not given back by `munmap`, `madvise` or `brk`).
    Kept,
    /// Memory mode, at a stack's root: memory faulted in and given back before the end.
    Freed,
}

impl Marker {
    /// The frame name exporters show; brackets make it unmistakable for a function name.
    pub fn name(self) -> &'static str {
        match self {
            Marker::Truncated => "[truncated]",
            Marker::NoUserStack => "[no user stack]",
            Marker::InterpAdvanced => "[python: stack advanced]",
            Marker::InterpUnavailable => "[python frame unavailable]",
            Marker::InterpUnreadable => "[python frame unreadable]",
            Marker::InterpUnplaced => "[python: no eval frame]",
            Marker::OffCpuUnsampled => "[off-cpu: not sampled]",
            Marker::Gc => "[gc]",
            Marker::Other => "[other]",
            Marker::Kept => "[kept]",
            Marker::Freed => "[freed]",
        }
    }
}

/// One frame, before symbolization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameKey {
    /// A user-space address inside a known module; `offset` is the file offset of the address
    /// (for a return address, of the return address itself: subtract one to look it up).
    Module {
        module: ModuleId,
        offset: u64,
        is_return: bool,
    },
    /// A user-space address outside any known mapping.
    Unmapped(FrameAddr),
    /// An address in anonymous executable memory of process `pid` (JIT code): named at
    /// symbolization from that process's perf map, by absolute address.
    Jit {
        pid: Pid,
        addr: FrameAddr,
    },
    /// A kernel address.
    Kernel(u64),
    Marker(Marker),
    /// A frame of interpreted code (Python), found by a frame hook: the function is an index
    /// into [`RawProfile::interp_functions`], the line is the line executing (0: unknown).
    Interp {
        func: u32,
        line: u32,
    },
}

impl FrameKey {
    /// The offset to look up in the module's tables.
    pub fn lookup_offset(&self) -> Option<(ModuleId, u64)> {
        match *self {
            FrameKey::Module {
                module,
                offset,
                is_return,
            } => Some((
                module,
                if is_return {
                    offset.saturating_sub(1)
                } else {
                    offset
                },
            )),
            _ => None,
        }
    }
}

/// A thread as the profile names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadInfo {
    pub pid: Pid,
    pub tid: Tid,
    /// The thread's name (`comm`).
    pub name: String,
    /// The process's name (its main thread's `comm`).
    pub process_name: String,
}

/// Counts for one (thread, stack) pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub samples: u64,
    /// Sum of the samples' periods (CPU nanoseconds for `cpu-clock`).
    pub period: u64,
}

/// Session-wide counters that every output reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub samples: u64,
    /// Records the kernel dropped (`PERF_RECORD_LOST`).
    pub lost: u64,
    pub throttled: u64,
    /// Samples whose stack ends in [`Marker::Truncated`].
    pub truncated: u64,
    /// Samples whose stack has at least one JIT frame ([`FrameKey::Jit`]).
    pub jit: u64,
    /// Samples counted in the [`Marker::Other`] stack because the cap on unique stacks was
    /// reached.
    pub over_limit: u64,
}

/// The interning aggregator.
#[derive(Debug, Default)]
pub struct ProfileBuilder {
    frames: Vec<FrameKey>,
    frame_ids: HashMap<FrameKey, FrameId>,
    stacks: Vec<(Option<StackId>, FrameId)>,
    stack_ids: HashMap<(Option<StackId>, FrameId), StackId>,
    threads: Vec<ThreadInfo>,
    thread_ids: HashMap<Tid, usize>,
    counts: HashMap<(usize, StackId), Counts>,
    functions: Vec<InterpFunction>,
    function_ids: HashMap<InterpFunction, u32>,
    /// Most stack nodes interned; `None`: no cap.
    stack_limit: Option<usize>,
    /// Each timer sample in arrival order, when kept ([`ProfileBuilder::keep_timeline`]).
    timeline: Option<Timeline>,
    pub stats: SessionStats,
}

/// The samples in the order they were taken, up to a cap.
#[derive(Debug, Default)]
struct Timeline {
    entries: Vec<TimelineEntry>,
    cap: usize,
    /// Samples not kept because the cap was reached.
    dropped: u64,
}

#[derive(Debug, Clone, Copy)]
struct TimelineEntry {
    time: u64,
    thread: usize,
    stack: StackId,
    weight: u64,
}

/// Where a sample went in the builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    /// The thread appeared in the profile with this sample: its names are still empty.
    pub new_thread: bool,
    /// The stack it was counted in (none for an empty stack).
    pub stack: Option<StackId>,
}

impl ProfileBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    fn intern_frame(&mut self, key: FrameKey) -> FrameId {
        if let Some(&id) = self.frame_ids.get(&key) {
            return id;
        }
        let id = FrameId(self.frames.len() as u32);
        self.frames.push(key);
        self.frame_ids.insert(key, id);
        id
    }

    /// Interns a stack given leaf first, as unwinders produce it. Returns `None` for an empty
    /// stack.
    pub fn intern_stack_leaf_first(&mut self, frames: &[FrameKey]) -> Option<StackId> {
        let mut parent = None;
        for &key in frames.iter().rev() {
            let frame = self.intern_frame(key);
            let next = match self.stack_ids.get(&(parent, frame)) {
                Some(&id) => id,
                None if self.stack_limit.is_some_and(|max| self.stacks.len() >= max) => {
                    self.stats.over_limit += 1;
                    return Some(self.other_stack());
                }
                None => self.push_stack(parent, frame),
            };
            parent = Some(next);
        }
        parent
    }

    fn push_stack(&mut self, parent: Option<StackId>, frame: FrameId) -> StackId {
        let id = StackId(self.stacks.len() as u32);
        self.stacks.push((parent, frame));
        self.stack_ids.insert((parent, frame), id);
        id
    }

    /// The one-frame `[other]` stack (interned past the cap: one node more at most).
    fn other_stack(&mut self) -> StackId {
        let frame = self.intern_frame(FrameKey::Marker(Marker::Other));
        match self.stack_ids.get(&(None, frame)) {
            Some(&id) => id,
            None => self.push_stack(None, frame),
        }
    }

    /// Caps the unique stack nodes (prefix-tree nodes) the builder interns: a sample whose
    /// stack would need more is counted in an `[other]` stack and in
    /// [`SessionStats::over_limit`]. With [`ProfileBuilder::take_window_compacting`] this
    /// bounds the builder's memory whatever the workload.
    pub fn set_stack_limit(&mut self, max_nodes: Option<usize>) {
        self.stack_limit = max_nodes;
    }

    fn thread_index(&mut self, pid: Pid, tid: Tid) -> (usize, bool) {
        if let Some(&i) = self.thread_ids.get(&tid) {
            if self.threads[i].pid == pid {
                return (i, false);
            }
        }
        let i = self.threads.len();
        self.threads.push(ThreadInfo {
            pid,
            tid,
            name: String::new(),
            process_name: String::new(),
        });
        self.thread_ids.insert(tid, i);
        (i, true)
    }

    /// Adds one sample of `pid/tid` whose stack is `frames`, leaf first, standing for
    /// `weight` (the event period: CPU nanoseconds for `cpu-clock`).
    pub fn add_sample(&mut self, pid: Pid, tid: Tid, frames: &[FrameKey], weight: u64) -> Added {
        self.add_sample_at(0, pid, tid, frames, weight)
    }

    /// [`ProfileBuilder::add_sample`] for a sample taken at `time` (CLOCK_MONOTONIC ns), which
    /// the timeline keeps when asked to ([`ProfileBuilder::keep_timeline`]).
    pub fn add_sample_at(
        &mut self,
        time: u64,
        pid: Pid,
        tid: Tid,
        frames: &[FrameKey],
        weight: u64,
    ) -> Added {
        let Some(stack) = self.note_sample(frames) else {
            return Added {
                new_thread: false,
                stack: None,
            };
        };
        let added = self.add_counts(pid, tid, stack, 1, weight);
        if let Some(t) = &mut self.timeline {
            if t.entries.len() < t.cap {
                let thread = self.thread_ids.get(&tid).copied().unwrap_or(0);
                t.entries.push(TimelineEntry {
                    time,
                    thread,
                    stack,
                    weight,
                });
            } else {
                t.dropped += 1;
            }
        }
        added
    }

    /// Keeps every timer sample in time order (at most `cap`), for outputs that show
    /// samples as they happened (speedscope's time order). Off by default: the per-sample
    /// path then stores nothing but counts.
    pub fn keep_timeline(&mut self, cap: usize) {
        self.timeline = Some(Timeline {
            entries: Vec::new(),
            cap,
            dropped: 0,
        });
    }

    /// Counts a sample whose stack is `frames` (leaf first) in the statistics and interns the
    /// stack, without counting it for any thread yet: its weight is known later
    /// ([`ProfileBuilder::add_counts`]).
    pub fn note_sample(&mut self, frames: &[FrameKey]) -> Option<StackId> {
        self.stats.samples += 1;
        // Memory mode's [kept] sits outside a [truncated] walk's end.
        let outer = match frames {
            [.., t, FrameKey::Marker(Marker::Kept | Marker::Freed)] => Some(t),
            _ => frames.last(),
        };
        if outer == Some(&FrameKey::Marker(Marker::Truncated)) {
            self.stats.truncated += 1;
        }
        if frames.iter().any(|f| matches!(f, FrameKey::Jit { .. })) {
            self.stats.jit += 1;
        }
        self.intern_stack_leaf_first(frames)
    }

    /// Adds counts to an interned stack of `pid/tid` (a sample whose weight became known
    /// after the sample, such as the time a thread stayed switched out).
    pub fn add_counts(
        &mut self,
        pid: Pid,
        tid: Tid,
        stack: StackId,
        samples: u64,
        weight: u64,
    ) -> Added {
        let (thread, new_thread) = self.thread_index(pid, tid);
        let c = self.counts.entry((thread, stack)).or_default();
        c.samples += samples;
        c.period += weight;
        Added {
            new_thread,
            stack: Some(stack),
        }
    }

    /// Moves `samples` and `weight` of `pid/tid`'s counts from stack `from` to stack `to`
    /// (memory mode: memory counted as kept was given back). Nothing moves, and `false` is
    /// returned, when `from` does not hold them in this window (a window taken since).
    pub fn move_counts(
        &mut self,
        pid: Pid,
        tid: Tid,
        from: StackId,
        to: StackId,
        samples: u64,
        weight: u64,
    ) -> bool {
        let Some(&thread) = self.thread_ids.get(&tid) else {
            return false;
        };
        if self.threads[thread].pid != pid {
            return false;
        }
        match self.counts.get_mut(&(thread, from)) {
            Some(c) if c.samples >= samples && c.period >= weight => {
                c.samples -= samples;
                c.period -= weight;
                if c.samples == 0 {
                    self.counts.remove(&(thread, from));
                }
            }
            _ => return false,
        }
        let c = self.counts.entry((thread, to)).or_default();
        c.samples += samples;
        c.period += weight;
        true
    }

    /// `stack` with its outermost frame replaced by `root` (interned as needed): memory mode's
    /// `[kept]` stack becomes its `[freed]` twin.
    pub fn with_root(&mut self, stack: StackId, root: FrameKey) -> Option<StackId> {
        let mut chain = Vec::new();
        let mut at = Some(stack);
        while let Some(id) = at {
            let &(parent, frame) = self.stacks.get(id.0 as usize)?;
            chain.push(frame);
            at = parent;
        }
        // `chain` is leaf first; its last entry is the root to replace.
        let root = self.intern_frame(root);
        let mut parent = None;
        for frame in std::iter::once(root).chain(chain.into_iter().rev().skip(1)) {
            parent = Some(match self.stack_ids.get(&(parent, frame)) {
                Some(&id) => id,
                None => self.push_stack(parent, frame),
            });
        }
        parent
    }

    /// The profile's entry for thread `tid`, to name it.
    pub fn thread_mut(&mut self, tid: Tid) -> Option<&mut ThreadInfo> {
        let &i = self.thread_ids.get(&tid)?;
        self.threads.get_mut(i)
    }

    /// Every thread entry of process `pid`, to rename the process (exec).
    pub fn threads_of_mut(&mut self, pid: Pid) -> impl Iterator<Item = &mut ThreadInfo> {
        self.threads.iter_mut().filter(move |t| t.pid == pid)
    }

    /// Interns an interpreted function; the id goes into [`FrameKey::Interp`].
    pub fn intern_function(&mut self, f: InterpFunction) -> u32 {
        if let Some(&id) = self.function_ids.get(&f) {
            return id;
        }
        let id = self.functions.len() as u32;
        self.functions.push(f.clone());
        self.function_ids.insert(f, id);
        id
    }

    /// Threads that have samples in the current window.
    pub fn threads_sampled(&self) -> usize {
        let mut seen = vec![false; self.threads.len()];
        for &(t, _) in self.counts.keys() {
            seen[t] = true;
        }
        seen.into_iter().filter(|&s| s).count()
    }

    /// Returns the window gathered since the last call (or the start) and starts a new one:
    /// counts and statistics begin again, interned frames and stacks are kept so ids stay
    /// stable across windows.
    pub fn take_window(&mut self) -> RawProfile {
        let raw = self.snapshot();
        if let Some(t) = &mut self.timeline {
            t.entries.clear();
            t.dropped = 0;
        }
        self.counts.clear();
        self.stats = SessionStats::default();
        raw
    }

    /// Like [`ProfileBuilder::take_window`], and then forgets every interned frame, stack and
    /// thread, so each window starts empty and hands out only what it used: ids are stable
    /// within a window only. Interpreted functions are kept (hooks cache their ids). For
    /// callers that hold no [`StackId`] across windows (on-CPU sampling: off-CPU pairing
    /// holds stack ids of pending switches) and take windows often (the daemon's slices).
    pub fn take_window_compacting(&mut self) -> RawProfile {
        let raw = self.take_window();
        self.frames.clear();
        self.frame_ids.clear();
        self.stacks.clear();
        self.stack_ids.clear();
        self.threads.clear();
        self.thread_ids.clear();
        raw
    }

    /// A snapshot of everything gathered so far.
    pub fn snapshot(&self) -> RawProfile {
        let mut samples: Vec<_> = self
            .counts
            .iter()
            .map(|(&(thread, stack), &counts)| RawStackCount {
                thread,
                stack,
                counts,
            })
            .collect();
        samples.sort_by_key(|s| (s.thread, s.stack));
        let (timeline, timeline_dropped) = match &self.timeline {
            Some(t) => {
                let index: HashMap<(usize, StackId), u32> = samples
                    .iter()
                    .enumerate()
                    .map(|(i, s)| ((s.thread, s.stack), i as u32))
                    .collect();
                let mut out: Vec<crate::symbolized::TimedSample> = t
                    .entries
                    .iter()
                    .filter_map(|e| {
                        Some(crate::symbolized::TimedSample {
                            time: e.time,
                            stack: *index.get(&(e.thread, e.stack))?,
                            weight: e.weight,
                        })
                    })
                    .collect();
                // Drained per CPU: arrival order is time order per CPU only.
                out.sort_by_key(|s| s.time);
                (out, t.dropped)
            }
            None => (Vec::new(), 0),
        };
        RawProfile {
            frames: self.frames.clone(),
            stacks: self.stacks.clone(),
            threads: self.threads.clone(),
            samples,
            stats: self.stats,
            interp_functions: self.functions.clone(),
            timeline,
            timeline_dropped,
        }
    }
}

/// Counts for one (thread, stack) pair in a [`RawProfile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawStackCount {
    /// Index into [`RawProfile::threads`].
    pub thread: usize,
    pub stack: StackId,
    pub counts: Counts,
}

/// An aggregated profile with addresses only: what symbolization starts from.
#[derive(Debug, Clone, Default)]
pub struct RawProfile {
    pub frames: Vec<FrameKey>,
    /// Prefix-tree nodes: (parent, frame). A node's stack is its parent's stack plus its frame.
    pub stacks: Vec<(Option<StackId>, FrameId)>,
    pub threads: Vec<ThreadInfo>,
    pub samples: Vec<RawStackCount>,
    pub stats: SessionStats,
    /// Functions that [`FrameKey::Interp`] frames refer to, by index.
    pub interp_functions: Vec<InterpFunction>,
    /// Timer samples in time order, when the builder kept them; empty otherwise.
    pub timeline: Vec<crate::symbolized::TimedSample>,
    /// Samples left out of the timeline because its cap was reached.
    pub timeline_dropped: u64,
}

impl RawProfile {
    /// The frames that the sampled stacks use (each once).
    fn used_frames(&self) -> impl Iterator<Item = &FrameKey> {
        let mut used = vec![false; self.stacks.len()];
        for s in &self.samples {
            let mut node = Some(s.stack);
            while let Some(StackId(i)) = node {
                if std::mem::replace(&mut used[i as usize], true) {
                    break;
                }
                node = self.stacks[i as usize].0;
            }
        }
        let mut frame_used = vec![false; self.frames.len()];
        for (_, (_, f)) in used.iter().zip(&self.stacks).filter(|(u, _)| **u) {
            frame_used[f.0 as usize] = true;
        }
        self.frames
            .iter()
            .zip(frame_used)
            .filter_map(|(f, u)| u.then_some(f))
    }

    /// Modules that the sampled stacks refer to.
    pub fn referenced_modules(&self) -> std::collections::HashSet<ModuleId> {
        self.used_frames()
            .filter_map(|f| match *f {
                FrameKey::Module { module, .. } => Some(module),
                _ => None,
            })
            .collect()
    }

    /// Processes whose JIT frames the sampled stacks refer to.
    pub fn referenced_jit_processes(&self) -> std::collections::HashSet<Pid> {
        self.used_frames()
            .filter_map(|f| match *f {
                FrameKey::Jit { pid, .. } => Some(pid),
                _ => None,
            })
            .collect()
    }

    /// The frames of a stack, root first, into `out` (cleared first).
    pub fn stack_frames(&self, stack: StackId, out: &mut Vec<FrameId>) {
        out.clear();
        let mut node = Some(stack);
        while let Some(StackId(i)) = node {
            let (parent, frame) = self.stacks[i as usize];
            out.push(frame);
            node = parent;
        }
        out.reverse();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(off: u64) -> FrameKey {
        FrameKey::Module {
            module: ModuleId(0),
            offset: off,
            is_return: off != 1,
        }
    }

    #[test]
    fn shared_prefixes_share_nodes_and_counts_merge() {
        let mut b = ProfileBuilder::new();
        b.add_sample(Pid(1), Tid(1), &[f(1), f(2), f(3)], 10);
        b.add_sample(Pid(1), Tid(1), &[f(1), f(2), f(3)], 10);
        b.add_sample(Pid(1), Tid(1), &[f(4), f(2), f(3)], 5);
        b.add_sample(
            Pid(1),
            Tid(2),
            &[f(4), f(2), f(3), FrameKey::Marker(Marker::Truncated)],
            5,
        );
        let p = b.snapshot();
        assert_eq!(p.stats.samples, 4);
        assert_eq!(p.stats.truncated, 1);
        // 3 -> 2 -> {1, 4} plus the truncated chain of four nodes.
        assert_eq!(p.stacks.len(), 4 + 4);
        assert_eq!(p.threads.len(), 2);
        let hot = p.samples.iter().find(|s| s.counts.samples == 2).unwrap();
        assert_eq!(hot.counts.period, 20);
        let mut out = Vec::new();
        p.stack_frames(hot.stack, &mut out);
        let keys: Vec<_> = out.iter().map(|id| p.frames[id.0 as usize]).collect();
        assert_eq!(keys, vec![f(3), f(2), f(1)]);
    }

    #[test]
    fn kept_counts_move_to_the_freed_twin_of_their_stack_within_a_window() {
        let kept = FrameKey::Marker(Marker::Kept);
        let freed = FrameKey::Marker(Marker::Freed);
        let mut b = ProfileBuilder::new();
        let truncated = [f(1), FrameKey::Marker(Marker::Truncated), kept];
        b.add_sample(Pid(1), Tid(1), &[f(1), f(2), kept], 4096);
        b.add_sample(Pid(1), Tid(1), &[f(1), f(2), kept], 4096);
        b.add_sample(Pid(1), Tid(1), &truncated, 4096);
        let from = b.intern_stack_leaf_first(&[f(1), f(2), kept]).unwrap();
        let to = b.with_root(from, freed).unwrap();
        assert_eq!(Some(to), b.intern_stack_leaf_first(&[f(1), f(2), freed]));
        assert!(b.move_counts(Pid(1), Tid(1), from, to, 1, 4096));
        assert!(
            !b.move_counts(Pid(2), Tid(1), from, to, 1, 4096),
            "another process"
        );
        let p = b.take_window();
        assert_eq!(
            p.stats.truncated, 1,
            "[kept] outside [truncated] still counts"
        );
        let weight = |s| {
            p.samples
                .iter()
                .find(|c| c.stack == s)
                .map(|c| c.counts.period)
        };
        assert_eq!((weight(from), weight(to)), (Some(4096), Some(4096)));
        assert!(
            !b.move_counts(Pid(1), Tid(1), from, to, 1, 4096),
            "taken with the window"
        );
    }

    #[test]
    fn the_timeline_keeps_samples_in_time_order_up_to_its_cap() {
        let mut b = ProfileBuilder::new();
        b.add_sample_at(5, Pid(1), Tid(1), &[f(1)], 10);
        assert!(b.snapshot().timeline.is_empty(), "off unless asked for");
        b.keep_timeline(3);
        // Arrival order differs from time order across CPUs.
        b.add_sample_at(30, Pid(1), Tid(1), &[f(2)], 11);
        b.add_sample_at(20, Pid(1), Tid(2), &[f(1)], 12);
        b.add_sample_at(40, Pid(1), Tid(1), &[f(1)], 13);
        b.add_sample_at(50, Pid(1), Tid(1), &[f(1)], 14);
        let p = b.snapshot();
        assert_eq!(p.timeline_dropped, 1);
        let seen: Vec<(u64, u64)> = p.timeline.iter().map(|t| (t.time, t.weight)).collect();
        assert_eq!(seen, [(20, 12), (30, 11), (40, 13)]);
        // Each entry names the (thread, stack) count it belongs to.
        for t in &p.timeline {
            let s = &p.samples[t.stack as usize];
            let tid = p.threads[s.thread].tid;
            assert_eq!(tid, if t.time == 20 { Tid(2) } else { Tid(1) });
        }
        b.take_window();
        assert!(
            b.snapshot().timeline.is_empty(),
            "a window starts a new timeline"
        );
    }

    #[test]
    fn return_addresses_are_looked_up_one_byte_earlier() {
        assert_eq!(f(0x10).lookup_offset(), Some((ModuleId(0), 0xf)));
        assert_eq!(f(1).lookup_offset(), Some((ModuleId(0), 1)));
        assert_eq!(FrameAddr::Ret(0x100).lookup_address(), 0xff);
    }
}
