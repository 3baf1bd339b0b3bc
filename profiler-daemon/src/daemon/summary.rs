//! Per-window summaries: each stored window's CPU by process, kept in memory so that the
//! timeline (`GET /api/v1/timeline`), the process list and the page answer a day of history
//! without decoding every window's stacks again.
//!
//! A summary is made once per window file (when a query first needs it) and is a few dozen
//! bytes per process; the live slices are summarized on each query (they are in memory).
//! What a query may read to fill the cache is bounded ([`SummaryCache::fill`]): windows
//! beyond the budget are left out and counted, and the next query goes on where it stopped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use sprof_core::SymbolizedProfile;
use sprof_store::StoredWindow;

use super::memory::{rss_rows, RssRow};
use super::query::{process_name, ProcessSummary, Selection, Sources, Viewer};
use super::timeline::{stack, Acc, Grid, Metric, Series, Timeline};

/// One process (under one name) in one window.
#[derive(Debug, Clone)]
pub struct Row {
    pub pid: u32,
    pub uid: Option<u32>,
    pub comm: Arc<str>,
    pub cmdline: Arc<str>,
    pub cgroup: Arc<str>,
    pub samples: u64,
    /// CPU nanoseconds (the samples' periods).
    pub cpu_ns: u64,
}

/// A window's (or a live slice's) processes.
#[derive(Debug, Clone)]
pub struct WindowSummary {
    pub start_ms: u64,
    pub end_ms: u64,
    pub rows: Vec<Row>,
    /// Each read process's resident memory in the window (see [`super::memory`]).
    pub rss: Vec<RssRow>,
    /// A stored window (not a slice of the window in progress).
    pub stored: bool,
}

impl WindowSummary {
    /// Sums the stacks of `p` by process and name (the name is the stack's root frame, as
    /// [`Selection::keeps`] reads it).
    pub fn of(p: &SymbolizedProfile, start_ms: u64, end_ms: u64, intern: &mut Interner) -> Self {
        let mut by: HashMap<(u32, &str), (u64, u64)> = HashMap::new();
        for s in &p.stacks {
            let Some(t) = s.thread else { continue };
            let e = by.entry((t.pid, process_name(p, s))).or_default();
            e.0 = e.0.saturating_add(s.samples);
            e.1 = e.1.saturating_add(s.period);
        }
        let mut rows: Vec<Row> = by
            .into_iter()
            .map(|((pid, comm), (samples, cpu_ns))| {
                let labels = p.processes.get(&pid);
                Row {
                    pid,
                    uid: labels.and_then(|l| l.uid),
                    comm: intern.get(comm),
                    cmdline: intern.get(labels.map_or("", |l| l.cmdline.as_str())),
                    cgroup: intern.get(labels.map_or("", |l| l.cgroup.as_str())),
                    samples,
                    cpu_ns,
                }
            })
            .collect();
        rows.sort_by(|a, b| (a.pid, &a.comm).cmp(&(b.pid, &b.comm)));
        WindowSummary {
            start_ms,
            end_ms,
            rows,
            rss: Vec::new(),
            stored: true,
        }
    }
}

impl Selection {
    /// Whether a summary row is selected: the same test as [`Selection::keeps`] on its stacks.
    pub fn keeps_row(&self, r: &Row) -> bool {
        self.keeps_process(r.pid, r.uid, &r.comm)
    }

    /// Whether a process of this uid and name is selected.
    pub fn keeps_process(&self, pid: u32, uid: Option<u32>, comm: &str) -> bool {
        if self.pid.is_some_and(|p| p != pid) {
            return false;
        }
        if let Viewer::Own(own) = self.viewer {
            if uid != Some(own) {
                return false;
            }
        }
        self.comm.as_ref().is_none_or(|re| re.is_match(comm))
    }
}

/// Shared strings: command lines repeat in every window.
#[derive(Debug, Default)]
pub struct Interner(HashSet<Arc<str>>);

impl Interner {
    pub fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(a.clone());
        a
    }
}

/// The summaries of the stored windows, by file.
#[derive(Debug, Default)]
pub struct SummaryCache {
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    by_path: HashMap<PathBuf, Arc<WindowSummary>>,
    intern: Interner,
}

/// Most windows summarized in memory (two days of 10 s windows; a query over summaries may
/// cover as many); the oldest go first.
pub const MAX_CACHED: usize = 2 * 8640;
/// Bytes of windows read by one fill beyond which the memory freed by decoding them is
/// handed back to the system (glibc keeps it in per-thread arenas otherwise).
const TRIM_AFTER: u64 = 8 << 20;

/// What [`SummaryCache::fill`] found: the summaries in time order, and what it left out.
pub struct Filled {
    pub summaries: Vec<Arc<WindowSummary>>,
    /// Windows not summarized yet because the query's reading budget ran out.
    pub missing: usize,
    /// Bytes of the stored windows in the range: what merging their stacks would read.
    pub bytes: u64,
    /// Files that could not be read (for the caller to quarantine).
    pub bad: Vec<(PathBuf, String)>,
}

impl SummaryCache {
    /// The windows not summarized yet, and their bytes: what a query would read.
    pub fn uncached(&self, windows: &[StoredWindow]) -> (usize, u64) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        windows
            .iter()
            .filter(|w| !inner.by_path.contains_key(&w.path))
            .fold((0, 0), |(n, b), w| (n + 1, b + w.bytes))
    }

    /// The summaries of `sources` (live slices included), reading at most `budget` bytes of
    /// windows not summarized yet, newest first (the recent past is what is looked at).
    pub fn fill(&self, sources: &Sources, budget: u64) -> Filled {
        let mut out = Vec::with_capacity(sources.windows.len() + sources.live.len());
        let mut todo = Vec::new();
        {
            let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            for w in &sources.windows {
                match inner.by_path.get(&w.path) {
                    Some(s) => out.push(s.clone()),
                    None => todo.push(w),
                }
            }
        }
        todo.sort_by_key(|w| std::cmp::Reverse(w.start_ms));
        let (mut spent, mut missing, mut bad) = (0u64, 0usize, Vec::new());
        for w in todo {
            if spent.saturating_add(w.bytes) > budget && spent > 0 {
                missing += 1;
                continue;
            }
            spent = spent.saturating_add(w.bytes);
            // Read without the lock: decoding takes milliseconds.
            let (profile, rss) = match super::rss_window::load_window(w) {
                Ok(p) => p,
                Err(sprof_store::StoreError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    continue
                }
                Err(e) => {
                    bad.push((w.path.clone(), e.to_string()));
                    continue;
                }
            };
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let mut s = WindowSummary::of(&profile, w.start_ms, w.end_ms, &mut inner.intern);
            s.rss = rss_rows(&rss, &mut inner.intern);
            let s = Arc::new(s);
            inner.insert(w.path.clone(), s.clone());
            out.push(s);
        }
        if spent > TRIM_AFTER {
            // SAFETY: malloc_trim only returns free heap memory to the system.
            unsafe {
                libc::malloc_trim(0);
            }
        }
        let mut intern = Interner::default();
        for (start, end, p) in &sources.live {
            let mut s = WindowSummary::of(p, *start, *end, &mut intern);
            s.stored = false;
            out.push(Arc::new(s));
        }
        // The window in progress's readings, as one more (live) summary without samples.
        let rss = rss_rows(&sources.live_rss, &mut intern);
        if let Some(last) = rss.iter().map(|r| r.last.t_ms).max() {
            let first = rss.iter().map(|r| r.peak.t_ms.min(r.last.t_ms)).min();
            out.push(Arc::new(WindowSummary {
                start_ms: first.unwrap_or(last),
                end_ms: last,
                rows: Vec::new(),
                rss,
                stored: false,
            }));
        }
        out.sort_by_key(|s| (s.start_ms, s.end_ms));
        Filled {
            summaries: out,
            missing,
            bytes: sources.windows.iter().map(|w| w.bytes).sum(),
            bad,
        }
    }
}

impl CacheInner {
    fn insert(&mut self, path: PathBuf, s: Arc<WindowSummary>) {
        if self.by_path.len() >= MAX_CACHED {
            // Retention deletes the oldest windows first; the cache forgets them first too.
            let mut starts: Vec<(u64, PathBuf)> = self
                .by_path
                .iter()
                .map(|(p, s)| (s.start_ms, p.clone()))
                .collect();
            starts.sort();
            for (_, p) in starts.iter().take(MAX_CACHED / 10) {
                self.by_path.remove(p);
            }
            self.intern = Interner::default();
        }
        self.by_path.insert(path, s);
    }
}

/// Summarizes the last day of stored windows on a background thread at the lowest priority,
/// newest first, so that the page's first paint after a start does not read them.
pub fn warm_up(backend: Arc<dyn super::http::Backend>, cache: Arc<SummaryCache>) {
    let spawned = std::thread::Builder::new()
        .name("sprofd-summary".into())
        .spawn(move || {
            // SAFETY: setpriority on this thread (its tid) changes nothing but its nice value.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
            }
            let now = sprof_store::unix_millis(std::time::SystemTime::now());
            let sel = Selection {
                from_ms: now.saturating_sub(86_400_000),
                to_ms: now,
                ..Default::default()
            };
            let Ok(mut sources) = backend.sources(&sel, MAX_CACHED, u64::MAX) else {
                return;
            };
            sources.live.clear();
            sources.live_rss.clear();
            // Files that cannot be read are left for the query that needs them to move
            // aside (and count): warming up changes nothing on disk.
            cache.fill(&sources, u64::MAX);
        });
    if let Err(e) = spawned {
        eprintln!(
            "sprofd: warning: no thread to summarize the stored windows ahead ({e}); queries will as they need them"
        );
    }
}

/// Every process with samples in the selection, most samples first: what
/// `GET /api/v1/processes` and the page list.
pub fn processes(summaries: &[Arc<WindowSummary>], sel: &Selection) -> Vec<ProcessSummary> {
    let mut by_pid: BTreeMap<u32, ProcessSummary> = BTreeMap::new();
    for w in summaries {
        let (start, end) = (w.start_ms as f64 / 1000.0, w.end_ms as f64 / 1000.0);
        for r in w.rows.iter().filter(|r| sel.keeps_row(r)) {
            let e = by_pid.entry(r.pid).or_insert_with(|| ProcessSummary {
                pid: r.pid,
                comm: r.comm.to_string(),
                cmdline: String::new(),
                cgroup: String::new(),
                samples: 0,
                cpu_seconds: 0.0,
                first_seen: start,
                last_seen: end,
                rss: None,
            });
            e.samples += r.samples;
            e.cpu_seconds += r.cpu_ns as f64 / 1e9;
            e.first_seen = e.first_seen.min(start);
            if e.cmdline.is_empty() {
                e.cmdline = r.cmdline.to_string();
            }
            if e.cgroup.is_empty() {
                e.cgroup = r.cgroup.to_string();
            }
            // The latest name wins (a process that exec'd).
            if !r.comm.is_empty() && end >= e.last_seen {
                e.comm = r.comm.to_string();
            }
            e.last_seen = e.last_seen.max(end);
        }
    }
    let mut list: Vec<ProcessSummary> = by_pid.into_values().collect();
    list.sort_by(|a, b| b.samples.cmp(&a.samples).then(a.pid.cmp(&b.pid)));
    list
}

/// How the timeline's series are split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    Process,
    Comm,
}

/// The length of the stored windows, the resolution history has: their median, to the
/// nearest second (a window is cut on the second; the first after a start, and those holding
/// late slices, are shorter).
pub fn resolution_ms(summaries: &[Arc<WindowSummary>]) -> Option<u64> {
    let mut lengths: Vec<u64> = summaries
        .iter()
        .filter(|s| s.stored)
        .map(|s| s.end_ms.saturating_sub(s.start_ms))
        .collect();
    if lengths.is_empty() {
        return None;
    }
    lengths.sort_unstable();
    let median = lengths[lengths.len() / 2];
    Some(((median + 500) / 1000 * 1000).max(1000))
}

/// The timeline of a selection: each window's CPU spread over the steps it overlaps, in
/// proportion to the overlap (a window is one slice of CPU time; where it fell within the
/// window is not known).
pub fn timeline(
    summaries: &[Arc<WindowSummary>],
    sel: &Selection,
    step_ms: u64,
    by: By,
    missing_windows: usize,
) -> Timeline {
    let grid = Grid::new(sel, step_ms);
    let (from, to, steps) = (grid.from, grid.to, grid.times.len());
    let mut series: HashMap<String, Acc> = HashMap::new();
    for w in summaries {
        let (ws, we) = (w.start_ms, w.end_ms.max(w.start_ms + 1));
        let (lo, hi) = (ws.max(from), we.min(to));
        if lo >= hi {
            continue;
        }
        let first = ((lo - from) / step_ms) as usize;
        let last = ((hi - 1 - from) / step_ms) as usize;
        for r in w.rows.iter().filter(|r| sel.keeps_row(r)) {
            let key = match by {
                By::Process => r.pid.to_string(),
                By::Comm => r.comm.to_string(),
            };
            let e = series.entry(key).or_insert_with(|| {
                let pid = (by == By::Process).then_some(r.pid);
                (r.comm.to_string(), pid, HashSet::new(), vec![0.0; steps])
            });
            if by == By::Process && !r.comm.is_empty() {
                e.0 = r.comm.to_string();
            }
            e.2.insert(r.pid);
            for (i, slot) in e.3.iter_mut().enumerate().take(last + 1).skip(first) {
                let (bs, be) = (from + i as u64 * step_ms, from + (i as u64 + 1) * step_ms);
                let overlap = be.min(we).saturating_sub(bs.max(ws));
                *slot += r.cpu_ns as f64 * overlap as f64 / (we - ws) as f64;
            }
        }
    }
    let to_cores = |ns: f64, i: usize| {
        let (bs, be) = (grid.times[i], (grid.times[i] + step_ms).min(to));
        ns / 1e6 / (be - bs).max(1) as f64
    };
    let list: Vec<Series> = series
        .into_iter()
        .map(|(key, (comm, pid, pids, ns))| Series {
            key,
            comm,
            pid,
            processes: pids.len(),
            cpu_seconds: ns.iter().sum::<f64>() / 1e9,
            peak_bytes: None,
            values: ns
                .iter()
                .enumerate()
                .map(|(i, &v)| to_cores(v, i))
                .collect(),
        })
        .collect();
    stack(list, grid, by, Metric::Cpu, missing_windows)
}

#[cfg(test)]
mod tests {
    use super::super::timeline::MAX_SERIES;
    use super::*;

    fn row(pid: u32, comm: &str, cpu_ms: u64) -> Row {
        Row {
            pid,
            uid: Some(1000 + pid),
            comm: Arc::from(comm),
            cmdline: Arc::from(""),
            cgroup: Arc::from(""),
            samples: cpu_ms / 10,
            cpu_ns: cpu_ms * 1_000_000,
        }
    }

    fn window(start_s: u64, rows: Vec<Row>) -> Arc<WindowSummary> {
        Arc::new(WindowSummary {
            start_ms: start_s * 1000,
            end_ms: (start_s + 10) * 1000,
            rows,
            rss: Vec::new(),
            stored: true,
        })
    }

    #[test]
    fn windows_fall_into_steps_as_cpus_busy_and_series_group_by_name() {
        let w = [
            window(0, vec![row(1, "rustc", 10_000), row(2, "rustc", 5_000)]),
            window(10, vec![row(1, "rustc", 20_000), row(3, "db", 10_000)]),
        ];
        let sel = Selection {
            from_ms: 0,
            to_ms: 20_000,
            ..Default::default()
        };
        let t = timeline(&w, &sel, 10_000, By::Process, 0);
        assert_eq!(t.times, [0, 10_000]);
        assert_eq!(t.series[0].key, "1");
        assert_eq!(t.series[0].values, [1.0, 2.0]);
        assert_eq!(t.total, [1.5, 3.0]);
        let t = timeline(&w, &sel, 10_000, By::Comm, 0);
        assert_eq!(t.series[0].key, "rustc");
        assert_eq!(t.series[0].processes, 2);
        assert_eq!(t.series[0].values, [1.5, 2.0]);
        // A finer step than the windows spreads each window evenly.
        let t = timeline(&w, &sel, 5_000, By::Comm, 0);
        assert_eq!(t.series[0].values, [1.5, 1.5, 2.0, 2.0]);
        // The viewer filter applies to rows as to stacks.
        let own = Selection {
            viewer: Viewer::Own(1003),
            ..sel.clone()
        };
        let t = timeline(&w, &own, 10_000, By::Comm, 0);
        assert_eq!(t.series.len(), 1);
        assert_eq!(t.series[0].key, "db");
        let list = processes(&w, &sel);
        assert_eq!(
            list.iter().map(|p| p.pid).collect::<Vec<_>>(),
            [1, 3, 2],
            "most samples first: {list:?}"
        );
        assert!((list[0].cpu_seconds - 30.0).abs() < 1e-9);
    }

    #[test]
    fn many_series_end_in_one_other() {
        let rows = (1..=20)
            .map(|pid| row(pid, "w", u64::from(pid) * 100))
            .collect();
        let w = [window(0, rows)];
        let sel = Selection {
            from_ms: 0,
            to_ms: 10_000,
            ..Default::default()
        };
        let t = timeline(&w, &sel, 10_000, By::Process, 0);
        assert_eq!(t.series.len(), MAX_SERIES);
        let other = t.series.last().unwrap();
        assert_eq!(other.key, "other");
        assert_eq!(other.processes, 20 - (MAX_SERIES - 1));
        assert_eq!(resolution_ms(&w), Some(10_000));
    }

    /// Windows as a daemon with `--window 2` stores them around its start and late slices.
    #[test]
    fn the_resolution_is_the_windows_median_to_the_second() {
        let w: Vec<Arc<WindowSummary>> = [950u64, 1828, 172, 2000, 1950, 51, 2000]
            .iter()
            .enumerate()
            .map(|(i, len)| {
                let start = i as u64 * 2000;
                Arc::new(WindowSummary {
                    start_ms: start,
                    end_ms: start + len,
                    rows: Vec::new(),
                    rss: Vec::new(),
                    stored: true,
                })
            })
            .collect();
        assert_eq!(resolution_ms(&w), Some(2000));
        assert_eq!(resolution_ms(&[]), None);
    }
}
