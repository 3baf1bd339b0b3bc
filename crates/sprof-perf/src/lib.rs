//! sprofd's sampler: the only crate that talks to the kernel.
//!
//! It owns `perf_event_open` and its ring buffers ([`sys`]), the decoding of their records
//! into [`sprof_core::Event`]s ([`record`]), the per-process sampling session ([`sampler`],
//! an [`sprof_core::EventSource`]) and its [`policy`],
//! the `/proc` readers ([`procfs`]), the syscall tracepoints of memory mode ([`tracepoints`]), and launching a command paused before `exec`
//! ([`spawn`]).

pub mod policy;
pub mod procfs;
pub mod record;
pub mod sampler;
pub mod spawn;
pub mod sys;
pub mod tracepoints;

pub use policy::{SamplingPolicy, StackCapture};
pub use record::SampleLayout;
pub use sampler::{Sampler, SamplerError};
pub use sys::{EventKind, EventSpec};
