//! The `attach` and `record` driver: start a source for the target, pump it into the engine
//! until a stop condition, then symbolize and write every output.
//!
//! The sampling thread does the reading, unwinding and aggregation itself (the engine runs in
//! the source's drain callback), so copied stack bytes never leave the ring buffer they were
//! written to.

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use sprof_core::{EventSource, Pid, ProfileMeta, SampleKind, Tid};
use sprof_engine::{Engine, EngineConfig};
use sprof_perf::spawn::{ExitStatus, RunningChild};
use sprof_perf::{procfs, EventKind, Sampler, SamplerError, SamplingPolicy, StackCapture};
use sprof_symbolizer::SymbolService;
use sprof_unwind::UnwindMode;

use crate::config::{OutputSpec, SessionConfig, Target};
use crate::loader::LiveLoader;
use crate::output::{self, PreparedOutput};
use crate::privileges;

/// Why sampling stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    Duration,
    Interrupted,
    Terminated,
    TargetExited,
    /// The user left a live view (`q`).
    Quit,
}

/// Signals received, counted by signal-hook's handlers.
pub(crate) struct Signals {
    interrupt: Arc<AtomicUsize>,
    terminate: Arc<AtomicUsize>,
    /// SIGUSR1: write the outputs now (`--dump-every`'s on-demand dump).
    dump: Arc<AtomicUsize>,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let interrupt = Arc::new(AtomicUsize::new(0));
        let i = interrupt.clone();
        // SAFETY: the handler performs an atomic increment and, on the second Ctrl-C, exits
        // with _exit: both are async-signal-safe. The first Ctrl-C asks for a clean stop.
        unsafe {
            signal_hook::low_level::register(SIGINT, move || {
                if i.fetch_add(1, Ordering::SeqCst) >= 1 {
                    signal_hook::low_level::exit(130);
                }
            })
        }?;
        let terminate = Arc::new(AtomicUsize::new(0));
        signal_hook::flag::register_usize(SIGTERM, terminate.clone(), 1)?;
        let dump = Arc::new(AtomicUsize::new(0));
        signal_hook::flag::register_usize(signal_hook::consts::SIGUSR1, dump.clone(), 1)?;
        Ok(Signals {
            interrupt,
            terminate,
            dump,
        })
    }

    /// Whether SIGUSR1 arrived since the last call.
    fn take_dump_request(&self) -> bool {
        self.dump.swap(0, Ordering::SeqCst) > 0
    }

    fn stop_reason(&self) -> Option<StopReason> {
        if self.interrupt.load(Ordering::SeqCst) > 0 {
            Some(StopReason::Interrupted)
        } else if self.terminate.load(Ordering::SeqCst) > 0 {
            Some(StopReason::Terminated)
        } else {
            None
        }
    }
}

/// The process being profiled.
pub(crate) enum Profiled {
    Attached {
        pid: Pid,
        comm: String,
    },
    Launched {
        child: RunningChild,
        program: String,
    },
}

impl Profiled {
    pub(crate) fn pid(&self) -> Pid {
        match self {
            Profiled::Attached { pid, .. } => *pid,
            Profiled::Launched { child, .. } => Pid(child.pid() as u32),
        }
    }

    fn has_exited(&mut self) -> bool {
        match self {
            Profiled::Launched { child, .. } => matches!(child.try_wait(), Ok(Some(_))),
            Profiled::Attached { .. } => false,
        }
    }
}

/// A started target: its source, what it is, and how it is called in titles.
struct Started {
    sampler: Sampler,
    event: EventKind,
    profiled: Profiled,
    title: String,
}

/// Whether samples of this target should wake the reader one by one: Python frames are read
/// when the sample is drained, so the sooner, the closer to the moment of the sample.
fn wants_prompt_reads(config: &SessionConfig, target: &Target) -> bool {
    if config.python.is_none() {
        return false;
    }
    match target {
        // A process tree may be a shell over Python workers; its children may exec one later.
        Target::Pid(_) if config.subprocesses => true,
        Target::Pid(pid) => procfs::exec_mappings(Pid(*pid))
            .unwrap_or_default()
            .iter()
            .any(|m| sprof_core::is_interpreter_module(m.short_name())),
        // What a command becomes is unknown until it runs: `chroot ROOT python3`, `env`,
        // `uv run`, a shell script or a `#!` script (gunicorn, pytest) all exec an interpreter
        // later. Reading late costs far more (frames read ~50 ms after their sample, one in
        // ten chains wrong) than a wakeup per sample costs a native command.
        Target::Command(_) => true,
    }
}

fn policy(config: &SessionConfig, count_kernel: bool) -> SamplingPolicy {
    SamplingPolicy {
        event: config.event,
        frequency: config.frequency,
        capture: match config.unwind {
            UnwindMode::FramePointer => StackCapture::FramePointer,
            _ => StackCapture::UserStack {
                bytes: config.stack_size,
            },
        },
        kernel_frames: config.kernel,
        count_kernel,
        wakeup_per_sample: wants_prompt_reads(config, &config.target),
        time: config.mode,
        sample_bytes: config.sample_bytes,
    }
}

/// Opens events, falling back from a hardware event the machine lacks to `cpu-clock`.
fn open_events(
    config: &SessionConfig,
    enable_on_exec: bool,
    open: impl Fn(&mut Sampler) -> Result<(), SamplerError>,
    describe: &str,
) -> anyhow::Result<(Sampler, EventKind)> {
    let policy = policy(config, privileges::can_count_kernel());
    let mut kind = config.event;
    let mut releases = true;
    loop {
        let mut channels = policy.channels(kind, enable_on_exec);
        if !releases {
            channels.retain(|&(_, k)| k != SampleKind::Release);
        }
        let mut sampler = Sampler::with_channels(channels, policy.data_pages());
        match open(&mut sampler) {
            Ok(()) => return Ok((sampler, kind)),
            // The syscall tracepoints need CAP_PERFMON (or perf_event_paranoid -1) for their
            // raw records: without them memory mode samples page faults only.
            Err(e) if releases && sampler.samples(SampleKind::Release) => {
                eprintln!("sprofd: note: memory given back (munmap, madvise, brk) is not tracked: the syscall tracepoints were refused ({e}); page faults only, no [kept]/[freed] split");
                releases = false;
            }
            Err(e)
                if kind == EventKind::Cycles
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT | libc::EOPNOTSUPP | libc::ENODEV)
                    ) =>
            {
                eprintln!(
                    "sprofd: hardware event `cycles` is not supported on this machine (no PMU, e.g. a VM); sampling cpu-clock instead"
                );
                kind = EventKind::CpuClock;
            }
            Err(e) => return Err(privileges::explain(e, describe, config)),
        }
    }
}

fn describe_target(pid: Pid) -> String {
    let cmd = procfs::cmdline(pid).unwrap_or_default();
    let mut cmd: String = cmd.chars().take(120).collect();
    if cmd.is_empty() {
        cmd = procfs::stat(pid).map(|s| s.comm).unwrap_or_default();
    }
    format!("{cmd} (pid {pid})")
}

fn attach_target(config: &SessionConfig, pid: Pid) -> anyhow::Result<Started> {
    let stat = match procfs::stat(pid) {
        Ok(s) => s,
        Err(procfs::ProcError::Gone(_)) => bail!("no such process: PID {pid}"),
        Err(e) => bail!("cannot inspect PID {pid}: {e}"),
    };
    if stat.is_kernel_thread() {
        bail!(
            "PID {pid} ({}) is a kernel thread: sprofd profiles user-space processes",
            stat.comm
        );
    }
    if stat.is_zombie() {
        bail!("PID {pid} ({}) has exited and is a zombie waiting for its parent: nothing left to sample", stat.comm);
    }
    let title = describe_target(pid);
    let attach = |s: &mut Sampler| {
        s.attach(pid)?;
        if config.subprocesses {
            // A descendant that exits meanwhile is no error.
            for child in procfs::descendants(pid) {
                let _ = s.attach(child);
            }
        }
        Ok(())
    };
    let (sampler, event) = open_events(config, false, attach, &format!("PID {pid}"))?;
    for w in &sampler.warnings {
        eprintln!("sprofd: warning: {w}");
    }
    Ok(Started {
        sampler,
        event,
        profiled: Profiled::Attached {
            pid,
            comm: stat.comm,
        },
        title,
    })
}

fn launch_target(
    config: &SessionConfig,
    argv: &[std::ffi::OsString],
    streams: Option<&OwnedFd>,
) -> anyhow::Result<Started> {
    let child = sprof_perf::spawn::spawn_paused_with(argv, streams)?;
    let pid = Pid(child.pid() as u32);
    let program = argv[0]
        .to_string_lossy()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let (sampler, event) = open_events(
        config,
        true,
        |s| s.add_thread(pid, Tid(pid.0)),
        &format!("the launched command (PID {pid})"),
    )?;
    let title: String = argv
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(120)
        .collect();
    let child = child.resume()?;
    Ok(Started {
        sampler,
        event,
        profiled: Profiled::Launched { child, program },
        title: format!("{title} (pid {pid})"),
    })
}

/// A launched command's standard streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommandStreams {
    /// sprofd's own (attach/record).
    Inherit,
    /// `/dev/null`: a live view owns the terminal.
    Null,
}

/// A target being sampled: everything a driver's tick needs, started the same way for every
/// driver (attach, record, top).
pub(crate) struct Session {
    pub source: Box<dyn EventSource>,
    pub engine: Engine,
    pub profiled: Profiled,
    pub profiles: Profiles,
    pub signals: Signals,
    /// Readable once the target has exited (a pidfd), when the kernel has them.
    pub exit_fd: Option<OwnedFd>,
    pub started: Instant,
}

impl Session {
    /// Checks what can be checked, starts (or attaches to) the target and sets up the engine.
    pub(crate) fn start(
        config: &SessionConfig,
        streams: CommandStreams,
    ) -> anyhow::Result<Session> {
        if config.kernel && !privileges::can_count_kernel() {
            bail!("{}", privileges::kernel_denied_message());
        }
        if config.mode.is_time() && !privileges::can_count_kernel() {
            bail!("{}", privileges::switch_denied_message());
        }
        let signals = Signals::install().context("installing signal handlers")?;
        let null = match streams {
            CommandStreams::Null => Some(OwnedFd::from(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
                    .context("opening /dev/null")?,
            )),
            CommandStreams::Inherit => None,
        };
        let Started {
            mut sampler,
            event,
            profiled,
            title,
        } = match &config.target {
            Target::Pid(pid) => attach_target(config, Pid(*pid))?,
            Target::Command(argv) => launch_target(config, argv, null.as_ref())?,
        };
        let mut engine = Engine::new(
            EngineConfig {
                unwind: config.unwind,
                kernel_frames: config.kernel,
                time_unwind: config.verbose,
            },
            Box::new(LiveLoader::new()),
        );
        if config.mode == sprof_core::Measure::Memory {
            match sprof_perf::tracepoints::release_syscalls() {
                _ if sampler.samples(SampleKind::Release) => engine.track_releases(),
                Err(why) => eprintln!("sprofd: note: memory given back (munmap, madvise, brk) is not tracked: {why}; page faults only, no [kept]/[freed] split"),
                Ok(_) => {}
            }
        }
        if config.python.is_some() {
            let hook = sprof_python::PythonHook::new();
            let hook = if config.gil_only {
                hook.gil_only()
            } else {
                hook
            };
            let hook = if config.async_tasks {
                hook.async_tasks()
            } else {
                hook
            };
            engine.add_hook(Box::new(hook));
        }
        if config
            .outputs
            .iter()
            .any(|o| o.format == flamegraph_out::OutputFormat::Speedscope)
        {
            // why: speedscope shows samples as they happened; 4M samples (~100 MB) is over an
            // hour of one busy thread at 999 Hz. Past that, samples are counted as usual.
            engine.keep_timeline(TIMELINE_CAP);
        }
        let exit_fd = sprof_perf::sys::pidfd_open(profiled.pid().0 as i32).ok();
        if let Some(fd) = &exit_fd {
            sampler.watch(fd.as_raw_fd());
        }
        let source = recording_source(config, sampler)?;
        let started = Instant::now();
        let profiles = Profiles::new(config, title, profiled.pid(), event, started);
        Ok(Session {
            source,
            engine,
            profiled,
            profiles,
            signals,
            exit_fd,
            started,
        })
    }

    /// The name outputs are called after: the process's or the command's.
    fn name(&self) -> &str {
        match &self.profiled {
            Profiled::Attached { comm, .. } => comm,
            Profiled::Launched { program, .. } => program,
        }
    }
}

/// Most samples kept in time order for speedscope (24 bytes each).
const TIMELINE_CAP: usize = 4 << 20;

/// Runs a whole session. Returns the process exit code sprofd should end with.
pub fn run(config: SessionConfig) -> anyhow::Result<i32> {
    // Everything that can be checked before sampling is checked before sampling.
    let mut outputs: Vec<PreparedOutput> = Vec::new();
    for spec in &config.outputs {
        outputs.push(output::prepare(spec.clone())?);
    }
    let session = Session::start(&config, CommandStreams::Inherit)?;
    if let Some(note) = privileges::user_only_note() {
        eprintln!("{note}");
    }
    if let Some(fd) = config.ready_fd {
        signal_ready(fd);
    }
    if config.outputs.is_empty() {
        outputs.push(default_output(session.name(), session.profiled.pid())?);
    }
    let Session {
        mut source,
        mut engine,
        mut profiled,
        mut profiles,
        signals,
        exit_fd,
        started,
    } = session;
    let mut dumps = Dumps::new(&config);
    let mut status = StatusLine::new();
    // Stop conditions cost syscalls; with a wakeup per sample, ticks come ~1000 times a second.
    let mut last_check = Instant::now();
    let reason = sprof_engine::run(
        source.as_mut(),
        &mut engine,
        Duration::from_millis(100),
        |engine, _| {
            status.update(engine, started);
            if dumps.due(&signals) {
                status.clear();
                dumps.write(&profiles.profile(engine), &config);
            }
            if last_check.elapsed() < Duration::from_millis(10) {
                return ControlFlow::Continue(());
            }
            last_check = Instant::now();
            match stop_condition(&config, &signals, exit_fd.as_ref(), &mut profiled, started) {
                Some(r) => ControlFlow::Break(r),
                None => ControlFlow::Continue(()),
            }
        },
    );
    status.clear();
    // Threads still switched out were off the CPU until now.
    engine.settle(sprof_perf::sys::monotonic_ns());
    forward_signal(&mut profiled, reason);
    let failed = finish(
        &config,
        &engine,
        source.as_ref(),
        &mut profiles,
        outputs,
        reason,
        &profiled,
    );
    Ok(exit_code(profiled, failed))
}

/// `--ready-fd`: tells whoever started sprofd that the events are open and counting.
///
/// why: the descriptor is reopened through /proc/self/fd rather than adopted from its
/// number, so no descriptor std did not open is ever written to or closed by it; the
/// inherited one stays open until sprofd exits (the reader has its line by then). Opening a
/// pipe that way is opening a FIFO, which blocks while no one reads: O_NONBLOCK makes it fail
/// (ENXIO) instead, if the reader has gone.
fn signal_ready(fd: u32) {
    use std::os::unix::fs::OpenOptionsExt;
    let path = format!("/proc/self/fd/{fd}");
    let result = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .and_then(|mut f| f.write_all(b"ready\n"));
    if let Err(e) = result {
        eprintln!("sprofd: warning: --ready-fd {fd}: {e}");
    }
}

/// Turns the engine's state into named profiles, with caches that last the whole session
/// (the tenth dump symbolizes only what is new).
pub(crate) struct Profiles {
    symbols: SymbolService,
    meta: ProfileMeta,
    started: Instant,
    python: Option<sprof_core::PythonView>,
    /// `--show-from`.
    show_from: Option<regex::Regex>,
    /// Time the last symbolization took.
    last_symbolize: Duration,
    /// `--mode memory`: bytes per page-fault sample.
    sample_bytes: u64,
}

impl Profiles {
    fn new(
        config: &SessionConfig,
        title: String,
        pid: Pid,
        event: EventKind,
        started: Instant,
    ) -> Profiles {
        let mut symbols = SymbolService::new(config.kernel);
        // why: periodic dumps symbolize inside the drive loop; waiting there for debuginfod
        // would stop the draining of ring buffers. The final profile waits (see `finish`).
        symbols.set_wait_for_debuginfod(config.dump_every.is_none());
        if config.kernel && !symbols.has_kernel_symbols() {
            eprintln!("sprofd: warning: /proc/kallsyms shows no addresses (kernel.kptr_restrict); kernel frames appear as [kernel]");
        }
        Profiles {
            symbols,
            meta: ProfileMeta {
                target: title,
                pid: Some(pid.0),
                duration_secs: 0.0,
                // Memory mode samples every so many faults, not at a frequency.
                frequency: match config.mode {
                    sprof_core::Measure::Memory => 0,
                    _ => config.frequency,
                },
                event: match config.mode {
                    sprof_core::Measure::Memory => EventKind::PageFaults.name().to_string(),
                    _ => event.name().to_string(),
                },
                stats: Default::default(),
                notes: Vec::new(),
                measure: config.mode,
            },
            started,
            python: config.python,
            show_from: config.show_from.clone(),
            last_symbolize: Duration::ZERO,
            sample_bytes: config.sample_bytes,
        }
    }

    /// Everything gathered so far, symbolized, in the requested Python view.
    pub(crate) fn profile(&mut self, engine: &Engine) -> sprof_core::SymbolizedProfile {
        let profile = self.symbolize(engine, &engine.snapshot());
        let profile = match self.python {
            Some(view) => profile.with_python_view(view),
            None => profile,
        };
        match &self.show_from {
            Some(re) => profile.show_from(|f| {
                re.is_match(&f.function) || f.file.as_deref().is_some_and(|p| re.is_match(p))
            }),
            None => profile,
        }
    }

    /// `raw` (a snapshot of `engine`) symbolized, with no Python view applied: Python
    /// frames, where they were read, stand in place of the interpreter's eval frames.
    pub(crate) fn symbolize(
        &mut self,
        engine: &Engine,
        raw: &sprof_core::RawProfile,
    ) -> sprof_core::SymbolizedProfile {
        let mut meta = self.meta.clone();
        meta.stats = raw.stats;
        meta.duration_secs = self.started.elapsed().as_secs_f64();
        meta.notes = engine.hook_reports();
        if meta.measure.is_time() {
            meta.notes.push(offcpu_note(&engine.offcpu_stats()));
        }
        if meta.measure == sprof_core::Measure::Memory {
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
        profile
    }

    /// For callers that symbolize while sampling (`top`): debuginfod downloads run in the
    /// background instead of holding up the drive loop.
    pub(crate) fn symbolize_while_sampling(&mut self) {
        self.symbols.set_wait_for_debuginfod(false);
    }

    /// What was profiled, e.g. `./server --port 80 (pid 4242)`.
    pub(crate) fn target(&self) -> &str {
        &self.meta.target
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

fn memory_note(
    raw: &sprof_core::RawProfile,
    s: &sprof_engine::MemoryStats,
    sample_bytes: u64,
) -> String {
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

/// `--dump-every` and SIGUSR1: outputs rewritten while sampling goes on.
struct Dumps {
    every: Option<Duration>,
    last: Instant,
    count: u32,
}

impl Dumps {
    fn new(config: &SessionConfig) -> Dumps {
        Dumps {
            every: config.dump_every,
            last: Instant::now(),
            count: 0,
        }
    }

    fn due(&mut self, signals: &Signals) -> bool {
        let requested = signals.take_dump_request();
        let timed = self.every.is_some_and(|e| self.last.elapsed() >= e);
        if requested || timed {
            self.last = Instant::now();
        }
        requested || timed
    }

    /// Writes every output (each through its own temporary file, renamed into place).
    fn write(&mut self, profile: &sprof_core::SymbolizedProfile, config: &SessionConfig) {
        self.count += 1;
        let mut written = 0;
        for spec in &config.outputs {
            let result = output::prepare(spec.clone()).and_then(|out| {
                let options = output::export_options(profile, &[&out.spec], config);
                out.write(profile, &options, output::sudo_owner())
            });
            match result {
                Ok(()) => written += 1,
                Err(e) => eprintln!("sprofd: dump {}: error: {e}", self.count),
            }
        }
        eprintln!(
            "sprofd: dump {}: {} samples, {written} output(s) written",
            self.count, profile.meta.stats.samples
        );
    }
}

/// The sampler, or with `--save-events` the sampler teeing every event into a recording.
fn recording_source(
    config: &SessionConfig,
    sampler: Sampler,
) -> anyhow::Result<Box<dyn EventSource>> {
    let Some(path) = &config.save_events else {
        return Ok(Box::new(sampler));
    };
    let file =
        std::fs::File::create(path).with_context(|| format!("--save-events {}", path.display()))?;
    let recorder = sprof_engine::replay::Recorder::new(std::io::BufWriter::new(file))
        .with_context(|| format!("--save-events {}", path.display()))?;
    Ok(Box::new(sprof_engine::replay::Tee::new(sampler, recorder)))
}

pub(crate) fn stop_condition(
    config: &SessionConfig,
    signals: &Signals,
    exit_fd: Option<&OwnedFd>,
    profiled: &mut Profiled,
    started: Instant,
) -> Option<StopReason> {
    if let Some(r) = signals.stop_reason() {
        return Some(r);
    }
    let exited = exit_fd.is_some_and(|fd| {
        sprof_perf::sys::poll_readable(&[fd.as_raw_fd()], 0).is_ok_and(|r| r.first() == Some(&true))
    });
    if exited || profiled.has_exited() {
        return Some(StopReason::TargetExited);
    }
    if config.duration.is_some_and(|d| started.elapsed() >= d) {
        return Some(StopReason::Duration);
    }
    None
}

/// The live `sprofd: 3.2 s · 3100 samples · ...` line on a terminal.
struct StatusLine {
    enabled: bool,
    last: Instant,
}

impl StatusLine {
    fn new() -> StatusLine {
        StatusLine {
            enabled: std::io::stderr().is_terminal(),
            last: Instant::now(),
        }
    }

    fn update(&mut self, engine: &Engine, started: Instant) {
        if !self.enabled || self.last.elapsed() < Duration::from_millis(250) {
            return;
        }
        self.last = Instant::now();
        eprint!(
            "\r\x1b[Ksprofd: {:.1} s · {} samples · {} threads · {} lost",
            started.elapsed().as_secs_f64(),
            engine.samples(),
            engine.threads_sampled(),
            engine.lost()
        );
        let _ = std::io::stderr().flush();
    }

    fn clear(&self) {
        if self.enabled {
            eprint!("\r\x1b[K");
        }
    }
}

/// A launched command hears of Ctrl-C from the terminal itself; if it was sprofd alone that
/// was signalled, pass the signal on.
pub(crate) fn forward_signal(profiled: &mut Profiled, reason: StopReason) {
    let Profiled::Launched { child, .. } = profiled else {
        return;
    };
    let sig = match reason {
        StopReason::Interrupted => libc::SIGINT,
        StopReason::Terminated => libc::SIGTERM,
        _ => return,
    };
    let deadline = Instant::now() + Duration::from_millis(100);
    while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(5));
    }
    if matches!(child.try_wait(), Ok(None)) {
        let _ = sprof_perf::sys::kill(child.pid(), sig);
    }
}

/// Symbolizes, reports and writes every output. Returns whether an output failed.
fn finish(
    config: &SessionConfig,
    engine: &Engine,
    source: &dyn EventSource,
    profiles: &mut Profiles,
    outputs: Vec<PreparedOutput>,
    reason: StopReason,
    profiled: &Profiled,
) -> bool {
    // Sampling is over: the last profile may wait (bounded) for debuginfod downloads.
    profiles.symbols.set_wait_for_debuginfod(true);
    let profile = profiles.profile(engine);
    for w in &engine.jit_warnings {
        eprintln!("sprofd: warning: perf map ignored: {w}");
    }
    if config.verbose {
        print_statistics(engine, profiles, source);
    }
    eprintln!(
        "{}",
        summary(
            reason,
            profiled,
            &profile.meta.stats,
            profile.meta.duration_secs,
            engine.threads_sampled()
        )
    );
    output::write_all(outputs, &profile, config)
}

/// The `sprofd: interrupted; 3100 samples in 3.10 s from 4 threads` line at the end.
pub(crate) fn summary(
    reason: StopReason,
    profiled: &Profiled,
    stats: &sprof_core::SessionStats,
    secs: f64,
    threads: usize,
) -> String {
    let what = match reason {
        StopReason::Duration | StopReason::Quit => String::new(),
        StopReason::Interrupted => "interrupted; ".into(),
        StopReason::Terminated => "terminated; ".into(),
        StopReason::TargetExited => match profiled {
            Profiled::Attached { pid, .. } => format!("PID {pid} exited; "),
            Profiled::Launched { program, .. } => format!("{program} exited; "),
        },
    };
    let lost = if stats.lost > 0 {
        format!(", {} lost", stats.lost)
    } else {
        String::new()
    };
    format!(
        "sprofd: {what}{} samples in {secs:.2} s from {threads} threads{lost}",
        stats.samples
    )
}

/// sprofd's exit code: 1 if an output failed, else a launched command's own status.
pub(crate) fn exit_code(profiled: Profiled, failed: bool) -> i32 {
    let code = i32::from(failed);
    let Profiled::Launched { mut child, program } = profiled else {
        return code;
    };
    if matches!(child.try_wait(), Ok(None)) {
        eprintln!("sprofd: waiting for {program} to exit (Ctrl-C again to abort)");
    }
    match child.wait() {
        Ok(status) => {
            eprintln!("sprofd: {program} ended with {status}");
            match (failed, status) {
                (true, _) => code,
                (false, ExitStatus::Exited(c)) => c,
                (false, ExitStatus::Signaled(s)) => 128 + s,
            }
        }
        Err(e) => {
            eprintln!("sprofd: waiting for {program}: {e}");
            code
        }
    }
}

/// `--verbose`: what the session cost, for users tuning it and for the benchmark.
fn print_statistics(engine: &Engine, profiles: &Profiles, source: &dyn EventSource) {
    let (symbols, symbolize) = (&profiles.symbols, profiles.last_symbolize);
    let s = engine.stats();
    eprintln!(
        "sprofd: stats: unwind per sample median {:.2} µs, p99 {:.2} µs over {} samples ({} DWARF walks, {} stack copies filled --stack-size)",
        f64::from(s.unwind_median_ns) / 1000.0,
        f64::from(s.unwind_p99_ns) / 1000.0,
        s.unwind_timed,
        s.unwind.dwarf_walks,
        s.unwind.stack_copy_full
    );
    eprintln!(
        "sprofd: stats: {} modules read ({:.1} MiB), symbolization {:.3} s, {} records undecodable",
        s.modules,
        s.module_bytes as f64 / (1 << 20) as f64,
        symbolize.as_secs_f64(),
        source.stats().unparsed
    );
    let f = symbols.stats;
    eprintln!(
        "sprofd: stats: frames named {}; unnamed: {} outside any known module, {} in unreadable files, {} in files without symbols, {} with no covering symbol",
        f.resolved, f.unknown_module, f.unreadable_file, f.no_symbols, f.no_symbol
    );
    eprintln!(
        "sprofd: stats: JIT: {} walks through {} JIT frames ({} ended at a JIT frame); {} JIT frames named, {} not",
        s.unwind.jit_walks, s.unwind.jit_frames, s.unwind.jit_truncated, f.jit_resolved, f.jit_unknown
    );
    for line in engine.hook_reports() {
        eprintln!("sprofd: stats: {line}");
    }
}

fn default_output(comm: &str, pid: Pid) -> anyhow::Result<PreparedOutput> {
    let safe: String = comm
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = format!(
        "sprofd-{safe}-{pid}-{}.svg",
        output::timestamp(SystemTime::now())
    );
    Ok(output::prepare(OutputSpec::from_path(name.into())?)?)
}
