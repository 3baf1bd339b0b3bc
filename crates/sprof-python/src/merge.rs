//! The merge rule of cpython-frames.md §7: splicing a thread's Python frames into its native
//! stack in place of the `_PyEval_EvalFrameDefault` activations that ran them.
//!
//! Pure and allocation-free apart from `out`; the engine owns what a native frame is (`N`) and
//! how it recognises an eval frame (`is_eval`, normally [`crate::PythonProcess::is_eval_address`]).
//!
//! # The rule, precisely
//!
//! Python frames (innermost first) are cut into **groups**, each ending at a frame with
//! [`PyFrame::entry`] set (or at the outermost frame). Every native eval frame stands for one
//! group. Eval frames and groups are matched **from the root**: the k-th eval frame counted
//! from the root is replaced by the k-th group counted from the root, its frames emitted
//! innermost first (the output is leaf-first like the input). Outer frames are matched first
//! because they are the least likely to have changed between the sample and the read.
//!
//! Mismatches are reported in [`MergeOutcome`] and in the output, never glued silently:
//!
//! * **more groups than eval frames** (the thread called deeper after the sample): the surplus
//!   *innermost* groups are dropped and one [`MergeMarker::StackAdvanced`] is emitted on the leaf
//!   side of the innermost matched group, i.e. between it and the native frames the innermost
//!   eval frame called. Nothing from the dropped groups is emitted.
//! * **more eval frames than groups** (the thread returned after the sample): each surplus
//!   *innermost* eval frame is replaced by one [`MergeMarker::FrameUnavailable`].
//! * **Python frames but no eval frame at all** (the native unwind stopped early): all native
//!   frames are emitted, then one [`MergeMarker::NoEvalFrame`], then every Python frame innermost
//!   first, so the Python frames sit at the **root** end of the stack (they are the callers of
//!   whatever native code the unwinder did see).
//! * no Python frames and no eval frame: the native stack unchanged (consistent).

use crate::PyFrame;

/// One frame of a merged, leaf-first stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Merged<N> {
    Native(N),
    Python(PyFrame),
    Marker(MergeMarker),
}

/// Why the merge could not pair every eval frame with a group; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MergeMarker {
    /// `[python: stack advanced]`: inner Python groups were dropped.
    StackAdvanced,
    /// `_PyEval_EvalFrameDefault [python frame unavailable]`.
    FrameUnavailable,
    /// Python frames were appended at the root end because no eval frame was unwound.
    NoEvalFrame,
}

/// What one merge did, for quality metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Every eval frame got exactly one group and every group an eval frame.
    pub consistent: bool,
    /// Native eval frames seen.
    pub eval_frames: usize,
    /// Python groups seen.
    pub python_groups: usize,
    /// Inner groups dropped under a [`MergeMarker::StackAdvanced`].
    pub dropped_groups: usize,
    /// Python frames in those dropped groups.
    pub dropped_frames: usize,
    /// Eval frames replaced by [`MergeMarker::FrameUnavailable`].
    pub unavailable_evals: usize,
    /// Python frames were appended under [`MergeMarker::NoEvalFrame`].
    pub no_eval_frame: bool,
}

/// Merges per the module docs. `out` is cleared first and receives the leaf-first result.
pub fn merge<N: Copy>(
    native_leaf_first: &[N],
    is_eval: impl Fn(&N) -> bool,
    python: &[PyFrame],
    out: &mut Vec<Merged<N>>,
) -> MergeOutcome {
    out.clear();
    let evals = native_leaf_first.iter().filter(|n| is_eval(n)).count();
    let groups = count_groups(python);
    let mut outcome = MergeOutcome {
        consistent: evals == groups,
        eval_frames: evals,
        python_groups: groups,
        ..MergeOutcome::default()
    };

    // Inner groups beyond what the native stack can hold: skip them up front.
    let surplus_groups = groups.saturating_sub(evals);
    let mut pos = 0;
    if evals > 0 {
        for _ in 0..surplus_groups {
            pos = group_end(python, pos);
        }
        outcome.dropped_groups = surplus_groups;
        outcome.dropped_frames = pos;
    }
    let mut unavailable_left = evals.saturating_sub(groups);
    outcome.unavailable_evals = unavailable_left;
    let mut advanced_marker_due = evals > 0 && surplus_groups > 0;

    for n in native_leaf_first {
        if !is_eval(n) {
            out.push(Merged::Native(*n));
            continue;
        }
        if unavailable_left > 0 {
            unavailable_left -= 1;
            out.push(Merged::Marker(MergeMarker::FrameUnavailable));
            continue;
        }
        if advanced_marker_due {
            advanced_marker_due = false;
            out.push(Merged::Marker(MergeMarker::StackAdvanced));
        }
        let end = group_end(python, pos);
        out.extend(python[pos..end].iter().copied().map(Merged::Python));
        pos = end;
    }

    if evals == 0 && groups > 0 {
        outcome.no_eval_frame = true;
        out.push(Merged::Marker(MergeMarker::NoEvalFrame));
        out.extend(python.iter().copied().map(Merged::Python));
    }
    outcome
}

/// Groups in `python`: runs closed by an entry frame, plus a trailing unclosed run (a chain
/// whose outermost frame lacks the flag, e.g. one cut at the depth cap).
fn count_groups(python: &[PyFrame]) -> usize {
    let closed = python.iter().filter(|f| f.entry).count();
    closed + usize::from(python.last().is_some_and(|f| !f.entry))
}

/// One past the last frame of the group starting at `start`.
fn group_end(python: &[PyFrame], start: usize) -> usize {
    match python[start..].iter().position(|f| f.entry) {
        Some(i) => start + i + 1,
        None => python.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CodeId;

    fn py(code: u32, entry: bool) -> PyFrame {
        PyFrame {
            addr: 0,
            code: CodeId(code),
            line: code,
            entry,
        }
    }

    /// Natives are symbol names; anything starting with the eval symbol (clones included) is eval.
    fn is_eval(n: &&str) -> bool {
        n.starts_with("_PyEval_EvalFrameDefault")
    }

    fn render(out: &[Merged<&str>]) -> Vec<String> {
        out.iter()
            .map(|m| match m {
                Merged::Native(n) => n.to_string(),
                Merged::Python(f) => format!("py{}", f.code.0),
                Merged::Marker(m) => format!("{m:?}"),
            })
            .collect()
    }

    const EVAL: &str = "_PyEval_EvalFrameDefault";

    /// Three activations: <module>(1) | call_from_c(2)->helper(3) | callback(4)->inner(5).
    fn three_groups() -> Vec<PyFrame> {
        vec![
            py(5, false),
            py(4, true),
            py(3, false),
            py(2, true),
            py(1, true),
        ]
    }

    #[test]
    fn consistent() {
        let natives = [
            "sleep",
            EVAL,
            "PyObject_Call",
            EVAL,
            "call_cb",
            EVAL,
            "main",
        ];
        let mut out = Vec::new();
        let o = merge(&natives, is_eval, &three_groups(), &mut out);
        assert!(o.consistent);
        assert_eq!((o.eval_frames, o.python_groups), (3, 3));
        assert_eq!(
            render(&out),
            [
                "sleep",
                "py5",
                "py4",
                "PyObject_Call",
                "py3",
                "py2",
                "call_cb",
                "py1",
                "main"
            ]
        );
    }

    #[test]
    fn thread_advanced_drops_inner_groups() {
        // The sample saw two activations; by the read the thread entered a third.
        let natives = ["PyObject_Call", EVAL, "call_cb", EVAL, "main"];
        let mut out = Vec::new();
        let o = merge(&natives, is_eval, &three_groups(), &mut out);
        assert!(!o.consistent);
        assert_eq!((o.dropped_groups, o.dropped_frames), (1, 2));
        assert_eq!(
            render(&out),
            [
                "PyObject_Call",
                "StackAdvanced",
                "py3",
                "py2",
                "call_cb",
                "py1",
                "main"
            ]
        );
    }

    #[test]
    fn thread_returned_marks_inner_evals() {
        let natives = ["x", EVAL, "y", EVAL, "z", EVAL, "w", EVAL, "main"];
        let mut out = Vec::new();
        let o = merge(&natives, is_eval, &three_groups(), &mut out);
        assert!(!o.consistent);
        assert_eq!(o.unavailable_evals, 1);
        assert_eq!(
            render(&out),
            [
                "x",
                "FrameUnavailable",
                "y",
                "py5",
                "py4",
                "z",
                "py3",
                "py2",
                "w",
                "py1",
                "main"
            ]
        );
    }

    #[test]
    fn no_eval_frame_appends_at_root_end() {
        let natives = ["read", "libc_start"];
        let mut out = Vec::new();
        let o = merge(&natives, is_eval, &three_groups(), &mut out);
        assert!(o.no_eval_frame && !o.consistent);
        assert_eq!(o.dropped_groups, 0);
        assert_eq!(
            render(&out),
            [
                "read",
                "libc_start",
                "NoEvalFrame",
                "py5",
                "py4",
                "py3",
                "py2",
                "py1"
            ]
        );
    }

    #[test]
    fn cold_clone_counts_as_eval() {
        let natives = [
            "_PyEval_EvalFrameDefault.cold",
            "PyObject_Call",
            EVAL,
            "main",
        ];
        let python = [py(3, true), py(2, false), py(1, true)];
        let mut out = Vec::new();
        let o = merge(&natives, is_eval, &python, &mut out);
        assert!(o.consistent);
        assert_eq!(render(&out), ["py3", "PyObject_Call", "py2", "py1", "main"]);
    }

    #[test]
    fn no_python_frames() {
        let mut out = Vec::new();
        let o = merge(&["a", "b"], is_eval, &[], &mut out);
        assert!(o.consistent);
        assert_eq!(render(&out), ["a", "b"]);
        let o = merge(&["a", EVAL, "b"], is_eval, &[], &mut out);
        assert!(!o.consistent);
        assert_eq!(render(&out), ["a", "FrameUnavailable", "b"]);
    }

    #[test]
    fn unclosed_outer_group() {
        // Chain cut at the depth cap: the outermost frame has no entry flag.
        let natives = [EVAL, "x", EVAL];
        let python = [py(3, true), py(2, false), py(1, false)];
        let mut out = Vec::new();
        let o = merge(&natives, is_eval, &python, &mut out);
        assert!(o.consistent);
        assert_eq!(render(&out), ["py3", "x", "py2", "py1"]);
    }
}
