//! One profiling session: start sampling a process (attached or launched), read and unwind
//! samples until told to stop, then symbolize and write every output.
//!
//! The sampling thread does the reading, unwinding and aggregation itself, so copied stack
//! bytes never leave the ring buffer they were written to.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use sprof_core::{Event, Pid, ProfileBuilder, ProfileMeta, Tid};
use sprof_perf::spawn::{ExitStatus, PausedChild, RunningChild};
use sprof_perf::{procfs, EventKind, EventSpec, SampleLayout, Sampler, SamplerError};
use sprof_unwind::{StackWalker, UnwindMode};

use crate::config::{OutputSpec, SessionConfig, Target};
use crate::loader::LiveLoader;
use crate::output::{self, PreparedOutput};
use crate::privileges;
use crate::symbolize::{self, KernelSymbols};

/// Why sampling stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Duration,
    Interrupted,
    Terminated,
    TargetExited,
}

/// Signals received, counted by signal-hook's handlers.
struct Signals {
    interrupt: Arc<AtomicUsize>,
    terminate: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let interrupt = Arc::new(AtomicUsize::new(0));
        let terminate = Arc::new(AtomicBool::new(false));
        let abort = Arc::new(AtomicBool::new(false));
        // A second Ctrl-C aborts at once: the first already asked for a clean stop.
        signal_hook::flag::register_conditional_shutdown(SIGINT, 130, abort.clone())?;
        signal_hook::flag::register(SIGINT, abort)?;
        let i = interrupt.clone();
        // SAFETY: the handler only performs an atomic increment, which is async-signal-safe.
        unsafe {
            signal_hook::low_level::register(SIGINT, move || {
                i.fetch_add(1, Ordering::SeqCst);
            })
        }?;
        signal_hook::flag::register(SIGTERM, terminate.clone())?;
        Ok(Signals {
            interrupt,
            terminate,
        })
    }

    fn stop_reason(&self) -> Option<StopReason> {
        if self.interrupt.load(Ordering::SeqCst) > 0 {
            Some(StopReason::Interrupted)
        } else if self.terminate.load(Ordering::SeqCst) {
            Some(StopReason::Terminated)
        } else {
            None
        }
    }
}

/// The process being profiled.
enum Profiled {
    Attached {
        pid: Pid,
        comm: String,
    },
    Launched {
        child: RunningChild,
        program: String,
    },
}

/// Names of threads and processes, kept current from comm and fork records.
#[derive(Default)]
struct Names {
    threads: HashMap<Tid, String>,
    processes: HashMap<Pid, String>,
}

impl Names {
    fn on_event(&mut self, event: &Event<'_>) {
        match event {
            Event::Comm(c) => {
                self.threads.insert(c.tid, c.comm.clone());
                if c.pid.0 == c.tid.0 || c.exec {
                    self.processes.insert(c.pid, c.comm.clone());
                }
            }
            Event::Fork(f) => {
                if let Some(n) = self.threads.get(&f.ptid).cloned() {
                    self.threads.entry(f.tid).or_insert(n);
                }
                if f.pid != f.ppid {
                    if let Some(n) = self.processes.get(&f.ppid).cloned() {
                        self.processes.entry(f.pid).or_insert(n);
                    }
                }
            }
            _ => {}
        }
    }
}

fn event_spec(
    config: &SessionConfig,
    kind: EventKind,
    count_kernel: bool,
    enable_on_exec: bool,
) -> EventSpec {
    let dwarf = config.unwind != UnwindMode::FramePointer;
    EventSpec {
        kind,
        frequency: config.frequency,
        layout: SampleLayout {
            callchain: !dwarf || config.kernel,
            regs_user: dwarf,
            stack_user: if dwarf { config.stack_size } else { 0 },
        },
        count_kernel,
        kernel_callchain: config.kernel,
        user_callchain: !dwarf,
        enable_on_exec,
    }
}

/// Ring-buffer size per CPU: room for about a quarter second of copied stacks of a few busy
/// threads at the requested rate, within sane bounds.
fn data_pages(config: &SessionConfig) -> usize {
    let page = sprof_perf::sys::page_size() as u64;
    let per_sample = if config.unwind == UnwindMode::FramePointer {
        1024
    } else {
        u64::from(config.stack_size) + 256
    };
    let bytes = per_sample * config.frequency.max(1) / 2;
    // Buffers are per CPU: keep the total bounded (128 MiB) on many-CPU hosts.
    let cpus = procfs::online_cpus().len().max(1) as u64;
    let cap = (32768 / cpus).clamp(64, 2048);
    ((bytes / page).clamp(64, cap) as usize).next_power_of_two()
}

/// Opens events, falling back from a hardware event the machine lacks to `cpu-clock`.
fn open_events(
    config: &SessionConfig,
    count_kernel: bool,
    enable_on_exec: bool,
    open: impl Fn(&mut Sampler) -> Result<(), SamplerError>,
    describe: &str,
) -> anyhow::Result<(Sampler, EventKind)> {
    let mut kind = config.event;
    loop {
        let mut sampler = Sampler::new(
            event_spec(config, kind, count_kernel, enable_on_exec),
            data_pages(config),
        );
        match open(&mut sampler) {
            Ok(()) => return Ok((sampler, kind)),
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

/// Runs a whole session. Returns the process exit code sprofd should end with.
pub fn run(config: SessionConfig) -> anyhow::Result<i32> {
    let privileged = privileges::can_count_kernel();
    if config.kernel && !privileged {
        bail!("{}", privileges::kernel_denied_message());
    }

    // Everything that can be checked before sampling is checked before sampling.
    let mut outputs: Vec<PreparedOutput> = Vec::new();
    for spec in &config.outputs {
        outputs.push(output::prepare(spec.clone())?);
    }
    let signals = Signals::install().context("installing signal handlers")?;

    let (mut sampler, event, mut profiled, title) = match &config.target {
        Target::Pid(pid) => {
            let pid = Pid(*pid);
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
            let (sampler, event) = open_events(
                &config,
                privileged,
                false,
                |s| s.attach(pid),
                &format!("PID {pid}"),
            )?;
            (
                sampler,
                event,
                Profiled::Attached {
                    pid,
                    comm: stat.comm,
                },
                title,
            )
        }
        Target::Command(argv) => {
            let child: PausedChild = sprof_perf::spawn::spawn_paused(argv)?;
            let pid = Pid(child.pid() as u32);
            let program = argv[0]
                .to_string_lossy()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            let (sampler, event) = open_events(
                &config,
                privileged,
                true,
                |s| s.add_thread(pid, Tid(pid.0)),
                &format!("the launched command (PID {pid})"),
            )?;
            if config.outputs.is_empty() {
                outputs.push(default_output(&program, pid)?);
            }
            let title: String = argv
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
                .chars()
                .take(120)
                .collect();
            let child = child.resume()?;
            (
                sampler,
                event,
                Profiled::Launched { child, program },
                format!("{title} (pid {pid})"),
            )
        }
    };
    if let Profiled::Attached { pid, comm } = &profiled {
        if config.outputs.is_empty() {
            outputs.push(default_output(comm, *pid)?);
        }
    }

    let started = Instant::now();
    let mut walker = StackWalker::new(config.unwind, config.kernel);
    let mut loader = LiveLoader::new();
    let builder = ProfileBuilder::new();
    let mut names = Names::default();
    let target_pid = match &profiled {
        Profiled::Attached { pid, .. } => *pid,
        Profiled::Launched { child, .. } => Pid(child.pid() as u32),
    };
    let exit_fd = sprof_perf::sys::pidfd_open(target_pid.0 as i32).ok();

    if let Profiled::Attached { pid, .. } = &profiled {
        // The process's existing state enters the pipeline as synthetic events.
        if let Ok(tids) = procfs::tasks(*pid) {
            for tid in tids {
                if let Ok(comm) = procfs::thread_comm(*pid, tid) {
                    names.on_event(&Event::Comm(sprof_core::CommEvent {
                        pid: *pid,
                        tid,
                        comm,
                        exec: false,
                    }));
                }
            }
        }
        match procfs::exec_mappings(*pid) {
            Ok(maps) => {
                for mapping in maps {
                    walker.on_event(
                        &Event::Mmap(sprof_core::MmapEvent {
                            pid: *pid,
                            tid: Tid(pid.0),
                            mapping,
                        }),
                        &mut loader,
                    );
                }
            }
            Err(e) => eprintln!("sprofd: warning: {e}; symbols will be missing"),
        }
    }

    let status_line = std::io::stderr().is_terminal();
    let frames = Vec::with_capacity(256);
    let threads_seen: std::collections::HashSet<Tid> = Default::default();
    let mut last_status = Instant::now();
    let mut poll_fds = sampler.poll_fds();
    if let Some(fd) = &exit_fd {
        poll_fds.push(fd.as_raw_fd());
    }

    let mut c = Collector {
        walker,
        builder,
        names,
        loader,
        frames,
        threads_seen,
        unwind_ns: config.verbose.then(Vec::new),
    };

    let reason = loop {
        let ready = sprof_perf::sys::poll_readable(&poll_fds, 100).unwrap_or_default();
        sampler.drain(|e| c.handle(e));
        if let Some(r) = signals.stop_reason() {
            break r;
        }
        if exit_fd.is_some() && ready.last() == Some(&true) {
            break StopReason::TargetExited;
        }
        if let Profiled::Launched { child, .. } = &mut profiled {
            if matches!(child.try_wait(), Ok(Some(_))) {
                break StopReason::TargetExited;
            }
        }
        if config.duration.is_some_and(|d| started.elapsed() >= d) {
            break StopReason::Duration;
        }
        if status_line && last_status.elapsed() >= Duration::from_millis(250) {
            last_status = Instant::now();
            eprint!(
                "\r\x1b[Ksprofd: {:.1} s · {} samples · {} threads · {} lost",
                started.elapsed().as_secs_f64(),
                c.builder.stats.samples,
                c.threads_seen.len(),
                c.builder.stats.lost
            );
            let _ = std::io::stderr().flush();
        }
    };
    let elapsed = started.elapsed();
    sampler.disable();
    sampler.drain(|e| c.handle(e));
    if status_line {
        eprint!("\r\x1b[K");
    }

    // A launched command hears of Ctrl-C from the terminal itself; if it was sprofd alone
    // that was signalled, pass the signal on.
    if let Profiled::Launched { child, .. } = &mut profiled {
        let forward = match reason {
            StopReason::Interrupted => Some(libc::SIGINT),
            StopReason::Terminated => Some(libc::SIGTERM),
            _ => None,
        };
        if let Some(sig) = forward {
            let deadline = Instant::now() + Duration::from_millis(100);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(5));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = sprof_perf::sys::kill(child.pid(), sig);
            }
        }
    }

    let Collector {
        walker,
        builder,
        names,
        threads_seen,
        unwind_ns,
        ..
    } = c;
    let mut raw = builder.snapshot();
    for t in &mut raw.threads {
        t.name = names.threads.get(&t.tid).cloned().unwrap_or_default();
        t.process_name = names
            .processes
            .get(&t.pid)
            .cloned()
            .unwrap_or_else(|| t.name.clone());
    }
    let meta = ProfileMeta {
        target: title,
        pid: Some(target_pid.0),
        duration_secs: elapsed.as_secs_f64(),
        frequency: config.frequency,
        event: event.name().to_string(),
        stats: raw.stats,
    };
    let kernel_symbols = if config.kernel {
        KernelSymbols::load()
    } else {
        None
    };
    if config.kernel && kernel_symbols.is_none() {
        eprintln!("sprofd: warning: /proc/kallsyms shows no addresses (kernel.kptr_restrict); kernel frames appear as [kernel]");
    }
    let symbolize_start = Instant::now();
    let profile = symbolize::symbolize(&raw, &walker.modules, meta, kernel_symbols.as_ref());
    if config.verbose {
        print_statistics(
            &walker,
            unwind_ns.unwrap_or_default(),
            symbolize_start.elapsed(),
            &sampler,
        );
    }

    let what = match reason {
        StopReason::Duration => String::new(),
        StopReason::Interrupted => "interrupted; ".into(),
        StopReason::Terminated => "terminated; ".into(),
        StopReason::TargetExited => match &profiled {
            Profiled::Attached { pid, .. } => format!("PID {pid} exited; "),
            Profiled::Launched { program, .. } => format!("{program} exited; "),
        },
    };
    let lost = if raw.stats.lost > 0 {
        format!(", {} lost", raw.stats.lost)
    } else {
        String::new()
    };
    eprintln!(
        "sprofd: {what}{} samples in {:.2} s from {} threads{lost}",
        raw.stats.samples,
        elapsed.as_secs_f64(),
        threads_seen.len()
    );

    let owner = output::sudo_owner();
    let mut failed = false;
    for out in outputs {
        let path = out.spec.path.clone();
        match out.write(&profile, config.by_line, owner) {
            Ok(()) => eprintln!("sprofd: wrote {}", path.display()),
            Err(e) => {
                eprintln!("sprofd: error: {e}");
                failed = true;
            }
        }
    }
    if !config.quiet {
        if let Err(e) = output::print_table(&profile, config.by_line, config.rows) {
            eprintln!("sprofd: error: {e}");
            failed = true;
        }
    }

    let mut code = if failed { 1 } else { 0 };
    if let Profiled::Launched { mut child, program } = profiled {
        if matches!(child.try_wait(), Ok(None)) {
            eprintln!("sprofd: waiting for {program} to exit (Ctrl-C again to abort)");
        }
        match child.wait() {
            Ok(status) => {
                eprintln!("sprofd: {program} ended with {status}");
                if !failed {
                    code = match status {
                        ExitStatus::Exited(c) => c,
                        ExitStatus::Signaled(s) => 128 + s,
                    };
                }
            }
            Err(e) => eprintln!("sprofd: waiting for {program}: {e}"),
        }
    }
    Ok(code)
}

/// `--verbose`: what the session cost, for users tuning it and for the benchmark.
fn print_statistics(
    walker: &StackWalker,
    mut unwind_ns: Vec<u32>,
    symbolize: Duration,
    sampler: &Sampler,
) {
    unwind_ns.sort_unstable();
    let pct = |p: f64| {
        unwind_ns
            .get(((unwind_ns.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    let modules = walker.modules.iter().count();
    let bytes: usize = walker
        .modules
        .iter()
        .filter_map(|(_, m)| m.bytes.as_ref().map(|b| b.len()))
        .sum();
    let s = walker.stats;
    eprintln!(
        "sprofd: stats: unwind per sample median {:.2} µs, p99 {:.2} µs over {} samples ({} DWARF walks, {} stack copies filled --stack-size)",
        f64::from(pct(0.5)) / 1000.0,
        f64::from(pct(0.99)) / 1000.0,
        unwind_ns.len(),
        s.dwarf_walks,
        s.stack_copy_full
    );
    eprintln!(
        "sprofd: stats: {modules} modules read ({:.1} MiB), symbolization {:.3} s, ring buffers {} pages per CPU, {} records undecodable",
        bytes as f64 / (1 << 20) as f64,
        symbolize.as_secs_f64(),
        sampler.data_pages(),
        sampler.stats.unparsed
    );
}

/// Everything the drain loop updates, per event.
struct Collector {
    walker: StackWalker,
    builder: ProfileBuilder,
    names: Names,
    loader: LiveLoader,
    frames: Vec<sprof_core::FrameKey>,
    threads_seen: std::collections::HashSet<Tid>,
    /// Per-sample unwind times, kept only with --verbose.
    unwind_ns: Option<Vec<u32>>,
}

impl Collector {
    fn handle(&mut self, event: Event<'_>) {
        match event {
            Event::Sample(s) => {
                let t0 = self.unwind_ns.is_some().then(Instant::now);
                self.walker.unwind(&s, &mut self.frames);
                if let (Some(t0), Some(v)) = (t0, self.unwind_ns.as_mut()) {
                    v.push(t0.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
                }
                self.builder
                    .add_sample(s.pid, s.tid, &self.frames, s.period);
                self.threads_seen.insert(s.tid);
            }
            Event::Lost { count } => self.builder.stats.lost += count,
            Event::Throttle { unthrottle: false } => self.builder.stats.throttled += 1,
            Event::Throttle { .. } | Event::Exit(_) => {}
            e => {
                if std::env::var_os("SPROFD_DEBUG_EVENTS").is_some() {
                    eprintln!("event: {e:?}");
                }
                self.names.on_event(&e);
                self.walker.on_event(&e, &mut self.loader);
            }
        }
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
