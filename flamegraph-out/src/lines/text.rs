//! The annotated source listing (`.lines.txt`, `sprofd annotate`): line_profiler's table,
//! from samples.

use std::io::{BufWriter, Write};
use std::sync::Arc;

use sprof_core::{SymbolizedProfile, Unit};

use super::{
    function_extent, line_profile, percent, FunctionLines, LineProfile, SourceFiles, SourceText,
};
use crate::{printable, ExportError, Exporter};

/// Listings longer than this many lines fold runs of cold lines (module code, long
/// functions) so that the hot ones are not lost among thousands of empty rows.
const FOLD_ABOVE: u32 = 300;
/// Cold runs longer than this are folded (when folding), keeping [`CONTEXT`] lines each side.
const FOLD_RUN: u32 = 12;
const CONTEXT: u32 = 2;

/// The annotated source of the hottest functions.
///
/// For each function, hottest first (by total): a header (function, file, first line, total
/// and self share of the profile), then every line from its first to its last
/// ([`function_extent`]) with `Line #`, `Samples` (samples in which the line was the
/// function's current line), `Self` (the function was the innermost frame), `% Time` (the
/// line's share of the function's samples) and the line's text. Lines without samples have
/// empty figures (runs of them folded in listings over [`FOLD_ABOVE`] lines and in module
/// code). When the file's text is not available the header says why, and only the sampled
/// lines are printed, without text; such functions come after those whose source is shown. Figures are samples for CPU profiles and
/// milliseconds for wall-clock and off-CPU ones.
#[derive(Debug, Clone, Default)]
pub struct AnnotatedSource {
    /// How many functions to list.
    pub functions: usize,
    /// Only functions whose name matches (`sprofd annotate PROFILE REGEX`); `None` for all.
    pub only: Option<NameFilter>,
    pub sources: Arc<SourceFiles>,
}

/// Which functions to list, by name.
#[derive(Clone)]
pub struct NameFilter(pub Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl std::fmt::Debug for NameFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NameFilter")
    }
}

impl AnnotatedSource {
    /// Functions listed by default.
    pub const DEFAULT_FUNCTIONS: usize = 10;
}

impl Exporter for AnnotatedSource {
    fn export(&self, profile: &SymbolizedProfile, out: &mut dyn Write) -> Result<(), ExportError> {
        let lp = line_profile(profile)?;
        let mut w = BufWriter::new(out);
        let unit = profile.meta.measure.unit();
        write_summary(&mut w, profile, &lp)?;
        // Functions whose source can be read come first (a libc or interpreter function
        // built elsewhere would otherwise push the program's own code out of the listing).
        let mut matching: Vec<&FunctionLines> = lp
            .functions
            .iter()
            .filter(|f| self.only.as_ref().is_none_or(|only| (only.0)(&f.function)))
            .collect();
        matching.sort_by_key(|f| !matches!(self.sources.get(&f.file), Some(SourceText::Lines(_))));
        let chosen: Vec<&FunctionLines> = matching.into_iter().take(self.functions).collect();
        if chosen.is_empty() {
            writeln!(
                w,
                "\nNo function with line information{}.",
                if self.only.is_some() {
                    " matches"
                } else {
                    " was sampled"
                }
            )?;
        }
        for f in chosen {
            write_function(&mut w, f, &lp, &self.sources, unit)?;
        }
        w.flush()?;
        Ok(())
    }
}

fn write_summary(
    w: &mut dyn Write,
    profile: &SymbolizedProfile,
    lp: &LineProfile,
) -> Result<(), ExportError> {
    let meta = &profile.meta;
    if !meta.target.is_empty() {
        writeln!(w, "Profile of {}", printable(&meta.target))?;
    }
    let mut parts = vec![match meta.measure.unit() {
        Unit::Samples => format!("{} samples", lp.total),
        unit => format!("{} of {}", unit.human(lp.total), meta.measure.describe()),
    }];
    if meta.frequency > 0 {
        parts.push(format!("{} Hz", meta.frequency));
    }
    if meta.duration_secs > 0.0 {
        parts.push(format!("{:.2} s", meta.duration_secs));
    }
    writeln!(w, "Total: {}", parts.join(", "))?;
    Ok(())
}

/// A figure column: samples, milliseconds for time measures, KiB for memory; empty for
/// nothing.
fn figure(v: u64, unit: Unit) -> String {
    match (v, unit) {
        (0, _) => String::new(),
        (v, Unit::Samples) => v.to_string(),
        (v, Unit::Nanoseconds) => format!("{:.1}", v as f64 / 1e6),
        (v, Unit::Bytes) => v.div_ceil(1024).to_string(),
    }
}

fn write_function(
    w: &mut dyn Write,
    f: &FunctionLines,
    lp: &LineProfile,
    sources: &SourceFiles,
    unit: Unit,
) -> Result<(), ExportError> {
    let text = match sources.get(&f.file) {
        Some(SourceText::Lines(lines)) => Some(lines.as_slice()),
        _ => None,
    };
    let (first, last) = function_extent(f, text);
    write_header(w, f, lp, sources, unit, first)?;
    write_rows(w, f, text, unit, (first, last))?;
    Ok(())
}

/// The function's header and the column titles.
fn write_header(
    w: &mut dyn Write,
    f: &FunctionLines,
    lp: &LineProfile,
    sources: &SourceFiles,
    unit: Unit,
    first: u32,
) -> std::io::Result<()> {
    writeln!(w)?;
    let module = f
        .module
        .as_deref()
        .map(|m| format!(" in {}", printable(m)))
        .unwrap_or_default();
    writeln!(
        w,
        "Function: {} at line {first}{module}",
        printable(&f.function)
    )?;
    writeln!(w, "File: {}", printable(&f.file))?;
    let suffix = match unit {
        Unit::Samples => " samples",
        Unit::Nanoseconds => " ms",
        Unit::Bytes => " KiB",
    };
    writeln!(
        w,
        "Total: {}{suffix} ({:.1}% of the profile), self {}{suffix} ({:.1}%)",
        figure(f.counts.total, unit),
        percent(f.counts.total, lp.total),
        if f.counts.self_ == 0 {
            "0".to_string()
        } else {
            figure(f.counts.self_, unit)
        },
        percent(f.counts.self_, lp.total),
    )?;
    match sources.get(&f.file) {
        Some(SourceText::Lines(_)) => {}
        Some(SourceText::Unavailable(why)) => {
            writeln!(w, "Source not shown: {}", printable(why))?;
        }
        None => writeln!(w, "Source not shown: not read")?,
    }
    let (samples, self_) = match unit {
        Unit::Samples => ("Samples", "Self"),
        Unit::Nanoseconds => ("Time ms", "Self ms"),
        Unit::Bytes => ("KiB", "Self KiB"),
    };
    let header = format!(
        "{:>6} {samples:>9} {self_:>9} {:>7}  Line Contents",
        "Line #",
        if unit == Unit::Bytes {
            "% Mem"
        } else {
            "% Time"
        }
    );
    writeln!(w)?;
    writeln!(w, "{header}")?;
    writeln!(w, "{}", "=".repeat(header.len()))
}

/// One row per line from `first` to `last` (only the sampled ones without text), runs of
/// cold lines folded in long listings.
fn write_rows(
    w: &mut dyn Write,
    f: &FunctionLines,
    text: Option<&[String]>,
    unit: Unit,
    (first, last): (u32, u32),
) -> std::io::Result<()> {
    let row = |w: &mut dyn Write, n: u32, contents: &str| -> std::io::Result<()> {
        let counts = f.lines.get(&n).map(|l| l.counts).unwrap_or_default();
        let share = if counts.total > 0 {
            format!("{:.1}", percent(counts.total, f.counts.total))
        } else {
            String::new()
        };
        let line = format!(
            "{n:>6} {:>9} {:>9} {share:>7}  {}",
            figure(counts.total, unit),
            figure(counts.self_, unit),
            printable(contents)
        );
        writeln!(w, "{}", line.trim_end())
    };
    let Some(text) = text else {
        for (&n, _) in f.lines.range(first..=last) {
            row(w, n, "")?;
        }
        return Ok(());
    };
    // Module code spans its whole file: only the sampled parts are worth reading.
    let fold = last - first + 1 > FOLD_ABOVE || f.function == "<module>";
    let mut n = first;
    while n <= last {
        if fold && !f.lines.contains_key(&n) {
            let next_hot = f.lines.range(n..).next().map_or(last + 1, |(&k, _)| k);
            let run = next_hot.min(last + 1) - n;
            if run > FOLD_RUN {
                let keep_before = if n == first { 0 } else { CONTEXT };
                for k in n..n + keep_before {
                    row(w, k, line_text(text, k))?;
                }
                let skipped = run - keep_before - CONTEXT.min(run - keep_before);
                writeln!(w, "{:>6}  ({skipped} lines without samples)", "...")?;
                n += keep_before + skipped;
                continue;
            }
        }
        row(w, n, line_text(text, n))?;
        n += 1;
    }
    Ok(())
}

fn line_text(text: &[String], n: u32) -> &str {
    text.get((n as usize).wrapping_sub(1))
        .map_or("", String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lines::tests::sample;

    fn render(a: &AnnotatedSource) -> String {
        let mut out = Vec::new();
        a.export(&sample(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn source() -> Vec<String> {
        let mut lines: Vec<String> = (1..=40).map(|n| format!("# line {n}")).collect();
        lines[0] = "def main():".into();
        lines[1] = "    x = 1".into();
        lines[2] = "    work(1)".into();
        lines[3] = "    work(2)".into();
        lines[4] = "    return x".into();
        lines[9] = "def work(n):".into();
        lines[10] = "    a = sum(range(n))".into();
        lines[11] = "    b = a * 2".into();
        lines[12] = "    leaf()".into();
        lines[13] = "".into();
        lines[14] = "x = 3".into();
        lines
    }

    #[test]
    fn functions_hottest_first_with_every_line_of_their_body() {
        let mut files = SourceFiles::new();
        files.insert("/src/app.py", SourceText::Lines(source()));
        let text = render(&AnnotatedSource {
            functions: 2,
            only: None,
            sources: Arc::new(files),
        });
        let expected = "\
Total: 105 samples

Function: main at line 1
File: /src/app.py
Total: 100 samples (95.2% of the profile), self 20 samples (19.0%)

Line #   Samples      Self  % Time  Line Contents
=================================================
     1                              def main():
     2                                  x = 1
     3        60              60.0      work(1)
     4        40        20    40.0      work(2)
     5                                  return x

Function: work at line 10
File: /src/app.py
Total: 80 samples (76.2% of the profile), self 60 samples (57.1%)

Line #   Samples      Self  % Time  Line Contents
=================================================
    10                              def work(n):
    11        30        30    37.5      a = sum(range(n))
    12        30        30    37.5      b = a * 2
    13        20              25.0      leaf()
";
        assert_eq!(text, expected);
    }

    #[test]
    fn an_unavailable_file_says_why_and_prints_no_text() {
        let mut files = SourceFiles::new();
        files.insert(
            "/src/app.py",
            SourceText::Unavailable("changed since the process started".into()),
        );
        let text = render(&AnnotatedSource {
            functions: 1,
            only: Some(NameFilter(Arc::new(|name: &str| name == "work"))),
            sources: Arc::new(files),
        });
        assert!(text.contains("Function: work at line 10"), "{text}");
        assert!(!text.contains("Function: main"), "{text}");
        assert!(
            text.contains("Source not shown: changed since the process started"),
            "{text}"
        );
        assert!(
            text.contains("    11        30        30    37.5\n"),
            "{text}"
        );
        assert!(!text.contains("    10 "), "cold lines without text: {text}");
    }

    #[test]
    fn module_code_folds_its_cold_runs() {
        use sprof_core::{Frame, FrameKind};
        let at = |line| Frame {
            function: "<module>".into(),
            file: Some("/m.py".into()),
            line: Some(line),
            decl_line: Some(1),
            decl_file: Some("/m.py".into()),
            module: None,
            kind: FrameKind::Python,
        };
        let p = sprof_testkit::profile(vec![at(50), at(90)], &[(&[0], 1), (&[1], 1)], 1);
        let mut files = SourceFiles::new();
        files.insert(
            "/m.py",
            SourceText::Lines((1..=100).map(|n| format!("x{n} = {n}")).collect()),
        );
        let mut out = Vec::new();
        AnnotatedSource {
            functions: 1,
            only: None,
            sources: Arc::new(files),
        }
        .export(&p, &mut out)
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        // 1..=47 folded (two lines of context kept before 50), 51..=87 too (two each side).
        assert!(
            text.contains("   ...  (47 lines without samples)\n"),
            "{text}"
        );
        assert!(
            text.contains("   ...  (35 lines without samples)\n"),
            "{text}"
        );
        assert!(
            text.contains("    48                              x48 = 48\n"),
            "{text}"
        );
        assert!(
            text.contains("    50         1         1    50.0  x50 = 50\n"),
            "{text}"
        );
        assert!(!text.contains("x70 = 70"), "{text}");
    }

    #[test]
    fn nothing_matching_says_so() {
        let text = render(&AnnotatedSource {
            functions: 10,
            only: Some(NameFilter(Arc::new(|_: &str| false))),
            sources: Arc::default(),
        });
        assert!(
            text.ends_with("No function with line information matches.\n"),
            "{text}"
        );
    }
}
