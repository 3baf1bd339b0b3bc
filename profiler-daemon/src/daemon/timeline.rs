//! The shape of `GET /api/v1/timeline`'s answer, whatever it measures: a grid of whole steps
//! over the range, series stacked largest first, and the rest summed in one `other`. The CPU
//! series come from the window summaries ([`super::summary::timeline`]), the memory ones from
//! their readings ([`super::memory::timeline`]).

use std::collections::HashSet;

use serde::Serialize;

use super::query::Selection;
use super::summary::By;

/// What the timeline draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// CPUs busy.
    Cpu,
    /// Resident bytes (see [`super::memory::timeline`]).
    Memory,
}

/// One stacked series of the timeline.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Series {
    /// The pid (by process) or the name (by comm); `other` for the rest.
    pub key: String,
    pub comm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Processes in the series.
    pub processes: usize,
    pub cpu_seconds: f64,
    /// The memory timeline's: the series' largest value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_bytes: Option<f64>,
    /// In each step: CPUs busy on average (CPU seconds per second), or resident bytes.
    pub values: Vec<f64>,
}

/// `GET /api/v1/timeline`'s answer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Timeline {
    pub from_ms: u64,
    pub to_ms: u64,
    pub step_ms: u64,
    pub by: By,
    pub metric: Metric,
    /// The start of each step, unix milliseconds.
    pub times: Vec<u64>,
    /// The largest series first; the rest summed in one `other` series at the end.
    pub series: Vec<Series>,
    /// Each step's value, all series together.
    pub total: Vec<f64>,
    /// Stored windows left out because reading them would cost more than one query may:
    /// ask again and they are there.
    pub missing_windows: usize,
    /// Bytes of the stored windows in the range, and the most a profile query reads: a
    /// flamegraph of a longer range is refused (413), so the page asks for a narrower one.
    pub window_bytes: u64,
    pub max_profile_bytes: u64,
}

/// Most series drawn; the rest is one `other`.
pub const MAX_SERIES: usize = 12;

/// The timeline's steps: a grid of whole steps over the selection, as the windows are (a
/// window then falls in one step).
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub from: u64,
    pub to: u64,
    pub step_ms: u64,
    /// The start of each step.
    pub times: Vec<u64>,
}

impl Grid {
    pub fn new(sel: &Selection, step_ms: u64) -> Grid {
        let from = sel.from_ms / step_ms * step_ms;
        let to = sel.to_ms.max(sel.from_ms + 1).div_ceil(step_ms) * step_ms;
        let steps = (to - from).div_ceil(step_ms) as usize;
        Grid {
            from,
            to,
            step_ms,
            times: (0..steps).map(|i| from + i as u64 * step_ms).collect(),
        }
    }

    /// The step holding `t_ms`, if the grid covers it (its end is in the last step).
    pub fn step_of(&self, t_ms: u64) -> Option<usize> {
        let last = self.times.len().checked_sub(1)?;
        (self.from..=self.to)
            .contains(&t_ms)
            .then(|| (((t_ms - self.from) / self.step_ms) as usize).min(last))
    }
}

/// A series being summed: its name, pid (by process), processes, and a value per step.
pub type Acc = (String, Option<u32>, HashSet<u32>, Vec<f64>);

/// The timeline of `list`: the largest series first (by CPU seconds, or by peak bytes),
/// the [`MAX_SERIES`]th on summed in one `other`, and each step's total.
pub fn stack(
    mut list: Vec<Series>,
    grid: Grid,
    by: By,
    metric: Metric,
    missing_windows: usize,
) -> Timeline {
    let steps = grid.times.len();
    let weight = |s: &Series| s.peak_bytes.unwrap_or(s.cpu_seconds);
    list.sort_by(|a, b| {
        weight(b)
            .total_cmp(&weight(a))
            .then_with(|| a.key.cmp(&b.key))
    });
    if list.len() > MAX_SERIES {
        let rest = list.split_off(MAX_SERIES - 1);
        let mut other = Series {
            key: "other".into(),
            comm: format!("{} others", rest.len()),
            pid: None,
            processes: 0,
            cpu_seconds: 0.0,
            peak_bytes: None,
            values: vec![0.0; steps],
        };
        for s in rest {
            other.processes += s.processes;
            other.cpu_seconds += s.cpu_seconds;
            for (o, v) in other.values.iter_mut().zip(&s.values) {
                *o += v;
            }
        }
        if metric == Metric::Memory {
            other.peak_bytes = Some(other.values.iter().copied().fold(0.0, f64::max));
        }
        list.push(other);
    }
    let mut total = vec![0.0; steps];
    for s in &list {
        for (t, v) in total.iter_mut().zip(&s.values) {
            *t += v;
        }
    }
    Timeline {
        from_ms: grid.from,
        to_ms: grid.to,
        step_ms: grid.step_ms,
        by,
        metric,
        times: grid.times,
        series: list,
        total,
        missing_windows,
        window_bytes: 0,
        max_profile_bytes: 0,
    }
}
