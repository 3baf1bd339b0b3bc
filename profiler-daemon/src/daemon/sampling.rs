//! The daemon's sampling thread: a host-wide (or per-pid) source opened and an engine built
//! with the driver kit, driven through the same engine loop as `attach`; its tick asks the
//! [`Windows`] state machine what is due and does the I/O: symbolizing slices, labelling
//! processes from /proc, encoding and storing windows.
//!
//! The thread owns the engine, the symbolizer and the taps; it shares with the HTTP side
//! only the window in progress ([`OpenWindow`]), the store and the metrics, each behind its
//! own lock, held briefly. Requests that need the thread (a scrape's start and end) arrive as
//! [`Control`] messages, with a wake of the drain thread that ends the loop's wait at once.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sprof_core::{EventSource, Pid, SymbolizedProfile};
use sprof_engine::handoff::{self, Handoff};
use sprof_engine::{Engine, Limits};
use sprof_perf::{procfs, EventKind, SamplingPolicy, StackCapture};
use sprof_store::WindowStore;
use sprof_unwind::UnwindMode;

use super::config::DaemonConfig;
use super::labels::Labels;
use super::metrics::{Metrics, Phase};
use super::notify::Notifier;
use super::pending::{PendingWindows, MAX_PENDING};
use super::windows::{Action, Clock, EndedWindow, Now, Request, SystemClock, Windows};
use crate::driver::{
    EngineSpec, HostFilter, PythonSpec, SessionSymbolizer, SourceMeta, SourceSpec, SourceTarget,
    SymbolizerSpec,
};

pub use super::windows::{OpenWindow, StackFilter};

/// Unique stack nodes per slice before samples go to `[other]`: a few MiB of interner.
const MAX_STACK_NODES: usize = 200_000;
/// Slices (seconds) a module stays parsed after its last process exits: programs that run
/// again and again are not re-read and re-symbolized at every start.
const MODULE_GRACE_SLICES: u32 = 60;
/// DWARF contexts kept between slices, in bytes of debug sections: binaries with full debug
/// info beyond this are parsed again when new addresses in them need it.
const DWARF_BUDGET: usize = 32 << 20;
/// Processes whose address space is kept at most; beyond it the one sampled longest ago
/// goes (`sprofd_processes_evicted_total`).
const MAX_PROCESSES: usize = 16_384;
/// Mmap records taken per process per slice (second); beyond, the process's maps are read
/// again later. A program loading its libraries maps a few hundred; a process mapping code
/// in a loop (never reported unmapped) costs the engine no more than this.
const MAX_MMAPS_PER_SLICE: u32 = 4096;
/// How long the loop waits for samples at most; requests end the wait at once.
pub const POLL: Duration = Duration::from_millis(250);
/// How long the drain thread waits for records at most (it wakes sooner when a ring buffer
/// passes its watermark).
const DRAIN_POLL: Duration = Duration::from_millis(100);
/// Bytes of drained records that may wait for the engine: at the default 19 Hz a sample with
/// its 16 KiB stack copy is ~16.5 KiB, so 16 MiB holds ~25 s of two busy CPUs: the longest
/// engine stall (a first parse of a huge module) absorbed without dropping samples. Empty
/// while the engine keeps up, which is always but for such stalls.
const MAX_QUEUED: usize = 16 << 20;

/// What the HTTP side shares with the sampling thread.
pub struct Shared {
    pub window: Arc<Mutex<OpenWindow>>,
    pub store: Mutex<WindowStore>,
    pub metrics: Metrics,
    control: Mutex<mpsc::Sender<Control>>,
    /// The drain thread, once sampling runs: its wake ends the engine's wait at once.
    handoff: std::sync::OnceLock<Handoff>,
    /// What is being sampled, for the page and the status line.
    pub describe: Mutex<String>,
    /// Taps open now (scrapes in progress).
    pub open_taps: std::sync::atomic::AtomicUsize,
    /// When the sampling loop last turned, in milliseconds since `epoch`: /healthz reads it,
    /// so a sampler stuck in a system call (or a symbolization that never ends) shows.
    heartbeat: AtomicU64,
    epoch: Instant,
    /// False once the sampling thread has ended, however it ended (a panic included).
    alive: AtomicBool,
    /// Processes' resident memory: the window in progress's readings.
    pub rss: Arc<super::rss::Readings>,
}

/// Whether sampling works, as /healthz says it.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    Ok,
    /// The thread has ended.
    Dead,
    /// The loop has not turned for this long.
    Stalled(Duration),
}

/// The loop turns at least every [`POLL`]; this many turns missed is a stall.
pub const STALL: Duration = Duration::from_secs(2);

/// Requests for the sampling thread.
pub enum Control {
    /// A request the window machine answers (opening or closing a tap), passed on as it is.
    Windows(Request),
    /// New retention settings (SIGHUP).
    Retention(sprof_store::Retention),
    /// Write the window in progress and stop.
    Stop,
}

impl Shared {
    /// What the threads share around `store`, and the receiving end of [`Shared::send`].
    pub fn new(store: WindowStore) -> (Arc<Shared>, mpsc::Receiver<Control>) {
        let (tx, rx) = mpsc::channel();
        let shared = Shared {
            window: Arc::default(),
            store: Mutex::new(store),
            metrics: Metrics::new(),
            control: Mutex::new(tx),
            handoff: std::sync::OnceLock::new(),
            describe: Mutex::new(String::new()),
            open_taps: std::sync::atomic::AtomicUsize::new(0),
            heartbeat: AtomicU64::new(0),
            epoch: Instant::now(),
            alive: AtomicBool::new(true),
            rss: Arc::default(),
        };
        (Arc::new(shared), rx)
    }

    /// The loop turned now.
    fn beat(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.heartbeat.store(ms, Ordering::SeqCst);
    }

    /// Whether the sampling thread is alive, its loop turned within [`STALL`] and the
    /// drain thread drained within it.
    pub fn health(&self) -> Health {
        if !self.alive.load(Ordering::SeqCst) {
            return Health::Dead;
        }
        let last = Duration::from_millis(self.heartbeat.load(Ordering::SeqCst));
        let since = self.epoch.elapsed().saturating_sub(last).max(
            self.handoff
                .get()
                .map_or(Duration::ZERO, Handoff::since_last_drain),
        );
        if since > STALL {
            Health::Stalled(since)
        } else {
            Health::Ok
        }
    }

    /// Whether the sampling thread has ended.
    pub fn sampler_ended(&self) -> bool {
        !self.alive.load(Ordering::SeqCst)
    }

    /// Sends a request; false if the sampling thread is gone.
    pub fn send(&self, c: Control) -> bool {
        let sent = self
            .control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(c)
            .is_ok();
        if let Some(h) = self.handoff.get() {
            h.wake();
        }
        sent
    }

    fn lock_store(&self) -> std::sync::MutexGuard<'_, WindowStore> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Opens the events and starts the sampling thread; returns once sampling runs (or could
/// not start: the error is the one line to print).
pub fn start(
    config: &DaemonConfig,
    store: WindowStore,
    notifier: Arc<Notifier>,
) -> anyhow::Result<(Arc<Shared>, std::thread::JoinHandle<()>)> {
    let (shared, rx) = Shared::new(store);
    let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<String>>();
    let config = config.clone();
    let handle = spawn_thread(shared.clone(), move |shared| {
        let pids: Vec<Pid> = config.pids.iter().map(|&p| Pid(p)).collect();
        let target = if pids.is_empty() {
            SourceTarget::HostWide
        } else {
            SourceTarget::Pids(&pids)
        };
        let opened = match (SourceSpec {
            target,
            policy: policy(&config),
        })
        .open()
        {
            Ok(o) => o,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let meta = opened.meta();
        let track_releases = opened.tracks_releases();
        // Draining on a thread of its own: nothing this thread does (parsing a new
        // module, symbolizing, writing a window) makes the kernel drop samples.
        let (source, handoff) = match handoff::spawn(opened.sampler, MAX_QUEUED, DRAIN_POLL) {
            Ok(pair) => pair,
            Err(e) => {
                let _ = ready_tx.send(Err(anyhow::anyhow!("starting the drain thread: {e}")));
                return;
            }
        };
        let _ = shared.handoff.set(handoff);
        let _ = ready_tx.send(Ok(describe(&config)));
        let engine = engine_spec(&config, track_releases).build();
        Sampling::new(&config, shared, notifier, rx, meta, SystemClock).run(source, engine);
    })?;
    match ready_rx.recv() {
        Ok(Ok(describe)) => {
            *shared.describe.lock().unwrap_or_else(|e| e.into_inner()) = describe;
            Ok((shared, handle))
        }
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => anyhow::bail!("the sampling thread ended before sampling started"),
    }
}

/// Runs `body` on the sampling thread, which is marked ended ([`Shared::health`]) as soon as
/// it returns or unwinds: /healthz then answers 503 and the main thread exits non-zero, so
/// that the service manager restarts the daemon.
pub fn spawn_thread(
    shared: Arc<Shared>,
    body: impl FnOnce(Arc<Shared>) + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    struct Ended(Arc<Shared>);
    impl Drop for Ended {
        fn drop(&mut self) {
            self.0.alive.store(false, Ordering::SeqCst);
        }
    }
    std::thread::Builder::new()
        .name("sprofd-sampler".into())
        .spawn(move || {
            let _ended = Ended(shared.clone());
            body(shared);
        })
}

fn describe(config: &DaemonConfig) -> String {
    let cpus = procfs::online_cpus().len();
    let what = if config.pids.is_empty() {
        "every process".to_string()
    } else {
        format!(
            "pid {}",
            config
                .pids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let comm = config
        .comm
        .as_ref()
        .map(|r| format!(" named /{}/", r.as_str()))
        .unwrap_or_default();
    format!(
        "{what}{comm} on {cpus} CPUs at {} Hz, {} s windows",
        config.frequency,
        config.window.as_secs()
    )
}

fn policy(config: &DaemonConfig) -> SamplingPolicy {
    SamplingPolicy {
        event: EventKind::CpuClock,
        frequency: config.frequency,
        capture: StackCapture::UserStack {
            bytes: config.stack_size,
        },
        kernel_frames: config.kernel,
        count_kernel: true,
        // Python frames are read when the sample is drained: the sooner the better. At the
        // daemon's rates this is a few dozen wakeups a second.
        wakeup_per_sample: config.python,
        time: config.mode,
        sample_bytes: sprof_perf::policy::DEFAULT_SAMPLE_BYTES,
    }
}

/// The daemon's engine: bounded for weeks of running, without the idle task and itself.
pub fn engine_spec(config: &DaemonConfig, track_releases: bool) -> EngineSpec {
    EngineSpec {
        unwind: UnwindMode::Auto,
        kernel_frames: config.kernel,
        time_unwind: true,
        python: config.python.then(PythonSpec::default),
        filter: Some(HostFilter {
            comm: config.comm.clone(),
        }),
        limits: Some(Limits {
            stack_nodes: MAX_STACK_NODES,
            module_grace: MODULE_GRACE_SLICES,
            processes: MAX_PROCESSES,
            mmaps_per_window: MAX_MMAPS_PER_SLICE,
        }),
        timeline: None,
        track_releases,
    }
}

/// The sampling thread's state: the machine, and what does its I/O.
pub struct Sampling<C: Clock> {
    shared: Arc<Shared>,
    notifier: Arc<Notifier>,
    control: mpsc::Receiver<Control>,
    windows: Windows,
    slicer: Slicer,
    /// Windows the disk refused, retried before the next one.
    pending: PendingWindows,
    last_watchdog: Instant,
    clock: C,
    /// Where this thread's and the drain thread's CPU clocks were last read, for
    /// `sprofd_phase_cpu_seconds_total`.
    cpu: CpuMarks,
}

/// CPU clocks as last read: what was used since goes to a phase.
#[derive(Default)]
struct CpuMarks {
    sampler: Duration,
    drain: Duration,
}

impl<C: Clock> Sampling<C> {
    /// `meta`: what the source says every profile is (see [`crate::driver::source::Opened::meta`]).
    pub fn new(
        config: &DaemonConfig,
        shared: Arc<Shared>,
        notifier: Arc<Notifier>,
        control: mpsc::Receiver<Control>,
        meta: SourceMeta,
        mut clock: C,
    ) -> Sampling<C> {
        let symbolizer = SessionSymbolizer::new(
            SymbolizerSpec {
                kernel: config.kernel,
                // Never hold up the loop for a download; names arrive in a later window.
                wait_for_debuginfod: false,
                dwarf_budget: Some(DWARF_BUDGET),
            },
            meta.clone(),
        );
        let now = clock.now();
        let rss = super::rss::Tracker::start(
            config.window,
            shared.rss.clone(),
            shared.metrics.rss_reader(),
        );
        Sampling {
            windows: Windows::new(config.window, now, shared.window.clone(), meta.meta),
            slicer: Slicer {
                symbolizer,
                labels: Labels::new(config.cmdline),
                rss,
                shared: shared.clone(),
            },
            shared,
            notifier,
            control,
            pending: PendingWindows::new(MAX_PENDING),
            last_watchdog: now.mono,
            clock,
            cpu: CpuMarks::default(),
        }
    }

    /// Drives `source` into `engine` until a [`Control::Stop`] (or the end of a recording),
    /// then stores the window in progress.
    pub fn run(mut self, mut source: impl EventSource, mut engine: Engine) {
        sprof_engine::run(&mut source, &mut engine, POLL, |engine| {
            let m = &self.shared.metrics;
            let (stats, dropped) = self
                .shared
                .handoff
                .get()
                .map_or((Default::default(), 0), |h| {
                    (h.source_stats(), h.dropped_mappings())
                });
            let lost = stats.lost_side_records + dropped;
            m.lost_side_records
                .inc_by(lost.saturating_sub(m.lost_side_records.get()));
            self.tick(engine)
        });
        // The loop drained what the kernel had; the window in progress is written now.
        let now = self.clock.now();
        let slicer = &mut self.slicer;
        let actions = self.windows.finish(now, &mut |start, end| {
            slicer.cut(&mut engine, start, end, now.mono)
        });
        let _ = self.apply(actions, now);
    }

    /// One turn of the drive loop: requests, then slice and window boundaries.
    fn tick(&mut self, engine: &mut Engine) -> ControlFlow<()> {
        self.shared.beat();
        self.account_events();
        let flow = self.turn(engine);
        self.cpu.sampler = sprof_core::thread_cpu_time();
        flow
    }

    /// Counts the CPU the engine used since the last tick (this thread's clock between
    /// ticks is the engine's) and the drain thread's since the last look.
    fn account_events(&mut self) {
        let m = &self.shared.metrics;
        let now = sprof_core::thread_cpu_time();
        m.add_phase_cpu(Phase::Events, now.saturating_sub(self.cpu.sampler));
        self.cpu.sampler = now;
        if let Some(h) = self.shared.handoff.get() {
            let drain = h.drain_cpu();
            m.add_phase_cpu(Phase::Drain, drain.saturating_sub(self.cpu.drain));
            self.cpu.drain = drain;
        }
    }

    /// The tick's work: requests, then slice and window boundaries.
    fn turn(&mut self, engine: &mut Engine) -> ControlFlow<()> {
        let now = self.clock.now();
        if now.mono.saturating_duration_since(self.last_watchdog)
            >= self.notifier.watchdog_interval()
        {
            self.notifier.watchdog();
            self.last_watchdog = now.mono;
        }
        let mut requests = Vec::new();
        while let Ok(c) = self.control.try_recv() {
            match c {
                Control::Windows(r) => requests.push(r),
                Control::Retention(r) => self.shared.lock_store().set_retention(r),
                Control::Stop => {
                    requests.push(Request::Stop);
                    break;
                }
            }
        }
        let slicer = &mut self.slicer;
        let actions = self.windows.tick(now, requests, &mut |start, end| {
            slicer.cut(engine, start, end, now.mono)
        });
        self.apply(actions, now)
    }

    /// Does what the machine asked for.
    fn apply(&mut self, actions: Vec<Action>, now: Now) -> ControlFlow<()> {
        for action in actions {
            match action {
                Action::Store(window) => {
                    self.store(*window, now.wall);
                    self.slicer.labels.clear();
                }
                Action::Taps(n) => self.shared.open_taps.store(n, Ordering::SeqCst),
                Action::Stop => return ControlFlow::Break(()),
            }
        }
        ControlFlow::Continue(())
    }

    /// Encodes a window (with its processes' memory readings) and stores it, after the
    /// windows the disk refused before; `wall` is the time retention counts from, whatever the
    /// labels say.
    fn store(&mut self, window: EndedWindow, wall: SystemTime) {
        let m = &self.shared.metrics;
        let rss = self.slicer.rss.take_window();
        let t0 = sprof_core::thread_cpu_time();
        let encoded = encode(&window.profile, window.start);
        let t1 = sprof_core::thread_cpu_time();
        m.add_phase_cpu(Phase::Encode, t1.saturating_sub(t0));
        match encoded {
            Ok(mut bytes) => {
                bytes.extend(super::rss_window::encode(&rss));
                self.pending.push(window.start, window.end, bytes, m);
            }
            Err(e) => {
                m.window_encode_errors.inc();
                eprintln!(
                    "sprofd: warning: the window {}-{} could not be encoded ({e}); not stored",
                    sprof_store::unix_millis(window.start),
                    sprof_store::unix_millis(window.end)
                );
            }
        }
        let store = {
            let mut store = self.shared.lock_store();
            self.pending.flush(&mut store, wall, m);
            (store.windows().len(), store.total_bytes())
        };
        m.add_phase_cpu(
            Phase::Write,
            sprof_core::thread_cpu_time().saturating_sub(t1),
        );
        self.notifier.status(&format!(
            "{}; {} windows stored ({} MiB)",
            self.shared
                .describe
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
            store.0,
            store.1 >> 20
        ));
    }
}

/// Cuts slices: takes the engine's window, counts it in the metrics, symbolizes and labels
/// it, and asks for its processes' memory readings (`now`: the cut's monotonic time).
struct Slicer {
    symbolizer: SessionSymbolizer,
    labels: Labels,
    /// Which processes' memory is read, and when.
    rss: super::rss::Tracker,
    shared: Arc<Shared>,
}

impl Slicer {
    fn cut(
        &mut self,
        engine: &mut Engine,
        start: SystemTime,
        end: SystemTime,
        now: Instant,
    ) -> SymbolizedProfile {
        let m = &self.shared.metrics;
        for &ns in engine.unwind_times() {
            m.unwind_seconds.observe(f64::from(ns) / 1e9);
        }
        let raw = engine.take_window();
        self.count(engine, &raw);
        let span = end.duration_since(start).unwrap_or_default();
        let (t0, workers) = (sprof_core::thread_cpu_time(), self.symbolizer.worker_cpu());
        let mut profile = self.symbolizer.symbolize(engine, &raw, span);
        // The pages of debug info and unwind tables this slice read go back to the page
        // cache: on a busy host they are most of the daemon's RSS (issue 15), and the next
        // slice faults back only what it reads.
        sprof_core::shrink::release_resident();
        let t1 = sprof_core::thread_cpu_time();
        let worked = self.symbolizer.worker_cpu().saturating_sub(workers);
        m.add_phase_cpu(Phase::Symbolize, t1.saturating_sub(t0) + worked);
        self.labels.label(&mut profile);
        self.rss.after_slice(&profile, end, now);
        m.add_phase_cpu(
            Phase::Labels,
            sprof_core::thread_cpu_time().saturating_sub(t1),
        );
        profile
    }

    /// The slice's counters into the metrics.
    fn count(&self, engine: &Engine, raw: &sprof_core::RawProfile) {
        let m = &self.shared.metrics;
        m.samples.inc_by(raw.stats.samples);
        m.lost.inc_by(raw.stats.lost);
        m.mmaps_skipped
            .inc_by(engine.mmaps_skipped.saturating_sub(m.mmaps_skipped.get()));
        if let Some(h) = self.shared.handoff.get() {
            m.dropped
                .inc_by(h.dropped().saturating_sub(m.dropped.get()));
            m.queued
                .set(i64::try_from(h.queued_bytes()).unwrap_or(i64::MAX));
        }
        m.truncated.inc_by(raw.stats.truncated);
        m.over_limit.inc_by(raw.stats.over_limit);
        // The walker's own counters: `Engine::stats` would also sum every module's bytes.
        let walker = engine.walker();
        m.processes.set(walker.processes() as i64);
        m.processes_evicted.inc_by(
            walker
                .stats
                .spaces_evicted
                .saturating_sub(m.processes_evicted.get()),
        );
    }
}

/// A window as gzipped pprof, timed at its start. Fails only for a profile whose stacks
/// name frames it does not have (a bug upstream): the window is then not stored, and said.
pub fn encode(
    profile: &SymbolizedProfile,
    start: SystemTime,
) -> Result<Vec<u8>, flamegraph_out::ExportError> {
    use flamegraph_out::Exporter;
    let pprof = flamegraph_out::Pprof {
        value_type: None,
        time_nanos: Some(
            start
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        ),
    };
    let mut out = Vec::new();
    pprof.export(profile, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
