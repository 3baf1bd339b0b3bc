//! `sprofd top`: a live terminal view of the hottest functions.
//!
//! The session starts exactly as attach/record's does ([`Session::start`], from the driver
//! kit) and runs through the same [`sprof_engine::run`] loop; only the tick differs: once a
//! second it takes a snapshot, symbolizes it through the session's [`SessionSymbolizer`] (one
//! for the whole session, so each refresh symbolizes only new frames), feeds the view model
//! and redraws. Keys are read between drains.

mod model;
mod ui;

use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::ops::ControlFlow;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::Context;
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::DefaultTerminal;
use sprof_core::RawProfile;
use sprof_engine::Engine;

use crate::config::{SessionConfig, Target, TopConfig};
use crate::driver::{
    finish, session, CommandStreams, Every, Profiled, Session, SessionSymbolizer, StopReason,
};
use model::{Snapshot, ThreadCount, Top};

/// How often the view is refreshed with a new snapshot.
const REFRESH: Duration = Duration::from_secs(1);

/// How often keys and stop conditions are looked at (ticks may come per sample).
const CHECK: Duration = Duration::from_millis(20);

/// Runs `sprofd top`. Returns the exit code.
pub fn run(config: TopConfig) -> anyhow::Result<i32> {
    if !std::io::stdout().is_terminal() {
        eprintln!(
            "sprofd top needs a terminal (stdout is not a TTY); use sprofd attach -o ... instead"
        );
        return Ok(2);
    }
    let TopConfig {
        session: config,
        window,
    } = config;
    // Outputs are checked before sampling, as attach checks them.
    let outputs = config
        .outputs
        .iter()
        .map(|spec| crate::output::prepare(spec.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let Session {
        mut source,
        mut engine,
        mut profiled,
        mut symbolizer,
        signals,
        exit_fd,
        started,
    } = Session::start(&config, CommandStreams::Null)?;
    // Refreshes symbolize inside the drive loop: downloads finish in the background.
    symbolizer.set_wait_for_debuginfod(false);
    let mut screen = Screen::new(&config, window, symbolizer.target(), started)?;
    let mut check = Every::new(CHECK);
    // The first refresh comes one period after the start, with a full second of samples.
    let mut refresh = Every::new(REFRESH);
    let result = sprof_engine::run(
        source.as_mut(),
        &mut engine,
        Duration::from_millis(100),
        |engine| -> ControlFlow<anyhow::Result<StopReason>> {
            if !check.due() {
                return ControlFlow::Continue(());
            }
            if let Err(e) = screen.update(engine, &mut symbolizer, refresh.due()) {
                return ControlFlow::Break(Err(e));
            }
            if let Some(quit) = screen.quit.take() {
                return ControlFlow::Break(Ok(quit));
            }
            let stop = session::stop_condition(
                &config,
                &signals,
                exit_fd.as_ref(),
                &mut profiled,
                started,
            );
            stop.map_or(ControlFlow::Continue(()), |r| ControlFlow::Break(Ok(r)))
        },
    )
    // A live source never ends by itself.
    .unwrap_or(Ok(StopReason::TargetExited));
    // Sampling ends here, whatever time the user then spends on the last view.
    let sampled = started.elapsed();
    let reason = match result {
        Ok(StopReason::TargetExited) => screen.linger(&mut engine, &mut symbolizer, &profiled),
        r => r,
    };
    drop(screen);
    let reason = reason?;
    // The terminal is back: the whole session's profile goes to the outputs.
    let failed = !outputs.is_empty() && {
        engine.settle(sprof_perf::sys::monotonic_ns());
        let profile = symbolizer.profile(&mut engine, started.elapsed());
        crate::output::write_all(outputs, &profile, &config)
    };
    let code = end(reason, profiled, &engine, sampled);
    Ok(if failed && code == 0 { 1 } else { code })
}

/// After the view: the end-of-session line, and a launched command left to finish (or
/// interrupted) as `record` does. Returns the exit code.
fn end(reason: StopReason, mut profiled: Profiled, engine: &Engine, sampled: Duration) -> i32 {
    finish::forward_signal(&mut profiled, reason);
    let stats = engine.snapshot().stats;
    let threads = engine.threads_sampled();
    let line = finish::summary(reason, &profiled, &stats, sampled.as_secs_f64(), threads);
    eprintln!("{line}");
    finish::exit_code(profiled, false)
}

/// The live view on the terminal: the model, the terminal and what the header says.
struct Screen {
    top: Top,
    target: String,
    frequency: u64,
    memory: bool,
    note: Option<String>,
    terminal: TerminalGuard,
    started: Instant,
    redraw: bool,
    /// Set when a key asks to leave.
    quit: Option<StopReason>,
}

impl Screen {
    /// Takes the terminal over.
    fn new(
        config: &SessionConfig,
        window: Duration,
        target: &str,
        started: Instant,
    ) -> anyhow::Result<Screen> {
        Ok(Screen {
            top: Top::new(window, config.python),
            target: target.to_string(),
            frequency: config.frequency,
            memory: config.mode == sprof_core::Measure::Memory,
            note: match config.target {
                Target::Command(_) => Some("the command's output goes to /dev/null".into()),
                Target::Pid(_) => None,
            },
            terminal: TerminalGuard::new()?,
            started,
            redraw: true,
            quit: None,
        })
    }

    /// Reads keys; with `refresh`, adds a snapshot of `engine`; redraws if anything changed.
    fn update(
        &mut self,
        engine: &mut Engine,
        symbolizer: &mut SessionSymbolizer,
        refresh: bool,
    ) -> anyhow::Result<()> {
        match read_keys(&mut self.top, Duration::ZERO)? {
            Keys::Quit(r) => {
                self.quit = Some(r);
                return Ok(());
            }
            Keys::Redraw => self.redraw = true,
            Keys::None => {}
        }
        if refresh {
            let raw = engine.snapshot();
            let profile = symbolizer.symbolize(engine, &raw, self.started.elapsed());
            let snapshot = Snapshot::new(self.started.elapsed(), &profile, thread_counts(&raw))?;
            self.top.push(snapshot);
            self.redraw = true;
        }
        if std::mem::take(&mut self.redraw) {
            let header = ui::Header {
                target: &self.target,
                frequency: self.frequency,
                memory: self.memory,
                note: self.note.as_deref(),
            };
            let top = &self.top;
            self.terminal
                .terminal
                .draw(|f| ui::draw(f, top, &header))
                .context("drawing on the terminal")?;
        }
        Ok(())
    }

    /// The target has exited: the last view stays on the screen (keys still sort and switch
    /// views) until the user leaves.
    fn linger(
        &mut self,
        engine: &mut Engine,
        symbolizer: &mut SessionSymbolizer,
        profiled: &Profiled,
    ) -> anyhow::Result<StopReason> {
        let pid = profiled.pid();
        self.note = Some(format!("PID {pid} exited; q leaves"));
        self.redraw = true;
        self.update(engine, symbolizer, true)?;
        // Whichever key leaves, the session ended because the target exited.
        while self.quit.take().is_none() {
            // Blocking: nothing else can change any more.
            if let Keys::Quit(_) = read_keys(&mut self.top, Duration::from_secs(3600))? {
                break;
            }
            self.redraw = true;
            self.update(engine, symbolizer, false)?;
        }
        Ok(StopReason::TargetExited)
    }
}

/// Samples per thread so far.
fn thread_counts(raw: &RawProfile) -> Vec<ThreadCount> {
    let mut samples = vec![0u64; raw.threads.len()];
    for s in &raw.samples {
        samples[s.thread] += s.counts.samples;
    }
    raw.threads
        .iter()
        .zip(samples)
        .filter(|(_, n)| *n > 0)
        .map(|(t, samples)| ThreadCount {
            tid: t.tid.0,
            name: t.name.clone(),
            samples,
        })
        .collect()
}

/// What the keys pressed since the last look ask for.
enum Keys {
    None,
    Redraw,
    Quit(StopReason),
}

/// Handles the keys pressed so far, waiting at most `wait` for the first.
fn read_keys(top: &mut Top, wait: Duration) -> anyhow::Result<Keys> {
    let mut keys = Keys::None;
    let mut wait = wait;
    while event::poll(std::mem::take(&mut wait)).context("reading the terminal")? {
        let key = match event::read().context("reading the terminal")? {
            Event::Key(k) if k.kind == KeyEventKind::Press => k,
            Event::Resize(..) => {
                keys = Keys::Redraw;
                continue;
            }
            _ => continue,
        };
        match key.code {
            // Raw mode turns Ctrl-C into a key: it means what it means to record.
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                return Ok(Keys::Quit(StopReason::Interrupted))
            }
            KeyCode::Char('q') | KeyCode::Esc => return Ok(Keys::Quit(StopReason::Quit)),
            KeyCode::Char('s') => top.cycle_sort(),
            KeyCode::Char('p') => top.cycle_view(),
            _ => continue,
        }
        keys = Keys::Redraw;
    }
    Ok(keys)
}

/// The terminal in raw mode on the alternate screen, and sprofd's stderr held aside (a
/// notice printed there mid-session would land in the middle of the view). Dropping it
/// restores both and prints what stderr got; that covers errors, and panics too: ratatui's
/// panic hook (installed by `try_init`) restores the terminal before sprofd's one-line panic
/// message, which is held and printed here during unwinding.
struct TerminalGuard {
    terminal: DefaultTerminal,
    stderr: Option<HeldStderr>,
}

impl TerminalGuard {
    fn new() -> anyhow::Result<TerminalGuard> {
        match ratatui::try_init() {
            Ok(terminal) => Ok(TerminalGuard {
                terminal,
                stderr: HeldStderr::new().ok(),
            }),
            Err(e) => {
                ratatui::restore();
                Err(e).context("setting up the terminal")
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = self.terminal.show_cursor();
        ratatui::restore();
        if let Some(held) = self.stderr.take() {
            held.release();
        }
    }
}

/// File descriptor 2 pointed at an anonymous file until [`HeldStderr::release`].
struct HeldStderr {
    saved: OwnedFd,
    held: std::fs::File,
}

impl HeldStderr {
    fn new() -> std::io::Result<HeldStderr> {
        let memfd = rustix::fs::memfd_create("sprofd-top-stderr", rustix::fs::MemfdFlags::CLOEXEC)?;
        let held = std::fs::File::from(memfd);
        let saved = std::io::stderr().as_fd().try_clone_to_owned()?;
        // stderr's Rust handle stays valid: it writes to whatever fd 2 is.
        rustix::stdio::dup2_stderr(&held)?;
        Ok(HeldStderr { saved, held })
    }

    /// Points fd 2 back at the real stderr and copies what was held there.
    fn release(mut self) {
        let _ = rustix::stdio::dup2_stderr(&self.saved);
        let mut text = Vec::new();
        if self.held.seek(SeekFrom::Start(0)).is_ok() && self.held.read_to_end(&mut text).is_ok() {
            let _ = std::io::stderr().write_all(&text);
        }
    }
}
