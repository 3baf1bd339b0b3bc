//! Folded ("collapsed") stacks.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{BufWriter, Write};

use sprof_core::{Frame, FrameKind, SymbolizedProfile};

use crate::{checked_stack, frame_label, ExportError, Exporter};

/// Folded stacks: `root;caller;leaf COUNT`, one line per unique label sequence.
#[derive(Debug, Clone, Copy, Default)]
pub struct Folded;

/// Folded stacks whose frames carry their source line (`--by-line`): every frame with a
/// file and a line reads `function (PATH:LINE)`, the whole path as symbolization found it,
/// so that `sprofd annotate` can read the lines back and find the file.
#[derive(Debug, Clone, Copy, Default)]
pub struct FoldedByLine;

impl Exporter for Folded {
    fn export(&self, profile: &SymbolizedProfile, out: &mut dyn Write) -> Result<(), ExportError> {
        write_lines(&folded_lines(profile)?, out)
    }
}

impl Exporter for FoldedByLine {
    fn export(&self, profile: &SymbolizedProfile, out: &mut dyn Write) -> Result<(), ExportError> {
        write_lines(&folded_lines_with(profile, line_label)?, out)
    }
}

/// A frame's label with its line: `function (PATH:LINE)` plus the kind suffix.
pub fn line_label(frame: &Frame) -> Cow<'_, str> {
    let (Some(file), Some(line)) = (frame.file.as_deref(), frame.line) else {
        return frame_label(frame);
    };
    let named = Frame {
        function: format!("{} ({file}:{line})", frame.function),
        file: None,
        line: None,
        kind: if frame.kind == FrameKind::Python {
            FrameKind::Native
        } else {
            frame.kind
        },
        ..Frame::bare("", FrameKind::Native)
    };
    Cow::Owned(frame_label(&named).into_owned())
}

fn write_lines(lines: &[String], out: &mut dyn Write) -> Result<(), ExportError> {
    let mut w = BufWriter::new(out);
    for line in lines {
        w.write_all(line.as_bytes())?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}

/// The folded lines of `profile` (no trailing newlines), sorted bytewise as inferno requires.
///
/// Frames are named by [`frame_label`], root first; stacks whose label sequences are equal
/// (for example two frames differing only in line number) are merged, their counts summed.
/// Counts are samples for CPU profiles and microseconds for wall-clock and off-CPU profiles
/// ([`sprof_core::Measure`]), where a sample stands for a measured duration, and bytes for
/// memory profiles. Stacks with no
/// frames or no count produce no line.
pub fn folded_lines(profile: &SymbolizedProfile) -> Result<Vec<String>, ExportError> {
    folded_lines_with(profile, frame_label)
}

/// [`folded_lines`] with frames named by `label`.
pub fn folded_lines_with<'p>(
    profile: &'p SymbolizedProfile,
    label: fn(&'p Frame) -> Cow<'p, str>,
) -> Result<Vec<String>, ExportError> {
    // One label per interned frame, not one per frame per stack.
    let labels: Vec<Cow<'_, str>> = profile.frames.iter().map(label).collect();
    let mut merged: HashMap<String, u64> = HashMap::with_capacity(profile.stacks.len());
    let mut key = String::new();
    for i in 0..profile.stacks.len() {
        let stack = checked_stack(profile, i)?;
        let count = profile.weight(stack);
        if count == 0 || stack.frames.is_empty() {
            continue;
        }
        key.clear();
        for (n, &f) in stack.frames.iter().enumerate() {
            if n > 0 {
                key.push(';');
            }
            key.push_str(&labels[f as usize]);
        }
        match merged.get_mut(key.as_str()) {
            Some(c) => *c += count,
            None => {
                merged.insert(key.clone(), count);
            }
        }
    }
    let time = profile.meta.measure.is_time();
    let mut lines: Vec<String> = merged
        .into_iter()
        // Nanoseconds are summed per line, then shown as microseconds.
        .map(|(stack, count)| (stack, if time { count.div_ceil(1000) } else { count }))
        .map(|(mut stack, count)| {
            stack.push(' ');
            stack.push_str(&count.to_string());
            stack
        })
        .collect();
    // Whole lines, bytewise: that is the order inferno and `sort` agree on.
    lines.sort_unstable();
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sprof_core::{Frame, FrameKind};

    fn profile(frames: Vec<Frame>, stacks: &[(&[u32], u64)]) -> SymbolizedProfile {
        sprof_testkit::profile(frames, stacks, 10)
    }

    #[test]
    fn equal_labels_merge_and_lines_sort() {
        let mut a2 = Frame::bare("a", FrameKind::Native);
        a2.line = Some(7);
        let p = profile(
            vec![
                Frame::bare("p", FrameKind::Root),
                Frame::bare("a", FrameKind::Native),
                a2,
                Frame::bare("a 1", FrameKind::Native),
                Frame::bare("x", FrameKind::Native),
            ],
            &[
                (&[0, 1], 2),
                (&[0, 4], 1),
                (&[0, 2], 3),
                (&[0, 3], 1),
                (&[0, 1, 4], 0),
                (&[], 4),
            ],
        );
        assert_eq!(folded_lines(&p).unwrap(), ["p;a 1 1", "p;a 5", "p;x 1"]);
    }

    #[test]
    fn bad_frame_index_is_an_error() {
        let p = profile(vec![Frame::bare("p", FrameKind::Root)], &[(&[0, 3], 1)]);
        assert!(matches!(
            folded_lines(&p),
            Err(ExportError::BadFrameIndex {
                stack: 0,
                frame: 3,
                frames: 1
            })
        ));
    }

    #[test]
    fn time_profiles_count_microseconds() {
        let mut p = profile(
            vec![
                Frame::bare("p", FrameKind::Root),
                Frame::bare("sleep", FrameKind::Native),
            ],
            &[(&[0, 1], 1)],
        );
        p.stacks[0].period = 2_500_000_001;
        assert_eq!(folded_lines(&p).unwrap(), vec!["p;sleep 1".to_string()]);
        p.meta.measure = sprof_core::Measure::OffCpu;
        assert_eq!(
            folded_lines(&p).unwrap(),
            vec!["p;sleep 2500001".to_string()]
        );
    }
}
