//! Opening the events of a target under a sampling policy: attach, launch, the whole host or a
//! set of pids. A hardware event the machine lacks falls back to `cpu-clock`; the sampler's
//! warnings are printed; a refusal is one line that says what to do.

use std::ffi::OsString;
use std::os::fd::OwnedFd;

use anyhow::bail;
use sprof_core::{Measure, Pid, ProfileMeta, SampleKind, Tid};
use sprof_perf::spawn::RunningChild;
use sprof_perf::{procfs, EventKind, Sampler, SamplerError, SamplingPolicy};

use crate::privileges;

/// Which processes are sampled.
pub enum SourceTarget<'a> {
    /// A running process; with `subprocesses`, its descendants as they are now too.
    Attach { pid: Pid, subprocesses: bool },
    /// A command started paused and sampled from its first instruction; `streams` replace
    /// its standard streams.
    Launch {
        argv: &'a [OsString],
        streams: Option<&'a OwnedFd>,
    },
    /// Every process, one event per CPU, the side records in a ring buffer of their own.
    HostWide,
    /// These processes' threads (and what they start later).
    Pids(&'a [Pid]),
}

/// What to open: the target and the policy (event, frequency, stack capture, what time is
/// measured).
pub struct SourceSpec<'a> {
    pub target: SourceTarget<'a>,
    pub policy: SamplingPolicy,
}

/// The process a command-line session profiles.
pub enum Profiled {
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
    pub fn pid(&self) -> Pid {
        match self {
            Profiled::Attached { pid, .. } => *pid,
            Profiled::Launched { child, .. } => Pid(child.pid() as u32),
        }
    }

    /// The name outputs are called after: the process's or the command's.
    pub fn name(&self) -> &str {
        match self {
            Profiled::Attached { comm, .. } => comm,
            Profiled::Launched { program, .. } => program,
        }
    }

    pub fn has_exited(&mut self) -> bool {
        match self {
            Profiled::Launched { child, .. } => matches!(child.try_wait(), Ok(Some(_))),
            Profiled::Attached { .. } => false,
        }
    }
}

/// Events open and counting.
pub struct Opened {
    pub sampler: Sampler,
    /// The event sampled (`cycles` becomes `cpu-clock` on a machine without a PMU).
    pub event: EventKind,
    pub policy: SamplingPolicy,
    /// The one process of `Attach` and `Launch`.
    pub profiled: Option<Profiled>,
    /// What is profiled, as titles say it: `./server --port 80 (pid 4242)`, `host NAME`.
    pub title: String,
}

/// What a source says about every profile made of it.
#[derive(Debug, Clone, Default)]
pub struct SourceMeta {
    /// What was sampled, how often, and what the samples measure.
    pub meta: ProfileMeta,
    /// Memory mode: the bytes one page-fault sample stands for.
    pub sample_bytes: u64,
}

impl Opened {
    /// The meta every profile of this source starts from.
    pub fn meta(&self) -> SourceMeta {
        let memory = self.policy.time == Measure::Memory;
        SourceMeta {
            meta: ProfileMeta {
                target: self.title.clone(),
                pid: self.profiled.as_ref().map(|p| p.pid().0),
                // Memory mode samples every so many faults, not at a frequency.
                frequency: if memory { 0 } else { self.policy.frequency },
                event: if memory {
                    EventKind::PageFaults.name().to_string()
                } else {
                    self.event.name().to_string()
                },
                measure: self.policy.time,
                ..Default::default()
            },
            sample_bytes: self.policy.sample_bytes,
        }
    }

    /// Whether the source delivers the syscalls that give memory back (memory mode, where
    /// the tracepoints exist and were allowed): the engine then follows them.
    pub fn tracks_releases(&self) -> bool {
        self.sampler.samples(SampleKind::Release)
    }
}

impl SourceSpec<'_> {
    /// Opens the events (and starts a launched command). The error is the line to print.
    pub fn open(self) -> anyhow::Result<Opened> {
        let policy = self.policy;
        let opened = match self.target {
            SourceTarget::Attach { pid, subprocesses } => attach(policy, pid, subprocesses)?,
            SourceTarget::Launch { argv, streams } => launch(policy, argv, streams)?,
            SourceTarget::HostWide => host(policy, None)?,
            SourceTarget::Pids(pids) => host(policy, Some(pids))?,
        };
        for w in &opened.sampler.warnings {
            eprintln!("sprofd: warning: {w}");
        }
        if policy.time == Measure::Memory && !opened.tracks_releases() {
            // Refused tracepoints were said when they were; here, those that do not exist.
            if let Err(why) = sprof_perf::tracepoints::release_syscalls() {
                eprintln!("sprofd: note: memory given back (munmap, madvise, brk) is not tracked: {why}; page faults only, no [kept]/[freed] split");
            }
        }
        Ok(opened)
    }
}

/// How the events of a target are opened.
struct Opening<'a> {
    policy: SamplingPolicy,
    /// A launched command: the events count from its `exec`.
    enable_on_exec: bool,
    /// Side records in a ring buffer of their own (host-wide).
    side_band: bool,
    /// Explain refusals with the daemon's remedies.
    daemon: bool,
    /// What was being opened when the kernel refused, for the message.
    describe: &'a dyn Fn() -> String,
}

/// Opens the events, falling back from a hardware event the machine lacks to `cpu-clock`, and
/// from memory mode's syscall tracepoints, when refused, to page faults alone.
fn open_events(
    how: Opening<'_>,
    open: impl Fn(&mut Sampler) -> Result<(), SamplerError>,
) -> anyhow::Result<(Sampler, EventKind)> {
    let policy = how.policy;
    let mut kind = policy.event;
    let mut releases = true;
    loop {
        let mut channels = if how.side_band {
            policy.channels_with_side_band(kind, how.enable_on_exec)
        } else {
            policy.channels(kind, how.enable_on_exec)
        };
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
            Err(e) => {
                return Err(privileges::explain(
                    e,
                    &(how.describe)(),
                    &policy,
                    how.daemon,
                ))
            }
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

fn attach(policy: SamplingPolicy, pid: Pid, subprocesses: bool) -> anyhow::Result<Opened> {
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
        if subprocesses {
            // A descendant that exits meanwhile is no error.
            for child in procfs::descendants(pid) {
                let _ = s.attach(child);
            }
        }
        Ok(())
    };
    let describe = || format!("PID {pid}");
    let how = Opening {
        policy,
        enable_on_exec: false,
        side_band: false,
        daemon: false,
        describe: &describe,
    };
    let (sampler, event) = open_events(how, attach)?;
    Ok(Opened {
        sampler,
        event,
        policy,
        profiled: Some(Profiled::Attached {
            pid,
            comm: stat.comm,
        }),
        title,
    })
}

fn launch(
    policy: SamplingPolicy,
    argv: &[OsString],
    streams: Option<&OwnedFd>,
) -> anyhow::Result<Opened> {
    let child = sprof_perf::spawn::spawn_paused_with(argv, streams)?;
    let pid = Pid(child.pid() as u32);
    let program = argv[0]
        .to_string_lossy()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let describe = || format!("the launched command (PID {pid})");
    let how = Opening {
        policy,
        enable_on_exec: true,
        side_band: false,
        daemon: false,
        describe: &describe,
    };
    let (sampler, event) = open_events(how, |s| s.add_thread(pid, Tid(pid.0)))?;
    let title: String = argv
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(120)
        .collect();
    let child = child.resume()?;
    Ok(Opened {
        sampler,
        event,
        policy,
        profiled: Some(Profiled::Launched { child, program }),
        title: format!("{title} (pid {pid})"),
    })
}

/// Host-wide events (`pids: None`), or the given processes' threads.
fn host(policy: SamplingPolicy, pids: Option<&[Pid]>) -> anyhow::Result<Opened> {
    // The pid being attached to when the kernel refused, for the message.
    let current = std::cell::Cell::new(None);
    let describe = || match current.get() {
        Some(pid) => format!("PID {pid}"),
        None => "the host".to_string(),
    };
    let how = Opening {
        policy,
        enable_on_exec: false,
        // Side records get a ring buffer of their own: a process mapping and unmapping in a
        // loop cannot push the host's samples out.
        side_band: pids.is_none(),
        daemon: true,
        describe: &describe,
    };
    let (sampler, event) = open_events(how, |s| match pids {
        None => s.host_wide(),
        Some(pids) => pids.iter().try_for_each(|&pid| {
            current.set(Some(pid));
            s.attach(pid)
        }),
    })?;
    Ok(Opened {
        sampler,
        event,
        policy,
        profiled: None,
        title: format!("host {}", hostname()),
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
