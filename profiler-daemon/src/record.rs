//! The `attach` and `record` driver: a [`Session`] pumped into the engine until a stop
//! condition, with a status line and `--dump-every`'s dumps on the way; then every output.
//!
//! The sampling thread does the reading, unwinding and aggregation itself (the engine runs in
//! the source's drain callback), so copied stack bytes never leave the ring buffer they were
//! written to.

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::time::{Duration, Instant, SystemTime};

use sprof_core::Pid;
use sprof_engine::Engine;

use crate::config::{OutputSpec, SessionConfig};
use crate::driver::signals::Signals;
use crate::driver::{finish, session, CommandStreams, Every, Session, StopReason};
use crate::output::{self, PreparedOutput};
use crate::privileges;

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
        outputs.push(default_output(
            session.profiled.name(),
            session.profiled.pid(),
        )?);
    }
    let Session {
        mut source,
        mut engine,
        mut profiled,
        mut symbolizer,
        signals,
        exit_fd,
        started,
    } = session;
    let mut dumps = Dumps::new(&config);
    let mut status = StatusLine::new();
    // Stop conditions cost syscalls; with a wakeup per sample, ticks come ~1000 times a second.
    let mut check = Every::new(Duration::from_millis(10));
    let reason = sprof_engine::run(
        source.as_mut(),
        &mut engine,
        Duration::from_millis(100),
        |engine| {
            status.update(engine, started);
            if dumps.due(&signals) {
                status.clear();
                dumps.write(&symbolizer.profile(engine, started.elapsed()), &config);
            }
            if !check.due() {
                return ControlFlow::Continue(());
            }
            let stop = session::stop_condition(
                &config,
                &signals,
                exit_fd.as_ref(),
                &mut profiled,
                started,
            );
            stop.map_or(ControlFlow::Continue(()), ControlFlow::Break)
        },
    )
    // A live source never ends by itself.
    .unwrap_or(StopReason::TargetExited);
    status.clear();
    let session = Session {
        source,
        engine,
        profiled,
        symbolizer,
        signals,
        exit_fd,
        started,
    };
    Ok(end(session, &config, outputs, reason))
}

/// Symbolizes (waiting, bounded, for debuginfod downloads now that sampling is over),
/// reports, writes every output; the exit code.
fn end(
    session: Session,
    config: &SessionConfig,
    outputs: Vec<PreparedOutput>,
    reason: StopReason,
) -> i32 {
    let Session {
        source,
        mut engine,
        mut profiled,
        mut symbolizer,
        started,
        ..
    } = session;
    // Threads still switched out were off the CPU until now.
    engine.settle(sprof_perf::sys::monotonic_ns());
    finish::forward_signal(&mut profiled, reason);
    symbolizer.set_wait_for_debuginfod(true);
    let profile = symbolizer.profile(&mut engine, started.elapsed());
    if config.verbose {
        finish::print_statistics(&engine, &symbolizer, source.stats());
    }
    eprintln!(
        "{}",
        finish::summary(
            reason,
            &profiled,
            &profile.meta.stats,
            profile.meta.duration_secs,
            engine.threads_sampled()
        )
    );
    let failed = output::write_all(outputs, &profile, config);
    finish::exit_code(profiled, failed)
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

/// The live `sprofd: 3.2 s · 3100 samples · ...` line on a terminal.
struct StatusLine {
    enabled: bool,
    every: Every,
}

impl StatusLine {
    fn new() -> StatusLine {
        StatusLine {
            enabled: std::io::stderr().is_terminal(),
            every: Every::new(Duration::from_millis(250)),
        }
    }

    fn update(&mut self, engine: &Engine, started: Instant) {
        if !self.enabled || !self.every.due() {
            return;
        }
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
        "sprofd-{safe}-{}-{}.svg",
        pid,
        output::timestamp(SystemTime::now())
    );
    Ok(output::prepare(OutputSpec::from_path(name.into())?)?)
}
