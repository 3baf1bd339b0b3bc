//! Samples per source line: the figures behind the annotated source (`.lines.txt`,
//! `sprofd annotate`) and the heatmap (`.heatmap.html`).
//!
//! [`line_profile`] counts, for every function with line information, the samples in which
//! it was on the stack (`total`) or the innermost frame (`self`), and the same per source
//! line of the function's own file. A sample counts once per function and once per line,
//! however often recursion puts them on its stack, so no figure exceeds the sample count.
//! Inlined native frames are frames of their own (the symbolizer expands them), so their
//! samples land on the inlined function's own lines, and their caller's on the call site.
//!
//! The source text comes from outside: [`SourceFiles`] maps each file path frames name to
//! its lines or to why they are not shown (missing, changed since the process started,
//! refused). The exporters never read files: the caller (which knows the target's root and
//! its start time) reads them, so exporters stay pure and testable.

mod extent;
mod folded;
mod heatmap;
mod text;

use std::collections::{BTreeMap, HashMap, HashSet};

use sprof_core::{Frame, FrameKind, SymbolizedProfile};

use crate::{checked_stack, ExportError};

pub use extent::function_extent;
pub use folded::{frame_from_label, profile_from_stacks};
pub use heatmap::Heatmap;
pub use text::{AnnotatedSource, NameFilter};

/// A source file as read for a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceText {
    /// Its lines, without line ends (line 1 is `lines[0]`).
    Lines(Vec<String>),
    /// Why its lines are not shown: one line, e.g. `missing`, `changed since the process
    /// started`.
    Unavailable(String),
}

/// The source files of a profile, by the path frames name them with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceFiles {
    files: BTreeMap<String, SourceText>,
}

impl SourceFiles {
    pub fn new() -> SourceFiles {
        SourceFiles::default()
    }

    /// Sets what `path` reads as.
    pub fn insert(&mut self, path: impl Into<String>, text: SourceText) {
        self.files.insert(path.into(), text);
    }

    /// What `path` reads as; `None` when it was never looked up.
    pub fn get(&self, path: &str) -> Option<&SourceText> {
        self.files.get(path)
    }

    /// Line `line` (1-based) of `path`, when its text is known.
    pub fn line(&self, path: &str, line: u32) -> Option<&str> {
        match self.files.get(path)? {
            SourceText::Lines(lines) => lines
                .get((line as usize).checked_sub(1)?)
                .map(String::as_str),
            SourceText::Unavailable(_) => None,
        }
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// The files whose lines a profile's frames name (those [`line_profile`] would list), each
/// once, busiest first: what a caller should read into [`SourceFiles`].
pub fn profile_files(profile: &SymbolizedProfile) -> Vec<String> {
    let Ok(lp) = line_profile(profile) else {
        return Vec::new();
    };
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for f in &lp.functions {
        if seen.insert(f.file.as_str()) {
            out.push(f.file.clone());
        }
    }
    out
}

/// A sample count on the stack (`total`) and as the innermost frame (`self_`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub self_: u64,
}

/// One source line of a function: its counts, and who it was called by and calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineCounts {
    pub counts: Counts,
    /// Callees of this line (functions called from it): function index → weight.
    pub callees: BTreeMap<usize, u64>,
}

/// A function's samples, per line of its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionLines {
    pub function: String,
    /// The file whose lines are counted: the declaring file (`DW_AT_decl_file`), else that
    /// of the executing lines.
    pub file: String,
    pub module: Option<String>,
    pub kind: FrameKind,
    /// The function's first line, when known (`DW_AT_decl_line`, `co_firstlineno`).
    pub decl_line: Option<u32>,
    pub counts: Counts,
    /// Per line of [`Self::file`].
    pub lines: BTreeMap<u32, LineCounts>,
    /// Callers of the function: (function index, line) → weight.
    pub callers: BTreeMap<(usize, u32), u64>,
}

/// Samples per line of every function with line information.
#[derive(Debug, Clone, PartialEq)]
pub struct LineProfile {
    /// Weight of the whole profile (samples, or nanoseconds for time measures).
    pub total: u64,
    /// Hottest first (by total, then self, then name).
    pub functions: Vec<FunctionLines>,
}

/// The function a frame belongs to, when it has the line information to be listed.
fn function_key(frame: &Frame) -> Option<(&str, &str, Option<&str>)> {
    match frame.kind {
        FrameKind::Native | FrameKind::Inlined | FrameKind::Python | FrameKind::Kernel => {}
        FrameKind::Root | FrameKind::Jit | FrameKind::Marker | FrameKind::Unresolved => {
            return None
        }
    }
    frame.line?;
    let file = frame.decl_file.as_deref().or(frame.file.as_deref())?;
    Some((frame.function.as_str(), file, frame.module.as_deref()))
}

/// Each interned frame's function (index into the returned functions) and line in the
/// function's own file, or `None` for frames without line information.
type FrameFunctions = Vec<Option<(usize, Option<u32>)>>;

/// The functions of a profile's frames, each once, and which one each frame belongs to.
fn index_functions(profile: &SymbolizedProfile) -> (Vec<FunctionLines>, FrameFunctions) {
    let mut ids: HashMap<(&str, &str, Option<&str>), usize> = HashMap::new();
    let mut functions: Vec<FunctionLines> = Vec::new();
    let mut of_frame: FrameFunctions = Vec::with_capacity(profile.frames.len());
    for frame in &profile.frames {
        let Some(key) = function_key(frame) else {
            of_frame.push(None);
            continue;
        };
        let next = functions.len();
        let id = *ids.entry(key).or_insert_with(|| {
            functions.push(FunctionLines {
                function: key.0.to_string(),
                file: key.1.to_string(),
                module: key.2.map(str::to_string),
                kind: frame.kind,
                decl_line: frame.decl_line,
                counts: Counts::default(),
                lines: BTreeMap::new(),
                callers: BTreeMap::new(),
            });
            next
        });
        let f = &mut functions[id];
        if f.decl_line.is_none() {
            f.decl_line = frame.decl_line;
        }
        // A line of another file (a call site inlined from elsewhere) is not one of the
        // listed function's lines.
        let line = frame.line.filter(|_| frame.file.as_deref() == Some(key.1));
        of_frame.push(Some((id, line)));
    }
    (functions, of_frame)
}

/// Counts a profile's samples per function and line (see the module documentation).
pub fn line_profile(profile: &SymbolizedProfile) -> Result<LineProfile, ExportError> {
    let (mut functions, of_frame) = index_functions(profile);
    // Per stack, what was counted already: (function, line or u32::MAX for the function),
    // and the call edges (caller, its line, callee).
    let mut seen: HashSet<(usize, u32)> = HashSet::new();
    let mut seen_edges: HashSet<(usize, u32, usize)> = HashSet::new();
    let mut total = 0u64;
    for i in 0..profile.stacks.len() {
        let stack = checked_stack(profile, i)?;
        let w = profile.weight(stack);
        if w == 0 {
            continue;
        }
        total += w;
        seen.clear();
        seen_edges.clear();
        let mut caller: Option<(usize, u32)> = None;
        for &fi in &stack.frames {
            let Some((id, line)) = of_frame[fi as usize] else {
                continue;
            };
            if seen.insert((id, u32::MAX)) {
                functions[id].counts.total += w;
            }
            if let Some((cid, cline)) = caller {
                if seen_edges.insert((cid, cline, id)) {
                    let callees = &mut functions[cid].lines.entry(cline).or_default().callees;
                    *callees.entry(id).or_default() += w;
                    *functions[id].callers.entry((cid, cline)).or_default() += w;
                }
            }
            caller = line.map(|line| (id, line));
            if let Some(line) = line {
                if seen.insert((id, line)) {
                    functions[id].lines.entry(line).or_default().counts.total += w;
                }
            }
        }
        let leaf = stack.frames.last().and_then(|&f| of_frame[f as usize]);
        if let Some((id, line)) = leaf {
            functions[id].counts.self_ += w;
            if let Some(line) = line {
                functions[id].lines.entry(line).or_default().counts.self_ += w;
            }
        }
    }
    Ok(LineProfile {
        total,
        functions: hottest_first(functions),
    })
}

/// The functions with sampled lines, hottest first (total, then self, then name); indices
/// in callers and callees follow them to their new places.
fn hottest_first(functions: Vec<FunctionLines>) -> Vec<FunctionLines> {
    let mut order: Vec<usize> = (0..functions.len())
        .filter(|&i| !functions[i].lines.is_empty())
        .collect();
    order.sort_by(|&a, &b| {
        let (fa, fb) = (&functions[a], &functions[b]);
        fb.counts
            .total
            .cmp(&fa.counts.total)
            .then(fb.counts.self_.cmp(&fa.counts.self_))
            .then_with(|| fa.function.cmp(&fb.function))
            .then_with(|| fa.file.cmp(&fb.file))
    });
    let mut new_index = vec![usize::MAX; functions.len()];
    for (n, &old) in order.iter().enumerate() {
        new_index[old] = n;
    }
    let kept = |id: &usize| new_index[*id] != usize::MAX;
    let mut slots: Vec<Option<FunctionLines>> = functions.into_iter().map(Some).collect();
    order
        .iter()
        .filter_map(|&old| slots[old].take())
        .map(|mut f| {
            for lc in f.lines.values_mut() {
                lc.callees = std::mem::take(&mut lc.callees)
                    .into_iter()
                    .filter(|(id, _)| kept(id))
                    .map(|(id, w)| (new_index[id], w))
                    .collect();
            }
            f.callers = std::mem::take(&mut f.callers)
                .into_iter()
                .filter(|((id, _), _)| kept(id))
                .map(|((id, line), w)| ((new_index[id], line), w))
                .collect();
            f
        })
        .collect()
}

/// `part` of `whole` in percent (0 for an empty whole).
pub(crate) fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sprof_core::SampledStack;

    pub(crate) fn py(function: &str, file: &str, line: u32, decl: u32) -> Frame {
        Frame {
            function: function.into(),
            file: Some(file.into()),
            line: Some(line),
            decl_line: Some(decl),
            decl_file: Some(file.into()),
            module: None,
            kind: FrameKind::Python,
        }
    }

    /// `main` (lines 1-8 of app.py) calls `work` from line 3 (60 samples) and line 4 (40);
    /// `work` (lines 10-13) spends 50 on line 11 and 30 on 12 and calls `leaf` (line 20)
    /// from 13 (20 samples). Recursion: `rec` on its own stack twice.
    pub(crate) fn sample() -> SymbolizedProfile {
        let frames = vec![
            Frame::bare("app", FrameKind::Root),
            py("main", "/src/app.py", 3, 1),
            py("main", "/src/app.py", 4, 1),
            py("work", "/src/app.py", 11, 10),
            py("work", "/src/app.py", 12, 10),
            py("work", "/src/app.py", 13, 10),
            py("leaf", "/src/app.py", 20, 19),
            py("rec", "/src/app.py", 30, 29),
        ];
        sprof_testkit::profile(
            frames,
            &[
                (&[0, 1, 3], 30),
                (&[0, 1, 5, 6], 20),
                (&[0, 1, 4], 10),
                (&[0, 2, 4], 20),
                (&[0, 2], 20),
                (&[0, 7, 7], 5),
            ],
            1000,
        )
    }

    #[test]
    fn totals_self_and_lines() {
        let lp = line_profile(&sample()).unwrap();
        assert_eq!(lp.total, 105);
        let names: Vec<&str> = lp.functions.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(names, ["main", "work", "leaf", "rec"]);
        let main = &lp.functions[0];
        assert_eq!(
            main.counts,
            Counts {
                total: 100,
                self_: 20
            }
        );
        assert_eq!(
            main.lines[&3].counts,
            Counts {
                total: 60,
                self_: 0
            }
        );
        assert_eq!(
            main.lines[&4].counts,
            Counts {
                total: 40,
                self_: 20
            }
        );
        let work = &lp.functions[1];
        assert_eq!(
            work.counts,
            Counts {
                total: 80,
                self_: 60
            }
        );
        assert_eq!(work.lines[&11].counts.total, 30);
        assert_eq!(
            work.lines[&12].counts,
            Counts {
                total: 30,
                self_: 30
            }
        );
        assert_eq!(
            work.lines[&13].counts,
            Counts {
                total: 20,
                self_: 0
            }
        );
        // Callees of line 13: leaf (index 2); callers of work: main:3 and main:4.
        assert_eq!(work.lines[&13].callees, BTreeMap::from([(2, 20)]));
        assert_eq!(work.callers, BTreeMap::from([((0, 3), 60), ((0, 4), 20)]));
        // Recursion counts once per sample.
        let rec = &lp.functions[3];
        assert_eq!(rec.counts, Counts { total: 5, self_: 5 });
        assert_eq!(rec.lines[&30].counts, Counts { total: 5, self_: 5 });
    }

    #[test]
    fn time_measures_weigh_by_period_and_frames_without_lines_are_left_out() {
        let mut p = sample();
        p.meta.measure = sprof_core::Measure::Wall;
        p.frames.push(Frame::bare("_start", FrameKind::Native));
        p.stacks.push(SampledStack {
            frames: vec![0, 8],
            samples: 1,
            period: 7,
            thread: None,
        });
        let lp = line_profile(&p).unwrap();
        assert_eq!(lp.total, 105_007);
        assert_eq!(lp.functions[0].counts.total, 100_000);
        assert!(lp.functions.iter().all(|f| f.function != "_start"));
        assert_eq!(profile_files(&p), ["/src/app.py"]);
    }

    #[test]
    fn a_bad_frame_index_is_an_error() {
        let mut p = sample();
        p.stacks[0].frames.push(99);
        assert!(matches!(
            line_profile(&p),
            Err(ExportError::BadFrameIndex { .. })
        ));
    }
}
