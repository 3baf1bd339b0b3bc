//! The driver kit: what every way of profiling (`attach`, `record`, `top`, the daemon) sets up
//! around [`sprof_engine::run`], written once, so that a driver is its tick and its outputs.
//!
//! * [`source`]: [`SourceSpec::open`] opens the events for a target (attach to a pid and
//!   maybe its descendants, launch a command, the whole host, a set of pids) under a
//!   [`sprof_perf::SamplingPolicy`], with the event fallback, the warnings and the one-line
//!   explanation of a refusal.
//! * [`engine`]: [`EngineSpec::build`] makes the engine: unwinding, kernel frames, Python,
//!   the process filter, the limits of a long session.
//! * [`symbolizer`]: [`SessionSymbolizer`] turns the engine's raw profiles into symbolized
//!   ones with their meta and notes, and drains every warning (the symbolizer's and the
//!   engine's refused perf maps) as it goes.
//! * [`session`]: [`Session::start`] puts these together for the command-line drivers (one
//!   target, signals, its exit), with [`signals`] and [`finish`] (the end-of-session line,
//!   signals passed on, the exit code).
//!
//! What is measured (`SamplingPolicy::time`, e.g. `Measure::Memory`) is one value: it picks
//! the perf channels in [`source`] (and their fallbacks), tells [`EngineSpec`] what the
//! source delivers (`Opened::tracks_releases`), and labels the profiles in [`symbolizer`]
//! ([`SourceMeta`]: `ProfileMeta::measure`, event, frequency, the notes).

pub mod engine;
pub mod finish;
pub mod session;
pub mod signals;
pub mod source;
pub mod symbolizer;

pub use engine::{EngineSpec, HostFilter, PythonSpec};
pub use finish::StopReason;
pub use session::{CommandStreams, Every, Session};
pub use source::{Profiled, SourceMeta, SourceSpec, SourceTarget};
pub use symbolizer::{SessionSymbolizer, SymbolizerSpec};
