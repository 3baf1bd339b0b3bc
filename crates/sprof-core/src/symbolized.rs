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
}

/// A profile ready for export.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SymbolizedProfile {
    pub meta: ProfileMeta,
    pub frames: Vec<Frame>,
    pub stacks: Vec<SampledStack>,
}

impl SymbolizedProfile {
    /// Total samples over all stacks.
    pub fn total_samples(&self) -> u64 {
        self.stacks.iter().map(|s| s.samples).sum()
    }

    /// Total period over all stacks (CPU nanoseconds for `cpu-clock`).
    pub fn total_period(&self) -> u64 {
        self.stacks.iter().map(|s| s.period).sum()
    }
}
