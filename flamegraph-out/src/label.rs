//! Frame names as folded stacks and flame graphs show them.

use std::borrow::Cow;

use sprof_core::{Frame, FrameKind};

/// Longest function name kept in a label, in characters (the suffix comes on top).
pub const MAX_LABEL_CHARS: usize = 1024;

/// `s` with every control character (C0, DEL, C1: ESC, BEL, newlines...) replaced by a
/// space: the one rule of every exporter for text that comes from the profiled processes
/// (names, command lines) or from requests. Raw, such bytes end lines in folded and txt, are
/// not allowed in XML, and reach the terminal of whoever prints pprof labels or JSON values
/// (`\x1b]2;...` retitles it). Borrows when there is nothing to replace.
pub fn printable(s: &str) -> Cow<'_, str> {
    if s.contains(char::is_control) {
        Cow::Owned(s.replace(char::is_control, " "))
    } else {
        Cow::Borrowed(s)
    }
}

/// The name of `frame` in folded stacks and flame graphs.
///
/// The function name with `;` replaced by `:` (it separates frames) and control characters,
/// newlines first of all, replaced by spaces (they would end the line or break the SVG), cut
/// to [`MAX_LABEL_CHARS`] characters, then `_[k]` appended for kernel frames, `_[i]` for
/// inlined ones and `_[j]` for JIT code (inferno strips these for display and uses them for colour). Root, marker,
/// unresolved and native frames are the plain name. An empty name becomes `[unknown]`.
///
/// Python frames read `qualname (file.py:line)`, with the file's base name, as py-spy
/// labels them.
///
/// Borrows when nothing needs changing, which is the common case.
pub fn frame_label(frame: &Frame) -> Cow<'_, str> {
    let suffix = match frame.kind {
        FrameKind::Kernel => "_[k]",
        FrameKind::Inlined => "_[i]",
        FrameKind::Jit => "_[j]",
        FrameKind::Root | FrameKind::Native | FrameKind::Marker | FrameKind::Unresolved => "",
        FrameKind::Python => return python_label(frame),
    };
    let name = frame.function.as_str();
    if name.is_empty() {
        return Cow::Owned(format!("[unknown]{suffix}"));
    }
    let clean = |c: char| c != ';' && !c.is_control();
    // A byte length within the cap means a char count within it too.
    if suffix.is_empty() && name.len() <= MAX_LABEL_CHARS && name.chars().all(clean) {
        return Cow::Borrowed(name);
    }
    let mut label = String::with_capacity(name.len().min(4 * MAX_LABEL_CHARS) + suffix.len());
    label.extend(name.chars().take(MAX_LABEL_CHARS).map(|c| match c {
        ';' => ':',
        c if c.is_control() => ' ',
        c => c,
    }));
    label.push_str(suffix);
    Cow::Owned(label)
}

fn python_label(frame: &Frame) -> Cow<'_, str> {
    if frame.file.as_deref() == Some("") {
        // Not code: a frame naming what runs below it (`[task NAME]` of an asyncio task).
        let named = Frame::bare(&frame.function, FrameKind::Native);
        return Cow::Owned(frame_label(&named).into_owned());
    }
    let file = frame.file.as_deref().unwrap_or("?");
    let base = file.rsplit('/').next().unwrap_or(file);
    let named = Frame {
        function: match frame.line {
            Some(line) => format!("{} ({base}:{line})", frame.function),
            None => format!("{} ({base})", frame.function),
        },
        kind: FrameKind::Native,
        ..Frame::bare("", FrameKind::Native)
    };
    Cow::Owned(frame_label(&named).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_borrowed() {
        let f = Frame::bare("main", FrameKind::Native);
        assert!(matches!(frame_label(&f), Cow::Borrowed("main")));
        let f = Frame::bare("x ; y", FrameKind::Native);
        assert!(matches!(frame_label(&f), Cow::Owned(_)));
        for kind in [FrameKind::Root, FrameKind::Marker, FrameKind::Unresolved] {
            assert_eq!(
                frame_label(&Frame::bare("[truncated]", kind)),
                "[truncated]"
            );
        }
    }

    #[test]
    fn suffixes_and_replacements() {
        assert_eq!(
            frame_label(&Frame::bare("do_syscall_64", FrameKind::Kernel)),
            "do_syscall_64_[k]"
        );
        assert_eq!(
            frame_label(&Frame::bare("memcpy", FrameKind::Inlined)),
            "memcpy_[i]"
        );
        assert_eq!(
            frame_label(&Frame::bare("<[u8; 8] as Debug>::fmt", FrameKind::Native)),
            "<[u8: 8] as Debug>::fmt"
        );
        assert_eq!(
            frame_label(&Frame::bare("a\nb\r\tc", FrameKind::Native)),
            "a b  c"
        );
        assert_eq!(
            frame_label(&Frame::bare("", FrameKind::Native)),
            "[unknown]"
        );
    }

    #[test]
    fn python_frames_show_file_and_line() {
        let mut f = Frame::bare("Handler.get", FrameKind::Python);
        f.file = Some("/srv/app/handler.py".into());
        f.line = Some(42);
        assert_eq!(frame_label(&f), "Handler.get (handler.py:42)");
        f.line = None;
        assert_eq!(frame_label(&f), "Handler.get (handler.py)");
    }

    #[test]
    fn long_names_are_capped_in_chars() {
        let long = "é".repeat(MAX_LABEL_CHARS + 10);
        let frame = Frame::bare(long.as_str(), FrameKind::Kernel);
        let label = frame_label(&frame);
        assert_eq!(label.chars().count(), MAX_LABEL_CHARS + 4);
        assert!(label.ends_with("é_[k]"));
        let exact = "x".repeat(MAX_LABEL_CHARS);
        let frame = Frame::bare(exact.as_str(), FrameKind::Native);
        assert!(matches!(frame_label(&frame), Cow::Borrowed(_)));
    }
}
