//! Drawing helpers of the timeline chart: linear scales, round axis ticks, XML-safe text.

use std::fmt::Write as _;

use crate::label::printable;
use crate::svg::escape_xml;

/// Maps a data interval onto a pixel interval.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scale {
    pub d0: f64,
    pub d1: f64,
    pub r0: f64,
    pub r1: f64,
}

impl Scale {
    pub fn at(&self, v: f64) -> f64 {
        let span = self.d1 - self.d0;
        let f = if span > 0.0 {
            (v - self.d0) / span
        } else {
            0.0
        };
        self.r0 + f.clamp(0.0, 1.0) * (self.r1 - self.r0)
    }
}

/// A round step (1, 2 or 5 times a power of ten) that cuts `0..max` into at most about
/// `count` intervals, and the multiple of it at or above `max`.
pub(crate) fn nice_ticks(max: f64, count: u32) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / f64::from(count.max(1));
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * mag);
    (step, (max / step - 1e-9).ceil().max(1.0) * step)
}

/// `v` with as many decimals as `step` needs (a step of 0.25 wants two).
pub(crate) fn fmt_tick(v: f64, step: f64) -> String {
    let decimals = (-(step.log10().floor())).clamp(0.0, 6.0) as usize;
    let decimals = if step * 10f64.powi(decimals as i32) % 1.0 > 1e-6 {
        decimals + 1
    } else {
        decimals
    };
    format!("{v:.decimals$}")
}

/// Bytes as MiB, with one decimal (three under 1 MiB).
pub(crate) fn mib(bytes: u64) -> String {
    let v = bytes as f64 / (1u64 << 20) as f64;
    if v < 1.0 && bytes > 0 {
        format!("{v:.3}")
    } else {
        format!("{v:.1}")
    }
}

/// Text from the profiled processes (names, command lines), made safe for XML: cut to
/// `max_chars`, control characters as spaces, characters XML 1.0 forbids (U+FFFE, U+FFFF) as
/// U+FFFD, and `&<>"` escaped.
pub(crate) fn xml_text(s: &str, max_chars: usize) -> String {
    let mut cut: String = printable(s)
        .chars()
        .take(max_chars)
        .map(|c| match c {
            '\u{FFFE}' | '\u{FFFF}' => '\u{FFFD}',
            c => c,
        })
        .collect();
    if s.chars().nth(max_chars).is_some() {
        cut.push('…');
    }
    escape_xml(&cut)
}

/// An SVG `points` list.
pub(crate) fn points(xy: impl IntoIterator<Item = (f64, f64)>) -> String {
    let mut out = String::new();
    for (x, y) in xy {
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "{x:.1},{y:.1}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        assert_eq!(nice_ticks(200.4, 5), (50.0, 250.0));
        assert_eq!(nice_ticks(100.0, 4), (50.0, 100.0));
        assert_eq!(nice_ticks(3.2, 8), (0.5, 3.5));
        assert_eq!(nice_ticks(0.0, 5), (0.2, 1.0));
        assert_eq!(nice_ticks(f64::NAN, 5), (0.2, 1.0));
        assert_eq!(fmt_tick(2.5, 0.5), "2.5");
        assert_eq!(fmt_tick(150.0, 50.0), "150");
        assert_eq!(fmt_tick(0.25, 0.25), "0.25");
    }

    #[test]
    fn text_from_processes_is_safe_xml() {
        assert_eq!(
            xml_text("a<b>&\"c\x1b[2J\u{FFFF}", 80),
            "a&lt;b&gt;&amp;&quot;c [2J\u{FFFD}"
        );
        assert_eq!(xml_text("abcdef", 3), "abc…");
    }

    #[test]
    fn scales_clamp_and_survive_an_empty_domain() {
        let s = Scale {
            d0: 0.0,
            d1: 10.0,
            r0: 100.0,
            r1: 200.0,
        };
        assert_eq!(s.at(5.0), 150.0);
        assert_eq!(s.at(20.0), 200.0);
        let flat = Scale { d1: 0.0, ..s };
        assert_eq!(flat.at(3.0), 100.0);
    }
}
