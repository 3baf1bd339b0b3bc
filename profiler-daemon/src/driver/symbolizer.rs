//! Raw profiles into named ones, with caches that last the whole session (the tenth dump,
//! refresh or slice symbolizes only what is new), their meta and notes, and every warning
//! the session has to give drained as it goes: a daemon runs for weeks, so nothing may pile
//! up until the end.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use sprof_core::{Measure, ProfileMeta, PythonView, RawProfile, SymbolizedProfile};
use sprof_engine::Engine;
use sprof_symbolizer::{SymbolService, SymbolStats};

use super::SourceMeta;

/// Distinct perf-map warnings remembered so each is said once; beyond it the memory is
/// forgotten (and a warning may be said again) rather than grown for the session's life.
const MAX_WARNINGS_SEEN: usize = 4096;

/// How symbols are found.
#[derive(Debug, Clone, Copy, Default)]
pub struct SymbolizerSpec {
    /// Name kernel frames from /proc/kallsyms.
    pub kernel: bool,
    /// Whether a symbolization waits for debuginfod downloads: never inside a drive loop
    /// (the ring buffers would overflow); names fetched meanwhile arrive at a later one.
    pub wait_for_debuginfod: bool,
    /// DWARF contexts kept between symbolizations, in bytes of debug sections.
    pub dwarf_budget: Option<usize>,
}

/// How a command-line session's profile is shown (a view of the symbolized profile).
#[derive(Debug, Clone, Default)]
pub struct ProfileView {
    /// The Python view; `None`: native frames only were read.
    pub python: Option<PythonView>,
    /// `--show-from`: stacks start at their outermost frame matching this.
    pub show_from: Option<regex::Regex>,
}

/// Today's names for the engine's addresses (see the module doc).
pub struct SessionSymbolizer {
    symbols: SymbolService,
    /// What every profile starts from (target, event, frequency, what is measured).
    meta: ProfileMeta,
    /// Memory mode: bytes per page-fault sample.
    sample_bytes: u64,
    view: ProfileView,
    /// Perf-map warnings already said.
    warnings_seen: HashSet<String>,
    /// Time the last symbolization took.
    last_symbolize: Duration,
    /// Reads the target's memory and CPU use for `.timeline.svg`.
    resources: Option<crate::resources::ResourceMonitor>,
}

impl SessionSymbolizer {
    pub fn new(spec: SymbolizerSpec, source: SourceMeta) -> SessionSymbolizer {
        let mut symbols = SymbolService::new(spec.kernel);
        symbols.set_wait_for_debuginfod(spec.wait_for_debuginfod);
        symbols.set_dwarf_budget(spec.dwarf_budget);
        if spec.kernel && !symbols.has_kernel_symbols() {
            eprintln!("sprofd: warning: /proc/kallsyms shows no addresses (kernel.kptr_restrict); kernel frames appear as [kernel]");
        }
        SessionSymbolizer {
            symbols,
            meta: source.meta,
            sample_bytes: source.sample_bytes,
            view: ProfileView::default(),
            warnings_seen: HashSet::new(),
            last_symbolize: Duration::ZERO,
            resources: None,
        }
    }

    /// Carries `resources`' readings in every profile's meta (`.timeline.svg`).
    pub fn with_resources(
        mut self,
        resources: Option<crate::resources::ResourceMonitor>,
    ) -> SessionSymbolizer {
        self.resources = resources;
        self
    }

    /// Shows [`SessionSymbolizer::profile`]'s profiles this way.
    pub fn with_view(mut self, view: ProfileView) -> SessionSymbolizer {
        self.view = view;
        self
    }

    /// Everything `engine` gathered so far (over `duration`), symbolized, in the view.
    pub fn profile(&mut self, engine: &mut Engine, duration: Duration) -> SymbolizedProfile {
        let raw = engine.snapshot();
        let profile = self.symbolize(engine, &raw, duration);
        let profile = match self.view.python {
            Some(view) => profile.with_python_view(view),
            None => profile,
        };
        match &self.view.show_from {
            Some(re) => profile.show_from(|f| {
                re.is_match(&f.function) || f.file.as_deref().is_some_and(|p| re.is_match(p))
            }),
            None => profile,
        }
    }

    /// `raw` (a snapshot or window of `engine`, covering `duration`) symbolized, with no
    /// view applied: Python frames, where they were read, stand in place of the
    /// interpreter's eval frames. The symbolizer's and the engine's warnings since the last
    /// call are printed.
    pub fn symbolize(
        &mut self,
        engine: &mut Engine,
        raw: &RawProfile,
        duration: Duration,
    ) -> SymbolizedProfile {
        let mut meta = self.meta.clone();
        meta.stats = raw.stats;
        meta.duration_secs = duration.as_secs_f64();
        meta.notes = engine.hook_reports();
        if let Some(r) = &self.resources {
            meta.resources = r.series();
        }
        if meta.measure.is_time() {
            meta.notes.push(offcpu_note(&engine.offcpu_stats()));
        }
        if meta.measure == Measure::Memory {
            meta.notes
                .push(memory_note(raw, &engine.memory_stats(), self.sample_bytes));
        }
        if raw.stats.jit > 0 {
            meta.notes
                .push(jit_note(&raw.stats, &engine.modules().jit.stats()));
        }
        let t0 = Instant::now();
        let profile = self.symbols.symbolize(raw, engine.modules(), meta);
        self.last_symbolize = t0.elapsed();
        // why: debuginfod failures are worth one line each (per server), not an error: the
        // profile still has every name the modules themselves carry.
        for w in self.symbols.take_warnings() {
            eprintln!("sprofd: warning: {w}");
        }
        self.say_jit_warnings(engine);
        profile
    }

    /// Prints the perf maps the engine refused since the last call, each reason once.
    fn say_jit_warnings(&mut self, engine: &mut Engine) {
        for w in engine.take_jit_warnings() {
            if self.warnings_seen.len() >= MAX_WARNINGS_SEEN {
                self.warnings_seen.clear();
            }
            if !self.warnings_seen.contains(&w) {
                eprintln!("sprofd: warning: perf map ignored: {w}");
                self.warnings_seen.insert(w);
            }
        }
    }

    /// Whether symbolizations wait for debuginfod downloads (see [`SymbolizerSpec`]).
    pub fn set_wait_for_debuginfod(&mut self, wait: bool) {
        self.symbols.set_wait_for_debuginfod(wait);
    }

    /// What was profiled, e.g. `./server --port 80 (pid 4242)`.
    pub fn target(&self) -> &str {
        &self.meta.target
    }

    /// Frames named and unnamed so far, by reason.
    pub fn stats(&self) -> SymbolStats {
        self.symbols.stats
    }

    /// CPU the symbolizer's worker threads used so far (not on the caller's thread).
    pub fn worker_cpu(&self) -> Duration {
        self.symbols.worker_cpu()
    }

    /// Time the last symbolization took.
    pub fn last_symbolize(&self) -> Duration {
        self.last_symbolize
    }
}

/// The footer line of a profile with JIT frames.
fn jit_note(stats: &sprof_core::SessionStats, maps: &sprof_core::PerfMapStats) -> String {
    let share = 100.0 * stats.jit as f64 / stats.samples.max(1) as f64;
    let mut note = format!(
        "jit: {} samples ({share:.1}%) ran through JIT code; perf maps: {} entries",
        stats.jit, maps.entries
    );
    if maps.malformed > 0 {
        note.push_str(&format!(", {} malformed lines skipped", maps.malformed));
    }
    if maps.dropped > 0 {
        note.push_str(&format!(
            ", {} entries over the limit dropped",
            maps.dropped
        ));
    }
    note
}

/// The footer line of a memory profile.
fn memory_note(raw: &RawProfile, s: &sprof_engine::MemoryStats, sample_bytes: u64) -> String {
    let unit = sprof_core::Unit::Bytes;
    let total: u64 = raw.samples.iter().map(|c| c.counts.period).sum();
    let mut note = format!(
        "memory: {} of new resident memory in {} page-fault samples of {} each",
        unit.human(total),
        raw.stats.samples,
        unit.human(sample_bytes)
    );
    if s.releases > 0 || s.freed_bytes > 0 {
        note += &format!(
            "; {} given back by munmap/madvise/brk ([freed]), {} still mapped at the end ([kept])",
            unit.human(s.freed_bytes),
            unit.human(total.saturating_sub(s.freed_bytes))
        );
    }
    if s.untracked_bytes > 0 {
        note += &format!(
            "; {} not followed for freeing (too many pages) and counted as kept",
            unit.human(s.untracked_bytes)
        );
    }
    note
}

/// The footer line of a wall-clock or off-CPU profile.
fn offcpu_note(s: &sprof_engine::OffCpuStats) -> String {
    let stacks = if s.sampled_intervals < s.intervals {
        format!(
            "; stacks sampled at {} of them (busy switchers thinned to 1 in up to {} switches; the others take their thread's last sampled stack)",
            s.sampled_intervals, s.max_period
        )
    } else {
        "; each with its own stack".to_string()
    };
    format!(
        "off-CPU: {:.3} s in {} switched-out intervals, timed by switch records{stacks}",
        s.attributed_ns as f64 / 1e9,
        s.intervals
    )
}
