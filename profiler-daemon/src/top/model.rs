//! The view model of `sprofd top`: per-function shares over a sliding window and since the
//! start, from successive snapshots of the session; sort orders; formatted rows. Nothing here
//! touches the terminal, so all of it is tested on hand-built profiles.
//!
//! Snapshots are cumulative (the engine never restarts its counts for `top`), so the window
//! is the difference between the newest snapshot and the one taken `window` earlier. Per
//! function, self and total samples come from the statprof table's accounting: self goes to
//! the leaf, total counts a function once per sample however often it recurses.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use flamegraph_out::{ExportError, StatprofTable};
use sprof_core::{Frame, FrameKind, PythonView, SymbolizedProfile};

/// How stacks are shown (the `p` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// `--python-view python`: Python frames and the native code they call out to.
    Python,
    /// `--python-view mixed`: every native frame, Python frames in place of eval frames.
    Mixed,
    /// Native frames only: each run of Python frames folded back into one
    /// `_PyEval_EvalFrameDefault`, the frame they replaced.
    Native,
}

/// The frame a run of Python frames stands for in the native view.
pub const EVAL_FRAME: &str = "_PyEval_EvalFrameDefault";

impl View {
    const ALL: [View; 3] = [View::Python, View::Mixed, View::Native];

    pub fn name(self) -> &'static str {
        match self {
            View::Python => "python",
            View::Mixed => "mixed",
            View::Native => "native",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// `profile` (symbolized, no Python view applied) as this view shows it.
    pub fn apply(self, profile: &SymbolizedProfile) -> SymbolizedProfile {
        match self {
            View::Python => profile.clone().with_python_view(PythonView::Python),
            View::Mixed => profile.clone(),
            View::Native => fold_python_frames(profile),
        }
    }
}

/// Each maximal run of Python frames replaced by one [`EVAL_FRAME`] frame.
fn fold_python_frames(profile: &SymbolizedProfile) -> SymbolizedProfile {
    let mut out = profile.clone();
    let eval = out.frames.len() as u32;
    out.frames.push(Frame::bare(EVAL_FRAME, FrameKind::Native));
    let is_python = |f: u32| {
        profile
            .frames
            .get(f as usize)
            .is_some_and(|f| f.kind == FrameKind::Python)
    };
    for stack in &mut out.stacks {
        let mut frames = Vec::with_capacity(stack.frames.len());
        for &f in &stack.frames {
            match is_python(f) {
                true if frames.last() == Some(&eval) => {}
                true => frames.push(eval),
                false => frames.push(f),
            }
        }
        stack.frames = frames;
    }
    out
}

/// The column rows are sorted by (the `s` key), largest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    SelfWindow,
    TotalWindow,
    SelfAll,
    TotalAll,
}

impl SortKey {
    pub const ALL: [SortKey; 4] = [
        SortKey::SelfWindow,
        SortKey::TotalWindow,
        SortKey::SelfAll,
        SortKey::TotalAll,
    ];

    pub fn next(self) -> SortKey {
        Self::ALL[(self as usize + 1) % Self::ALL.len()]
    }

    /// The column's heading, e.g. `SELF 5s`.
    pub fn label(self, window: Duration) -> String {
        let w = window.as_secs();
        match self {
            SortKey::SelfWindow => format!("SELF {w}s"),
            SortKey::TotalWindow => format!("TOTAL {w}s"),
            SortKey::SelfAll => "SELF all".into(),
            SortKey::TotalAll => "TOTAL all".into(),
        }
    }
}

/// Samples of one function: as the leaf, and anywhere on the stack (once per sample).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    self_samples: u64,
    total: u64,
}

/// Per-function counts of one view of one snapshot, keyed by the table's row names.
#[derive(Debug, Clone, Default)]
struct FunctionCounts {
    samples: u64,
    by_name: HashMap<String, Counts>,
}

impl FunctionCounts {
    fn of(profile: &SymbolizedProfile) -> Result<FunctionCounts, ExportError> {
        let rows = StatprofTable::default().rows(profile)?;
        let by_name = rows
            .into_iter()
            .map(|r| {
                let c = Counts {
                    self_samples: r.self_samples,
                    total: r.cumulative_samples,
                };
                (r.name, c)
            })
            .collect();
        // The rows' figures are weights (samples, or bytes in memory mode): so is the total.
        Ok(FunctionCounts {
            samples: profile.total_weight(),
            by_name,
        })
    }
}

/// Samples of one thread so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadCount {
    pub tid: u32,
    pub name: String,
    pub samples: u64,
}

/// One snapshot of the session, reduced to what the view shows.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Time since sampling started.
    pub elapsed: Duration,
    pub samples: u64,
    pub lost: u64,
    /// What the samples weigh: bytes in memory mode (samples otherwise).
    pub weight: u64,
    /// Indexed by [`View::index`].
    views: [FunctionCounts; 3],
    threads: Vec<ThreadCount>,
}

impl Snapshot {
    /// `profile` is symbolized with no Python view applied; `threads` are cumulative.
    pub fn new(
        elapsed: Duration,
        profile: &SymbolizedProfile,
        threads: Vec<ThreadCount>,
    ) -> Result<Snapshot, ExportError> {
        let has_python = profile.frames.iter().any(|f| f.kind == FrameKind::Python);
        let views = if has_python {
            [
                FunctionCounts::of(&View::Python.apply(profile))?,
                FunctionCounts::of(profile)?,
                FunctionCounts::of(&View::Native.apply(profile))?,
            ]
        } else {
            // Every view of a profile without Python frames is the profile itself.
            let counts = FunctionCounts::of(profile)?;
            [counts.clone(), counts.clone(), counts]
        };
        Ok(Snapshot {
            elapsed,
            samples: profile.meta.stats.samples,
            lost: profile.meta.stats.lost,
            weight: profile.total_weight(),
            views,
            threads,
        })
    }
}

/// One row of the table; shares in percent.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub self_window: f64,
    pub total_window: f64,
    pub self_all: f64,
    pub total_all: f64,
}

impl Row {
    fn key(&self, key: SortKey) -> f64 {
        match key {
            SortKey::SelfWindow => self.self_window,
            SortKey::TotalWindow => self.total_window,
            SortKey::SelfAll => self.self_all,
            SortKey::TotalAll => self.total_all,
        }
    }

    /// The four share columns as printed (`75.0%`, blank for nothing), in
    /// [`SortKey::ALL`] order.
    pub fn cells(&self) -> [String; 4] {
        SortKey::ALL.map(|k| share(self.key(k)))
    }
}

/// A share as shown in a column.
pub fn share(pct: f64) -> String {
    if pct > 0.0 {
        format!("{pct:5.1}%")
    } else {
        String::new()
    }
}

/// The numbers of the header.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub elapsed: Duration,
    pub samples: u64,
    pub lost: u64,
    /// What the window actually spans (shorter than asked until that much time has passed).
    pub window: Duration,
    pub window_samples: u64,
    /// What the window's samples weigh (bytes grown, in memory mode).
    pub window_weight: u64,
    pub window_lost: u64,
    /// Samples per second over the window.
    pub rate: f64,
}

/// The view model: recent snapshots, the sort order and the view.
#[derive(Debug)]
pub struct Top {
    /// Oldest first; the first is the window's base, the last the newest snapshot.
    history: VecDeque<Snapshot>,
    window: Duration,
    pub sort: SortKey,
    pub view: View,
    /// The views `p` cycles through: all three when Python frames are read, else native.
    views: Vec<View>,
}

impl Top {
    pub fn new(window: Duration, python: Option<PythonView>) -> Top {
        let (view, views) = match python {
            Some(PythonView::Python) => (View::Python, View::ALL.to_vec()),
            Some(PythonView::Mixed) => (View::Mixed, View::ALL.to_vec()),
            // The CLI never asks for it (`--python-view native` does not read Python frames).
            Some(PythonView::Native) | None => (View::Native, vec![View::Native]),
        };
        Top {
            // Sampling starts from nothing: the first window reaches back to the start.
            history: VecDeque::from([Snapshot::default()]),
            window,
            sort: SortKey::SelfWindow,
            view,
            views,
        }
    }

    /// The asked-for window length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Adds the newest snapshot; snapshots older than the window's base are dropped.
    pub fn push(&mut self, snapshot: Snapshot) {
        let horizon = snapshot.elapsed.saturating_sub(self.window);
        self.history.push_back(snapshot);
        // Keep the newest snapshot at or before the horizon as the base.
        while self.history.len() > 2 && self.history[1].elapsed <= horizon {
            self.history.pop_front();
        }
    }

    pub fn cycle_sort(&mut self) {
        self.sort = self.sort.next();
    }

    pub fn cycle_view(&mut self) {
        let i = self.views.iter().position(|&v| v == self.view).unwrap_or(0);
        self.view = self.views[(i + 1) % self.views.len()];
    }

    /// Whether `p` has anything to switch between.
    pub fn can_switch_view(&self) -> bool {
        self.views.len() > 1
    }

    fn base(&self) -> &Snapshot {
        &self.history[0]
    }

    fn latest(&self) -> &Snapshot {
        self.history.back().unwrap_or(&self.history[0])
    }

    pub fn summary(&self) -> Summary {
        let (base, now) = (self.base(), self.latest());
        let window = now.elapsed.saturating_sub(base.elapsed);
        let window_samples = now.samples.saturating_sub(base.samples);
        Summary {
            elapsed: now.elapsed,
            samples: now.samples,
            lost: now.lost,
            window,
            window_samples,
            window_weight: now.weight.saturating_sub(base.weight),
            window_lost: now.lost.saturating_sub(base.lost),
            rate: match window.as_secs_f64() {
                0.0 => 0.0,
                secs => window_samples as f64 / secs,
            },
        }
    }

    /// Every function of the current view, sorted by the current key (ties: the other
    /// columns in order, then the name).
    pub fn rows(&self) -> Vec<Row> {
        let v = self.view.index();
        let (base, now) = (&self.base().views[v], &self.latest().views[v]);
        let window_samples = now.samples.saturating_sub(base.samples);
        let mut rows: Vec<Row> = now
            .by_name
            .iter()
            .map(|(name, c)| {
                let b = base.by_name.get(name).copied().unwrap_or_default();
                Row {
                    name: name.clone(),
                    self_window: pct(
                        c.self_samples.saturating_sub(b.self_samples),
                        window_samples,
                    ),
                    total_window: pct(c.total.saturating_sub(b.total), window_samples),
                    self_all: pct(c.self_samples, now.samples),
                    total_all: pct(c.total, now.samples),
                }
            })
            .collect();
        let order = std::iter::once(self.sort).chain(SortKey::ALL);
        let order: Vec<SortKey> = order.collect();
        rows.sort_by(|a, b| {
            order
                .iter()
                .map(|&k| b.key(k).total_cmp(&a.key(k)))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| a.name.cmp(&b.name))
        });
        rows
    }

    /// The `n` threads with the most samples in the window, most first, with their samples
    /// in the window.
    pub fn top_threads(&self, n: usize) -> Vec<ThreadCount> {
        let before: HashMap<u32, u64> = self
            .base()
            .threads
            .iter()
            .map(|t| (t.tid, t.samples))
            .collect();
        let mut threads: Vec<ThreadCount> = self
            .latest()
            .threads
            .iter()
            .map(|t| ThreadCount {
                samples: t
                    .samples
                    .saturating_sub(before.get(&t.tid).copied().unwrap_or(0)),
                ..t.clone()
            })
            .filter(|t| t.samples > 0)
            .collect();
        threads.sort_by(|a, b| b.samples.cmp(&a.samples).then(a.tid.cmp(&b.tid)));
        threads.truncate(n);
        threads
    }

    /// Threads with samples since the start.
    pub fn threads_seen(&self) -> usize {
        self.latest().threads.len()
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn native(name: &str) -> Frame {
        let mut f = Frame::bare(name, FrameKind::Native);
        f.module = Some("app".into());
        f
    }

    fn python(name: &str, line: u32) -> Frame {
        Frame {
            function: name.into(),
            file: Some("/src/workload.py".into()),
            line: Some(line + 1),
            decl_line: Some(line),
            decl_file: None,
            module: None,
            kind: FrameKind::Python,
        }
    }

    /// A profile over `frames` (index 0 is the root) with `(stack, samples)`.
    fn profile(frames: &[Frame], stacks: &[(&[u32], u64)]) -> SymbolizedProfile {
        let mut p = sprof_testkit::profile(frames.to_vec(), stacks, 1);
        p.meta.stats.samples = p.total_samples();
        p
    }

    fn frames() -> Vec<Frame> {
        vec![
            Frame::bare("proc", FrameKind::Root),
            native("main"),
            native("hot"),
            native("cold"),
        ]
    }

    fn snap(secs: u64, p: &SymbolizedProfile) -> Snapshot {
        Snapshot::new(Duration::from_secs(secs), p, Vec::new()).unwrap()
    }

    fn row<'r>(rows: &'r [Row], name: &str) -> &'r Row {
        rows.iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no row {name} in {rows:#?}"))
    }

    #[test]
    fn window_shares_come_from_the_difference_of_snapshots() {
        let f = frames();
        let mut top = Top::new(Duration::from_secs(5), None);
        // 0-5 s: only `hot` runs (100 samples); 5-10 s: 20 more in hot, 80 in cold.
        top.push(snap(5, &profile(&f, &[(&[0, 1, 2], 100)])));
        let rows = top.rows();
        assert_eq!(row(&rows, "hot (app)").self_window, 100.0);
        assert_eq!(top.summary().window, Duration::from_secs(5));
        for s in 6..=10 {
            let hot = 100 + 4 * (s - 5);
            let cold = 16 * (s - 5);
            top.push(snap(
                s,
                &profile(&f, &[(&[0, 1, 2], hot), (&[0, 1, 3], cold)]),
            ));
        }
        let rows = top.rows();
        let hot = row(&rows, "hot (app)");
        assert!((hot.self_window - 20.0).abs() < 1e-9, "{hot:?}");
        assert!((hot.self_all - 60.0).abs() < 1e-9, "{hot:?}");
        let cold = row(&rows, "cold (app)");
        assert!((cold.self_window - 80.0).abs() < 1e-9, "{cold:?}");
        assert!((cold.self_all - 40.0).abs() < 1e-9, "{cold:?}");
        let main = row(&rows, "main (app)");
        assert_eq!((main.self_window, main.total_window), (0.0, 100.0));
        assert_eq!(main.total_all, 100.0);
        let s = top.summary();
        assert_eq!(s.window, Duration::from_secs(5));
        assert_eq!((s.samples, s.window_samples), (200, 100));
        assert!((s.rate - 20.0).abs() < 1e-9);
        assert!(top.history.len() <= 7, "old snapshots are dropped");
    }

    #[test]
    fn sort_orders_cycle_through_the_four_columns() {
        let f = frames();
        let mut top = Top::new(Duration::from_secs(2), None);
        top.push(snap(2, &profile(&f, &[(&[0, 1, 2], 90), (&[0, 1, 3], 10)])));
        top.push(snap(
            4,
            &profile(&f, &[(&[0, 1, 2], 100), (&[0, 1, 3], 100)]),
        ));
        let names = |top: &Top| -> Vec<String> { top.rows().into_iter().map(|r| r.name).collect() };
        assert_eq!(top.sort, SortKey::SelfWindow);
        // Window: cold 90 of 100; since start: hot 100 of 200 ties cold, broken by total.
        assert_eq!(names(&top), ["cold (app)", "hot (app)", "main (app)"]);
        top.cycle_sort();
        assert_eq!(top.sort, SortKey::TotalWindow);
        assert_eq!(names(&top)[0], "main (app)");
        top.cycle_sort();
        assert_eq!(top.sort, SortKey::SelfAll);
        // hot and cold both have 50 % since start; hot is behind in the window.
        assert_eq!(names(&top), ["cold (app)", "hot (app)", "main (app)"]);
        top.cycle_sort();
        assert_eq!(top.sort, SortKey::TotalAll);
        assert_eq!(names(&top)[0], "main (app)");
        top.cycle_sort();
        assert_eq!(top.sort, SortKey::SelfWindow);
        assert_eq!(SortKey::TotalWindow.label(top.window()), "TOTAL 2s");
    }

    #[test]
    fn recursion_counts_once_in_total() {
        let f = vec![
            Frame::bare("proc", FrameKind::Root),
            native("main"),
            native("fib"),
        ];
        let mut top = Top::new(Duration::from_secs(5), None);
        top.push(snap(
            1,
            &profile(&f, &[(&[0, 1, 2, 2, 2], 3), (&[0, 1], 1)]),
        ));
        let rows = top.rows();
        let fib = row(&rows, "fib (app)");
        assert_eq!((fib.self_all, fib.total_all), (75.0, 75.0));
        assert_eq!(fib.total_window, 75.0);
        assert!(rows.iter().all(|r| r.total_all <= 100.0));
    }

    #[test]
    fn python_views_switch_and_native_folds_python_frames() {
        let mut f = frames();
        f.push(python("hot_a", 27)); // 4
        f.push(python("work", 35)); // 5
        let mut interp = native("_PyObject_Call");
        interp.module = Some("libpython3.11.so.1.0".into());
        f.push(interp); // 6
        let p = profile(&f, &[(&[0, 1, 6, 5, 4], 3), (&[0, 1, 6, 5], 1)]);
        let mut top = Top::new(Duration::from_secs(5), Some(PythonView::Python));
        top.push(snap(1, &p));
        assert_eq!(top.view, View::Python);
        let rows = top.rows();
        assert_eq!(row(&rows, "hot_a (workload.py:27)").self_window, 75.0);
        assert!(rows
            .iter()
            .all(|r| r.name != "_PyObject_Call (libpython3.11.so.1.0)"));
        top.cycle_view();
        assert_eq!(top.view, View::Mixed);
        let rows = top.rows();
        assert_eq!(
            row(&rows, "_PyObject_Call (libpython3.11.so.1.0)").total_window,
            100.0
        );
        top.cycle_view();
        assert_eq!(top.view, View::Native);
        let rows = top.rows();
        assert!(
            rows.iter().all(|r| !r.name.contains("workload.py")),
            "{rows:#?}"
        );
        let eval = row(&rows, EVAL_FRAME);
        assert_eq!((eval.self_window, eval.total_window), (100.0, 100.0));
        top.cycle_view();
        assert_eq!(top.view, View::Python);

        let mut native_only = Top::new(Duration::from_secs(5), None);
        assert!(!native_only.can_switch_view());
        native_only.cycle_view();
        assert_eq!(native_only.view, View::Native);
    }

    #[test]
    fn threads_are_ranked_by_samples_in_the_window() {
        let f = frames();
        let p = profile(&f, &[(&[0, 1, 2], 10)]);
        let t = |tid, samples| ThreadCount {
            tid,
            name: format!("t{tid}"),
            samples,
        };
        let mut top = Top::new(Duration::from_secs(1), None);
        top.push(Snapshot::new(Duration::from_secs(1), &p, vec![t(1, 100), t(2, 5)]).unwrap());
        top.push(
            Snapshot::new(
                Duration::from_secs(2),
                &p,
                vec![t(1, 101), t(2, 50), t(3, 7)],
            )
            .unwrap(),
        );
        let threads = top.top_threads(2);
        assert_eq!(threads, vec![t(2, 45), t(3, 7)]);
        assert_eq!(top.threads_seen(), 3);
    }

    #[test]
    fn cells_and_lost_samples() {
        let r = Row {
            name: "x".into(),
            self_window: 75.0,
            total_window: 100.0,
            self_all: 0.0,
            total_all: 3.3,
        };
        assert_eq!(r.cells(), [" 75.0%", "100.0%", "", "  3.3%"]);
        let f = frames();
        let mut p = profile(&f, &[(&[0, 1, 2], 10)]);
        p.meta.stats.lost = 4;
        let mut top = Top::new(Duration::from_secs(5), None);
        top.push(snap(1, &p));
        p.meta.stats.lost = 6;
        top.push(snap(2, &p));
        let s = top.summary();
        assert_eq!((s.lost, s.window_lost), (6, 6));
    }
}
