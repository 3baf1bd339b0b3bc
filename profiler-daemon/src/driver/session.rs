//! A command-line session (`attach`, `record`, `top`): one target, started the same way for
//! every such driver, and the conditions that end it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sprof_core::{EventSource, Pid};
use sprof_engine::Engine;
use sprof_perf::{procfs, Sampler, SamplingPolicy, StackCapture};
use sprof_unwind::UnwindMode;

use super::signals::Signals;
use super::{
    EngineSpec, Profiled, PythonSpec, SessionSymbolizer, SourceSpec, SourceTarget, StopReason,
    SymbolizerSpec,
};
use crate::config::{SessionConfig, Target};
use crate::privileges;

/// A launched command's standard streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandStreams {
    /// sprofd's own (attach/record).
    Inherit,
    /// `/dev/null`: a live view owns the terminal.
    Null,
}

/// A target being sampled: everything a driver's tick needs.
pub struct Session {
    pub source: Box<dyn EventSource>,
    pub engine: Engine,
    pub profiled: Profiled,
    pub symbolizer: SessionSymbolizer,
    pub signals: Signals,
    /// Readable once the target has exited (a pidfd), when the kernel has them.
    pub exit_fd: Option<OwnedFd>,
    pub started: Instant,
}

/// Most samples kept in time order for speedscope (24 bytes each).
const TIMELINE_CAP: usize = 4 << 20;

impl Session {
    /// Checks what can be checked, starts (or attaches to) the target and sets up the engine.
    pub fn start(config: &SessionConfig, streams: CommandStreams) -> anyhow::Result<Session> {
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
        let target = match &config.target {
            Target::Pid(pid) => SourceTarget::Attach {
                pid: Pid(*pid),
                subprocesses: config.subprocesses,
            },
            Target::Command(argv) => SourceTarget::Launch {
                argv,
                streams: null.as_ref(),
            },
        };
        let policy = policy(config, privileges::can_count_kernel());
        let mut opened = SourceSpec { target, policy }.open()?;
        let meta = opened.meta();
        let Some(profiled) = opened.profiled.take() else {
            bail!("no process to profile");
        };
        let engine = engine_spec(config, opened.tracks_releases()).build();
        let exit_fd = sprof_perf::sys::pidfd_open(profiled.pid().0 as i32).ok();
        if let Some(fd) = &exit_fd {
            opened.sampler.watch(fd.as_raw_fd());
        }
        let source = recording_source(config, opened.sampler)?;
        let symbolizer = SessionSymbolizer::new(
            SymbolizerSpec {
                kernel: config.kernel,
                // why: periodic dumps symbolize inside the drive loop; waiting there for
                // debuginfod would stop the draining of ring buffers. The final profile
                // waits (see `record::end`).
                wait_for_debuginfod: config.dump_every.is_none(),
                dwarf_budget: None,
            },
            meta,
        )
        .with_view(super::symbolizer::ProfileView {
            python: config.python,
            show_from: config.show_from.clone(),
        })
        .with_resources(crate::resources::ResourceMonitor::for_session(
            config,
            profiled.pid(),
        ));
        Ok(Session {
            source,
            engine,
            profiled,
            symbolizer,
            signals,
            exit_fd,
            started: Instant::now(),
        })
    }
}

fn engine_spec(config: &SessionConfig, track_releases: bool) -> EngineSpec {
    let in_time_order = config.outputs.iter().any(|o| {
        use flamegraph_out::OutputFormat::{Speedscope, Timeline};
        matches!(o.format, Speedscope | Timeline)
    });
    EngineSpec {
        unwind: config.unwind,
        kernel_frames: config.kernel,
        time_unwind: config.verbose,
        python: config.python.map(|_| PythonSpec {
            gil_only: config.gil_only,
            async_tasks: config.async_tasks,
        }),
        filter: None,
        limits: None,
        // why: speedscope shows samples as they happened, the timeline chart where each hot
        // function peaked; 4M samples (~100 MB) is over an hour of one busy thread at 999 Hz.
        // Past that, samples are counted as usual.
        timeline: in_time_order.then_some(TIMELINE_CAP),
        track_releases,
    }
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

/// Something a tick does at most once a period: ticks may come once per sample (a wakeup per
/// sample for Python), and stop checks, redraws and status lines cost syscalls.
pub struct Every {
    period: Duration,
    last: Instant,
}

impl Every {
    /// Due first one period from now.
    pub fn new(period: Duration) -> Every {
        Every {
            period,
            last: Instant::now(),
        }
    }

    /// Whether a period has passed since it was last due (and it starts again if so).
    pub fn due(&mut self) -> bool {
        if self.last.elapsed() < self.period {
            return false;
        }
        self.last = Instant::now();
        true
    }
}

/// Why to stop now, if anything says so: a signal, the target's exit, `--duration`.
pub fn stop_condition(
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
