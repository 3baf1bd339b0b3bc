//! Resident memory and CPU use of the profiled processes over time: the data of the
//! `.timeline.svg` chart, carried in [`crate::ProfileMeta::resources`] so every output path
//! (the final profile, `--dump-every`, `top -o`) has it and exporters need no `/proc`.
//!
//! [`ResourceRecorder`] keeps the readings within fixed bounds, whatever the session's
//! length: at most [`MAX_PROCESSES`] processes, at most [`MAX_POINTS`] readings each. A
//! process whose series is full has each pair of neighbouring readings merged into the one
//! with more resident memory (its own time and CPU counter kept with it, so CPU use between
//! kept readings stays exact and the peak is never lost), and from then on keeps one reading
//! in two, then four, and so on.

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResourcePoint {
    /// When it was read, CLOCK_MONOTONIC nanoseconds (the clock of sample times).
    pub time: u64,
    /// Anonymous resident bytes (heap, stacks, private writes).
    pub rss_anon: u64,
    /// File-backed resident bytes (code, mapped files).
    pub rss_file: u64,
    /// Shared-memory resident bytes (shmem, tmpfs, SysV).
    pub rss_shmem: u64,
    /// The most resident bytes so far (the kernel's high-water mark, `VmHWM`): a peak
    /// between two readings shows here.
    pub rss_hwm: u64,
    /// User plus system CPU time of the process so far, nanoseconds.
    pub cpu_ns: u64,
}

impl ResourcePoint {
    /// All resident bytes.
    pub fn rss(&self) -> u64 {
        self.rss_anon + self.rss_file + self.rss_shmem
    }
}

/// The readings of one process, in time order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessResources {
    pub pid: u32,
    /// Its name (`/proc/PID/stat`'s comm): untrusted text.
    pub comm: String,
    pub points: Vec<ResourcePoint>,
}

impl ProcessResources {
    /// The kernel's high-water mark at the last reading.
    pub fn high_water_mark(&self) -> u64 {
        self.points.iter().map(|p| p.rss_hwm).max().unwrap_or(0)
    }

    /// The reading with the most resident memory (the first of equals).
    pub fn peak(&self) -> Option<&ResourcePoint> {
        self.points
            .iter()
            .reduce(|best, p| if p.rss() > best.rss() { p } else { best })
    }
}

/// The readings of every process followed during a session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceSeries {
    /// When reading started, CLOCK_MONOTONIC nanoseconds: time zero of the chart.
    pub start: u64,
    /// The time between readings asked for, nanoseconds.
    pub interval: u64,
    /// In the order they were first seen (the profiled process first).
    pub processes: Vec<ProcessResources>,
    /// Processes seen but not followed, over [`MAX_PROCESSES`].
    pub processes_left_out: u64,
}

impl ResourceSeries {
    /// Whether there is not a single reading.
    pub fn is_empty(&self) -> bool {
        self.processes.iter().all(|p| p.points.is_empty())
    }
}

/// Most processes a session follows.
pub const MAX_PROCESSES: usize = 64;

/// Most readings kept per process (a multiple of 2): at 20 readings a second, 100 s at full
/// resolution; ~48 bytes each, so at most ~6 MiB in all.
pub const MAX_POINTS: usize = 2048;

/// Collects readings within the bounds above.
#[derive(Debug, Clone)]
pub struct ResourceRecorder {
    series: ResourceSeries,
    merging: Vec<Merging>,
    max_processes: usize,
    max_points: usize,
}

/// Readings of one process not yet kept: one in `stride` is, the one with the most memory.
#[derive(Debug, Clone, Copy)]
struct Merging {
    pending: Option<ResourcePoint>,
    seen: u32,
    stride: u32,
}

impl ResourceRecorder {
    /// A recorder whose time zero is `start` (CLOCK_MONOTONIC ns), reading every `interval` ns.
    pub fn new(start: u64, interval: u64) -> ResourceRecorder {
        ResourceRecorder::with_limits(start, interval, MAX_PROCESSES, MAX_POINTS)
    }

    /// [`ResourceRecorder::new`] with other bounds (tests); `max_points` is made even, >= 2.
    pub fn with_limits(
        start: u64,
        interval: u64,
        max_processes: usize,
        max_points: usize,
    ) -> ResourceRecorder {
        ResourceRecorder {
            series: ResourceSeries {
                start,
                interval,
                ..Default::default()
            },
            merging: Vec::new(),
            max_processes,
            max_points: (max_points.max(2) + 1) & !1,
        }
    }

    /// Starts the series of a process; `None` (and counted) when there are too many already.
    pub fn add_process(&mut self, pid: u32, comm: &str) -> Option<usize> {
        if self.series.processes.len() >= self.max_processes {
            self.series.processes_left_out += 1;
            return None;
        }
        self.series.processes.push(ProcessResources {
            pid,
            comm: comm.to_string(),
            points: Vec::new(),
        });
        self.merging.push(Merging {
            pending: None,
            seen: 0,
            stride: 1,
        });
        Some(self.series.processes.len() - 1)
    }

    /// Renames process `slot` (its comm changes at `exec`).
    pub fn set_comm(&mut self, slot: usize, comm: &str) {
        if let Some(p) = self.series.processes.get_mut(slot) {
            if p.comm != comm {
                p.comm = comm.to_string();
            }
        }
    }

    /// Adds a reading of process `slot`.
    pub fn push(&mut self, slot: usize, point: ResourcePoint) {
        let (Some(process), Some(m)) = (
            self.series.processes.get_mut(slot),
            self.merging.get_mut(slot),
        ) else {
            return;
        };
        m.pending = Some(match m.pending {
            Some(kept) if kept.rss() >= point.rss() => kept,
            _ => point,
        });
        m.seen += 1;
        if m.seen < m.stride {
            return;
        }
        process.points.extend(m.pending.take());
        m.seen = 0;
        if process.points.len() >= self.max_points {
            halve(&mut process.points);
            m.stride = m.stride.saturating_mul(2);
        }
    }

    /// Every reading so far, the one still being merged included.
    pub fn series(&self) -> ResourceSeries {
        let mut series = self.series.clone();
        for (process, m) in series.processes.iter_mut().zip(&self.merging) {
            process.points.extend(m.pending);
        }
        series
    }
}

/// Merges each pair of neighbouring readings into the one with more resident memory.
fn halve(points: &mut Vec<ResourcePoint>) {
    let kept: Vec<ResourcePoint> = points
        .chunks(2)
        .map(|pair| match pair {
            [a, b] if b.rss() > a.rss() => *b,
            [a, ..] => *a,
            [] => unreachable!("chunks are never empty"),
        })
        .collect();
    *points = kept;
}

/// CPU time the calling thread has used so far (user + system): the daemon's accounting of
/// where its own CPU goes, phase by phase. Zero if the clock cannot be read.
pub fn thread_cpu_time() -> std::time::Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    std::time::Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(time: u64, anon: u64) -> ResourcePoint {
        ResourcePoint {
            time,
            rss_anon: anon,
            rss_file: 1,
            rss_shmem: 0,
            rss_hwm: 0,
            cpu_ns: time * 10,
        }
    }

    #[test]
    fn readings_stay_bounded_and_keep_the_peak() {
        let mut r = ResourceRecorder::with_limits(0, 1, 4, 8);
        let slot = r.add_process(7, "grow").unwrap();
        // A long session with one spike in the middle.
        for t in 0..10_000u64 {
            let anon = if t == 4321 { 1 << 30 } else { t % 97 };
            r.push(slot, at(t, anon));
        }
        let s = r.series();
        let points = &s.processes[0].points;
        assert!(points.len() <= 9, "{} readings kept", points.len());
        assert!(
            points.windows(2).all(|w| w[0].time < w[1].time),
            "time order"
        );
        let peak = s.processes[0].peak().unwrap();
        assert_eq!((peak.time, peak.rss_anon), (4321, 1 << 30));
        assert_eq!(peak.cpu_ns, 43210, "the reading keeps its own CPU counter");
    }

    #[test]
    fn short_sessions_keep_every_reading() {
        let mut r = ResourceRecorder::new(5, 50);
        let slot = r.add_process(1, "a").unwrap();
        for t in 0..100 {
            r.push(slot, at(t, t));
        }
        let s = r.series();
        assert_eq!(s.processes[0].points.len(), 100);
        assert_eq!((s.start, s.interval), (5, 50));
    }

    #[test]
    fn processes_over_the_limit_are_counted_not_kept() {
        let mut r = ResourceRecorder::with_limits(0, 1, 2, 8);
        assert_eq!(r.add_process(1, "a"), Some(0));
        assert_eq!(r.add_process(2, "b"), Some(1));
        assert_eq!(r.add_process(3, "c"), None);
        r.push(5, at(1, 1));
        r.set_comm(1, "exec'd");
        let s = r.series();
        assert_eq!(s.processes.len(), 2);
        assert_eq!(s.processes_left_out, 1);
        assert_eq!(s.processes[1].comm, "exec'd");
        assert!(s.is_empty());
    }
}
