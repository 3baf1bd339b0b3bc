//! The command line, and its translation into a [`SessionConfig`] so that clap types never
//! reach the sampling code.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use flamegraph_out::OutputFormat;

use crate::config::{DiffConfig, DiffKind, OutputSpec, SessionConfig, Target, TopConfig};

/// sprofd: a sampling profiler for running processes and commands.
///
/// Samples every thread of the target with perf_event_open at a fixed frequency, without
/// modifying it, then writes an interactive SVG flamegraph (or folded stacks, or a table) and
/// prints a statprof-style table of where CPU time went.
#[derive(Debug, Parser)]
#[command(
    name = "sprofd",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("SPROFD_COMMIT"), ")"),
    about,
    long_about = None,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Profile a running process (and the threads and children it creates) by PID.
    #[command(arg_required_else_help = true)]
    Attach {
        /// The process to profile.
        pid: u32,
        #[command(flatten)]
        opts: ProfileOpts,
    },
    /// Launch a command and profile it from its first instruction.
    #[command(arg_required_else_help = true)]
    Record {
        #[command(flatten)]
        opts: ProfileOpts,
        /// The command to run, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<OsString>,
    },
    /// A live terminal view of the hottest functions of a process (PID) or of a command
    /// (after `--`), refreshed every second; `q` quits.
    #[command(arg_required_else_help = true)]
    Top {
        /// The process to watch (or a command after `--`).
        #[arg(required_unless_present = "command", conflicts_with = "command")]
        pid: Option<u32>,
        #[command(flatten)]
        opts: TopOpts,
        /// The command to run and watch, after `--`; its output goes to /dev/null.
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<OsString>,
    },
    /// Compare two profiles: a differential flame graph (red grew, blue shrank), the
    /// differential folded stacks, and a table of the largest changes.
    #[command(arg_required_else_help = true)]
    Diff(DiffArgs),
    /// Profile the whole host all the time, keep the profiles on disk and serve them over
    /// HTTP (a page, pprof for Parca/Pyroscope/go tool pprof, Prometheus metrics).
    ///
    /// Settings come from --config (TOML: listen, socket_group, data_dir, frequency, window,
    /// retention, max_disk, pids, comm, kernel, python, cmdline, mode, stack_size), overridden
    /// by flags. SIGTERM writes the window in progress and exits; SIGHUP reloads the config
    /// file.
    Daemon(DaemonArgs),
    /// Write profiles of a time range from a daemon's stored windows (no daemon needed).
    #[command(arg_required_else_help = true)]
    Report(ReportArgs),
    /// Print the source of a saved profile's hottest functions with samples per line (like
    /// `go tool pprof -list`), from .pb.gz/.pprof (sprofd's or any pprof with lines) or
    /// .folded written with --by-line.
    #[command(arg_required_else_help = true)]
    Annotate(AnnotateArgs),
    /// Print a shell completion script: `source <(sprofd completions bash)`, or install it
    /// where your shell looks (e.g. /usr/share/bash-completion/completions/sprofd).
    #[command(arg_required_else_help = true)]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from this command line's definition.
    #[command(hide = true)]
    Manpage,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// TOML file with the daemon's settings; flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address and port of the HTTP API [default: 127.0.0.1:7171], or unix:/PATH for a
    /// Unix socket (mode 0660: only its owner and group can connect). A non-loopback address
    /// serves every process's profile to whoever can reach it.
    #[arg(long, value_name = "ADDR:PORT|unix:PATH")]
    pub listen: Option<String>,
    /// Group given the Unix socket of --listen unix:PATH: its members can read the API.
    #[arg(long = "socket-group", value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Where windows are stored [default: $STATE_DIRECTORY under systemd, else
    /// /var/lib/sprofd].
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Samples per second per CPU [default: 19, a prime, so sampling cannot run in step
    /// with periodic work].
    #[arg(short = 'F', long = "frequency", value_name = "HZ")]
    pub frequency: Option<u64>,
    /// Length of a stored window in seconds [default: 10].
    #[arg(long, value_name = "SECS")]
    pub window: Option<u64>,
    /// How long windows are kept, e.g. 12h, 7d [default: 7d].
    #[arg(long, value_name = "DURATION")]
    pub retention: Option<String>,
    /// Most disk space windows take, e.g. 500MiB [default: 1GiB]; the oldest go first.
    #[arg(long = "max-disk", value_name = "SIZE")]
    pub max_disk: Option<String>,
    /// Profile only this process (repeatable) instead of the whole host.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Profile only processes whose name (comm) matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub comm: Option<String>,
    /// Record kernel frames too.
    #[arg(long)]
    pub kernel: bool,
    /// Do not read Python frames (native frames only).
    #[arg(long = "no-python")]
    pub no_python: bool,
    /// Bytes of each sampled thread's stack copied for DWARF unwinding (a multiple of 8 up
    /// to 65528; default 16384). Deep stacks (rustc, JVMs, deep recursion) need more; each
    /// sample costs its copy in the ring buffers and the drain.
    #[arg(long = "stack-size", value_name = "BYTES")]
    pub stack_size: Option<u32>,
    /// What the windows measure: cpu (default), or memory: new resident memory by stack from
    /// sampled page faults (see `record --mode memory`; opt-in, as faults can be many).
    #[arg(long, value_name = "cpu|memory")]
    pub mode: Option<String>,
    /// How much of each process's command line is stored and served: full, redacted
    /// (values of NAME=VALUE arguments, of arguments after secret-named flags and URL
    /// passwords become ***) or off [default: redacted].
    #[arg(long, value_name = "full|redacted|off")]
    pub cmdline: Option<String>,
}

impl DaemonArgs {
    /// The file's settings overridden by the flags, checked.
    pub fn into_config(
        self,
        max_rate: Option<u64>,
    ) -> Result<crate::daemon::config::DaemonConfig, crate::daemon::config::ConfigError> {
        use crate::daemon::config::{DaemonConfig, FileSettings};
        let file = match &self.config {
            Some(path) => FileSettings::read(path)?,
            None => FileSettings::default(),
        };
        let flags = FileSettings {
            listen: self.listen,
            data_dir: self.data_dir,
            frequency: self.frequency,
            window: self.window,
            retention: self.retention,
            max_disk: self.max_disk,
            pids: Some(self.pids),
            comm: self.comm,
            kernel: self.kernel.then_some(true),
            python: self.no_python.then_some(false),
            cmdline: self.cmdline,
            socket_group: self.socket_group,
            mode: self.mode,
            stack_size: self.stack_size,
        };
        DaemonConfig::resolve(file.overridden_by(flags), self.config, max_rate)
    }
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The daemon's data directory.
    #[arg(long = "data-dir", value_name = "DIR", required = true)]
    pub data_dir: PathBuf,
    /// Start of the range: unix seconds, RFC 3339, `now`, or relative (-30s, -15m, -2h,
    /// -7d) [default: the oldest window].
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub from: Option<String>,
    /// End of the range (same forms) [default: now].
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub to: Option<String>,
    /// Only this process.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Only processes whose name matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub comm: Option<String>,
    /// Output file, repeatable; the format follows the extension (.svg, .folded, .txt,
    /// .lines.txt, .heatmap.html, .pb.gz/.pprof, .speedscope.json).
    #[arg(short = 'o', long = "output", value_name = "PATH", required = true)]
    pub output: Vec<PathBuf>,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub source: SourceOpts,
}

/// Where the annotated source finds its files, and how much of it to show.
#[derive(Debug, Args)]
pub struct SourceOpts {
    /// Functions shown in the annotated source (.lines.txt), hottest first.
    #[arg(long = "functions", value_name = "N", default_value_t = flamegraph_out::AnnotatedSource::DEFAULT_FUNCTIONS)]
    pub functions: usize,
    /// Look source files up under DIR (their path, then shorter tails of it), for programs
    /// built elsewhere.
    #[arg(long = "source-root", value_name = "DIR")]
    pub source_root: Option<PathBuf>,
    /// Read source files whose path starts with FROM from TO instead (repeatable).
    #[arg(long = "source-map", value_name = "FROM=TO", value_parser = crate::sources::SourceConfig::parse_map)]
    pub source_map: Vec<(String, String)>,
}

impl SourceOpts {
    pub fn config(&self) -> crate::sources::SourceConfig {
        crate::sources::SourceConfig {
            root: self.source_root.clone(),
            map: self.source_map.clone(),
        }
    }
}

impl Default for SourceOpts {
    fn default() -> Self {
        SourceOpts {
            functions: flamegraph_out::AnnotatedSource::DEFAULT_FUNCTIONS,
            source_root: None,
            source_map: Vec::new(),
        }
    }
}

#[derive(Debug, Args)]
pub struct AnnotateArgs {
    /// The profile: .pb.gz or .pprof (with line information), or .folded written with
    /// --by-line.
    #[arg(value_name = "PROFILE")]
    pub profile: PathBuf,
    /// Only functions whose name matches this regular expression.
    #[arg(value_name = "REGEX")]
    pub regex: Option<String>,
    /// Write the listing to a file (.lines.txt), or the heatmap page (.html), instead of
    /// printing the listing.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub source: SourceOpts,
}

impl ReportArgs {
    pub fn into_config(self) -> Result<crate::daemon::ReportConfig, String> {
        let selection = crate::daemon::report_selection(
            self.from.as_deref(),
            self.to.as_deref(),
            self.pid,
            self.comm.as_deref(),
        )?;
        let outputs = self
            .output
            .into_iter()
            .map(OutputSpec::from_path)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        Ok(crate::daemon::ReportConfig {
            data_dir: self.data_dir,
            selection,
            outputs,
            quiet: self.quiet,
            functions: self.source.functions,
            sources: self.source.config(),
        })
    }
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The profile before the change: .folded, .pb.gz or .pprof, as sprofd writes them.
    #[arg(value_name = "BEFORE")]
    pub before: PathBuf,

    /// The profile after the change.
    #[arg(value_name = "AFTER")]
    pub after: PathBuf,

    /// Output file, repeatable; the format follows the extension: .svg differential flame
    /// graph, .folded `stack before after` lines, .txt table of the largest changes.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: Vec<PathBuf>,

    /// Scale BEFORE's counts to AFTER's total, for profiles of different lengths.
    #[arg(long)]
    pub normalize: bool,

    /// Do not print the table to stdout.
    #[arg(short, long)]
    pub quiet: bool,

    /// Rows of the table (printed and .txt).
    #[arg(long = "rows", value_name = "N", default_value_t = 30)]
    pub rows: usize,
}

impl DiffArgs {
    /// Checks the outputs and turns the arguments into a diff configuration.
    pub fn into_config(self) -> Result<DiffConfig, UsageError> {
        let outputs = self
            .output
            .into_iter()
            .map(|path| {
                let spec = OutputSpec::from_path(path)?;
                let kind = match spec.format {
                    OutputFormat::Svg => DiffKind::Svg,
                    OutputFormat::Folded => DiffKind::Folded,
                    OutputFormat::Table => DiffKind::Table,
                    OutputFormat::Pprof
                    | OutputFormat::Speedscope
                    | OutputFormat::Lines
                    | OutputFormat::Heatmap
                    | OutputFormat::Timeline => return Err(UsageError::DiffOutput(spec.path)),
                };
                Ok((spec, kind))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DiffConfig {
            before: self.before,
            after: self.after,
            outputs,
            normalize: self.normalize,
            quiet: self.quiet,
            rows: self.rows,
        })
    }
}

/// `--sample-bytes`: a size of at least one page and at most 1 GiB.
fn parse_sample_bytes(s: &str) -> Result<u64, String> {
    let bytes = sprof_store::parse_size(s).map_err(|e| e.to_string())?;
    if !(4096..=1 << 30).contains(&bytes) {
        return Err(format!("{s}: must be between 4KiB and 1GiB"));
    }
    Ok(bytes)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UnwindArg {
    /// DWARF CFI where a module has it, frame pointers where it has none.
    Auto,
    /// Frame pointers only (the kernel's callchain): cheapest.
    Fp,
    /// DWARF CFI only.
    Dwarf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// CPU time: where threads run.
    Cpu,
    /// Wall-clock time: running plus switched out (sleeping, blocked on I/O, locks, the GIL),
    /// so shares are shares of elapsed time, per thread.
    Wall,
    /// Only the time threads spend switched out, by where they blocked.
    OffCpu,
    /// CPU time of Python threads while they hold the GIL (CPython 3.11+): who keeps the
    /// other threads waiting. Every Python profile's footer shows each thread's share of
    /// samples holding the GIL, waiting for it and not needing it.
    Gil,
    /// New resident memory, in bytes, by the stack that first touched it (sampled page
    /// faults). Where the syscall tracepoints are readable (root or CAP_PERFMON, tracefs
    /// mounted), memory given back by munmap, madvise or brk moves from [kept] to [freed].
    Memory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PythonViewArg {
    /// Python functions, with native frames where Python calls out of the interpreter
    /// (extension modules, libc, zlib); the interpreter's own machinery hidden.
    Python,
    /// Python frames in place of the interpreter's eval frames, every native frame kept.
    Mixed,
    /// Native frames only, as for any program (Python frames are not read).
    Native,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventArg {
    /// Software CPU clock (works everywhere, including VMs).
    CpuClock,
    /// Software task clock.
    TaskClock,
    /// Hardware cycles (needs a PMU; falls back to cpu-clock without one).
    Cycles,
}

/// The sampling options every profiling command takes (attach, record, top).
#[derive(Debug, Args)]
pub struct SamplingOpts {
    /// Samples per second per thread.
    #[arg(
        short = 'F',
        long = "frequency",
        value_name = "HZ",
        default_value_t = 99
    )]
    pub frequency: u64,

    /// Stop after this many seconds (fractions allowed). Default: until Ctrl-C (q in top),
    /// SIGTERM or the target exits.
    #[arg(short = 'd', long = "duration", value_name = "SECS")]
    pub duration: Option<f64>,

    /// Include kernel frames (needs root, CAP_PERFMON or kernel.perf_event_paranoid <= 1).
    #[arg(long)]
    pub kernel: bool,

    /// How to walk user stacks.
    #[arg(long, value_enum, default_value_t = UnwindArg::Auto)]
    pub unwind: UnwindArg,

    /// Bytes of user stack copied per sample for DWARF unwinding (multiple of 8, at most 65528).
    #[arg(long = "stack-size", value_name = "BYTES", default_value_t = crate::config::DEFAULT_STACK_SIZE)]
    pub stack_size: u32,

    /// The event that drives sampling.
    #[arg(short = 'e', long = "event", value_enum, default_value_t = EventArg::CpuClock)]
    pub event: EventArg,

    /// What to measure. wall and off-cpu time every context switch from the kernel's
    /// switch records and sample the stacks (threads switching more than ~2000 times a second
    /// are thinned, and the footer says so); they need root, CAP_PERFMON or
    /// kernel.perf_event_paranoid <= 1. memory samples page faults (see --sample-bytes).
    #[arg(long, value_enum, default_value_t = ModeArg::Cpu)]
    pub mode: ModeArg,

    /// --mode memory: new resident memory one sample stands for (a page-fault sample every
    /// SIZE/4 KiB faults), e.g. 64KiB, 1MiB. Smaller is finer and costs more.
    #[arg(long = "sample-bytes", value_name = "SIZE", default_value = "256KiB", value_parser = parse_sample_bytes)]
    pub sample_bytes: u64,

    /// How Python processes are shown (CPython 3.8-3.15, read from outside the process: the
    /// target is never paused or signalled); native: Python frames are not read.
    #[arg(long = "python-view", value_enum, default_value_t = PythonViewArg::Python)]
    pub python_view: PythonViewArg,

    /// asyncio task stacks (CPython 3.14+): the running task's coroutines under a
    /// `[task NAME]` frame, under the frames where the task awaiting it waits, up to the root
    /// task. Older interpreters say they cannot, once.
    #[arg(long = "async")]
    pub async_tasks: bool,
}

#[derive(Debug, Args)]
pub struct ProfileOpts {
    #[command(flatten)]
    pub sampling: SamplingOpts,

    /// Rewrite every output every SECS seconds with everything gathered so far (each write
    /// atomic); SIGUSR1 writes them at once. The final write at the end is as usual.
    #[arg(long = "dump-every", value_name = "SECS")]
    pub dump_every: Option<f64>,

    /// attach: also profile the target's existing descendant processes (multiprocessing
    /// pools, gunicorn/celery workers, subprocess trees), each with its own Python frames.
    /// Processes the target (or a descendant) starts while profiled are always followed, as
    /// under record.
    #[arg(long)]
    pub subprocesses: bool,

    /// Output file, repeatable; the format follows the extension: .svg flamegraph,
    /// .timeline.svg resident memory and CPU use over time (with its peak and where the
    /// heaviest functions weighed most), .folded collapsed stacks, .txt statprof table,
    /// .lines.txt annotated source of the hottest functions, .heatmap.html source heatmap
    /// page, .pb.gz/.pprof pprof, .speedscope.json speedscope. Default:
    /// sprofd-<comm>-<pid>-<time>.svg.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: Vec<PathBuf>,

    /// Do not print the table to stdout.
    #[arg(short, long)]
    pub quiet: bool,

    /// Table rows per source line (file:line:function) instead of per function; folded
    /// frames as `function (PATH:LINE)`, which `sprofd annotate` reads.
    #[arg(long = "by-line")]
    pub by_line: bool,

    /// Start every stack at its outermost frame whose function name or source file matches
    /// REGEX (pprof's show_from): the frames between the process and it are hidden, so a
    /// profile of one part of a program (a notebook cell, a handler) starts there. Stacks
    /// without a match stay whole.
    #[arg(long = "show-from", value_name = "REGEX")]
    pub show_from: Option<String>,
    #[command(flatten)]
    pub source: SourceOpts,

    /// Rows in the printed table.
    #[arg(long = "rows", value_name = "N", default_value_t = 30)]
    pub rows: usize,

    /// Print session statistics on stderr at the end: unwind time per sample (median, p99),
    /// stack-copy fill, modules read, symbolization time, Python and off-CPU counters.
    #[arg(short = 'v', long)]
    pub verbose: bool,

    /// Write `ready` and a newline to the inherited file descriptor FD (e.g. a pipe) once
    /// sampling has started, for programs that run sprofd and must not go on before it samples
    /// (the Python package's `%sprofd` magic does). FD must be open when sprofd starts.
    #[arg(long = "ready-fd", value_name = "FD")]
    pub ready_fd: Option<u32>,

    /// Record every event into FILE (sprofd's own recording format), for replaying the
    /// session through the engine in tests.
    #[arg(long = "save-events", value_name = "FILE", hide = true)]
    pub save_events: Option<PathBuf>,
}

/// `sprofd top`'s options: attach/record's sampling options, and outputs written once the
/// view is closed.
#[derive(Debug, Args)]
pub struct TopOpts {
    #[command(flatten)]
    pub sampling: SamplingOpts,

    /// Length of the sliding window of the "last" columns, in whole seconds.
    #[arg(short = 'w', long = "window", value_name = "SECS", default_value_t = 5)]
    pub window: u64,

    /// Output file, repeatable, written with the whole session's profile when the view is
    /// closed (q, Ctrl-C, the target's exit); formats as attach's -o (.svg, .timeline.svg,
    /// .folded, .txt, .lines.txt, .heatmap.html, .pb.gz, .speedscope.json). Default: none.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: Vec<PathBuf>,
}

impl TopOpts {
    /// Checks the options (as attach/record do) and turns them into a `top` configuration.
    pub fn into_config(
        self,
        target: Target,
        max_rate: Option<u64>,
    ) -> Result<TopConfig, UsageError> {
        if !(1..=3600).contains(&self.window) {
            return Err(UsageError::BadWindow(self.window));
        }
        let window = std::time::Duration::from_secs(self.window);
        let session = ProfileOpts {
            sampling: self.sampling,
            dump_every: None,
            subprocesses: false,
            output: self.output,
            quiet: true,
            by_line: false,
            show_from: None,
            source: SourceOpts::default(),
            rows: 0,
            verbose: false,
            ready_fd: None,
            save_events: None,
        }
        .into_config(target, max_rate)?;
        Ok(TopConfig { session, window })
    }
}

/// A command line that parses but asks for something impossible.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("--frequency must be at least 1 Hz")]
    ZeroFrequency,
    #[error("--frequency {asked} is above the kernel's maximum sample rate, kernel.perf_event_max_sample_rate = {max}")]
    FrequencyTooHigh { asked: u64, max: u64 },
    #[error("--duration must be a positive number of seconds, not {0}")]
    BadDuration(f64),
    #[error("--dump-every must be a positive number of seconds, not {0}")]
    BadDumpEvery(f64),
    #[error("--stack-size must be a multiple of 8 between 8 and 65528, not {0}")]
    BadStackSize(u32),
    #[error("{}: sprofd diff writes .svg, .folded or .txt", .0.display())]
    DiffOutput(PathBuf),
    #[error("--window must be between 1 and 3600 seconds, not {0}")]
    BadWindow(u64),
    #[error("--ready-fd {0}: no such open file descriptor (pass one sprofd inherits, 3 or above)")]
    BadReadyFd(u32),
    #[error("--mode gil reads Python thread states: it cannot be used with --python-view native")]
    GilWithoutPython,
    #[error("--show-from {0:?} is not a valid regular expression")]
    BadShowFrom(String),
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
}

impl ProfileOpts {
    /// Checks the options and turns them into a session configuration.
    pub fn into_config(
        self,
        target: Target,
        max_rate: Option<u64>,
    ) -> Result<SessionConfig, UsageError> {
        if self.sampling.frequency == 0 {
            return Err(UsageError::ZeroFrequency);
        }
        if self.sampling.mode == ModeArg::Gil && self.sampling.python_view == PythonViewArg::Native
        {
            return Err(UsageError::GilWithoutPython);
        }
        if let Some(max) = max_rate {
            if self.sampling.frequency > max {
                return Err(UsageError::FrequencyTooHigh {
                    asked: self.sampling.frequency,
                    max,
                });
            }
        }
        let duration = match self.sampling.duration {
            Some(d) if !(d.is_finite() && d > 0.0 && d < 1e9) => {
                return Err(UsageError::BadDuration(d))
            }
            Some(d) => Some(std::time::Duration::from_secs_f64(d)),
            None => None,
        };
        let dump_every = match self.dump_every {
            Some(d) if !(d.is_finite() && d > 0.0 && d < 1e9) => {
                return Err(UsageError::BadDumpEvery(d))
            }
            d => d.map(std::time::Duration::from_secs_f64),
        };
        if !crate::config::stack_size_ok(self.sampling.stack_size) {
            return Err(UsageError::BadStackSize(self.sampling.stack_size));
        }
        let outputs = self
            .output
            .into_iter()
            .map(OutputSpec::from_path)
            .collect::<Result<Vec<_>, _>>()?;
        // why: 0-2 are sprofd's own streams; anything else must have been inherited open.
        if let Some(fd) = self.ready_fd {
            if fd < 3 || !std::path::Path::new(&format!("/proc/self/fd/{fd}")).exists() {
                return Err(UsageError::BadReadyFd(fd));
            }
        }
        Ok(SessionConfig {
            target,
            frequency: self.sampling.frequency,
            duration,
            dump_every,
            outputs,
            kernel: self.sampling.kernel,
            quiet: self.quiet,
            by_line: self.by_line,
            unwind: match self.sampling.unwind {
                UnwindArg::Auto => sprof_unwind::UnwindMode::Auto,
                UnwindArg::Fp => sprof_unwind::UnwindMode::FramePointer,
                UnwindArg::Dwarf => sprof_unwind::UnwindMode::Dwarf,
            },
            stack_size: self.sampling.stack_size,
            event: match self.sampling.event {
                EventArg::CpuClock => sprof_perf::EventKind::CpuClock,
                EventArg::TaskClock => sprof_perf::EventKind::TaskClock,
                EventArg::Cycles => sprof_perf::EventKind::Cycles,
            },
            rows: self.rows,
            verbose: self.verbose,
            ready_fd: self.ready_fd,
            save_events: self.save_events,
            mode: match self.sampling.mode {
                ModeArg::Cpu | ModeArg::Gil => sprof_core::Measure::Cpu,
                ModeArg::Wall => sprof_core::Measure::Wall,
                ModeArg::OffCpu => sprof_core::Measure::OffCpu,
                ModeArg::Memory => sprof_core::Measure::Memory,
            },
            sample_bytes: self.sampling.sample_bytes,
            gil_only: self.sampling.mode == ModeArg::Gil,
            async_tasks: self.sampling.async_tasks,
            show_from: match &self.show_from {
                Some(re) => {
                    Some(regex::Regex::new(re).map_err(|_| UsageError::BadShowFrom(re.clone()))?)
                }
                None => None,
            },
            subprocesses: self.subprocesses,
            python: match self.sampling.python_view {
                PythonViewArg::Python => Some(sprof_core::PythonView::Python),
                PythonViewArg::Mixed => Some(sprof_core::PythonView::Mixed),
                PythonViewArg::Native => None,
            },
            functions: self.source.functions,
            sources: self.source.config(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("sprofd").chain(args.iter().copied()))
    }

    fn config(args: &[&str]) -> Result<SessionConfig, UsageError> {
        match parse(args).unwrap().command {
            Command::Attach { pid, opts } => opts.into_config(Target::Pid(pid), Some(100_000)),
            Command::Record { opts, command } => {
                opts.into_config(Target::Command(command), Some(100_000))
            }
            _ => panic!("not attach or record"),
        }
    }

    fn diff_config(args: &[&str]) -> Result<DiffConfig, UsageError> {
        match parse(args).unwrap().command {
            Command::Diff(args) => args.into_config(),
            other => panic!("not diff: {other:?}"),
        }
    }

    fn top(args: &[&str]) -> Result<TopConfig, UsageError> {
        match parse(args).unwrap().command {
            Command::Top {
                pid: Some(pid),
                opts,
                ..
            } => opts.into_config(Target::Pid(pid), Some(100_000)),
            Command::Top { opts, command, .. } => {
                opts.into_config(Target::Command(command), Some(100_000))
            }
            c => panic!("not top: {c:?}"),
        }
    }

    #[test]
    fn diff_arguments() {
        let c = diff_config(&[
            "diff",
            "old.pb.gz",
            "new.folded",
            "-o",
            "d.svg",
            "-o",
            "d.folded",
            "--output",
            "d.txt",
            "--normalize",
            "-q",
            "--rows",
            "5",
        ])
        .unwrap();
        assert_eq!(c.before, PathBuf::from("old.pb.gz"));
        assert_eq!(c.after, PathBuf::from("new.folded"));
        let kinds: Vec<DiffKind> = c.outputs.iter().map(|(_, k)| *k).collect();
        assert_eq!(kinds, [DiffKind::Svg, DiffKind::Folded, DiffKind::Table]);
        assert!(c.normalize && c.quiet);
        assert_eq!(c.rows, 5);

        let c = diff_config(&["diff", "a.folded", "b.folded"]).unwrap();
        assert!(c.outputs.is_empty() && !c.normalize && !c.quiet);
        assert_eq!(c.rows, 30);

        assert!(matches!(
            diff_config(&["diff", "a.folded", "b.folded", "-o", "d.pb.gz"]),
            Err(UsageError::DiffOutput(_))
        ));
        assert!(matches!(
            diff_config(&["diff", "a.folded", "b.folded", "-o", "d.png"]),
            Err(UsageError::Output(_))
        ));
        assert!(parse(&["diff", "a.folded"]).is_err());
        assert!(parse(&["diff", "a.folded", "b.folded", "c.folded"]).is_err());
    }

    #[test]
    fn top_takes_a_pid_or_a_command_and_the_sampling_options() {
        let c = top(&[
            "top",
            "4242",
            "-F",
            "499",
            "--unwind",
            "fp",
            "--kernel",
            "-d",
            "3",
            "-w",
            "10",
            "--python-view",
            "mixed",
        ])
        .unwrap();
        assert_eq!(c.session.target, Target::Pid(4242));
        assert_eq!(c.session.frequency, 499);
        assert_eq!(c.session.unwind, sprof_unwind::UnwindMode::FramePointer);
        assert!(c.session.kernel);
        assert_eq!(c.session.duration, Some(std::time::Duration::from_secs(3)));
        assert_eq!(c.window, std::time::Duration::from_secs(10));
        assert_eq!(c.session.python, Some(sprof_core::PythonView::Mixed));
        assert!(c.session.outputs.is_empty());

        let c = top(&["top", "--", "python3", "app.py", "-q"]).unwrap();
        assert_eq!(
            c.session.target,
            Target::Command(vec!["python3".into(), "app.py".into(), "-q".into()])
        );
        assert_eq!(c.window, std::time::Duration::from_secs(5));
        assert_eq!(c.session.python, Some(sprof_core::PythonView::Python));

        assert!(parse(&["top"]).is_err(), "a PID or a command is needed");
        assert!(parse(&["top", "1", "--", "ls"]).is_err(), "not both");
        let c = top(&["top", "1", "-o", "x.svg", "-o", "x.lines.txt"]).unwrap();
        assert_eq!(
            c.session.outputs.len(),
            2,
            "outputs written when the view closes"
        );
        assert!(matches!(
            top(&["top", "1", "-F", "0"]),
            Err(UsageError::ZeroFrequency)
        ));
        assert!(matches!(
            top(&["top", "1", "-w", "0"]),
            Err(UsageError::BadWindow(0))
        ));
    }

    #[test]
    fn attach_with_every_option() {
        let c = config(&[
            "attach",
            "4242",
            "-F",
            "999",
            "-d",
            "2.5",
            "-o",
            "a.svg",
            "--output",
            "b.folded",
            "-o",
            "c.txt",
            "--kernel",
            "-q",
            "--by-line",
            "--unwind",
            "fp",
            "--stack-size",
            "8192",
            "-v",
        ])
        .unwrap();
        assert_eq!(c.target, Target::Pid(4242));
        assert_eq!(c.frequency, 999);
        assert_eq!(c.duration, Some(std::time::Duration::from_millis(2500)));
        assert_eq!(c.outputs.len(), 3);
        assert!(c.kernel && c.quiet && c.by_line);
        assert_eq!(c.unwind, sprof_unwind::UnwindMode::FramePointer);
        assert_eq!(c.stack_size, 8192);
        assert!(c.verbose);
        assert_eq!(
            config(&["attach", "1", "--mode", "off-cpu"]).unwrap().mode,
            sprof_core::Measure::OffCpu
        );
        assert_eq!(
            config(&["attach", "1", "--mode=wall"]).unwrap().mode,
            sprof_core::Measure::Wall
        );
        let gil = config(&["attach", "1", "--mode", "gil"]).unwrap();
        assert_eq!((gil.mode, gil.gil_only), (sprof_core::Measure::Cpu, true));
        assert!(!config(&["attach", "1"]).unwrap().gil_only);
        assert!(matches!(
            config(&["attach", "1", "--mode", "gil", "--python-view", "native"]),
            Err(UsageError::GilWithoutPython)
        ));
        assert!(parse(&["attach", "1", "--mode", "gpu"]).is_err());
        let c = config(&["attach", "1", "--python-view", "mixed"]).unwrap();
        assert_eq!(c.python, Some(sprof_core::PythonView::Mixed));
        let c = config(&["attach", "1", "--python-view=native"]).unwrap();
        assert_eq!(c.python, None);
        assert!(parse(&["attach", "1", "--python-view", "ruby"]).is_err());
    }

    #[test]
    fn defaults() {
        let c = config(&["attach", "1"]).unwrap();
        assert_eq!(c.frequency, 99);
        assert_eq!(c.duration, None);
        assert!(c.outputs.is_empty());
        assert_eq!(c.unwind, sprof_unwind::UnwindMode::Auto);
        assert_eq!(c.event, sprof_perf::EventKind::CpuClock);
        assert!(!c.quiet && !c.kernel && !c.by_line);
        assert_eq!(c.python, Some(sprof_core::PythonView::Python));
    }

    #[test]
    fn record_takes_everything_after_the_separator() {
        let c = config(&[
            "record", "-F", "199", "--", "python3", "-c", "print(1)", "-q",
        ])
        .unwrap();
        assert_eq!(c.frequency, 199);
        assert!(!c.quiet, "-q after -- belongs to the command");
        let Target::Command(cmd) = c.target else {
            panic!()
        };
        assert_eq!(
            cmd,
            vec![
                OsString::from("python3"),
                "-c".into(),
                "print(1)".into(),
                "-q".into()
            ]
        );
    }

    #[test]
    fn bad_values_are_usage_errors() {
        assert!(matches!(
            config(&["attach", "1", "-F", "0"]),
            Err(UsageError::ZeroFrequency)
        ));
        assert!(matches!(
            config(&["attach", "1", "-F", "200000"]),
            Err(UsageError::FrequencyTooHigh { .. })
        ));
        assert!(matches!(
            config(&["attach", "1", "--duration=-1"]),
            Err(UsageError::BadDuration(_))
        ));
        assert!(matches!(
            config(&["attach", "1", "--dump-every", "0"]),
            Err(UsageError::BadDumpEvery(_))
        ));
        assert_eq!(
            config(&["attach", "1", "--dump-every", "0.5"])
                .unwrap()
                .dump_every,
            Some(std::time::Duration::from_millis(500))
        );
        assert!(matches!(
            config(&["attach", "1", "--stack-size", "100"]),
            Err(UsageError::BadStackSize(100))
        ));
        assert!(matches!(
            config(&["attach", "1", "-o", "x.png"]),
            Err(UsageError::Output(_))
        ));
        assert!(parse(&["attach", "notapid"]).is_err());
        assert!(parse(&["record"]).is_err());
        assert!(parse(&["attach", "1", "--unwind", "magic"]).is_err());
        assert!(matches!(
            config(&["attach", "1", "--ready-fd", "2"]),
            Err(UsageError::BadReadyFd(2))
        ));
        assert!(matches!(
            config(&["attach", "1", "--ready-fd", "999999"]),
            Err(UsageError::BadReadyFd(999999))
        ));
    }
}
