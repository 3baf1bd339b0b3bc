//! Interactive flame graph SVG, drawn by inferno from the folded lines.

use std::io::{self, BufWriter, Write};

use inferno::flamegraph::{self, Options};
use sprof_core::{ProfileMeta, SymbolizedProfile};

use crate::{folded_lines, ExportError, Exporter};

/// An interactive flame graph (inferno's search and zoom JavaScript included).
///
/// `title: None` uses `meta.target` (inferno's "Flame Graph" when that is empty);
/// `subtitle: None` uses [`default_subtitle`], `Some("")` means no subtitle.
/// Colours are chosen by hashing the function name, so the same profile gives the same SVG.
#[derive(Debug, Clone, Default)]
pub struct Svg {
    pub title: Option<String>,
    pub subtitle: Option<String>,
}

impl Svg {
    fn title(&self, meta: &ProfileMeta) -> String {
        let title = self.title.as_deref().unwrap_or(&meta.target);
        if title.is_empty() {
            flamegraph::defaults::TITLE.to_string()
        } else {
            sanitize(title)
        }
    }

    fn subtitle(&self, meta: &ProfileMeta) -> Option<String> {
        match &self.subtitle {
            Some(s) if s.is_empty() => None,
            Some(s) => Some(sanitize(s)),
            None => Some(sanitize(&default_subtitle(meta))),
        }
    }
}

impl Exporter for Svg {
    fn export(&self, profile: &SymbolizedProfile, out: &mut dyn Write) -> Result<(), ExportError> {
        let lines = folded_lines(profile)?;
        let mut opt = Options::default();
        opt.title = self.title(&profile.meta);
        opt.subtitle = self.subtitle(&profile.meta);
        opt.count_name = match profile.meta.measure.unit() {
            sprof_core::Unit::Samples => "samples",
            sprof_core::Unit::Nanoseconds => "µs",
            sprof_core::Unit::Bytes => "bytes",
        }
        .to_string();
        opt.hash = true;
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        draw(&mut opt, &lines, "No samples recorded.", out)
    }
}

/// Draws `lines` with inferno and `opt` into `out`; with no lines, a small SVG with the
/// title, subtitle and `empty_note` instead.
///
/// Shared by the profile flame graph and `sprofd diff`'s differential one, so both tell a
/// failing output (an [`ExportError::Io`]) from inferno rejecting its input.
pub(crate) fn draw(
    opt: &mut Options<'_>,
    lines: &[&str],
    empty_note: &str,
    out: &mut dyn Write,
) -> Result<(), ExportError> {
    let mut tracked = TrackedWriter {
        inner: out,
        error: None,
    };
    let result = {
        let mut w = BufWriter::new(&mut tracked);
        let written = if lines.is_empty() {
            // inferno answers an error (and an "ERROR" picture) for no input; an empty
            // profile is a normal outcome, so it gets a note instead.
            write_empty(&mut w, &opt.title, opt.subtitle.as_deref(), empty_note)
        } else {
            flamegraph::from_lines(opt, lines.iter().copied(), &mut w)
        };
        written.and_then(|()| w.flush())
    };
    // An error from `out` itself is an I/O error whatever inferno made of it.
    if let Some(e) = tracked.error.take() {
        return Err(ExportError::Io(e));
    }
    result.map_err(|e| ExportError::Flamegraph(e.to_string()))
}

/// The flame graph subtitle for `meta`, e.g.
/// `2.00 s at 99 Hz (cpu-clock) · 198 samples · 0 lost`, followed when nonzero by
/// `· 5 truncated stacks (2.5%)` and `· N throttled`; lost samples show their share too:
/// `· 3 lost (1.5%)` (of samples + lost), truncated stacks of samples.
pub fn default_subtitle(meta: &ProfileMeta) -> String {
    let s = &meta.stats;
    let mut out = format!("{:.2} s", meta.duration_secs);
    if meta.frequency > 0 {
        out += &format!(" at {} Hz", meta.frequency);
    }
    if !meta.event.is_empty() {
        out += &format!(" ({})", meta.event);
    }
    out += &format!(" · {} samples", s.samples);
    if meta.measure != sprof_core::Measure::Cpu {
        out += &format!(" · {}", meta.measure.describe());
    }
    if s.lost == 0 {
        out += " · 0 lost";
    } else {
        out += &format!(
            " · {} lost ({:.1}%)",
            s.lost,
            percent(s.lost, s.samples + s.lost)
        );
    }
    if s.truncated > 0 {
        out += &format!(
            " · {} truncated stacks ({:.1}%)",
            s.truncated,
            percent(s.truncated, s.samples)
        );
    }
    if s.throttled > 0 {
        out += &format!(" · {} throttled", s.throttled);
    }
    out
}

/// `part` as a percentage of `whole` (0 when `whole` is 0).
pub(crate) fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Control characters are not allowed in XML text; replace them with spaces.
pub(crate) fn sanitize(s: &str) -> String {
    crate::label::printable(s).into_owned()
}

/// `s` with `&`, `<`, `>` and `"` escaped, for XML and HTML text and double-quoted attributes.
pub fn escape_xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// A small SVG for a profile with no samples: title, subtitle and a note.
pub(crate) fn write_empty(
    w: &mut dyn Write,
    title: &str,
    subtitle: Option<&str>,
    note: &str,
) -> io::Result<()> {
    const TEXT: &str = r#"text-anchor="middle" font-family="Verdana" fill="rgb(0,0,0)""#;
    write!(
        w,
        concat!(
            r#"<?xml version="1.0" standalone="no"?>"#,
            "\n",
            r#"<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">"#,
            "\n",
            r#"<svg version="1.1" width="1200" height="110" viewBox="0 0 1200 110" xmlns="http://www.w3.org/2000/svg">"#,
            "\n",
            r#"<rect x="0" y="0" width="100%" height="100%" fill="rgb(238,238,238)"/>"#,
            "\n",
            r#"<text x="50%" y="24" font-size="17" {text}>{title}</text>"#,
            "\n",
        ),
        text = TEXT,
        title = escape_xml(title)
    )?;
    if let Some(subtitle) = subtitle {
        writeln!(
            w,
            r#"<text x="50%" y="48" font-size="12" {TEXT}>{}</text>"#,
            escape_xml(subtitle)
        )?;
    }
    writeln!(
        w,
        r#"<text x="50%" y="80" font-size="14" {TEXT}>{}</text>"#,
        escape_xml(note)
    )?;
    writeln!(w, "</svg>")
}

/// Passes writes to `inner`, keeping the first error it returns, so that a failing output can
/// be told apart from inferno rejecting its input.
struct TrackedWriter<'a> {
    inner: &'a mut dyn Write,
    error: Option<io::Error>,
}

impl TrackedWriter<'_> {
    fn track<T>(&mut self, r: io::Result<T>) -> io::Result<T> {
        r.map_err(|e| {
            let copy = io::Error::new(e.kind(), e.to_string());
            self.error.get_or_insert(e);
            copy
        })
    }
}

impl Write for TrackedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.inner.write(buf);
        self.track(r)
    }

    fn flush(&mut self) -> io::Result<()> {
        let r = self.inner.flush();
        self.track(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sprof_core::SessionStats;

    fn meta(stats: SessionStats) -> ProfileMeta {
        ProfileMeta {
            target: "sprofd: ./cratio (pid 4242)".into(),
            pid: Some(4242),
            duration_secs: 2.0,
            frequency: 99,
            event: "cpu-clock".into(),
            stats,
            notes: Vec::new(),
            measure: Default::default(),
            resources: Default::default(),
        }
    }

    #[test]
    fn subtitle_plain() {
        let m = meta(SessionStats {
            samples: 198,
            ..Default::default()
        });
        assert_eq!(
            default_subtitle(&m),
            "2.00 s at 99 Hz (cpu-clock) · 198 samples · 0 lost"
        );
    }

    #[test]
    fn subtitle_with_losses() {
        let m = meta(SessionStats {
            samples: 197,
            lost: 3,
            truncated: 5,
            throttled: 2,
            jit: 0,
            over_limit: 0,
        });
        assert_eq!(
            default_subtitle(&m),
            "2.00 s at 99 Hz (cpu-clock) · 197 samples · 3 lost (1.5%) \
             · 5 truncated stacks (2.5%) · 2 throttled"
        );
    }

    #[test]
    fn title_and_subtitle_choices() {
        let m = meta(SessionStats::default());
        let svg = Svg::default();
        assert_eq!(svg.title(&m), "sprofd: ./cratio (pid 4242)");
        assert_eq!(svg.title(&ProfileMeta::default()), "Flame Graph");
        let custom = Svg {
            title: Some("t\nx".into()),
            subtitle: Some(String::new()),
        };
        assert_eq!(custom.title(&m), "t x");
        assert_eq!(custom.subtitle(&m), None);
    }
}
