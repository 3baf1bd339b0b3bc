//! Building the engine a driver runs: how it unwinds, what it reads besides native frames
//! (Python), which processes it keeps, and the bounds of a session that runs for weeks.

use sprof_core::{ModuleLoader, Pid};
use sprof_engine::{Engine, EngineConfig, Limits};
use sprof_unwind::UnwindMode;

use crate::loader::LiveLoader;

/// Python frames in place of the interpreter's, read from the target per sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PythonSpec {
    /// `--mode gil`: only samples of threads holding the GIL.
    pub gil_only: bool,
    /// `--async`: asyncio task chains (3.14+).
    pub async_tasks: bool,
}

/// The processes a host-wide session keeps: never the idle task (per-CPU clock events sample
/// idle CPUs too, which is no one's CPU time) nor sprofd itself (unwinding and symbolizing
/// its own samples would be most of its work on a quiet host), and with `comm` only the
/// processes whose name matches it.
#[derive(Debug, Clone, Default)]
pub struct HostFilter {
    pub comm: Option<regex::Regex>,
}

/// What the engine is asked to do.
#[derive(Debug, Clone)]
pub struct EngineSpec {
    pub unwind: UnwindMode,
    /// Keep kernel frames (the source must record them).
    pub kernel_frames: bool,
    /// Time each unwind (`--verbose`, the daemon's histogram).
    pub time_unwind: bool,
    pub python: Option<PythonSpec>,
    pub filter: Option<HostFilter>,
    /// Bounds for a long-running session (the daemon's).
    pub limits: Option<Limits>,
    /// Keep at most this many samples in time order (speedscope).
    pub timeline: Option<usize>,
    /// Memory mode: follow the memory given back (the source delivers the syscalls that give
    /// it, [`super::source::Opened::tracks_releases`]), splitting `[kept]` from `[freed]`.
    pub track_releases: bool,
}

impl EngineSpec {
    /// The engine, reading live processes' files.
    pub fn build(self) -> Engine {
        self.build_with(Box::new(LiveLoader::new()))
    }

    /// The engine, reading module files through `loader` (tests replay recordings with a
    /// loader of their own).
    pub fn build_with(self, loader: Box<dyn ModuleLoader>) -> Engine {
        let mut engine = Engine::new(
            EngineConfig {
                unwind: self.unwind,
                kernel_frames: self.kernel_frames,
                time_unwind: self.time_unwind,
            },
            loader,
        );
        if let Some(limits) = self.limits {
            engine.set_limits(limits);
        }
        if let Some(HostFilter { comm }) = self.filter {
            let own = std::process::id();
            engine.set_filter(Box::new(move |pid: Pid, name: &str| {
                pid.0 != 0 && pid.0 != own && comm.as_ref().is_none_or(|re| re.is_match(name))
            }));
        }
        if let Some(python) = self.python {
            let mut hook = sprof_python::PythonHook::new();
            if python.gil_only {
                hook = hook.gil_only();
            }
            if python.async_tasks {
                hook = hook.async_tasks();
            }
            engine.add_hook(Box::new(hook));
        }
        if let Some(cap) = self.timeline {
            engine.keep_timeline(cap);
        }
        if self.track_releases {
            engine.track_releases();
        }
        engine
    }
}
