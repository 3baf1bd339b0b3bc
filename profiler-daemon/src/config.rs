//! What a profiling session or `sprofd diff` was asked to do, independent of how it was asked.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use flamegraph_out::OutputFormat;

/// Bytes of user stack copied per sample by default. See docs/architecture.md: 16 KiB
/// reaches `main` in the measured workloads where perf's 8 KiB default does not (sqlite3),
/// at a fraction of samply's 32 KB copy cost.
pub const DEFAULT_STACK_SIZE: u32 = 16384;

/// Whether the kernel takes `bytes` as a stack copy (`sample_stack_user`): a multiple of 8,
/// at most 65528 (a sample's size is a u16). Shared by `--stack-size` and the daemon's
/// `stack_size`.
pub fn stack_size_ok(bytes: u32) -> bool {
    bytes != 0 && bytes.is_multiple_of(8) && bytes <= 65528
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Pid(u32),
    Command(Vec<OsString>),
}

#[derive(Debug, Clone)]
pub struct OutputSpec {
    pub path: PathBuf,
    pub format: OutputFormat,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub target: Target,
    pub frequency: u64,
    pub duration: Option<Duration>,
    /// Rewrite the outputs this often while sampling (`--dump-every`).
    pub dump_every: Option<Duration>,
    pub outputs: Vec<OutputSpec>,
    pub kernel: bool,
    pub quiet: bool,
    pub by_line: bool,
    pub unwind: sprof_unwind::UnwindMode,
    pub stack_size: u32,
    pub event: sprof_perf::EventKind,
    pub rows: usize,
    pub verbose: bool,
    /// Inherited descriptor told `ready` once sampling has started (`--ready-fd`).
    pub ready_fd: Option<u32>,
    /// Record every event into this file (`--save-events`), for replay in tests.
    pub save_events: Option<PathBuf>,
    /// What is measured (`--mode`).
    pub mode: sprof_core::Measure,
    /// `--mode memory`: bytes per page-fault sample (`--sample-bytes`).
    pub sample_bytes: u64,
    /// `--mode gil`: only samples of Python threads holding the GIL.
    pub gil_only: bool,
    /// `--async`: asyncio task chains in Python stacks (3.14+).
    pub async_tasks: bool,
    /// `--subprocesses`: attach to the target's existing descendants too.
    pub subprocesses: bool,
    /// `--show-from`: stacks start at their outermost frame matching this.
    pub show_from: Option<regex::Regex>,
    /// Read Python frames and show them this way; `None`: native frames only.
    pub python: Option<sprof_core::PythonView>,
    /// Functions in the annotated source (`--functions`).
    pub functions: usize,
    /// Where source files are looked for (`--source-root`, `--source-map`).
    pub sources: crate::sources::SourceConfig,
}

/// What `sprofd diff` was asked to do.
#[derive(Debug, Clone)]
pub struct DiffConfig {
    pub before: PathBuf,
    pub after: PathBuf,
    pub outputs: Vec<(OutputSpec, DiffKind)>,
    /// Scale the before counts to the after total.
    pub normalize: bool,
    pub quiet: bool,
    /// Rows of the table, printed and written.
    pub rows: usize,
}

/// The outputs `sprofd diff` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffKind {
    /// Differential flame graph.
    Svg,
    /// `stack before after` lines.
    Folded,
    /// The table of the largest changes.
    Table,
}

/// What `sprofd top` was asked to do.
#[derive(Debug, Clone)]
pub struct TopConfig {
    pub session: SessionConfig,
    /// Length of the sliding window (`--window`).
    pub window: Duration,
}
