//! The vocabulary every sprofd stage shares.
//!
//! This crate owns the types that cross pipeline boundaries: process and thread ids, the
//! address kinds a stack walk produces ([`FrameAddr`]), memory [`Mapping`]s, the [`Event`]
//! stream that both the live sampler and recorded fixtures produce, the `/proc/PID/maps`
//! parser (so attaching to a running process is just a burst of synthetic mmap events), the
//! [`module`] table that the unwinder and the symbolizer share, the [`EventSource`] trait
//! every event source implements, and the [`profile`] aggregator that interns stacks as a
//! prefix tree, and the [`resources`] series (resident memory and CPU use over time) that
//! profiles carry for the timeline chart.
//!
//! Nothing here talks to the kernel, except [`FileBytes::map`] mapping a file it is handed
//! (and [`shrink`], which keeps such a mapping readable when its file is truncated) and
//! [`untrusted`] opening the files a profiled process offers: every other function takes
//! bytes or readers.

pub mod bytes;
pub mod event;
pub mod intern;
pub mod jit;
pub mod jitdump;
pub mod maps;
pub mod module;
pub mod profile;
pub mod resources;
pub mod segments;
pub mod shrink;
pub mod source;
pub mod symbolized;
pub mod untrusted;

pub use bytes::FileBytes;
pub use event::{
    split_callchain, CommEvent, Event, ExitEvent, ForkEvent, MmapEvent, Release, ReleaseEvent,
    Sample, SampleKind, SwitchEvent, UserRegs,
};
pub use intern::FrameInterner;
pub use jit::{JitFile, JitSymbols, JitTable, PerfMapRead, PerfMapStats};
pub use maps::{parse_maps, Mapping, MappingKind, MapsError, ParsedMaps};
pub use module::{FileIdentity, Module, ModuleLoader, ModuleTable};
pub use profile::{
    Added, Counts, FrameId, FrameKey, InterpFunction, Marker, ModuleId, ProfileBuilder, RawProfile,
    RawStackCount, SessionStats, StackId, ThreadInfo,
};
pub use resources::{
    thread_cpu_time, ProcessResources, ResourcePoint, ResourceRecorder, ResourceSeries,
};
pub use segments::{Segment, Segments};
pub use source::{EventSource, SourceStats};
pub use symbolized::{
    is_interpreter_module, Frame, FrameKind, Measure, ModuleInfo, ProcessLabels, ProfileMerger,
    ProfileMeta, PythonView, SampledStack, SymbolizedProfile, ThreadRef, TimedSample, Unit,
};

/// A process id, as the host kernel numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid(pub u32);

/// A thread id, as the host kernel numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tid(pub u32);

impl std::fmt::Display for Pid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for Tid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A code address found on a stack.
///
/// The distinction matters for symbolization: an instruction pointer is the address of the
/// instruction that was executing, while a return address points *after* a call, possibly
/// into the next function or the next inlined range, so it is looked up at `address - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameAddr {
    /// The sampled instruction pointer (the leaf frame).
    Ip(u64),
    /// A return address recovered by unwinding.
    Ret(u64),
}

impl FrameAddr {
    /// The address as found on the stack or in the registers.
    pub fn address(self) -> u64 {
        match self {
            FrameAddr::Ip(a) | FrameAddr::Ret(a) => a,
        }
    }

    /// The address to look up in symbol and line tables.
    pub fn lookup_address(self) -> u64 {
        match self {
            FrameAddr::Ip(a) => a,
            FrameAddr::Ret(a) => a.saturating_sub(1),
        }
    }
}
