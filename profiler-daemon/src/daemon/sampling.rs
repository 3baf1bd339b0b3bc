//! The daemon's sampling thread: a host-wide (or per-pid) source driven through the same
//! engine loop as `attach`, cut into one-second slices that are symbolized at once, merged
//! into windows written to the store, and into the taps of pprof scrapes in progress.
//!
//! The thread owns the engine, the symbolizer and the taps; it shares with the HTTP side
//! only the window in progress ([`Live`]), the store and the metrics, each behind its own
//! lock, held briefly. Requests that need the thread (a scrape's start and end) arrive as
//! [`Control`] messages, with a byte on a socket pair that ends the loop's wait at once.

use std::collections::HashMap;
use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sprof_core::{Pid, ProcessLabels, ProfileMerger, ProfileMeta, SampledStack, SymbolizedProfile};
use sprof_engine::handoff::{self, Handoff, QueuedSource};
use sprof_engine::{Engine, EngineConfig, Limits};
use sprof_perf::{procfs, EventKind, Sampler, SamplingPolicy, StackCapture};
use sprof_store::WindowStore;
use sprof_symbolizer::SymbolService;
use sprof_unwind::UnwindMode;

use super::config::{CmdlineMode, DaemonConfig};
use super::metrics::Metrics;
use super::notify::Notifier;
use super::pending::{PendingWindows, MAX_PENDING};
use crate::loader::LiveLoader;

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
const POLL: Duration = Duration::from_millis(250);
/// How long the drain thread waits for records at most (it wakes sooner when a ring buffer
/// passes its watermark).
const DRAIN_POLL: Duration = Duration::from_millis(100);
/// Bytes of drained records that may wait for the engine: at the default 19 Hz a sample with
/// its 16 KiB stack copy is ~16.5 KiB, so 16 MiB holds ~25 s of two busy CPUs: the longest
/// engine stall (a first parse of a huge module) absorbed without dropping samples. Empty
/// while the engine keeps up, which is always but for such stalls.
const MAX_QUEUED: usize = 16 << 20;
/// Length of a slice: the resolution of the window in progress and of taps.
const SLICE: Duration = Duration::from_secs(1);
/// Distinct perf-map warnings remembered so each is logged once; beyond it the memory is
/// forgotten (and a warning may be logged again) rather than grown for the daemon's life.
const MAX_WARNINGS_SEEN: usize = 4096;
/// Bytes of /proc/PID/cmdline read at most (the kernel allows megabytes; 512 chars are kept).
const MAX_CMDLINE_READ: u64 = 64 << 10;

/// A symbolized stretch of the window in progress.
pub struct Slice {
    pub start: SystemTime,
    pub end: SystemTime,
    pub profile: Arc<SymbolizedProfile>,
}

/// The window in progress, as the HTTP side sees it.
#[derive(Default)]
pub struct Live {
    pub window_start: Option<SystemTime>,
    pub slices: Vec<Slice>,
}

/// What the HTTP side shares with the sampling thread.
pub struct Shared {
    pub live: Mutex<Live>,
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

/// Which stacks a tap keeps.
pub type StackFilter = Box<dyn Fn(&SymbolizedProfile, &SampledStack) -> bool + Send>;

/// Requests for the sampling thread.
pub enum Control {
    /// Start collecting every slice from now on into a tap; answers its id.
    OpenTap {
        keep: StackFilter,
        reply: tokio::sync::oneshot::Sender<u64>,
    },
    /// End a tap now and answer what it gathered.
    CloseTap {
        id: u64,
        reply: tokio::sync::oneshot::Sender<SymbolizedProfile>,
    },
    /// New retention settings (SIGHUP).
    Retention(sprof_store::Retention),
    /// Write the window in progress and stop.
    Stop,
}

impl Shared {
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
}

/// Opens the events and starts the sampling thread; returns once sampling runs (or could
/// not start: the error is the one line to print).
pub fn start(
    config: &DaemonConfig,
    store: WindowStore,
    notifier: Arc<Notifier>,
) -> anyhow::Result<(Arc<Shared>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel();
    let shared = Arc::new(Shared {
        live: Mutex::new(Live::default()),
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
    });
    let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<String>>();
    let thread_shared = shared.clone();
    let config = config.clone();
    let handle = std::thread::Builder::new()
        .name("sprofd-sampler".into())
        .spawn(move || {
            // Marks the thread ended when it returns or unwinds, for /healthz and for the
            // main thread, which then exits non-zero so that the service manager restarts us.
            struct Ended(Arc<Shared>);
            impl Drop for Ended {
                fn drop(&mut self) {
                    self.0.alive.store(false, Ordering::SeqCst);
                }
            }
            let _ended = Ended(thread_shared.clone());
            let sampler = match open_sampler(&config) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            // Draining on a thread of its own: nothing this thread does (parsing a new
            // module, symbolizing, writing a window) makes the kernel drop samples.
            let (source, handoff) = match handoff::spawn(sampler, MAX_QUEUED, DRAIN_POLL) {
                Ok(pair) => pair,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::anyhow!("starting the drain thread: {e}")));
                    return;
                }
            };
            let _ = thread_shared.handoff.set(handoff);
            let _ = ready_tx.send(Ok(describe(&config)));
            Sampling::new(&config, thread_shared, notifier, rx).run(source);
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
            bytes: crate::config::DEFAULT_STACK_SIZE,
        },
        kernel_frames: config.kernel,
        count_kernel: true,
        // Python frames are read when the sample is drained: the sooner the better. At the
        // daemon's rates this is a few dozen wakeups a second.
        wakeup_per_sample: config.python,
        time: sprof_core::Measure::Cpu,
        sample_bytes: sprof_perf::policy::DEFAULT_SAMPLE_BYTES,
    }
}

/// Host-wide events, or the given processes' threads.
fn open_sampler(config: &DaemonConfig) -> anyhow::Result<Sampler> {
    let policy = policy(config);
    // Host-wide, side records get a ring buffer of their own: a process mapping and
    // unmapping in a loop cannot push the host's samples out.
    let channels = if config.pids.is_empty() {
        policy.channels_with_side_band(EventKind::CpuClock, false)
    } else {
        policy.channels(EventKind::CpuClock, false)
    };
    let mut sampler = Sampler::with_channels(channels, policy.data_pages());
    if config.pids.is_empty() {
        sampler
            .host_wide()
            .map_err(|e| super::privileges::explain_open(e, "the host"))?;
    } else {
        for &pid in &config.pids {
            sampler
                .attach(Pid(pid))
                .map_err(|e| super::privileges::explain_open(e, &format!("PID {pid}")))?;
        }
    }
    for w in &sampler.warnings {
        eprintln!("sprofd: warning: {w}");
    }
    Ok(sampler)
}

/// The sampling thread's state.
struct Sampling {
    shared: Arc<Shared>,
    notifier: Arc<Notifier>,
    control: mpsc::Receiver<Control>,
    symbols: SymbolService,
    meta: ProfileMeta,
    schedule: Schedule,
    taps: HashMap<u64, (StackFilter, ProfileMerger)>,
    next_tap: u64,
    /// Perf-map warnings already logged.
    warnings_seen: HashSet<String>,
    cmdline: CmdlineMode,
    /// Windows the disk refused, retried before the next one.
    pending: PendingWindows,
    /// Labels of the processes sampled in this window, read from /proc once per window.
    processes: HashMap<u32, ProcessLabels>,
    last_watchdog: Instant,
    engine_config: EngineConfig,
    filter: Option<regex::Regex>,
    /// Read Python frames.
    python: bool,
    /// Which processes' memory is read, and when.
    rss: super::rss::Tracker,
}

impl Sampling {
    fn new(
        config: &DaemonConfig,
        shared: Arc<Shared>,
        notifier: Arc<Notifier>,
        control: mpsc::Receiver<Control>,
    ) -> Sampling {
        let mut symbols = SymbolService::new(config.kernel);
        // Never hold up the loop for a download; names arrive in a later window.
        symbols.set_wait_for_debuginfod(false);
        symbols.set_dwarf_budget(Some(DWARF_BUDGET));
        let rss = super::rss::Tracker::start(
            config.window,
            shared.rss.clone(),
            shared.metrics.rss_reader(),
        );
        Sampling {
            shared,
            notifier,
            control,
            symbols,
            meta: ProfileMeta {
                target: format!("host {}", hostname()),
                pid: None,
                frequency: config.frequency,
                event: EventKind::CpuClock.name().to_string(),
                ..Default::default()
            },
            schedule: Schedule::new(config.window, Instant::now(), SystemTime::now()),
            taps: HashMap::new(),
            warnings_seen: HashSet::new(),
            cmdline: config.cmdline,
            next_tap: 1,
            pending: PendingWindows::new(MAX_PENDING),
            processes: HashMap::new(),
            last_watchdog: Instant::now(),
            engine_config: EngineConfig {
                unwind: UnwindMode::Auto,
                kernel_frames: config.kernel,
                time_unwind: true,
            },
            filter: config.comm.clone(),
            python: config.python,
            rss,
        }
    }

    fn engine(&self) -> Engine {
        let mut engine = Engine::new(self.engine_config, Box::new(LiveLoader::new()));
        engine.set_limits(Limits {
            stack_nodes: MAX_STACK_NODES,
            module_grace: MODULE_GRACE_SLICES,
            processes: MAX_PROCESSES,
            mmaps_per_window: MAX_MMAPS_PER_SLICE,
        });
        // pid 0 is the idle task: per-CPU clock events sample idle CPUs too, which is no
        // one's CPU time. The daemon leaves itself out: unwinding and symbolizing its own
        // samples would be most of its work on a quiet host (its cost is in /metrics).
        let re = self.filter.clone();
        let own = std::process::id();
        engine.set_filter(Box::new(move |pid: Pid, comm: &str| {
            pid.0 != 0 && pid.0 != own && re.as_ref().is_none_or(|re| re.is_match(comm))
        }));
        if self.python {
            engine.add_hook(Box::new(sprof_python::PythonHook::new()));
        }
        engine
    }

    fn run(mut self, mut source: QueuedSource) {
        let mut engine = self.engine();
        {
            let mut live = self.lock_live();
            live.window_start = Some(self.schedule.window_wall);
        }
        sprof_engine::run(&mut source, &mut engine, POLL, |engine, source| {
            let m = &self.shared.metrics;
            let dropped = self
                .shared
                .handoff
                .get()
                .map_or(0, Handoff::dropped_mappings);
            let lost = source.stats().lost_side_records + dropped;
            m.lost_side_records
                .inc_by(lost.saturating_sub(m.lost_side_records.get()));
            self.tick(engine)
        });
        // The loop drained what the kernel had; the window in progress is written now.
        let now = Instant::now();
        self.cut(&mut engine, now);
        self.write_window(now);
        // Open taps end with the daemon: their replies are dropped, which their handlers
        // take as "answer with what there is" (see http.rs).
        self.taps.clear();
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.shared.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One turn of the drive loop: requests, then slice and window boundaries.
    fn tick(&mut self, engine: &mut Engine) -> ControlFlow<()> {
        self.shared.beat();
        if self.last_watchdog.elapsed() >= self.notifier.watchdog_interval() {
            self.notifier.watchdog();
            self.last_watchdog = Instant::now();
        }
        while let Ok(c) = self.control.try_recv() {
            match c {
                Control::OpenTap { keep, reply } => {
                    self.cut(engine, Instant::now());
                    let id = self.next_tap;
                    self.next_tap += 1;
                    self.taps.insert(id, (keep, ProfileMerger::new()));
                    self.count_taps();
                    let _ = reply.send(id);
                }
                Control::CloseTap { id, reply } => {
                    self.cut(engine, Instant::now());
                    if let Some((_, merger)) = self.taps.remove(&id) {
                        let _ = reply.send(merger.finish());
                    }
                    self.count_taps();
                }
                Control::Retention(r) => {
                    self.lock_store().set_retention(r);
                }
                Control::Stop => return ControlFlow::Break(()),
            }
        }
        let now = Instant::now();
        match self.schedule.due(now) {
            Due::Window => {
                self.cut(engine, now);
                self.write_window(now);
            }
            Due::Slice => self.cut(engine, now),
            Due::Nothing => {}
        }
        ControlFlow::Continue(())
    }

    fn count_taps(&self) {
        self.shared
            .open_taps
            .store(self.taps.len(), std::sync::atomic::Ordering::SeqCst);
    }

    fn lock_store(&self) -> std::sync::MutexGuard<'_, WindowStore> {
        self.shared.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the slice in progress: takes the engine's window, symbolizes it, hands it to the
    /// taps and to the window in progress.
    fn cut(&mut self, engine: &mut Engine, now: Instant) {
        self.log_jit_warnings(engine);
        let m = &self.shared.metrics;
        for &ns in engine.unwind_times() {
            m.unwind_seconds.observe(f64::from(ns) / 1e9);
        }
        let raw = engine.take_window();
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
        let (start, end) = self.schedule.end_slice(now);
        let mut meta = self.meta.clone();
        meta.stats = raw.stats;
        meta.duration_secs = end.duration_since(start).unwrap_or_default().as_secs_f64();
        meta.notes = engine.hook_reports();
        let mut profile = self.symbols.symbolize(&raw, engine.modules(), meta);
        for w in self.symbols.take_warnings() {
            eprintln!("sprofd: warning: {w}");
        }
        // The pages of debug info and unwind tables this slice read go back to the page
        // cache: on a busy host they are most of the daemon's RSS (issue 15), and the next
        // slice faults back only what it reads.
        sprof_core::shrink::release_resident();
        self.label_processes(&mut profile);
        self.rss.after_slice(&profile, end, now);
        for (keep, merger) in self.taps.values_mut() {
            merger.add(&profile, |p, s| keep(p, s));
        }
        let slice = Slice {
            start,
            end,
            profile: Arc::new(profile),
        };
        self.lock_live().slices.push(slice);
    }

    /// Logs the perf maps the engine refused since the last slice, each reason once (the
    /// engine keeps them until someone takes them: the daemon runs for weeks).
    fn log_jit_warnings(&mut self, engine: &mut Engine) {
        for w in std::mem::take(&mut engine.jit_warnings) {
            if self.warnings_seen.len() >= MAX_WARNINGS_SEEN {
                self.warnings_seen.clear();
            }
            if !self.warnings_seen.contains(&w) {
                eprintln!("sprofd: warning: perf map ignored: {w}");
                self.warnings_seen.insert(w);
            }
        }
    }

    /// Command lines and cgroups of the processes in `profile`, read from /proc once per
    /// window.
    fn label_processes(&mut self, profile: &mut SymbolizedProfile) {
        let mut pids: Vec<u32> = profile
            .stacks
            .iter()
            .filter_map(|s| s.thread.map(|t| t.pid))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        for pid in pids {
            let mode = self.cmdline;
            let labels = self.processes.entry(pid).or_insert_with(|| ProcessLabels {
                cmdline: read_cmdline(pid, mode),
                cgroup: procfs::cgroup(Pid(pid)).unwrap_or_default(),
                uid: procfs::uid(Pid(pid)).ok(),
            });
            if *labels != ProcessLabels::default() {
                profile.processes.insert(pid, labels.clone());
            }
        }
    }

    /// Merges the window's slices and stores them; retries windows the disk refused before.
    fn write_window(&mut self, now: Instant) {
        let (start, end) = self.schedule.end_window(now, SystemTime::now());
        let slices = std::mem::take(&mut self.lock_live().slices);
        let mut merger = ProfileMerger::new();
        for s in &slices {
            merger.add(&s.profile, |_, _| true);
        }
        let mut profile = merger.finish();
        profile.meta = ProfileMeta {
            stats: profile.meta.stats,
            notes: profile.meta.notes,
            duration_secs: end.duration_since(start).unwrap_or_default().as_secs_f64(),
            ..self.meta.clone()
        };
        let mut bytes = encode(&profile, start);
        bytes.extend(super::rss_window::encode(&self.rss.take_window()));
        self.pending.push(start, end, bytes, &self.shared.metrics);
        // Retention counts from the wall clock now, whatever the labels say.
        self.flush_pending(SystemTime::now());
        self.processes.clear();
        self.lock_live().window_start = Some(self.schedule.window_wall);
        let store = self.lock_store();
        self.notifier.status(&format!(
            "{}; {} windows stored ({} MiB)",
            self.shared
                .describe
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
            store.windows().len(),
            store.total_bytes() >> 20
        ));
    }

    fn flush_pending(&mut self, now: SystemTime) {
        let mut store = self.shared.store.lock().unwrap_or_else(|e| e.into_inner());
        self.pending.flush(&mut store, now, &self.shared.metrics);
    }
}

/// A process's command line as `--cmdline` says to keep it.
fn read_cmdline(pid: u32, mode: CmdlineMode) -> String {
    use std::io::Read;
    let redact = match mode {
        CmdlineMode::Off => return String::new(),
        CmdlineMode::Redacted => true,
        CmdlineMode::Full => false,
    };
    let mut raw = Vec::new();
    let read = std::fs::File::open(format!("/proc/{pid}/cmdline"))
        .and_then(|f| f.take(MAX_CMDLINE_READ).read_to_end(&mut raw));
    match read {
        Ok(_) => super::redact::cmdline(&raw, redact),
        Err(_) => String::new(),
    }
}

/// What is due at a turn of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    Nothing,
    Slice,
    Window,
}

/// When slices and windows end. Boundaries follow the monotonic clock, so a step of the wall
/// clock (NTP, `date -s`) neither stops the cutting for the length of a backwards step nor
/// makes a window span a forward one. The wall clock only labels them: it is read when a
/// window starts, and every later instant of the window is that reading plus monotonic time.
/// After a step the next window's labels follow the new wall time (so after a backwards step
/// two windows can cover the same wall-clock range).
struct Schedule {
    window: Duration,
    window_start: Instant,
    /// The wall time the window in progress started at.
    window_wall: SystemTime,
    window_end: Instant,
    slice_start: Instant,
}

impl Schedule {
    fn new(window: Duration, now: Instant, wall: SystemTime) -> Schedule {
        Schedule {
            window,
            window_start: now,
            window_wall: wall,
            window_end: now + until_aligned(window, wall),
            slice_start: now,
        }
    }

    fn due(&self, now: Instant) -> Due {
        if now >= self.window_end {
            Due::Window
        } else if now.saturating_duration_since(self.slice_start) >= SLICE {
            Due::Slice
        } else {
            Due::Nothing
        }
    }

    /// The wall-clock label of an instant of the window in progress.
    fn wall(&self, at: Instant) -> SystemTime {
        self.window_wall + at.saturating_duration_since(self.window_start)
    }

    /// Ends the slice in progress at `now`: its wall-clock start and end.
    fn end_slice(&mut self, now: Instant) -> (SystemTime, SystemTime) {
        let span = (self.wall(self.slice_start), self.wall(now));
        self.slice_start = now;
        span
    }

    /// Ends the window in progress at `now`: its wall-clock start and end. The next one
    /// starts now, labelled `wall` (the wall clock read now), and ends at the next multiple
    /// of the window length in unix time, so windows of every host line up.
    fn end_window(&mut self, now: Instant, wall: SystemTime) -> (SystemTime, SystemTime) {
        let span = (self.window_wall, self.wall(now));
        *self = Schedule::new(self.window, now, wall);
        span
    }
}

/// From `wall` to the next multiple of `window` in unix time (a whole window at a multiple).
fn until_aligned(window: Duration, wall: SystemTime) -> Duration {
    let len = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
    let ms = sprof_store::unix_millis(wall);
    Duration::from_millis(len - ms % len)
}

/// A window as gzipped pprof, timed at its start.
pub fn encode(profile: &SymbolizedProfile, start: SystemTime) -> Vec<u8> {
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
    // Writing into memory fails only for a stack deeper than pprof's limit, which the
    // unwinder's own limit rules out; an empty window is then better than none.
    if pprof.export(profile, &mut out).is_err() {
        out.clear();
        let _ = pprof.export(&SymbolizedProfile::default(), &mut out);
    }
    out
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of the loop's schedule against a fake clock: the monotonic clock advances by
    /// `POLL` each turn, the wall clock with it plus `step` from turn `step_at` on. Returns
    /// the windows' wall-clock labels and the monotonic instants they were cut at.
    fn run(turns: u32, step_at: u32, step: i64) -> Vec<((SystemTime, SystemTime), Duration)> {
        let window = Duration::from_secs(10);
        let t0 = Instant::now();
        let wall0 = UNIX_EPOCH + Duration::from_millis(1_796_000_003_000);
        let wall = |turn: u32| {
            let w = wall0 + POLL * turn;
            match (turn >= step_at, step) {
                (false, _) => w,
                (true, s) if s >= 0 => w + Duration::from_secs(s.unsigned_abs()),
                (true, s) => w - Duration::from_secs(s.unsigned_abs()),
            }
        };
        let mut s = Schedule::new(window, t0, wall(0));
        let mut windows = Vec::new();
        let mut slices = 0;
        for turn in 1..=turns {
            let now = t0 + POLL * turn;
            match s.due(now) {
                Due::Window => {
                    s.end_slice(now);
                    windows.push((s.end_window(now, wall(turn)), now - t0));
                }
                Due::Slice => {
                    let (a, b) = s.end_slice(now);
                    assert!(b >= a);
                    slices += 1;
                }
                Due::Nothing => {}
            }
        }
        assert!(
            slices >= turns / 4 - windows.len() as u32 - 1,
            "{slices} slices"
        );
        windows
    }

    #[test]
    fn windows_are_cut_on_schedule_when_the_wall_clock_steps_back_or_forward() {
        // 70 s, the wall clock set back an hour after 15 s (the review's reproduction).
        let back = run(280, 60, -3600);
        assert_eq!(back.len(), 7, "{back:?}");
        for ((start, end), _) in &back {
            let len = end.duration_since(*start).unwrap();
            assert!(len <= Duration::from_secs(10), "a window of {len:?}");
        }
        // Cut every 10 s of monotonic time: the first at the 10 s boundary (7 s in), the
        // rest 10 s apart, the step notwithstanding.
        let cut: Vec<u64> = back.iter().map(|(_, at)| at.as_millis() as u64).collect();
        assert_eq!(cut[0], 7000);
        for pair in cut.windows(2) {
            assert!((9000..=10250).contains(&(pair[1] - pair[0])), "{cut:?}");
        }
        // After the step the labels follow the new wall time.
        let last = back.last().unwrap().0 .0;
        assert!(last < UNIX_EPOCH + Duration::from_millis(1_796_000_003_000));
        // Forward an hour: no window spans the hour.
        let fwd = run(280, 60, 3600);
        assert_eq!(fwd.len(), 7, "{fwd:?}");
        for ((start, end), _) in &fwd {
            assert!(end.duration_since(*start).unwrap() <= Duration::from_secs(10));
        }
        assert!(fwd.last().unwrap().0 .0 > UNIX_EPOCH + Duration::from_secs(1_796_003_600));
    }

    #[test]
    fn windows_end_on_multiples_of_their_length_in_unix_time() {
        let w = Duration::from_secs(10);
        let at = |ms| UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(
            until_aligned(w, at(1_796_000_003_000)),
            Duration::from_secs(7)
        );
        assert_eq!(until_aligned(w, at(1_796_000_000_000)), w);
        let t0 = Instant::now();
        let mut s = Schedule::new(w, t0, at(1_796_000_003_000));
        assert_eq!(s.due(t0 + Duration::from_millis(999)), Due::Nothing);
        assert_eq!(s.due(t0 + SLICE), Due::Slice);
        assert_eq!(s.due(t0 + Duration::from_secs(7)), Due::Window);
        let (a, b) = s.end_window(t0 + Duration::from_secs(7), at(1_796_000_010_000));
        assert_eq!((a, b), (at(1_796_000_003_000), at(1_796_000_010_000)));
        assert_eq!(s.due(t0 + Duration::from_secs(16)), Due::Slice);
        assert_eq!(s.due(t0 + Duration::from_secs(17)), Due::Window);
    }

    #[test]
    fn health_turns_bad_when_the_loop_stalls_or_the_thread_ends() {
        let dir = std::env::temp_dir().join(format!("sprofd-health-{}", std::process::id()));
        let retention = sprof_store::Retention {
            max_age: Duration::from_secs(3600),
            max_bytes: 1 << 20,
        };
        let (store, _) = WindowStore::open(&dir, retention).unwrap();
        let shared = Shared {
            live: Mutex::new(Live::default()),
            store: Mutex::new(store),
            metrics: Metrics::new(),
            control: Mutex::new(mpsc::channel().0),
            handoff: std::sync::OnceLock::new(),
            describe: Mutex::new(String::new()),
            open_taps: Default::default(),
            heartbeat: AtomicU64::new(0),
            // As if the daemon had started 3 s ago and the loop never turned since.
            epoch: Instant::now() - Duration::from_secs(3),
            alive: AtomicBool::new(true),
            rss: Arc::default(),
        };
        match shared.health() {
            Health::Stalled(d) => assert!(d >= Duration::from_secs(3), "{d:?}"),
            h => panic!("{h:?}"),
        }
        shared.beat();
        assert_eq!(shared.health(), Health::Ok);
        shared.alive.store(false, Ordering::SeqCst);
        assert_eq!(shared.health(), Health::Dead);
        assert!(shared.sampler_ended());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
