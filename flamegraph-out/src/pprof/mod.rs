//! pprof: the gzipped `profile.proto` that `go tool pprof`, Parca and Pyroscope read (see
//! formats.md §3), and a reader that turns one back into a [`SymbolizedProfile`].
//!
//! This module owns the public face of the format: the [`Pprof`] exporter and its options,
//! [`PprofValueType`], and the mapping names writer and reader agree on. The work is split
//! along the format's seams:
//!
//! * [`proto`]: the messages, derived by hand (the handful of `profile.proto` messages
//!   sprofd writes), so no `protoc` or build script is needed;
//! * `write`: building a [`proto::Profile`] from a [`SymbolizedProfile`] and gzipping it;
//! * `read`: decoding a profile back, within [`MAX_PPROF_BYTES`] and [`MAX_STACK_FRAMES`].
//!
//! [`SymbolizedProfile`]: sprof_core::SymbolizedProfile

pub mod proto;
mod read;
mod write;

pub use read::{
    check_gzip, decode_pprof, profile_from_proto, read_pprof, PprofReadError, MAX_PPROF_BYTES,
    MAX_STACK_FRAMES,
};

/// The module (mapping) name of JIT frames: code named by a perf map, in no file.
pub const JIT_MAPPING: &str = "[jit]";

/// The mapping sprofd gives kernel frames that name no module (perf's name for the kernel).
pub const KERNEL_MAPPING: &str = "[kernel.kallsyms]";

/// What the second sample value (and the period) measures: time in nanoseconds, or memory in
/// bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PprofValueType {
    /// `cpu/nanoseconds`: CPU time (`cpu-clock`, Go's CPU profiles, Parca's `process_cpu`).
    #[default]
    Cpu,
    /// `wall/nanoseconds`: wall-clock time, on or off CPU.
    Wall,
    /// `off_cpu/nanoseconds`: time spent blocked.
    OffCpu,
    /// `space/bytes`: new resident memory (`--mode memory`), as Go's heap profiles name bytes.
    Space,
}

impl PprofValueType {
    /// The unit of every time value type.
    pub const UNIT: &'static str = "nanoseconds";

    /// The `ValueType.unit` string: `nanoseconds`, or `bytes` for [`PprofValueType::Space`].
    pub fn unit(self) -> &'static str {
        match self {
            PprofValueType::Space => "bytes",
            _ => Self::UNIT,
        }
    }

    /// The `ValueType.type` string: `cpu`, `wall` or `off_cpu`.
    pub fn type_name(self) -> &'static str {
        match self {
            PprofValueType::Cpu => "cpu",
            PprofValueType::Wall => "wall",
            PprofValueType::OffCpu => "off_cpu",
            PprofValueType::Space => "space",
        }
    }
}

/// The pprof exporter: a gzipped `perftools.profiles.Profile`.
///
/// * `sample_type` is `[samples/count, <value_type>/nanoseconds]` and each sample's values are
///   `[stack.samples, stack.period]`; when the profile kept no periods at all (every one 0)
///   but has a frequency, the second value is `samples × period` instead, as Go does.
///   `period_type` is the second type, `period` is `1e9 / frequency` (rounded; 0 when the
///   frequency is unknown), `duration_nanos` comes from the metadata and `time_nanos` is
///   [`Pprof::time_nanos`] or the time of export. Stacks with neither samples nor period are
///   left out.
/// * Leading root frames become sample labels, not locations: the first is `comm` (the
///   process), a second one `thread_name`; `pid` is a numeric label when the pid is known.
///   Further root frames are ordinary locations.
/// * Every other frame is one `Line` of a `Location`, and locations are listed leaf first.
///   Inlined frames are **folded**: an inlined frame joins the location of the frame toward
///   the root it was inlined into, so one location holds a native frame and the chain
///   inlined into it, innermost line first, the native function last (an inlined frame with
///   no such frame before it gets a location of its own).
/// * A function is its name (also the `system_name`), file (the frame's `file`, else its
///   `decl_file`) and `start_line` (`decl_line`); a line number of 0 means unknown.
/// * One mapping per distinct module name, in order of first use: the name is its filename,
///   it has no addresses (sprofd writes none: locations are symbolized already) and says
///   functions, file names, line numbers and inline frames are present. Kernel frames with no
///   module go to [`KERNEL_MAPPING`]; Python frames (whatever their module) and frames with
///   no module have mapping 0, as pprof expects of interpreted code. Markers and unresolved
///   frames are functions named as they are.
/// * `comment` holds the profile's target and its notes.
///
/// Ids and strings are numbered in order of first use while walking the stacks in order, so
/// the same profile gives the same bytes (given a fixed [`Pprof::time_nanos`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pprof {
    /// What the second sample value measures; `None`: what the profile measures
    /// (`cpu`, `wall` or `off_cpu`, from [`sprof_core::Measure`]).
    pub value_type: Option<PprofValueType>,
    /// `Profile.time_nanos`; `None` for the time of export.
    pub time_nanos: Option<i64>,
}
