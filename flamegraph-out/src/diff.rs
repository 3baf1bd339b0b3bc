//! `sprofd diff`: two profiles compared stack by stack.
//!
//! Owns reading the stacks of a profile file sprofd wrote ([`read_stacks`]: `.folded`
//! lines, or a pprof profile through [`read_pprof`] and [`folded_lines`]), the differential
//! folded lines (`stack before after`, made by inferno's `differential`), the differential
//! flame graph drawn from them, and the table of the functions whose share of the samples
//! changed most.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use inferno::flamegraph::Options;
use sprof_core::{SymbolizedProfile, Unit};

use crate::svg::{draw, percent, sanitize};
use crate::{folded_lines, read_pprof, ExportError, OutputFormat, PprofReadError};

/// The stacks of one profile: folded stacks with their sample counts, equal stacks merged,
/// sorted bytewise by stack, no zero counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stacks {
    stacks: Vec<(String, u64)>,
    total: u64,
    /// What the counts are: a pprof profile says (bytes of a memory profile); folded text
    /// does not, and counts as samples.
    unit: Unit,
}

/// A line of folded text that is not `stack count`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct FoldedLineError {
    /// 1-based line number.
    pub line: usize,
    pub reason: &'static str,
}

/// Why the stacks of a profile file could not be read. Every message starts with the file.
#[derive(Debug, thiserror::Error)]
pub enum ReadStacksError {
    /// The file name ends in no format holding stacks that sprofd reads back.
    #[error("{}: not a profile sprofd diff reads (use .folded, .pb.gz or .pprof)", .0.display())]
    UnknownFormat(PathBuf),
    #[error("{}: cannot read: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not folded stacks: {source}", .path.display())]
    Folded {
        path: PathBuf,
        source: FoldedLineError,
    },
    #[error("{}: {source}", .path.display())]
    Pprof {
        path: PathBuf,
        source: PprofReadError,
    },
    /// The pprof profile decoded but its stacks could not be folded.
    #[error("{}: {source}", .path.display())]
    Frames { path: PathBuf, source: ExportError },
}

impl Stacks {
    /// Parses folded text: one `stack count` per line, frames separated by `;`, the count a
    /// whole number after the last space. Blank lines are skipped and zero counts dropped;
    /// anything else that is not such a line (no count, a fractional or negative count, an
    /// empty stack or frame, bytes that are not UTF-8) is an error naming the line.
    pub fn parse_folded(text: &[u8]) -> Result<Stacks, FoldedLineError> {
        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut total = 0u64;
        for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
            let bad = |reason| FoldedLineError {
                line: i + 1,
                reason,
            };
            let line = std::str::from_utf8(raw).map_err(|_| bad("not UTF-8 text"))?;
            let line = line.trim_end();
            if line.trim_start().is_empty() {
                continue;
            }
            let (stack, count) = line
                .rsplit_once(' ')
                .ok_or_else(|| bad("no sample count (expected `stack count`)"))?;
            let count: u64 = count
                .parse()
                .map_err(|_| bad("the sample count is not a whole number"))?;
            let stack = stack.trim_end();
            if stack.is_empty() {
                return Err(bad("no stack before the sample count"));
            }
            if stack.split(';').any(str::is_empty) {
                return Err(bad("empty frame in the stack"));
            }
            // Every stack's count is at most the total, so checking the total is enough.
            total = total
                .checked_add(count)
                .ok_or_else(|| bad("the sample counts add up to more than 2^64"))?;
            if count > 0 {
                *counts.entry(stack.to_owned()).or_default() += count;
            }
        }
        Ok(Stacks::from_counts(counts))
    }

    /// The folded stacks of a profile, as [`folded_lines`] names them.
    pub fn from_profile(profile: &SymbolizedProfile) -> Result<Stacks, ExportError> {
        let mut counts: HashMap<String, u64> = HashMap::new();
        for line in folded_lines(profile)? {
            // folded_lines ends each line in ` COUNT`; split there rather than re-parse.
            if let Some((stack, count)) = line.rsplit_once(' ') {
                let count: u64 = count.parse().unwrap_or(0);
                let slot = counts.entry(stack.to_owned()).or_default();
                *slot = slot.saturating_add(count);
            }
        }
        Ok(Stacks {
            unit: profile.meta.measure.unit(),
            ..Stacks::from_counts(counts)
        })
    }

    fn from_counts(counts: HashMap<String, u64>) -> Stacks {
        let mut stacks: Vec<(String, u64)> = counts.into_iter().filter(|&(_, n)| n > 0).collect();
        stacks.sort_unstable();
        let total = stacks
            .iter()
            .fold(0u64, |sum, &(_, n)| sum.saturating_add(n));
        Stacks {
            stacks,
            total,
            unit: Unit::Samples,
        }
    }

    /// Total samples.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// `(stack, count)` pairs, sorted by stack.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.stacks.iter().map(|(s, n)| (s.as_str(), *n))
    }

    /// The folded text, one `stack count` line each.
    fn folded_text(&self) -> Vec<u8> {
        let mut text = Vec::new();
        for (stack, n) in self.iter() {
            text.extend_from_slice(format!("{stack} {n}\n").as_bytes());
        }
        text
    }
}

/// Reads the stacks of a profile file, its format chosen by its name as for sprofd's
/// outputs: `.folded` text, or `.pb.gz`/`.pprof` (gzipped or not) through [`read_pprof`].
pub fn read_stacks(path: &Path) -> Result<Stacks, ReadStacksError> {
    let format = OutputFormat::from_path(path);
    if !matches!(format, Some(OutputFormat::Folded | OutputFormat::Pprof)) {
        return Err(ReadStacksError::UnknownFormat(path.to_path_buf()));
    }
    let bytes = std::fs::read(path).map_err(|source| ReadStacksError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if format == Some(OutputFormat::Folded) {
        return Stacks::parse_folded(&bytes).map_err(|source| ReadStacksError::Folded {
            path: path.to_path_buf(),
            source,
        });
    }
    let profile = read_pprof(&bytes).map_err(|source| ReadStacksError::Pprof {
        path: path.to_path_buf(),
        source,
    })?;
    Stacks::from_profile(&profile).map_err(|source| ReadStacksError::Frames {
        path: path.to_path_buf(),
        source,
    })
}

/// One differential folded line: a stack and its sample counts before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffLine {
    pub stack: String,
    /// Samples before, scaled to the after total when normalized.
    pub before: u64,
    pub after: u64,
}

/// A function whose share of the samples changed, in the diff table.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The frame's folded label.
    pub name: String,
    /// Total share before: samples with the function anywhere on the stack, each sample
    /// once, over all samples, × 100.
    pub before_pct: f64,
    pub after_pct: f64,
    /// `after_pct - before_pct`, in percentage points.
    pub delta: f64,
}

/// Two profiles compared: the differential lines and the functions' changes.
#[derive(Debug, Clone)]
pub struct Differential {
    /// Every stack of either profile, sorted by stack.
    pub lines: Vec<DiffLine>,
    /// Samples before, as read (not normalized).
    pub before_total: u64,
    pub after_total: u64,
    /// What both profiles count (samples when they differ or are unknown).
    pub unit: Unit,
    /// Whether `before` counts were scaled to the after total.
    pub normalized: bool,
    /// Every function, sorted by |delta| (largest first), then name.
    pub changes: Vec<Change>,
}

impl Differential {
    /// Compares `before` with `after`. With `normalize`, the before counts are scaled to the
    /// after total (rounded down, as inferno's `differential --normalize` does), so profiles of
    /// different lengths show relative changes; the table's shares do not depend on it.
    pub fn new(
        before: &Stacks,
        after: &Stacks,
        normalize: bool,
    ) -> Result<Differential, ExportError> {
        let options = inferno::differential::Options {
            normalize,
            strip_hex: false,
        };
        let mut out = Vec::new();
        inferno::differential::from_readers(
            options,
            before.folded_text().as_slice(),
            after.folded_text().as_slice(),
            &mut out,
        )?;
        let mut lines = parse_diff_lines(&out)?;
        // inferno writes in hash order; the flame graph needs lines sorted by stack.
        lines.sort_unstable_by(|a, b| a.stack.cmp(&b.stack));
        Ok(Differential {
            lines,
            before_total: before.total(),
            after_total: after.total(),
            unit: if before.unit == after.unit {
                after.unit
            } else {
                Unit::Samples
            },
            normalized: normalize,
            changes: changes(before, after),
        })
    }

    /// Writes the differential folded lines, `stack before after`.
    pub fn write_folded(&self, out: &mut dyn Write) -> Result<(), ExportError> {
        let mut w = BufWriter::new(out);
        for l in &self.lines {
            writeln!(w, "{} {} {}", l.stack, l.before, l.after)?;
        }
        w.flush()?;
        Ok(())
    }

    /// Writes inferno's differential flame graph: frames as wide as the after profile,
    /// red where they grew and blue where they shrank (by the before/after difference, as
    /// inferno colours them), each title giving the change in points of the after total.
    /// Stacks that vanished have no width and are not drawn; the table shows them.
    pub fn write_svg(&self, svg: &DiffSvg, out: &mut dyn Write) -> Result<(), ExportError> {
        let mut opt = Options::default();
        opt.title = sanitize(&svg.title);
        opt.subtitle = Some(sanitize(&svg.subtitle));
        opt.count_name = match self.unit {
            Unit::Bytes => "bytes",
            _ => "samples",
        }
        .to_string();
        // Sorted by stack already: inferno's own sort is by whole line, counts included.
        opt.no_sort = true;
        let text: Vec<String> = self
            .lines
            .iter()
            .map(|l| format!("{} {} {}", l.stack, l.before, l.after))
            .collect();
        let lines: Vec<&str> = if self.after_total == 0 {
            Vec::new()
        } else {
            text.iter().map(String::as_str).collect()
        };
        draw(&mut opt, &lines, "No samples in the after profile.", out)
    }

    /// Writes the table of the `rows` largest changes (all with `None`).
    pub fn write_table(&self, rows: Option<usize>, out: &mut dyn Write) -> Result<(), ExportError> {
        let mut w = BufWriter::new(out);
        writeln!(
            w,
            "Largest changes in total share (samples with the function on the stack, each once)"
        )?;
        writeln!(w, " before %   after %     delta  function")?;
        let shown = rows.unwrap_or(usize::MAX);
        for c in self.changes.iter().take(shown) {
            writeln!(
                w,
                "{:9.2} {:9.2} {:>9}  {}",
                c.before_pct,
                c.after_pct,
                signed(c.delta),
                c.name
            )?;
        }
        writeln!(w, "---")?;
        writeln!(
            w,
            "Before: {} · After: {} · delta in percentage points",
            self.human(self.before_total),
            self.human(self.after_total)
        )?;
        if self.unit == Unit::Bytes {
            self.write_growth(&mut w, shown)?;
        }
        w.flush()?;
        Ok(())
    }

    /// A total in the profiles' unit: `40 samples`, `401.8 MiB`.
    fn human(&self, v: u64) -> String {
        match self.unit {
            Unit::Nanoseconds => Unit::Samples.human(v),
            unit => unit.human(v),
        }
    }

    /// Memory profiles: how much more (or less) each function grew, in MiB, unnormalized.
    fn write_growth(&self, w: &mut dyn Write, shown: usize) -> std::io::Result<()> {
        let mib = |pct: f64, total: u64| pct / 100.0 * total as f64 / f64::from(1u32 << 20);
        let mut rows: Vec<(f64, &Change)> = self
            .changes
            .iter()
            .map(|c| {
                let delta =
                    mib(c.after_pct, self.after_total) - mib(c.before_pct, self.before_total);
                (delta, c)
            })
            .collect();
        rows.sort_by(|a, b| {
            b.0.abs()
                .total_cmp(&a.0.abs())
                .then_with(|| a.1.name.cmp(&b.1.name))
        });
        writeln!(w)?;
        writeln!(
            w,
            "Largest changes in growth (MiB with the function on the stack)"
        )?;
        writeln!(w, "   before     after     delta  function")?;
        for (delta, c) in rows.into_iter().take(shown) {
            writeln!(
                w,
                "{:9.1} {:9.1} {:>9}  {}",
                mib(c.before_pct, self.before_total),
                mib(c.after_pct, self.after_total),
                format!("{delta:+.1}"),
                c.name
            )?;
        }
        Ok(())
    }
}

/// Title and subtitle of a differential flame graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffSvg {
    pub title: String,
    pub subtitle: String,
}

impl DiffSvg {
    /// `sprofd diff: BEFORE → AFTER`, and a subtitle with the sample totals, whether the
    /// before profile was normalized and what the colours mean.
    pub fn new(before: &str, after: &str, diff: &Differential) -> DiffSvg {
        let scaling = if !diff.normalized {
            "not normalized".to_string()
        } else if diff.before_total == 0 {
            "normalized".to_string()
        } else {
            let factor = diff.after_total as f64 / diff.before_total as f64;
            format!("normalized (before ×{factor:.3})")
        };
        DiffSvg {
            title: format!("sprofd diff: {before} → {after}"),
            subtitle: format!(
                "before {} · after {} · {scaling} · red grew, blue shrank",
                diff.human(diff.before_total),
                diff.human(diff.after_total)
            ),
        }
    }
}

/// `+1.25`, `-0.50`; `0.00` without a sign when the change rounds to nothing.
fn signed(delta: f64) -> String {
    let text = format!("{delta:+.2}");
    if text[1..] == *"0.00" {
        "0.00".to_string()
    } else {
        text
    }
}

/// Parses inferno's `stack before after` output.
fn parse_diff_lines(text: &[u8]) -> Result<Vec<DiffLine>, ExportError> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "bad differential line from inferno",
        )
    };
    let text = std::str::from_utf8(text).map_err(|_| bad())?;
    text.lines()
        .map(|line| {
            let mut parts = line.rsplitn(3, ' ');
            let after = parts.next().and_then(|n| n.parse().ok()).ok_or_else(bad)?;
            let before = parts.next().and_then(|n| n.parse().ok()).ok_or_else(bad)?;
            let stack = parts.next().ok_or_else(bad)?.to_owned();
            Ok(DiffLine {
                stack,
                before,
                after,
            })
        })
        .collect()
}

/// Every function's total share before and after, sorted by |delta|, then name.
fn changes(before: &Stacks, after: &Stacks) -> Vec<Change> {
    let mut counts: HashMap<&str, [u64; 2]> = HashMap::new();
    // A function counts once per stack however often it recurses.
    let mut seen: HashSet<&str> = HashSet::new();
    for (side, stacks) in [before, after].into_iter().enumerate() {
        for (stack, n) in stacks.iter() {
            seen.clear();
            for frame in stack.split(';') {
                if seen.insert(frame) {
                    counts.entry(frame).or_default()[side] += n;
                }
            }
        }
    }
    let mut changes: Vec<Change> = counts
        .into_iter()
        .map(|(name, [b, a])| {
            let before_pct = percent(b, before.total());
            let after_pct = percent(a, after.total());
            Change {
                name: name.to_owned(),
                before_pct,
                after_pct,
                delta: after_pct - before_pct,
            }
        })
        .collect();
    changes.sort_by(|a, b| {
        b.delta
            .abs()
            .total_cmp(&a.delta.abs())
            .then_with(|| a.name.cmp(&b.name))
    });
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Exporter, Pprof};
    use sprof_core::{Frame, FrameKind};

    const BEFORE: &str = "p;main;a 30\np;main;b 10\n";
    const AFTER: &str = "p;main;b 30\np;main;a 10\np;main;c 10\n";

    fn stacks(text: &str) -> Stacks {
        Stacks::parse_folded(text.as_bytes()).unwrap()
    }

    fn line(stack: &str, before: u64, after: u64) -> DiffLine {
        DiffLine {
            stack: stack.into(),
            before,
            after,
        }
    }

    #[test]
    fn differential_lines_hold_both_counts() {
        let d = Differential::new(&stacks(BEFORE), &stacks(AFTER), false).unwrap();
        assert_eq!(
            d.lines,
            [
                line("p;main;a", 30, 10),
                line("p;main;b", 10, 30),
                line("p;main;c", 0, 10)
            ]
        );
        assert_eq!((d.before_total, d.after_total), (40, 50));
        let mut folded = Vec::new();
        d.write_folded(&mut folded).unwrap();
        assert_eq!(
            String::from_utf8(folded).unwrap(),
            "p;main;a 30 10\np;main;b 10 30\np;main;c 0 10\n"
        );
    }

    #[test]
    fn normalize_scales_before_to_the_after_total() {
        let d = Differential::new(&stacks(BEFORE), &stacks(AFTER), true).unwrap();
        // × 50/40, rounded down as inferno does: 37.5 → 37, 12.5 → 12.
        assert_eq!(
            d.lines,
            [
                line("p;main;a", 37, 10),
                line("p;main;b", 12, 30),
                line("p;main;c", 0, 10)
            ]
        );
        assert_eq!(d.before_total, 40, "totals are as read");
        let plain = Differential::new(&stacks(BEFORE), &stacks(AFTER), false).unwrap();
        assert_eq!(d.changes, plain.changes, "shares do not depend on it");
        assert!(DiffSvg::new("a", "b", &d)
            .subtitle
            .contains("normalized (before ×1.250)"));
        assert!(DiffSvg::new("a", "b", &plain)
            .subtitle
            .contains("not normalized"));
    }

    #[test]
    fn table_sorted_by_absolute_delta() {
        let d = Differential::new(&stacks(BEFORE), &stacks(AFTER), false).unwrap();
        let got: Vec<(&str, f64, f64, f64)> = d
            .changes
            .iter()
            .map(|c| (c.name.as_str(), c.before_pct, c.after_pct, c.delta))
            .collect();
        assert_eq!(
            got,
            [
                ("a", 75.0, 20.0, -55.0),
                ("b", 25.0, 60.0, 35.0),
                ("c", 0.0, 20.0, 20.0),
                ("main", 100.0, 100.0, 0.0),
                ("p", 100.0, 100.0, 0.0),
            ]
        );
        let mut text = Vec::new();
        d.write_table(Some(2), &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], " before %   after %     delta  function");
        assert_eq!(lines[2], "    75.00     20.00    -55.00  a");
        assert_eq!(lines[3], "    25.00     60.00    +35.00  b");
        assert_eq!(lines[4], "---");
        assert_eq!(
            lines[5],
            "Before: 40 samples · After: 50 samples · delta in percentage points"
        );
        let mut all = Vec::new();
        d.write_table(None, &mut all).unwrap();
        let all = String::from_utf8(all).unwrap();
        assert!(
            all.contains("\n   100.00    100.00      0.00  p\n"),
            "no change has no sign: {all}"
        );
        assert_eq!(signed(-0.001), "0.00");
        assert_eq!(signed(0.5), "+0.50");
    }

    #[test]
    fn recursion_counts_once_per_sample() {
        let d =
            Differential::new(&stacks("p;f;f;f 4\n"), &stacks("p;f 2\np;g 2\n"), false).unwrap();
        let f = d.changes.iter().find(|c| c.name == "f").unwrap();
        assert_eq!((f.before_pct, f.after_pct), (100.0, 50.0));
    }

    #[test]
    fn svg_shows_growth_and_shrinkage() {
        let d = Differential::new(&stacks(BEFORE), &stacks(AFTER), false).unwrap();
        let svg = DiffSvg::new("old.folded", "new.folded", &d);
        assert_eq!(svg.title, "sprofd diff: old.folded → new.folded");
        let mut out = Vec::new();
        d.write_svg(&svg, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        // Widths are the after counts; the change is in points of the after total.
        assert!(out.contains("a (10 samples, 20.00%; -40.00%)"), "{out}");
        assert!(out.contains("b (30 samples, 60.00%; +40.00%)"), "{out}");
        assert!(out.contains("c (10 samples, 20.00%; +20.00%)"), "{out}");
        assert!(out.contains("sprofd diff: old.folded → new.folded"));

        let empty = Differential::new(&stacks(BEFORE), &Stacks::default(), false).unwrap();
        let mut out = Vec::new();
        empty.write_svg(&svg, &mut out).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("No samples in the after profile."));
    }

    #[test]
    fn folded_parsing_merges_and_rejects_bad_lines() {
        let s = stacks("a;b 2\n\na;b 3\r\nx y;z 0\nq 1\n");
        assert_eq!(s.iter().collect::<Vec<_>>(), [("a;b", 5), ("q", 1)]);
        assert_eq!(s.total(), 6);
        let cases: [(&[u8], usize, &str); 8] = [
            (b"a;b\n", 1, "no sample count (expected `stack count`)"),
            (b"a 1\na;b x\n", 2, "the sample count is not a whole number"),
            (b"a 1.5\n", 1, "the sample count is not a whole number"),
            (b"a -1\n", 1, "the sample count is not a whole number"),
            (b" 3\n", 1, "no stack before the sample count"),
            (b"a;;b 2\n", 1, "empty frame in the stack"),
            (b"a 1\n\n\xff 1\n", 3, "not UTF-8 text"),
            (
                b"a 18446744073709551615\nb 1\n",
                2,
                "the sample counts add up to more than 2^64",
            ),
        ];
        for (text, line, reason) in cases {
            assert_eq!(
                Stacks::parse_folded(text),
                Err(FoldedLineError { line, reason }),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    struct TempFiles(PathBuf);

    impl TempFiles {
        fn new(name: &str) -> TempFiles {
            let dir =
                std::env::temp_dir().join(format!("sprofd-diff-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempFiles(dir)
        }

        fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        }
    }

    impl Drop for TempFiles {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn read_stacks_from_folded_and_pprof() {
        let dir = TempFiles::new("read");
        let folded = dir.write("a.folded", BEFORE.as_bytes());
        assert_eq!(read_stacks(&folded).unwrap(), stacks(BEFORE));

        let profile = sprof_testkit::profile(
            vec![
                Frame::bare("p", FrameKind::Root),
                Frame::bare("main", FrameKind::Native),
                Frame::bare("a", FrameKind::Native),
            ],
            &[(&[0, 1, 2], 3), (&[0, 1], 2)],
            10,
        );
        let mut bytes = Vec::new();
        Pprof::default().export(&profile, &mut bytes).unwrap();
        let pb = dir.write("a.pb.gz", &bytes);
        assert_eq!(read_stacks(&pb).unwrap(), stacks("p;main 2\np;main;a 3\n"));
    }

    #[test]
    fn unreadable_inputs_are_errors_naming_the_file() {
        let dir = TempFiles::new("errors");
        let corrupt = dir.write("c.pb.gz", &[0x1f, 0x8b, 8, 0, 1, 2, 3]);
        let garbage = dir.write("g.pprof", b"\xff\xff\xff\xff not protobuf");
        let bad_line = dir.write("b.folded", b"a;b 1\nno-count\n");
        let svg = dir.write("x.svg", b"<svg/>");
        let missing = dir.0.join("missing.folded");
        let cases: [(&Path, &str); 5] = [
            (&corrupt, "decompressing the profile failed"),
            (&garbage, "not a pprof profile"),
            (&bad_line, "not folded stacks: line 2: no sample count"),
            (&svg, "not a profile sprofd diff reads"),
            (&missing, "cannot read"),
        ];
        for (path, text) in cases {
            let msg = read_stacks(path).unwrap_err().to_string();
            assert!(msg.starts_with(&path.display().to_string()), "{msg}");
            assert!(msg.contains(text), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }
}
