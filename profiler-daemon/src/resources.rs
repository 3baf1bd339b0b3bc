//! Reads the profiled processes' resident memory and CPU use while a session runs, for
//! `.timeline.svg`: a thread of its own, so `/proc` reads never hold up the sampling thread.
//!
//! Which processes: the profiled one; the processes it starts while profiled (the sampler
//! follows them too); with `--subprocesses`, or for a launched command, every descendant.
//! Every [`INTERVAL`] (every [`FAST_INTERVAL`] while one grows fast) each followed
//! process's `/proc/PID/status` and `stat` are read ([`procfs::resource_usage`]); the process tree is scanned for new descendants every
//! [`MIN_SCAN_INTERVAL`] or more (a scan reads every process's `stat`, so on a host where
//! that takes long it is done less often: [`SCAN_COST_FACTOR`]). A child is therefore first
//! read up to ~100 ms after its fork. The readings go into a [`ResourceRecorder`],
//! which bounds them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flamegraph_out::OutputFormat;
use sprof_core::{Pid, ResourcePoint, ResourceRecorder, ResourceSeries};
use sprof_perf::procfs;
use sprof_perf::sys::monotonic_ns;

use crate::config::{SessionConfig, Target};

/// Time between readings (the issue asks for at least every 100 ms).
pub(crate) const INTERVAL: Duration = Duration::from_millis(50);

/// Time between readings while a process grows fast (by [`FAST_GROWTH`] of its size or more
/// since its last reading): a program that exits right after growing 400 MiB in 0.35 s was
/// last read 40 MiB short of its peak at 50 ms. Growth that steep cannot last long.
const FAST_INTERVAL: Duration = Duration::from_millis(10);

/// The share of its resident memory a process must have added since its last reading for
/// the next reading to come after [`FAST_INTERVAL`]: 1/20, and at least 1 MiB.
const FAST_GROWTH: u64 = 20;

/// Shortest time between two scans of the process tree (a scan of ~100 processes takes
/// ~1 ms here).
const MIN_SCAN_INTERVAL: Duration = Duration::from_millis(100);

/// Scans are at least this many times their own cost apart: at most 2% of a core.
const SCAN_COST_FACTOR: u32 = 50;

/// The reading thread of a session; stopped and joined when dropped.
pub(crate) struct ResourceMonitor {
    recorder: Arc<Mutex<ResourceRecorder>>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl ResourceMonitor {
    /// Starts reading for a session that writes a `.timeline.svg` (`None` otherwise, or when
    /// the thread cannot start, which is said once).
    pub(crate) fn for_session(config: &SessionConfig, pid: Pid) -> Option<ResourceMonitor> {
        if !config
            .outputs
            .iter()
            .any(|o| o.format == OutputFormat::Timeline)
        {
            return None;
        }
        // A launched command has no descendants yet: all it will have are its own.
        let existing = matches!(config.target, Target::Command(_)) || config.subprocesses;
        match ResourceMonitor::start(pid, existing) {
            Ok(m) => Some(m),
            Err(e) => {
                eprintln!("sprofd: warning: cannot start reading resident memory: {e}; the timeline will be empty");
                None
            }
        }
    }

    /// Follows `root` and the processes it starts from now on; with `existing`, its
    /// descendants of now too.
    fn start(root: Pid, existing: bool) -> std::io::Result<ResourceMonitor> {
        let recorder = Arc::new(Mutex::new(ResourceRecorder::new(
            monotonic_ns(),
            INTERVAL.as_nanos() as u64,
        )));
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let mut follower = Follower::new(root, existing, recorder.clone());
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sprofd-rss".into())
            .spawn(move || follower.run(&stopped))?;
        Ok(ResourceMonitor {
            recorder,
            stop,
            thread: Some(thread),
        })
    }

    /// Every reading so far.
    pub(crate) fn series(&self) -> ResourceSeries {
        lock(&self.recorder).series()
    }
}

impl Drop for ResourceMonitor {
    fn drop(&mut self) {
        let (flag, wake) = &*self.stop;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock(recorder: &Mutex<ResourceRecorder>) -> MutexGuard<'_, ResourceRecorder> {
    recorder.lock().unwrap_or_else(|p| p.into_inner())
}

/// A process: its pid and start time (which tell a reused pid apart).
type Identity = (Pid, u64);

/// The reading thread's state.
struct Follower {
    root: Pid,
    recorder: Arc<Mutex<ResourceRecorder>>,
    /// Followed processes still running, by identity: their slot in the recorder and their
    /// resident bytes at the last reading.
    live: HashMap<Identity, (usize, u64)>,
    /// Processes not to follow (descendants that existed at the start of an attach without
    /// `--subprocesses`, those over the recorder's limit, those that have exited); trimmed to
    /// the processes of the last scan, so it stays as small as the tree.
    skip: HashSet<Identity>,
    next_scan: Instant,
}

impl Follower {
    fn new(root: Pid, existing: bool, recorder: Arc<Mutex<ResourceRecorder>>) -> Follower {
        let mut f = Follower {
            root,
            recorder,
            live: HashMap::new(),
            skip: HashSet::new(),
            next_scan: Instant::now(),
        };
        if !existing {
            f.skip = procfs::descendants(root)
                .into_iter()
                .filter_map(|p| Some((p, procfs::stat(p).ok()?.start_time)))
                .collect();
        }
        f
    }

    fn run(&mut self, stop: &(Mutex<bool>, Condvar)) {
        let (flag, wake) = stop;
        let mut next = Instant::now();
        loop {
            if Instant::now() >= self.next_scan {
                self.scan();
            }
            next += if self.read_all() {
                FAST_INTERVAL
            } else {
                INTERVAL
            };
            // A late tick (a slow /proc) starts the schedule afresh rather than bursting.
            let now = Instant::now();
            if next < now {
                next = now + INTERVAL;
            }
            let guard = flag.lock().unwrap_or_else(|p| p.into_inner());
            let (guard, _) = wake
                .wait_timeout_while(guard, next - now, |stopped| !*stopped)
                .unwrap_or_else(|p| p.into_inner());
            if *guard {
                return;
            }
        }
    }

    /// Finds processes to follow; renames followed ones (a launched command is read before
    /// its `exec`, under sprofd's name).
    fn scan(&mut self) {
        let started = Instant::now();
        let mut candidates = vec![self.root];
        candidates.extend(procfs::descendants(self.root));
        let mut present = HashSet::new();
        for pid in candidates {
            let Ok(stat) = procfs::stat(pid) else {
                continue;
            };
            let id = (pid, stat.start_time);
            present.insert(id);
            if let Some(&(slot, _)) = self.live.get(&id) {
                lock(&self.recorder).set_comm(slot, &stat.comm);
            } else if !self.skip.contains(&id) && !stat.is_zombie() {
                let slot = lock(&self.recorder).add_process(pid.0, &stat.comm);
                match slot {
                    Some(slot) => {
                        self.live.insert(id, (slot, 0));
                    }
                    None => {
                        self.skip.insert(id);
                    }
                }
            }
        }
        self.skip.retain(|id| present.contains(id));
        let cost = started.elapsed();
        self.next_scan = Instant::now() + MIN_SCAN_INTERVAL.max(cost * SCAN_COST_FACTOR);
    }

    /// One reading of every followed process; those that have exited stop being followed.
    /// Whether one grows fast.
    fn read_all(&mut self) -> bool {
        let mut readings = Vec::with_capacity(self.live.len());
        let mut ended = Vec::new();
        let mut fast = false;
        for (&id, (slot, last)) in &mut self.live {
            match procfs::resource_usage(id.0) {
                // A zombie's status has no Rss lines: a running process always has some.
                Ok(u) if u.rss() > 0 => {
                    let step = (*last / FAST_GROWTH).max(1 << 20);
                    fast |= *last > 0 && u.rss() >= *last + step;
                    *last = u.rss();
                    readings.push((*slot, point(&u)));
                }
                _ => ended.push(id),
            }
        }
        for id in ended {
            self.live.remove(&id);
            self.skip.insert(id);
        }
        let mut recorder = lock(&self.recorder);
        for (slot, point) in readings {
            recorder.push(slot, point);
        }
        fast
    }
}

/// A reading, now.
fn point(u: &procfs::ResourceUsage) -> ResourcePoint {
    ResourcePoint {
        time: monotonic_ns(),
        rss_anon: u.rss_anon,
        rss_file: u.rss_file,
        rss_shmem: u.rss_shmem,
        rss_hwm: u.rss_hwm,
        cpu_ns: u.cpu_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_process_and_the_children_it_starts() {
        let me = Pid(std::process::id());
        let monitor = ResourceMonitor::start(me, false).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("0.5")
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(400));
        let during = monitor.series();
        child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let after = monitor.series();
        std::thread::sleep(Duration::from_millis(200));
        let later = monitor.series();
        drop(monitor);
        let ours = &during.processes[0];
        assert_eq!(ours.pid, me.0, "the followed process comes first");
        assert!(
            ours.points.len() >= 4,
            "{} readings in 400 ms",
            ours.points.len()
        );
        assert!(ours.points.iter().all(|p| p.rss_anon > 0 && p.rss_file > 0));
        let read = |s: &ResourceSeries| {
            s.processes
                .iter()
                .find(|p| p.pid == child.id())
                .map_or(0, |p| p.points.len())
        };
        assert!(
            read(&during) > 0,
            "the child started after the start is followed"
        );
        assert_eq!(
            read(&after),
            read(&later),
            "an exited child is no longer read"
        );
    }
}
