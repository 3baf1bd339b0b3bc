//! A profile with names instead of addresses: the exporters' input.
//!
//! Symbolization expands each raw frame into one or more named frames (inlined functions
//! become frames of their own), interns them, and keeps the per-stack counts. Exporters need
//! nothing else, so they can be tested on hand-built profiles.

use crate::profile::SessionStats;

/// What kind of thing a frame is; exporters use it for colours, suffixes and table rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameKind {
    /// A synthetic root: the process, or a thread name under it.
    Root,
    /// A native function (possibly the outer function of an inlined chain).
    Native,
    /// A function inlined into its caller (the next frame toward the root).
    Inlined,
    /// A kernel function.
    Kernel,
    /// A Python function (`file` and `line` from the interpreter, `decl_line` its first line).
    Python,
    /// JIT-compiled code, named as the runtime's perf map names it (`JS:*render app.js:3:7`,
    /// `py::handler:/app/x.py`); exporters suffix it `_[j]`.
    Jit,
    /// A marker such as `[truncated]`: not a function, but kept as a frame so that every tool
    /// shows it.
    Marker,
    /// An address that could not be resolved to a function: `function` holds `module+0xOFF` or
    /// `[unknown]`.
    Unresolved,
}

/// A named frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame {
    /// The demangled function name (or the marker, or `module+0xOFFSET`).
    pub function: String,
    /// Source file of the executing line (for an inlined function's caller, of the call site).
    pub file: Option<String>,
    /// Source line executing in this frame.
    pub line: Option<u32>,
    /// Line where the function is declared (`DW_AT_decl_line`).
    pub decl_line: Option<u32>,
    /// Source file where the function is declared (`DW_AT_decl_file`), when DWARF says.
    pub decl_file: Option<String>,
    /// Short name of the module (binary or library) the code belongs to.
    pub module: Option<String>,
    pub kind: FrameKind,
}

impl Frame {
    /// A frame that is nothing but a name: roots, markers, unresolved addresses.
    pub fn bare(function: impl Into<String>, kind: FrameKind) -> Self {
        Frame {
            function: function.into(),
            file: None,
            line: None,
            decl_line: None,
            decl_file: None,
            module: None,
            kind,
        }
    }
}

/// A unique stack with its counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampledStack {
    /// Indices into [`SymbolizedProfile::frames`], root first.
    pub frames: Vec<u32>,
    pub samples: u64,
    /// Sum of the samples' periods (CPU nanoseconds for `cpu-clock`).
    pub period: u64,
    /// The thread the samples came from, where the profile keeps threads apart (a
    /// host-wide profile labels every sample with its process and thread).
    pub thread: Option<ThreadRef>,
}

/// Which thread a stack was sampled in: host pids and tids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThreadRef {
    pub pid: u32,
    pub tid: u32,
}

/// A module that frames of the profile belong to: what pprof's mappings carry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModuleInfo {
    /// The short name frames carry in [`Frame::module`].
    pub name: String,
    /// The file's path as the process mapped it.
    pub path: String,
    /// The GNU build-id, hex.
    pub build_id: Option<String>,
}

/// What a profile's weights measure (`--mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Measure {
    /// CPU time, by on-CPU samples (a stack's period is CPU nanoseconds).
    #[default]
    Cpu,
    /// Wall-clock time: on-CPU samples plus the time threads spent switched out, in
    /// nanoseconds; shares are shares of wall time.
    Wall,
    /// Only the time threads spent switched out, in nanoseconds, by where they blocked.
    OffCpu,
    /// New resident memory, in bytes, by the stack that touched it first (sampled page
    /// faults).
    Memory,
}

/// The unit of a profile's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unit {
    #[default]
    Samples,
    Nanoseconds,
    Bytes,
}

impl Unit {
    /// A weight in this unit for people: `12 samples`, `3.4 ms`, `5.6 MiB`.
    pub fn human(self, v: u64) -> String {
        match self {
            Unit::Samples => format!("{v} samples"),
            Unit::Nanoseconds if v >= 10_000_000_000 => format!("{:.1} s", v as f64 / 1e9),
            Unit::Nanoseconds => format!("{:.1} ms", v as f64 / 1e6),
            Unit::Bytes if v >= 1 << 30 => format!("{:.2} GiB", v as f64 / (1u64 << 30) as f64),
            Unit::Bytes if v >= 1 << 20 => format!("{:.1} MiB", v as f64 / (1u64 << 20) as f64),
            Unit::Bytes => format!("{:.1} KiB", v as f64 / 1024.0),
        }
    }
}

impl Measure {
    /// Whether stacks are weighed by time (periods) rather than counted by samples.
    pub fn is_time(self) -> bool {
        matches!(self, Measure::Wall | Measure::OffCpu)
    }

    /// Whether a stack's weight is its summed period (time, bytes) rather than its samples.
    pub fn weighs_period(self) -> bool {
        self != Measure::Cpu
    }

    /// The unit of [`SymbolizedProfile::weight`] in a profile of this measure.
    pub fn unit(self) -> Unit {
        match self {
            Measure::Cpu => Unit::Samples,
            Measure::Wall | Measure::OffCpu => Unit::Nanoseconds,
            Measure::Memory => Unit::Bytes,
        }
    }

    /// How the profile says what it measures, e.g. in subtitles.
    pub fn describe(self) -> &'static str {
        match self {
            Measure::Cpu => "CPU samples",
            Measure::Wall => "wall-clock time",
            Measure::OffCpu => "off-CPU time",
            Measure::Memory => "new resident memory",
        }
    }
}

/// Facts about how the profile was taken, shown in titles, subtitles and footers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileMeta {
    /// What was profiled, e.g. the command line or `python3 (pid 4242)`.
    pub target: String,
    pub pid: Option<u32>,
    /// Wall-clock length of the sampling session, seconds.
    pub duration_secs: f64,
    /// Requested sampling frequency, Hz.
    pub frequency: u64,
    /// The perf event that drove sampling, e.g. `cpu-clock`.
    pub event: String,
    pub stats: SessionStats,
    /// More footer lines, e.g. what interpreter frames were found.
    pub notes: Vec<String>,
    /// What the stacks' weights measure.
    pub measure: Measure,
    /// The profiled processes' resident memory and CPU use over time, when the session read
    /// them (`.timeline.svg`); empty otherwise.
    pub resources: crate::ResourceSeries,
}

/// A profile ready for export.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SymbolizedProfile {
    pub meta: ProfileMeta,
    pub frames: Vec<Frame>,
    pub stacks: Vec<SampledStack>,
    /// Path and build-id of modules named in [`Frame::module`], where known.
    pub modules: Vec<ModuleInfo>,
    /// What is known of the processes in [`SampledStack::thread`], by pid.
    pub processes: std::collections::BTreeMap<u32, ProcessLabels>,
    /// The samples in the order they were taken, when the session kept them (for
    /// speedscope's time order); empty otherwise. Indices are into [`Self::stacks`].
    pub timeline: Vec<TimedSample>,
}

/// One sample as it happened: when (CLOCK_MONOTONIC ns), which stack, and its weight.
/// In a [`crate::RawProfile`], `stack` indexes its `samples`, which symbolization turns
/// one for one into [`SymbolizedProfile::stacks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedSample {
    pub time: u64,
    pub stack: u32,
    pub weight: u64,
}

/// Facts about a process that profiles carry as labels of its samples.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessLabels {
    /// The command line, arguments joined by spaces.
    pub cmdline: String,
    /// Its cgroup (v2 path, e.g. `/system.slice/docker-1f2e….scope`): what container it runs in.
    pub cgroup: String,
    /// Its effective uid: whose process it is, for readers who may see only their own.
    pub uid: Option<u32>,
}

/// How stacks with Python frames are shown (`--python-view`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PythonView {
    /// Python frames, native frames where Python calls out of the interpreter (extension
    /// modules, libc, zlib, and the interpreter's own C functions below the innermost Python
    /// frame); the interpreter's call machinery between Python frames, and every native frame
    /// above the outermost one, hidden.
    #[default]
    Python,
    /// Python frames in place of the interpreter's eval frames, every native frame kept.
    Mixed,
    /// Native frames only: the Python frames of a profile that has them are dropped (the
    /// interpreter's eval frames they replaced are not restored). The daemon's page offers it
    /// for stored profiles; `attach --python-view native` instead never reads Python frames.
    Native,
}

/// Interpreter functions kept in the `python` view: builtins called from Python, and what
/// says why the interpreter waits (py-spy's list, plus `builtin_`).
const KEPT_INTERPRETER_PREFIXES: [&str; 11] = [
    "builtin_",
    "time",
    "sys",
    "gc",
    "os",
    "unicode",
    "thread",
    "stringio",
    "sre",
    "PyGilState",
    "PyThread",
];

/// Whether a module is the interpreter itself (the `python3.X` executable or libpython).
pub fn is_interpreter_module(module: &str) -> bool {
    module.starts_with("libpython") || module.starts_with("python")
}

impl SymbolizedProfile {
    /// What a stack weighs in this profile: its samples for CPU profiles, its time in
    /// nanoseconds for wall and off-CPU profiles, its bytes for memory profiles.
    pub fn weight(&self, stack: &SampledStack) -> u64 {
        if self.meta.measure.weighs_period() {
            stack.period
        } else {
            stack.samples
        }
    }

    /// Sum of [`SymbolizedProfile::weight`] over all stacks.
    pub fn total_weight(&self) -> u64 {
        self.stacks.iter().map(|s| self.weight(s)).sum()
    }

    /// Applies a Python view: [`PythonView::Mixed`] is the profile as symbolized; in
    /// [`PythonView::Python`], stacks with Python frames lose the native frames above the
    /// outermost Python frame and the interpreter's own frames below it, except those
    /// [`KEPT_INTERPRETER_PREFIXES`] names.
    pub fn with_python_view(mut self, view: PythonView) -> SymbolizedProfile {
        match view {
            PythonView::Mixed => return self,
            PythonView::Native => {
                let frames = &self.frames;
                for stack in &mut self.stacks {
                    stack
                        .frames
                        .retain(|&f| frames[f as usize].kind != FrameKind::Python);
                }
                self.merge_equal_stacks();
                return self;
            }
            PythonView::Python => {}
        }
        let keep: Vec<bool> = self
            .frames
            .iter()
            .map(|f| {
                // Unresolved frames of the interpreter are its code too (a stripped build names
                // only its exported API).
                let interp = matches!(
                    f.kind,
                    FrameKind::Native | FrameKind::Inlined | FrameKind::Unresolved
                );
                // `_asyncio*.so`'s task machinery runs between a task's Python frames as the
                // interpreter's own does (Debian's 3.15 has it built in).
                let machinery = |m: &str| is_interpreter_module(m) || m.starts_with("_asyncio.");
                !(interp && f.module.as_deref().is_some_and(machinery))
                    || KEPT_INTERPRETER_PREFIXES
                        .iter()
                        .any(|p| f.function.starts_with(p) || f.function.contains("lock"))
            })
            .collect();
        for stack in &mut self.stacks {
            let is_py = |&f: &u32| self.frames[f as usize].kind == FrameKind::Python;
            let Some(first) = stack.frames.iter().position(is_py) else {
                continue;
            };
            let frames = &self.frames;
            let mut out = Vec::with_capacity(stack.frames.len());
            for (i, &f) in stack.frames.iter().enumerate() {
                let kind = frames[f as usize].kind;
                // CPython's `-X perf` trampolines (`py::qualname:file`) repeat the Python
                // frame beside them.
                let trampoline =
                    kind == FrameKind::Jit && frames[f as usize].function.starts_with("py::");
                let shown = kind == FrameKind::Root
                    || kind == FrameKind::Python
                    || kind == FrameKind::Marker
                    || (i > first && keep[f as usize] && !trampoline);
                if shown {
                    out.push(f);
                }
            }
            stack.frames = out;
        }
        self
    }

    /// Hides, in every stack, the frames between its root (the process) and its outermost
    /// frame that `matches`, as pprof's `show_from` does: a profile of one part of a program
    /// (a notebook cell, a request handler) starts at that part. Stacks without such a frame
    /// stay whole; stacks made equal are summed.
    pub fn show_from(mut self, matches: impl Fn(&Frame) -> bool) -> SymbolizedProfile {
        let hit: Vec<bool> = self.frames.iter().map(matches).collect();
        for stack in &mut self.stacks {
            let roots = stack
                .frames
                .iter()
                .take_while(|&&f| self.frames[f as usize].kind == FrameKind::Root)
                .count();
            if let Some(at) = stack.frames.iter().position(|&f| hit[f as usize]) {
                if at > roots {
                    stack.frames.drain(roots..at);
                }
            }
        }
        self.merge_equal_stacks();
        self
    }

    /// Sums stacks with the same frames and thread (after a view made them equal); the
    /// timeline follows them.
    fn merge_equal_stacks(&mut self) {
        let mut merged: Vec<SampledStack> = Vec::with_capacity(self.stacks.len());
        let mut ids: std::collections::HashMap<(Vec<u32>, Option<ThreadRef>), usize> =
            std::collections::HashMap::new();
        let mut remap: Vec<u32> = Vec::with_capacity(self.stacks.len());
        for stack in std::mem::take(&mut self.stacks) {
            match ids.entry((stack.frames.clone(), stack.thread)) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    remap.push(*e.get() as u32);
                    let into = &mut merged[*e.get()];
                    into.samples += stack.samples;
                    into.period += stack.period;
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    remap.push(merged.len() as u32);
                    e.insert(merged.len());
                    merged.push(stack);
                }
            }
        }
        self.stacks = merged;
        for t in &mut self.timeline {
            if let Some(&to) = remap.get(t.stack as usize) {
                t.stack = to;
            }
        }
    }

    /// Total samples over all stacks.
    pub fn total_samples(&self) -> u64 {
        self.stacks.iter().map(|s| s.samples).sum()
    }

    /// Total period over all stacks (CPU nanoseconds for `cpu-clock`).
    pub fn total_period(&self) -> u64 {
        self.stacks.iter().map(|s| s.period).sum()
    }
}

/// Sums profiles into one (windows of a history, for a time range): frames are interned
/// again, and stacks with the same frames and thread add up. Metadata is the first
/// profile's, with statistics summed and notes kept once each.
#[derive(Debug, Default)]
pub struct ProfileMerger {
    out: SymbolizedProfile,
    /// The merged frame table (`out.frames` is filled from it by `finish`).
    frames: crate::FrameInterner,
    stack_ids: std::collections::HashMap<(Vec<u32>, Option<ThreadRef>), usize>,
    profiles: usize,
}

impl ProfileMerger {
    pub fn new() -> ProfileMerger {
        ProfileMerger::default()
    }

    /// Adds the stacks of `p` that `keep` accepts.
    pub fn add(
        &mut self,
        p: &SymbolizedProfile,
        keep: impl Fn(&SymbolizedProfile, &SampledStack) -> bool,
    ) {
        if self.profiles == 0 {
            self.out.meta = p.meta.clone();
            self.out.meta.stats = SessionStats::default();
            self.out.meta.notes.clear();
        }
        self.profiles += 1;
        let stats = &mut self.out.meta.stats;
        stats.samples += p.meta.stats.samples;
        stats.lost += p.meta.stats.lost;
        stats.throttled += p.meta.stats.throttled;
        stats.truncated += p.meta.stats.truncated;
        stats.jit += p.meta.stats.jit;
        stats.over_limit += p.meta.stats.over_limit;
        for note in &p.meta.notes {
            if !self.out.meta.notes.contains(note) {
                self.out.meta.notes.push(note.clone());
            }
        }
        for m in &p.modules {
            if !self.out.modules.iter().any(|o| o.name == m.name) {
                self.out.modules.push(m.clone());
            }
        }
        for (pid, c) in &p.processes {
            self.out.processes.entry(*pid).or_insert_with(|| c.clone());
        }
        let mut ids: Vec<Option<u32>> = vec![None; p.frames.len()];
        for stack in p.stacks.iter().filter(|s| keep(p, s)) {
            let mut frames = Vec::with_capacity(stack.frames.len());
            for &f in &stack.frames {
                let Some(frame) = p.frames.get(f as usize) else {
                    continue;
                };
                let id = *ids[f as usize].get_or_insert_with(|| self.frames.intern(frame));
                frames.push(id);
            }
            let key = (frames, stack.thread);
            match self.stack_ids.get(&key) {
                Some(&i) => {
                    let s = &mut self.out.stacks[i];
                    s.samples = s.samples.saturating_add(stack.samples);
                    s.period = s.period.saturating_add(stack.period);
                }
                None => {
                    self.out.stacks.push(SampledStack {
                        frames: key.0.clone(),
                        samples: stack.samples,
                        period: stack.period,
                        thread: stack.thread,
                    });
                    self.stack_ids.insert(key, self.out.stacks.len() - 1);
                }
            }
        }
    }

    /// Profiles added so far.
    pub fn len(&self) -> usize {
        self.profiles
    }

    pub fn is_empty(&self) -> bool {
        self.profiles == 0
    }

    pub fn finish(mut self) -> SymbolizedProfile {
        self.out.frames = self.frames.into_frames();
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(name: &str, kind: FrameKind, module: Option<&str>) -> Frame {
        let mut f = Frame::bare(name, kind);
        f.module = module.map(str::to_string);
        f
    }

    /// A stack of `samples` samples, each of period 1, on no thread.
    fn stack(frames: Vec<u32>, samples: u64) -> SampledStack {
        SampledStack {
            frames,
            samples,
            period: samples,
            thread: None,
        }
    }

    fn profile_of(frames: Vec<Frame>, stacks: Vec<SampledStack>) -> SymbolizedProfile {
        SymbolizedProfile {
            meta: ProfileMeta::default(),
            frames,
            stacks,
            modules: Vec::new(),
            processes: Default::default(),
            timeline: Vec::new(),
        }
    }

    fn stacks_and_samples(p: &SymbolizedProfile) -> Vec<(Vec<u32>, u64)> {
        p.stacks
            .iter()
            .map(|s| (s.frames.clone(), s.samples))
            .collect()
    }

    #[test]
    fn show_from_starts_stacks_at_the_outermost_match() {
        let frames = vec![
            frame("python3", FrameKind::Root, None),
            frame("<module>", FrameKind::Python, None),
            frame("run_cell", FrameKind::Python, None),
            frame("cell", FrameKind::Python, None),
            frame("work", FrameKind::Python, None),
            frame("cell", FrameKind::Python, None),
            frame("other", FrameKind::Python, None),
        ];
        let mut profile = profile_of(
            frames,
            vec![
                stack(vec![0, 1, 2, 3, 4], 3),
                // A recursion into the matched frame: cut at its outermost occurrence.
                stack(vec![0, 1, 2, 3, 4, 5], 2),
                // Made equal to the first once cut: summed.
                stack(vec![0, 2, 3, 4], 1),
                // No match: left whole.
                stack(vec![0, 1, 6], 5),
            ],
        );
        profile.timeline = vec![TimedSample {
            time: 1,
            stack: 2,
            weight: 1,
        }];
        let p = profile.show_from(|f| f.function == "cell");
        assert_eq!(
            p.timeline[0].stack, 0,
            "the timeline follows the summed stack"
        );
        let got = stacks_and_samples(&p);
        assert_eq!(
            got,
            vec![
                (vec![0, 3, 4], 4),
                (vec![0, 3, 4, 5], 2),
                (vec![0, 1, 6], 5)
            ]
        );
        assert_eq!(p.total_samples(), 11);
    }

    #[test]
    fn native_view_drops_python_frames_and_sums_what_becomes_equal() {
        let frames = vec![
            frame("python3", FrameKind::Root, None),
            frame("Py_RunMain", FrameKind::Native, Some("python3.11")),
            frame("a", FrameKind::Python, None),
            frame("b", FrameKind::Python, None),
            frame("deflate", FrameKind::Native, Some("libz.so.1")),
        ];
        let profile = profile_of(
            frames,
            vec![stack(vec![0, 1, 2, 4], 2), stack(vec![0, 1, 3, 4], 3)],
        );
        let p = profile.with_python_view(PythonView::Native);
        let got = stacks_and_samples(&p);
        assert_eq!(got, vec![(vec![0, 1, 4], 5)]);
    }

    #[test]
    fn python_view_hides_interpreter_machinery_and_keeps_calls_out() {
        let frames = vec![
            frame("python3", FrameKind::Root, None),
            frame("_start", FrameKind::Native, Some("python3.11")),
            frame(
                "Py_RunMain",
                FrameKind::Native,
                Some("libpython3.11.so.1.0"),
            ),
            frame("<module>", FrameKind::Python, None),
            frame(
                "_PyObject_Call",
                FrameKind::Native,
                Some("libpython3.11.so.1.0"),
            ),
            frame("handler", FrameKind::Python, None),
            frame(
                "time_sleep",
                FrameKind::Native,
                Some("libpython3.11.so.1.0"),
            ),
            frame(
                "zlib_compress",
                FrameKind::Native,
                Some("zlib.cpython-311.so"),
            ),
            frame("deflate", FrameKind::Native, Some("libz.so.1")),
            frame("list_sort", FrameKind::Native, Some("libpython3.11.so.1.0")),
            frame(
                "builtin_sorted",
                FrameKind::Native,
                Some("libpython3.11.so.1.0"),
            ),
        ];
        let profile = SymbolizedProfile {
            meta: ProfileMeta::default(),
            frames,
            stacks: vec![
                SampledStack {
                    frames: vec![0, 1, 2, 3, 4, 5, 7, 8],
                    samples: 1,
                    period: 1,
                    thread: None,
                },
                SampledStack {
                    frames: vec![0, 1, 2, 3, 6, 5, 10, 9],
                    samples: 1,
                    period: 1,
                    thread: None,
                },
                SampledStack {
                    frames: vec![0, 1, 2],
                    samples: 1,
                    period: 1,
                    thread: None,
                },
            ],
            modules: Vec::new(),
            processes: Default::default(),
            timeline: Vec::new(),
        };
        let mixed = profile.clone().with_python_view(PythonView::Mixed);
        assert_eq!(mixed, profile);
        let py = profile.with_python_view(PythonView::Python);
        assert_eq!(py.stacks[0].frames, vec![0, 3, 5, 7, 8]);
        // time_sleep and builtin_sorted say what the Python frames do in C; the sort's own
        // machinery (list_sort) counts as builtin_sorted's time.
        assert_eq!(py.stacks[1].frames, vec![0, 3, 6, 5, 10]);
        // A native-only stack is untouched.
        assert_eq!(py.stacks[2].frames, vec![0, 1, 2]);
    }

    #[test]
    fn merging_sums_equal_stacks_per_thread_and_keeps_threads_apart() {
        let t = |tid| Some(ThreadRef { pid: 1, tid });
        let profile = |names: &[&str], samples, thread| SymbolizedProfile {
            frames: names
                .iter()
                .map(|n| frame(n, FrameKind::Native, Some("a")))
                .collect(),
            stacks: vec![SampledStack {
                frames: (0..names.len() as u32).collect(),
                samples,
                period: samples * 10,
                thread,
            }],
            meta: ProfileMeta {
                stats: SessionStats {
                    samples,
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Default::default()
        };
        let mut m = ProfileMerger::new();
        m.add(&profile(&["main", "f"], 2, t(1)), |_, _| true);
        m.add(&profile(&["x", "main", "f"], 100, t(1)), |_, s| {
            s.samples < 50
        });
        m.add(&profile(&["main", "f"], 3, t(1)), |_, _| true);
        m.add(&profile(&["main", "f"], 5, t(2)), |_, _| true);
        let out = m.finish();
        assert_eq!(out.meta.stats.samples, 110);
        let mut got: Vec<(Vec<&str>, u64, u64, Option<ThreadRef>)> = out
            .stacks
            .iter()
            .map(|s| {
                let names = s
                    .frames
                    .iter()
                    .map(|&f| out.frames[f as usize].function.as_str());
                (names.collect(), s.samples, s.period, s.thread)
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (vec!["main", "f"], 5, 50, t(1)),
                (vec!["main", "f"], 5, 50, t(2)),
            ]
        );
        assert_eq!(out.frames.len(), 2, "frames interned once");
    }
}
