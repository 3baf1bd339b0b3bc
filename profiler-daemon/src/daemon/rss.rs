//! Resident memory of the sampled processes over time: which processes are read, when, and
//! by whom, and the readings of the window in progress.
//!
//! * The sampling thread's [`Tracker`] counts each slice's samples by process and, every
//!   [`period`] (one slice at the default window), hands a [`Round`] (the window's
//!   [`MAX_PROCESSES`] most sampled processes, and the slice's wall-clock end) to a thread of
//!   its own, `sprofd-rss`. Handing over is a swap under a lock nobody holds for long: a
//!   round not started yet is replaced by the newer one, so rounds never queue up and a slow
//!   `/proc` never holds up sampling.
//! * The reader reads each process's `/proc/PID/status` and `stat`
//!   ([`procfs::resource_usage`]), at most [`ROUND_BUDGET`] of wall time per round (the rest
//!   are skipped and counted), and appends the readings to the window in progress
//!   ([`Readings`], shared with the HTTP side), at most [`MAX_POINTS`] of them.
//! * At the window's end the sampling thread takes the readings into the window's file
//!   ([`super::rss_window`]); the last round's readings serve `/metrics`.
//!
//! Only processes sampled in the window are read: a process that uses no CPU for a whole
//! window has no readings in it. A process whose pid is reused within a second of its last
//! sample may be read as the new one.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;
use sprof_core::{Pid, SymbolizedProfile};
use sprof_perf::procfs;

use super::query::process_name;

/// Processes read per round at most: the window's most sampled. A host forking thousands
/// of processes costs no more reads than this.
pub const MAX_PROCESSES: usize = 200;
/// Wall time one round may take; processes not read by then are skipped (and counted).
/// Reading 200 processes takes a few milliseconds.
pub const ROUND_BUDGET: Duration = Duration::from_millis(100);
/// Readings of one process per window at most, which sets the period for long windows.
const READINGS_PER_WINDOW: u32 = 30;
/// Readings kept for the window in progress at most (a few hundred KiB): beyond, the
/// window's later readings are dropped.
pub const MAX_POINTS: usize = 50_000;
/// The shortest period: one reading per slice.
const MIN_PERIOD: Duration = Duration::from_secs(1);

/// One reading of a process's resident memory: bytes, at a unix-millisecond time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RssPoint {
    pub t_ms: u64,
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
}

impl RssPoint {
    /// All resident bytes (`VmRSS`).
    pub fn total(&self) -> u64 {
        self.anon
            .saturating_add(self.file)
            .saturating_add(self.shmem)
    }
}

/// One process's readings in a window, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessRss {
    pub pid: u32,
    /// Whose process it is (for readers who may see only their own).
    pub uid: Option<u32>,
    /// Its name, as its samples' root frame has it.
    pub comm: String,
    pub points: Vec<RssPoint>,
}

/// A process to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub pid: u32,
    pub uid: Option<u32>,
    pub comm: String,
}

/// What one round reads, and the time its readings are labelled with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    pub t_ms: u64,
    pub targets: Vec<Target>,
}

/// The readings of the window in progress and of the last round; shared by the reader,
/// the sampling thread (which takes the window's) and the HTTP side (which copies them).
#[derive(Default)]
pub struct Readings {
    window: Mutex<WindowReadings>,
    round: Mutex<Option<Round>>,
    wake: Condvar,
    stop: AtomicBool,
}

#[derive(Default)]
struct WindowReadings {
    by_pid: BTreeMap<u32, ProcessRss>,
    points: usize,
    /// The last round's readings: what `/metrics` shows.
    latest: Vec<(Target, RssPoint)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Readings {
    /// The window in progress's readings so far (for queries).
    pub fn window(&self) -> Vec<ProcessRss> {
        lock(&self.window).by_pid.values().cloned().collect()
    }

    /// The last round's readings.
    pub fn latest(&self) -> Vec<(Target, RssPoint)> {
        lock(&self.window).latest.clone()
    }

    /// Takes the window in progress's readings; the next window starts empty.
    fn take_window(&self) -> Vec<ProcessRss> {
        let mut w = lock(&self.window);
        w.points = 0;
        std::mem::take(&mut w.by_pid).into_values().collect()
    }

    /// Appends a round's readings; how many were dropped over [`MAX_POINTS`].
    fn record(&self, read: Vec<(Target, RssPoint)>) -> u64 {
        let mut w = lock(&self.window);
        let mut dropped = 0;
        for (t, p) in &read {
            if w.points >= MAX_POINTS {
                dropped += 1;
                continue;
            }
            w.points += 1;
            let e = w.by_pid.entry(t.pid).or_insert_with(|| ProcessRss {
                pid: t.pid,
                uid: t.uid,
                comm: t.comm.clone(),
                points: Vec::new(),
            });
            // The latest name and owner win (an exec, a setuid).
            (e.uid, e.comm) = (t.uid, t.comm.clone());
            e.points.push(*p);
        }
        w.latest = read;
        dropped
    }

    /// Hands a round to the reader, replacing one it has not started.
    fn submit(&self, round: Round) {
        *lock(&self.round) = Some(round);
        self.wake.notify_one();
    }

    /// Waits for a round; `None` once stopped.
    fn next_round(&self) -> Option<Round> {
        let mut r = lock(&self.round);
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return None;
            }
            if let Some(round) = r.take() {
                return Some(round);
            }
            r = self.wake.wait(r).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _r = lock(&self.round);
        self.wake.notify_all();
    }
}

/// The reader's counters in `/metrics`.
#[derive(Clone)]
pub struct ReaderMetrics {
    /// Wall time of each round.
    pub round_seconds: Histogram,
    /// Processes not read because their round ran out of time.
    pub skipped: Counter,
    /// Readings dropped because the window held [`MAX_POINTS`].
    pub dropped: Counter,
}

/// How often the window's processes are read: every slice, or less often for windows
/// longer than [`READINGS_PER_WINDOW`] seconds.
pub fn period(window: Duration) -> Duration {
    (window / READINGS_PER_WINDOW).max(MIN_PERIOD)
}

/// Reads a round's processes within [`ROUND_BUDGET`]: the readings (processes that are gone
/// or hold no memory, such as kernel threads, have none) and how many were skipped.
pub fn read_round(round: &Round, budget: Duration) -> (Vec<(Target, RssPoint)>, usize) {
    let start = Instant::now();
    let mut read = Vec::with_capacity(round.targets.len());
    for (i, t) in round.targets.iter().enumerate() {
        if start.elapsed() > budget {
            return (read, round.targets.len() - i);
        }
        let Ok(u) = procfs::resource_usage(Pid(t.pid)) else {
            continue;
        };
        let p = RssPoint {
            t_ms: round.t_ms,
            anon: u.rss_anon,
            file: u.rss_file,
            shmem: u.rss_shmem,
        };
        if p.total() > 0 {
            read.push((t.clone(), p));
        }
    }
    (read, 0)
}

fn reader(readings: Arc<Readings>, metrics: ReaderMetrics) {
    while let Some(round) = readings.next_round() {
        let start = Instant::now();
        let (read, skipped) = read_round(&round, ROUND_BUDGET);
        metrics.round_seconds.observe(start.elapsed().as_secs_f64());
        metrics.skipped.inc_by(skipped as u64);
        metrics.dropped.inc_by(readings.record(read));
    }
}

/// What a process did in the window so far.
struct Seen {
    samples: u64,
    uid: Option<u32>,
    comm: String,
}

/// The sampling thread's side: which processes to read, and when.
pub struct Tracker {
    readings: Arc<Readings>,
    period: Duration,
    last: Option<Instant>,
    seen: HashMap<u32, Seen>,
}

impl Tracker {
    /// Starts the reader thread (if it cannot start, nothing is read: one warning).
    pub fn start(window: Duration, readings: Arc<Readings>, metrics: ReaderMetrics) -> Tracker {
        let r = readings.clone();
        let spawned = std::thread::Builder::new()
            .name("sprofd-rss".into())
            .spawn(move || reader(r, metrics));
        if let Err(e) = spawned {
            eprintln!("sprofd: warning: no thread to read processes' memory ({e}); no RSS series");
        }
        Tracker {
            readings,
            period: period(window),
            last: None,
            seen: HashMap::new(),
        }
    }

    /// After each slice: counts its samples by process and, once per period, asks for the
    /// readings of the window's most sampled processes, labelled `at` (the slice's end).
    pub fn after_slice(&mut self, profile: &SymbolizedProfile, at: SystemTime, now: Instant) {
        for s in &profile.stacks {
            let Some(t) = s.thread else { continue };
            let e = self.seen.entry(t.pid).or_insert_with(|| Seen {
                samples: 0,
                uid: None,
                comm: String::new(),
            });
            e.samples = e.samples.saturating_add(s.samples);
            let comm = process_name(profile, s);
            if !comm.is_empty() && e.comm != comm {
                e.comm = comm.to_string();
            }
            if let Some(uid) = profile.processes.get(&t.pid).and_then(|l| l.uid) {
                e.uid = Some(uid);
            }
        }
        if self
            .last
            .is_some_and(|l| now.saturating_duration_since(l) < self.period)
        {
            return;
        }
        self.last = Some(now);
        // An empty round too: it empties what `/metrics` shows of a host gone idle.
        self.readings
            .submit(self.round(sprof_store::unix_millis(at)));
    }

    /// The window's [`MAX_PROCESSES`] most sampled processes.
    fn round(&self, t_ms: u64) -> Round {
        let mut by: Vec<(&u32, &Seen)> = self.seen.iter().collect();
        by.sort_by(|a, b| b.1.samples.cmp(&a.1.samples).then(a.0.cmp(b.0)));
        Round {
            t_ms,
            targets: by
                .into_iter()
                .take(MAX_PROCESSES)
                .map(|(&pid, s)| Target {
                    pid,
                    uid: s.uid,
                    comm: s.comm.clone(),
                })
                .collect(),
        }
    }

    /// At a window's end: its readings so far, for its file (a round in progress lands in
    /// the next window, labelled with its own time); the counts start again.
    pub fn take_window(&mut self) -> Vec<ProcessRss> {
        self.seen.clear();
        self.readings.take_window()
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        // Not joined: a reader stuck in a read must not hold up the daemon's exit.
        self.readings.stop();
    }
}

#[cfg(test)]
mod tests {
    use sprof_core::{Frame, FrameKind, ProcessLabels, SampledStack, ThreadRef};

    use super::*;

    fn metrics() -> ReaderMetrics {
        ReaderMetrics {
            round_seconds: Histogram::new([0.001, 0.01, 0.1]),
            skipped: Counter::default(),
            dropped: Counter::default(),
        }
    }

    /// A slice in which `pids` ran, the first most.
    fn slice(pids: &[u32]) -> SymbolizedProfile {
        let mut p = SymbolizedProfile {
            frames: vec![Frame::bare("me", FrameKind::Root)],
            ..Default::default()
        };
        for (i, &pid) in pids.iter().enumerate() {
            p.stacks.push(SampledStack {
                frames: vec![0],
                samples: 1000 - i as u64,
                period: 1,
                thread: Some(ThreadRef { pid, tid: pid }),
            });
            p.processes.insert(
                pid,
                ProcessLabels {
                    uid: Some(7),
                    ..Default::default()
                },
            );
        }
        p
    }

    #[test]
    fn the_most_sampled_processes_are_read_once_per_period_off_the_sampling_thread() {
        assert_eq!(period(Duration::from_secs(10)), Duration::from_secs(1));
        assert_eq!(period(Duration::from_secs(3600)), Duration::from_secs(120));
        let readings = Arc::new(Readings::default());
        let m = metrics();
        let mut t = Tracker::start(Duration::from_secs(10), readings.clone(), m.clone());
        let me = std::process::id();
        // Our own process, and more pids than a round reads (most do not exist).
        let mut pids = vec![me];
        pids.extend((0..2 * MAX_PROCESSES as u32).map(|i| 4_000_000 + i));
        let t0 = Instant::now();
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        t.after_slice(&slice(&pids), at, t0);
        let round = t.round(1);
        assert_eq!(round.targets.len(), MAX_PROCESSES);
        assert_eq!(round.targets[0].pid, me, "most sampled first");
        assert_eq!(round.targets[0].uid, Some(7));
        // Within the period: no new round.
        t.after_slice(&slice(&pids), at, t0 + Duration::from_millis(500));
        let deadline = Instant::now() + Duration::from_secs(10);
        while readings.window().is_empty() {
            assert!(Instant::now() < deadline, "no reading");
            std::thread::sleep(Duration::from_millis(10));
        }
        let w = readings.window();
        assert_eq!(w.len(), 1, "only our process exists: {w:?}");
        assert_eq!(w[0].pid, me);
        assert_eq!(w[0].comm, "me");
        assert_eq!(w[0].points.len(), 1);
        assert_eq!(w[0].points[0].t_ms, 1_796_000_000_000);
        assert!(w[0].points[0].anon > 0 && w[0].points[0].file > 0);
        assert_eq!(readings.latest().len(), 1);
        // A period later, another reading; the window's end takes both.
        t.after_slice(&slice(&pids), at, t0 + Duration::from_secs(1));
        while readings.window()[0].points.len() < 2 {
            assert!(Instant::now() < deadline, "no second reading");
            std::thread::sleep(Duration::from_millis(10));
        }
        let taken = t.take_window();
        assert_eq!(taken[0].points.len(), 2);
        assert!(readings.window().is_empty());
        assert!(t.seen.is_empty());
        assert_eq!(m.skipped.get(), 0);
        // Nothing sampled since: the last round's readings go too.
        t.after_slice(&slice(&[]), at, t0 + Duration::from_secs(2));
        while !readings.latest().is_empty() {
            assert!(Instant::now() < deadline, "the last round stays");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(readings.window().is_empty());
    }

    #[test]
    fn a_round_stops_at_its_budget_and_the_window_at_its_cap() {
        let me = std::process::id();
        let targets = vec![
            Target {
                pid: me,
                uid: None,
                comm: "me".into(),
            };
            50
        ];
        let (read, skipped) = read_round(&Round { t_ms: 5, targets }, Duration::ZERO);
        assert!(read.len() <= 1 && skipped >= 49, "{} {skipped}", read.len());
        let readings = Readings::default();
        let one = |pid| {
            (
                Target {
                    pid,
                    uid: None,
                    comm: String::new(),
                },
                RssPoint {
                    t_ms: 1,
                    anon: 1,
                    ..Default::default()
                },
            )
        };
        let round: Vec<_> = (0..MAX_POINTS as u32 + 10).map(one).collect();
        assert_eq!(readings.record(round), 10);
        assert_eq!(readings.record(vec![one(1)]), 1);
        assert_eq!(readings.take_window().len(), MAX_POINTS);
        assert_eq!(readings.record(vec![one(1)]), 0);
    }
}
