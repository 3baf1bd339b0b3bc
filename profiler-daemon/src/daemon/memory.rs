//! Resident memory for the API, the page and `/metrics`, from the readings of
//! [`super::rss`]:
//!
//! * each window's summary keeps, per process read, its largest and its last reading
//!   ([`RssRow`]): a few dozen bytes, whatever the window's length;
//! * `GET /api/v1/processes` gives each process its series (the largest reading of each
//!   step), its latest reading and its peak ([`ProcessMemory`]);
//! * the timeline's `metric=memory` stacks resident bytes by process or by name
//!   ([`timeline`]);
//! * `/metrics` has the [`METRICS_TOP`] processes using the most ([`exposition`]): per-process
//!   gauges of every process would be thousands of series on a busy host.
//!
//! The resolution of history is the window (one peak and one last reading each); the window
//! in progress has every reading.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;
use std::sync::Arc;

use serde::Serialize;

use super::query::{ProcessSummary, Selection, Viewer};
use super::rss::{ProcessRss, RssPoint, Target};
use super::summary::{By, Interner, WindowSummary};
use super::timeline::{stack, Acc, Grid, Metric, Series, Timeline};

/// One process's memory in one window: its largest reading and its last.
#[derive(Debug, Clone, PartialEq)]
pub struct RssRow {
    pub pid: u32,
    pub uid: Option<u32>,
    pub comm: Arc<str>,
    pub peak: RssPoint,
    pub last: RssPoint,
}

/// The rows of a window's readings.
pub fn rss_rows(series: &[ProcessRss], intern: &mut Interner) -> Vec<RssRow> {
    series
        .iter()
        .filter_map(|s| {
            let last = *s.points.iter().max_by_key(|p| p.t_ms)?;
            // The earliest of equal peaks.
            let peak = *s
                .points
                .iter()
                .max_by_key(|p| (p.total(), std::cmp::Reverse(p.t_ms)))?;
            Some(RssRow {
                pid: s.pid,
                uid: s.uid,
                comm: intern.get(&s.comm),
                peak,
                last,
            })
        })
        .collect()
}

/// A process's resident memory over a range, bytes: the `rss` of `/api/v1/processes`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProcessMemory {
    /// The last reading in the range.
    pub latest: RssPoint,
    /// The largest (anon + file + shmem).
    pub peak: RssPoint,
    /// The series: each step's largest reading, at its own time (unix ms).
    pub step_ms: u64,
    pub times: Vec<u64>,
    pub anon: Vec<u64>,
    pub file: Vec<u64>,
    pub shmem: Vec<u64>,
}

/// The selection's processes' readings in its range, by pid, oldest first (each window's
/// peak and last; the window in progress's as well), with their latest name.
fn readings(summaries: &[Arc<WindowSummary>], sel: &Selection) -> BTreeMap<u32, Vec<RssPoint>> {
    let mut by: BTreeMap<u32, Vec<RssPoint>> = BTreeMap::new();
    for w in summaries {
        for r in w
            .rss
            .iter()
            .filter(|r| sel.keeps_process(r.pid, r.uid, &r.comm))
        {
            let points = by.entry(r.pid).or_default();
            for p in [r.peak, r.last] {
                if (sel.from_ms..=sel.to_ms).contains(&p.t_ms) {
                    points.push(p);
                }
            }
        }
    }
    by.retain(|_, points| {
        points.sort_by_key(|p| p.t_ms);
        points.dedup();
        !points.is_empty()
    });
    by
}

/// Each selected process's memory over the range, its series in steps of `step_ms`.
pub fn by_process(
    summaries: &[Arc<WindowSummary>],
    sel: &Selection,
    step_ms: u64,
) -> HashMap<u32, ProcessMemory> {
    let grid = Grid::new(sel, step_ms);
    readings(summaries, sel)
        .into_iter()
        .filter_map(|(pid, points)| {
            let latest = *points.last()?;
            let peak = *points.iter().rev().max_by_key(|p| p.total())?;
            // Each step's largest reading.
            let mut steps: BTreeMap<usize, RssPoint> = BTreeMap::new();
            for p in points {
                let Some(i) = grid.step_of(p.t_ms) else {
                    continue;
                };
                let e = steps.entry(i).or_insert(p);
                if p.total() > e.total() {
                    *e = p;
                }
            }
            let column = |f: fn(&RssPoint) -> u64| steps.values().map(f).collect();
            Some((
                pid,
                ProcessMemory {
                    latest,
                    peak,
                    step_ms,
                    times: column(|p| p.t_ms),
                    anon: column(|p| p.anon),
                    file: column(|p| p.file),
                    shmem: column(|p| p.shmem),
                },
            ))
        })
        .collect()
}

/// Gives each process of `list` its memory, where it was read.
pub fn attach(
    list: &mut [ProcessSummary],
    summaries: &[Arc<WindowSummary>],
    sel: &Selection,
    step_ms: u64,
) {
    let mut memory = by_process(summaries, sel, step_ms);
    for p in list {
        p.rss = memory.remove(&p.pid);
    }
}

/// The memory timeline of a selection: in each step, the resident bytes of each series'
/// processes (each process's largest reading in the step; a step without a reading between
/// two with one keeps the value before it, memory being there until it is freed), stacked,
/// the largest peaks first.
pub fn timeline(
    summaries: &[Arc<WindowSummary>],
    sel: &Selection,
    step_ms: u64,
    by: By,
    missing_windows: usize,
) -> Timeline {
    let grid = Grid::new(sel, step_ms);
    let steps = grid.times.len();
    // The latest name of each process.
    let mut names: HashMap<u32, Arc<str>> = HashMap::new();
    for r in summaries.iter().flat_map(|w| &w.rss) {
        names.insert(r.pid, r.comm.clone());
    }
    let mut series: HashMap<String, Acc> = HashMap::new();
    for (pid, points) in readings(summaries, sel) {
        let mut values: Vec<Option<u64>> = vec![None; steps];
        for p in &points {
            if let Some(i) = grid.step_of(p.t_ms) {
                values[i] = Some(values[i].unwrap_or(0).max(p.total()));
            }
        }
        let comm = names.get(&pid).map_or("", |c| c).to_string();
        let key = match by {
            By::Process => pid.to_string(),
            By::Comm => comm.clone(),
        };
        let e = series.entry(key).or_insert_with(|| {
            let pid = (by == By::Process).then_some(pid);
            (comm, pid, HashSet::new(), vec![0.0; steps])
        });
        e.2.insert(pid);
        let last = values.iter().rposition(Option::is_some).unwrap_or(0);
        let mut held = None;
        for (i, v) in values.into_iter().enumerate().take(last + 1) {
            held = v.or(held);
            e.3[i] += held.unwrap_or(0) as f64;
        }
    }
    let list = series
        .into_iter()
        .map(|(key, (comm, pid, pids, values))| Series {
            key,
            comm,
            pid,
            processes: pids.len(),
            cpu_seconds: 0.0,
            peak_bytes: Some(values.iter().copied().fold(0.0, f64::max)),
            values,
        })
        .collect();
    stack(list, grid, by, Metric::Memory, missing_windows)
}

/// Processes in `/metrics`' per-process memory gauge: the ones using the most at the last
/// reading, three series each (anon, file, shmem).
pub const METRICS_TOP: usize = 10;
const METRIC: &str = "sprofd_sampled_process_resident_bytes";

/// The per-process memory gauge of `/metrics` for a reader (who may see only their own
/// processes), in the text exposition format.
pub fn exposition(latest: &[(Target, RssPoint)], viewer: Viewer) -> String {
    let sel = Selection {
        viewer,
        ..Default::default()
    };
    let mut top: Vec<&(Target, RssPoint)> = latest
        .iter()
        .filter(|(t, _)| sel.keeps_process(t.pid, t.uid, &t.comm))
        .collect();
    top.sort_by(|a, b| b.1.total().cmp(&a.1.total()).then(a.0.pid.cmp(&b.0.pid)));
    let mut out = format!(
        "# HELP {METRIC} Resident memory of the {METRICS_TOP} sampled processes using the most, by kind (anon, file, shmem), at the last reading.\n# TYPE {METRIC} gauge\n# UNIT {METRIC} bytes\n"
    );
    for (t, p) in top.into_iter().take(METRICS_TOP) {
        for (kind, v) in [("anon", p.anon), ("file", p.file), ("shmem", p.shmem)] {
            // Writing into a String cannot fail.
            let _ = writeln!(
                out,
                "{METRIC}{{pid=\"{}\",comm=\"{}\",kind=\"{kind}\"}} {v}",
                t.pid,
                label_value(&t.comm)
            );
        }
    }
    out
}

/// A label value as the exposition format escapes it (a process names itself).
fn label_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mib(t_s: u64, anon_mib: u64) -> RssPoint {
        RssPoint {
            t_ms: t_s * 1000,
            anon: anon_mib << 20,
            file: 1 << 20,
            shmem: 0,
        }
    }

    fn window(start_s: u64, series: Vec<ProcessRss>) -> Arc<WindowSummary> {
        Arc::new(WindowSummary {
            start_ms: start_s * 1000,
            end_ms: (start_s + 10) * 1000,
            rows: Vec::new(),
            rss: rss_rows(&series, &mut Interner::default()),
            stored: true,
        })
    }

    fn proc_rss(pid: u32, comm: &str, points: Vec<RssPoint>) -> ProcessRss {
        ProcessRss {
            pid,
            uid: Some(1000 + pid),
            comm: comm.into(),
            points,
        }
    }

    /// A process that grows to 150 MiB and gives half back, one that stays small, and one
    /// that holds 40 MiB from the second window on.
    fn history() -> Vec<Arc<WindowSummary>> {
        vec![
            window(
                0,
                vec![
                    proc_rss(1, "grow", vec![mib(1, 10), mib(5, 150), mib(9, 120)]),
                    proc_rss(2, "small", vec![mib(1, 2), mib(9, 2)]),
                ],
            ),
            window(
                10,
                vec![
                    proc_rss(1, "grow", vec![mib(11, 120), mib(19, 75)]),
                    proc_rss(3, "small", vec![mib(12, 40), mib(19, 40)]),
                ],
            ),
        ]
    }

    fn range(from_s: u64, to_s: u64) -> Selection {
        Selection {
            from_ms: from_s * 1000,
            to_ms: to_s * 1000,
            ..Default::default()
        }
    }

    #[test]
    fn a_window_keeps_its_peak_and_last_and_a_range_gives_series_latest_and_peak() {
        let w = history();
        assert_eq!(w[0].rss[0].peak, mib(5, 150));
        assert_eq!(w[0].rss[0].last, mib(9, 120));
        let m = by_process(&w, &range(0, 20), 10_000);
        let grow = &m[&1];
        assert_eq!(grow.peak, mib(5, 150));
        assert_eq!(grow.latest, mib(19, 75));
        // One reading a window, the largest: 150 at 5 s, 120 at 11 s.
        assert_eq!(grow.times, [5000, 11_000]);
        assert_eq!(grow.anon, [150 << 20, 120 << 20]);
        assert_eq!(grow.file, [1 << 20, 1 << 20]);
        // Finer steps keep both readings of each window.
        let fine = by_process(&w, &range(0, 20), 1000);
        assert_eq!(fine[&1].times, [5000, 9000, 11_000, 19_000]);
        // The range cuts readings outside it; the viewer and the name select processes.
        let late = by_process(&w, &range(10, 20), 10_000);
        assert_eq!(late[&1].peak, mib(11, 120));
        assert!(!late.contains_key(&2));
        let own = Selection {
            viewer: Viewer::Own(1003),
            ..range(0, 20)
        };
        assert_eq!(
            by_process(&w, &own, 10_000).keys().collect::<Vec<_>>(),
            [&3]
        );
        let small = Selection {
            comm: Some(regex::Regex::new("^small$").unwrap()),
            ..range(0, 20)
        };
        let mut pids: Vec<u32> = by_process(&w, &small, 10_000).into_keys().collect();
        pids.sort();
        assert_eq!(pids, [2, 3]);
    }

    #[test]
    fn the_memory_timeline_stacks_bytes_and_holds_them_between_readings() {
        let w = history();
        let t = timeline(&w, &range(0, 20), 5000, By::Process, 0);
        assert_eq!(t.metric, Metric::Memory);
        assert_eq!(t.times, [0, 5000, 10_000, 15_000]);
        assert_eq!(t.series[0].key, "1", "the largest peak first: {t:?}");
        let total = |mib: u64| ((mib + 1) << 20) as f64;
        // 1: the first window's peak (150 at 5 s) and last (120 at 9 s) fall in its second
        // step, which holds the larger; then 120 at 11 s, 75 at 19 s.
        assert_eq!(t.series[0].values, [0.0, total(150), total(120), total(75)]);
        assert_eq!(t.series[0].peak_bytes, Some(total(150)));
        // 3 appears at 12 s; 2 ends at 9 s (nothing is held after a last reading).
        let three = t.series.iter().find(|s| s.key == "3").unwrap();
        assert_eq!(three.values, [0.0, 0.0, total(40), total(40)]);
        let two = t.series.iter().find(|s| s.key == "2").unwrap();
        assert_eq!(two.values, [total(2), total(2), 0.0, 0.0]);
        assert_eq!(t.total[2], total(120) + total(40));
        // By name: 2 and 3 are one series.
        let t = timeline(&w, &range(0, 20), 10_000, By::Comm, 0);
        let small = t.series.iter().find(|s| s.key == "small").unwrap();
        assert_eq!(small.processes, 2);
        assert_eq!(small.values, [total(2), total(40)]);
    }

    #[test]
    fn metrics_show_the_largest_few_escaped_and_only_what_the_reader_may_see() {
        let t = |pid: u32, comm: &str, uid| Target {
            pid,
            uid: Some(uid),
            comm: comm.into(),
        };
        let mut latest: Vec<(Target, RssPoint)> = (1..=30)
            .map(|pid| (t(pid, "w", 1000), mib(1, u64::from(pid))))
            .collect();
        latest.push((t(99, "a\"b\\c\nd", 0), mib(1, 500)));
        let all = exposition(&latest, Viewer::All);
        let lines: Vec<&str> = all.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines.len(), 3 * METRICS_TOP, "{all}");
        assert!(
            all.contains(
                "sprofd_sampled_process_resident_bytes{pid=\"99\",comm=\"a\\\"b\\\\c\\nd\",kind=\"anon\"} 524288000"
            ),
            "{all}"
        );
        assert!(
            all.contains("pid=\"30\"") && !all.contains("pid=\"20\""),
            "{all}"
        );
        let own = exposition(&latest, Viewer::Own(0));
        assert_eq!(own.lines().filter(|l| !l.starts_with('#')).count(), 3);
        assert!(own.contains("# UNIT sprofd_sampled_process_resident_bytes bytes"));
    }
}
