//! Folded stacks read back into frames with lines, for `sprofd annotate` on a `.folded`
//! file written with `--by-line` (`function (PATH:LINE)` labels, see
//! [`crate::FoldedByLine`]).

use std::collections::HashMap;

use sprof_core::{Frame, FrameKind, SampledStack, SymbolizedProfile};

use crate::Stacks;

/// The frame a folded label stands for. Labels with a `(PATH:LINE)` tail get a file and a
/// line (a `.py` file makes a Python frame); the `_[i]`/`_[k]`/`_[j]` suffixes give the
/// kind; anything else is a frame without line information.
pub fn frame_from_label(label: &str) -> Frame {
    let (name, kind) = match label.len().checked_sub(4).map(|i| label.split_at(i)) {
        Some((name, "_[i]")) => (name, FrameKind::Inlined),
        Some((name, "_[k]")) => (name, FrameKind::Kernel),
        Some((name, "_[j]")) => (name, FrameKind::Jit),
        _ => (label, FrameKind::Native),
    };
    let parsed = name
        .strip_suffix(')')
        .and_then(|rest| rest.rsplit_once(" ("))
        .and_then(|(function, place)| {
            let (file, line) = place.rsplit_once(':')?;
            let line: u32 = line.parse().ok().filter(|&l| l > 0)?;
            (!file.is_empty() && !function.is_empty()).then_some((function, file, line))
        });
    match parsed {
        Some((function, file, line)) => {
            let python = kind == FrameKind::Native && file.ends_with(".py");
            Frame {
                function: function.to_string(),
                file: Some(file.to_string()),
                line: Some(line),
                decl_line: None,
                decl_file: python.then(|| file.to_string()),
                module: None,
                kind: if python { FrameKind::Python } else { kind },
            }
        }
        None => Frame::bare(name, kind),
    }
}

/// A profile of folded stacks (counts as samples), frames read by [`frame_from_label`].
pub fn profile_from_stacks(stacks: &Stacks) -> SymbolizedProfile {
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut frames: Vec<Frame> = Vec::new();
    let mut out = Vec::new();
    for (stack, count) in stacks.iter() {
        let mut chain = Vec::new();
        for label in stack.split(';') {
            let next = frames.len() as u32;
            let id = *ids.entry(label).or_insert_with(|| {
                frames.push(frame_from_label(label));
                next
            });
            chain.push(id);
        }
        out.push(SampledStack {
            frames: chain,
            samples: count,
            period: 0,
            thread: None,
        });
    }
    SymbolizedProfile {
        frames,
        stacks: out,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{line_label, Exporter, FoldedByLine};

    #[test]
    fn by_line_labels_read_back() {
        let mut f = Frame::bare("hot_inlined", FrameKind::Inlined);
        f.file = Some("/src/a b/inline.c".into());
        f.line = Some(12);
        assert_eq!(line_label(&f), "hot_inlined (/src/a b/inline.c:12)_[i]");
        let back = frame_from_label(&line_label(&f));
        assert_eq!(
            (
                back.function.as_str(),
                back.file.as_deref(),
                back.line,
                back.kind
            ),
            (
                "hot_inlined",
                Some("/src/a b/inline.c"),
                Some(12),
                FrameKind::Inlined
            )
        );
        let py = frame_from_label("Job.run (/app/x.py:40)");
        assert_eq!(py.kind, FrameKind::Python);
        assert_eq!(py.decl_file.as_deref(), Some("/app/x.py"));
        let bare = frame_from_label("main (not a place)");
        assert_eq!(
            (bare.function.as_str(), bare.line),
            ("main (not a place)", None)
        );
        assert_eq!(
            frame_from_label("do_syscall_64_[k]").kind,
            FrameKind::Kernel
        );
    }

    #[test]
    fn a_by_line_folded_profile_reads_back_with_its_lines() {
        let p = crate::lines::tests::sample();
        let mut text = Vec::new();
        FoldedByLine.export(&p, &mut text).unwrap();
        let back = profile_from_stacks(&Stacks::parse_folded(&text).unwrap());
        let (a, b) = (
            crate::line_profile(&p).unwrap(),
            crate::line_profile(&back).unwrap(),
        );
        assert_eq!(a.total, b.total);
        for (fa, fb) in a.functions.iter().zip(&b.functions) {
            assert_eq!(
                (&fa.function, &fa.file, fa.counts),
                (&fb.function, &fb.file, fb.counts)
            );
            let la: Vec<_> = fa.lines.iter().map(|(l, c)| (*l, c.counts)).collect();
            let lb: Vec<_> = fb.lines.iter().map(|(l, c)| (*l, c.counts)).collect();
            assert_eq!(la, lb);
        }
    }
}
