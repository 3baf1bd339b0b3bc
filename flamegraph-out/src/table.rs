//! The statprof-style table (bos/statprof.py `display()`), see formats.md §2.

use std::collections::HashMap;
use std::io::{BufWriter, Write};

use sprof_core::{Frame, FrameKind, SymbolizedProfile};

use crate::svg::percent;
use crate::{checked_stack, ExportError, Exporter};

/// statprof's first header line (Python `'%5.5s %10.10s   %7.7s  %-8.8s'`), trailing spaces
/// included.
const HEADER_1: &str = "  %   cumulative      self          ";
/// statprof's second header line (`'%5.5s  %9.9s  %8.8s  %-8.8s'`).
const HEADER_2: &str = " time    seconds   seconds  name    ";
/// The second header line of a memory profile, whose figures are MiB of new resident memory.
const HEADER_2_MEMORY: &str = "  mem        MiB       MiB  name    ";

/// A statprof-style table of self and cumulative time per function (or per source line).
///
/// * `% time` is self samples over all samples; seconds per sample is the profile's total
///   period (CPU nanoseconds) over its samples, or `1 / frequency` when no periods were kept.
/// * Self time goes to the leaf, the last non-root frame; cumulative time counts a row at most
///   once per sample, so recursion never exceeds 100 %. Root frames are not rows; markers and
///   unresolved frames are, named by their text.
/// * By function (default) a row is `function (file:decl_line)`, the file being the
///   declaration file when known (basename only); `function (file)` without a declaration
///   line; `function (module)`, or just `function`, without a file.
///   By line (`by_line`) a row is `file:line:function`, falling back to the by-function names
///   when the file or line is unknown.
/// * Rows are sorted by self time, then cumulative time (both descending), then name; at most
///   `max_rows` are shown.
/// * After `Total time:` (sprofd convention) come `N samples lost (X.X%)` when records were
///   lost (of samples + lost) and `N stacks truncated (X.X%)` when stacks were truncated (of
///   samples); samples there are the session's (`meta.stats.samples`, or the profile's own
///   count when that is 0).
#[derive(Debug, Clone, Copy, Default)]
pub struct StatprofTable {
    pub by_line: bool,
    pub max_rows: Option<usize>,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableRow {
    pub name: String,
    pub self_samples: u64,
    /// Samples with this row anywhere on the stack, each sample counted once.
    pub cumulative_samples: u64,
    /// `% time`: self samples over all samples, × 100.
    pub percent: f64,
    pub cumulative_secs: f64,
    pub self_secs: f64,
}

impl StatprofTable {
    /// The row limit the CLI uses.
    pub const DEFAULT_MAX_ROWS: usize = 30;

    /// The rows the table shows, sorted and limited to `max_rows`.
    pub fn rows(&self, profile: &SymbolizedProfile) -> Result<Vec<TableRow>, ExportError> {
        // Wall-clock and off-CPU profiles weigh stacks by nanoseconds, CPU profiles by samples.
        let total = profile.total_weight();
        // The "seconds" columns: seconds, or MiB for memory profiles (weights in bytes).
        let secs_per_sample = match profile.meta.measure.unit() {
            sprof_core::Unit::Nanoseconds => 1e-9,
            sprof_core::Unit::Bytes => 1.0 / f64::from(1u32 << 20),
            sprof_core::Unit::Samples => seconds_per_sample(profile),
        };

        // Rows are keyed by their name, computed once per interned frame; Root frames have none.
        let mut row_ids: HashMap<String, usize> = HashMap::new();
        let mut names: Vec<String> = Vec::new();
        let frame_rows: Vec<Option<usize>> = profile
            .frames
            .iter()
            .map(|frame| {
                let name = row_name(frame, self.by_line)?;
                let next = names.len();
                Some(*row_ids.entry(name).or_insert_with_key(|name| {
                    names.push(name.clone());
                    next
                }))
            })
            .collect();

        let mut self_samples = vec![0u64; names.len()];
        let mut cumulative = vec![0u64; names.len()];
        // `seen[row] == i + 1` once stack `i` has counted `row`: a set per stack, no clearing.
        let mut seen = vec![0usize; names.len()];
        for i in 0..profile.stacks.len() {
            let stack = checked_stack(profile, i)?;
            let mut leaf = None;
            for &f in &stack.frames {
                let Some(row) = frame_rows[f as usize] else {
                    continue;
                };
                leaf = Some(row);
                if seen[row] != i + 1 {
                    seen[row] = i + 1;
                    cumulative[row] += profile.weight(stack);
                }
            }
            if let Some(row) = leaf {
                self_samples[row] += profile.weight(stack);
            }
        }

        let mut rows: Vec<TableRow> = names
            .into_iter()
            .enumerate()
            .filter(|&(row, _)| cumulative[row] > 0)
            .map(|(row, name)| TableRow {
                name,
                self_samples: self_samples[row],
                cumulative_samples: cumulative[row],
                percent: percent(self_samples[row], total),
                cumulative_secs: cumulative[row] as f64 * secs_per_sample,
                self_secs: self_samples[row] as f64 * secs_per_sample,
            })
            .collect();
        rows.sort_by(|a, b| {
            b.self_samples
                .cmp(&a.self_samples)
                .then(b.cumulative_samples.cmp(&a.cumulative_samples))
                .then_with(|| a.name.cmp(&b.name))
        });
        if let Some(max) = self.max_rows {
            rows.truncate(max);
        }
        Ok(rows)
    }
}

impl Exporter for StatprofTable {
    fn export(&self, profile: &SymbolizedProfile, out: &mut dyn Write) -> Result<(), ExportError> {
        let rows = self.rows(profile)?;
        let total = profile.total_samples();
        let stats = &profile.meta.stats;
        let session_samples = if stats.samples > 0 {
            stats.samples
        } else {
            total
        };

        let mut w = BufWriter::new(out);
        if total == 0 {
            writeln!(w, "No samples recorded.")?;
        } else {
            let memory = profile.meta.measure == sprof_core::Measure::Memory;
            writeln!(w, "{HEADER_1}")?;
            writeln!(w, "{}", if memory { HEADER_2_MEMORY } else { HEADER_2 })?;
            for row in &rows {
                writeln!(
                    w,
                    "{:6.2} {:9.2} {:9.2}  {}",
                    row.percent, row.cumulative_secs, row.self_secs, row.name
                )?;
            }
            writeln!(w, "---")?;
            writeln!(w, "Sample count: {total}")?;
            if memory {
                let bytes = profile.total_weight();
                writeln!(
                    w,
                    "Total growth: {:.1} MiB",
                    bytes as f64 / f64::from(1u32 << 20)
                )?;
            } else {
                writeln!(w, "Total time: {:.6} seconds", total_seconds(profile))?;
            }
        }
        if stats.lost > 0 {
            let pct = percent(stats.lost, session_samples + stats.lost);
            writeln!(w, "{} samples lost ({pct:.1}%)", stats.lost)?;
        }
        if stats.truncated > 0 && total > 0 {
            let pct = percent(stats.truncated, session_samples);
            writeln!(w, "{} stacks truncated ({pct:.1}%)", stats.truncated)?;
        }
        for note in &profile.meta.notes {
            writeln!(w, "{note}")?;
        }
        w.flush()?;
        Ok(())
    }
}

/// Seconds of CPU time one sample stands for: the measured periods when there are any,
/// otherwise the sampling interval.
fn seconds_per_sample(profile: &SymbolizedProfile) -> f64 {
    let total = profile.total_samples();
    let period = profile.total_period();
    if total > 0 && period > 0 {
        period as f64 / total as f64 / 1e9
    } else if profile.meta.frequency > 0 {
        1.0 / profile.meta.frequency as f64
    } else {
        0.0
    }
}

fn total_seconds(profile: &SymbolizedProfile) -> f64 {
    match profile.total_period() {
        0 => profile.total_samples() as f64 * seconds_per_sample(profile),
        period => period as f64 / 1e9,
    }
}

/// The row a frame counts toward, by name; `None` for Root frames.
fn row_name(frame: &Frame, by_line: bool) -> Option<String> {
    let f = &frame.function;
    let name = match frame.kind {
        FrameKind::Root => return None,
        // A perf map's name says all it knows (V8's include the script and line).
        FrameKind::Marker | FrameKind::Unresolved | FrameKind::Jit => f.clone(),
        FrameKind::Native | FrameKind::Inlined | FrameKind::Kernel | FrameKind::Python => {
            match (by_line, frame.file.as_deref(), frame.line) {
                (true, Some(file), Some(line)) => format!("{}:{line}:{f}", basename(file)),
                (true, Some(file), None) => format!("{f} ({})", basename(file)),
                _ => {
                    let file = if by_line {
                        None
                    } else {
                        frame.decl_file.as_deref().or(frame.file.as_deref())
                    };
                    match (file, frame.decl_line, frame.module.as_deref()) {
                        (Some(file), Some(line), _) => format!("{f} ({}:{line})", basename(file)),
                        (Some(file), None, _) => format!("{f} ({})", basename(file)),
                        (None, _, Some(module)) => format!("{f} ({module})"),
                        (None, _, None) => f.clone(),
                    }
                }
            }
        }
    };
    // A newline in a name would end the row.
    Some(crate::label::printable(&name).into_owned())
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sprof_core::ProfileMeta;
    use sprof_testkit::stack;

    fn native(name: &str, file: &str, line: u32, decl_line: u32) -> Frame {
        Frame {
            function: name.into(),
            file: Some(format!("/src/{file}")),
            line: Some(line),
            decl_line: Some(decl_line),
            decl_file: None,
            module: Some("app".into()),
            kind: FrameKind::Native,
        }
    }

    fn find<'r>(rows: &'r [TableRow], name: &str) -> &'r TableRow {
        rows.iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no row {name}: {rows:#?}"))
    }

    #[test]
    fn headers_are_statprof_formats() {
        // '%5.5s %10.10s   %7.7s  %-8.8s' % ('%  ', 'cumulative', 'self', '')
        assert_eq!(
            HEADER_1,
            format!(
                "{:>5} {:>10}   {:>7}  {:<8}",
                "%  ", "cumulative", "self", ""
            )
        );
        // '%5.5s  %9.9s  %8.8s  %-8.8s' % ('time', 'seconds', 'seconds', 'name')
        assert_eq!(
            HEADER_2,
            format!(
                "{:>5}  {:>9}  {:>8}  {:<8}",
                "time", "seconds", "seconds", "name"
            )
        );
    }

    #[test]
    fn recursion_is_capped_at_100_percent_cumulative() {
        // root; main; fib; fib; fib  x4   and  root; main x1
        let p = SymbolizedProfile {
            frames: vec![
                Frame::bare("proc", FrameKind::Root),
                native("main", "m.c", 10, 1),
                native("fib", "f.c", 5, 3),
                native("fib", "f.c", 6, 3),
            ],
            stacks: vec![
                stack(&[0, 1, 2, 3, 2], 4, 40_000_000),
                stack(&[0, 1], 1, 10_000_000),
            ],
            ..Default::default()
        };
        let rows = StatprofTable::default().rows(&p).unwrap();
        assert_eq!(rows.len(), 2, "root frames are not rows");
        let fib = find(&rows, "fib (f.c:3)");
        assert_eq!((fib.self_samples, fib.cumulative_samples), (4, 4));
        assert!((fib.percent - 80.0).abs() < 1e-9);
        let main = find(&rows, "main (m.c:1)");
        assert_eq!((main.self_samples, main.cumulative_samples), (1, 5));
        assert!((main.cumulative_secs - 0.05).abs() < 1e-12);
        assert!(rows
            .iter()
            .all(|r| r.cumulative_samples <= p.total_samples()));

        // By line, fib:5 and fib:6 are different rows, each still counted once per sample.
        let rows = StatprofTable {
            by_line: true,
            max_rows: None,
        }
        .rows(&p)
        .unwrap();
        let f5 = find(&rows, "f.c:5:fib");
        assert_eq!((f5.self_samples, f5.cumulative_samples), (4, 4));
        let f6 = find(&rows, "f.c:6:fib");
        assert_eq!((f6.self_samples, f6.cumulative_samples), (0, 4));
    }

    #[test]
    fn self_shares_sum_to_100_percent() {
        let p = SymbolizedProfile {
            frames: vec![
                Frame::bare("proc", FrameKind::Root),
                native("a", "a.c", 1, 1),
                native("b", "b.c", 1, 1),
                Frame::bare("[truncated]", FrameKind::Marker),
            ],
            stacks: vec![
                stack(&[0, 1], 1, 0),
                stack(&[0, 1, 2], 2, 0),
                stack(&[0, 3, 2], 1, 0),
                stack(&[0], 1, 0), // no non-root frame: counts toward the total only
            ],
            ..Default::default()
        };
        let rows = StatprofTable::default().rows(&p).unwrap();
        let names: Vec<_> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["b (b.c:1)", "a (a.c:1)", "[truncated]"]);
        let shares: Vec<_> = rows.iter().map(|r| r.percent).collect();
        assert_eq!(shares, [60.0, 20.0, 0.0]);
        assert_eq!(find(&rows, "[truncated]").cumulative_samples, 1);
        let limited = StatprofTable {
            by_line: false,
            max_rows: Some(1),
        }
        .rows(&p)
        .unwrap();
        assert_eq!(limited.len(), 1);
    }

    #[test]
    fn seconds_come_from_periods_or_frequency() {
        let frames = vec![
            Frame::bare("proc", FrameKind::Root),
            native("a", "a.c", 1, 1),
        ];
        let mut p = SymbolizedProfile {
            meta: ProfileMeta {
                frequency: 100,
                ..Default::default()
            },
            frames,
            // 3 samples that measured 1.5 s of CPU: 0.5 s each, whatever the frequency says.
            stacks: vec![stack(&[0, 1], 3, 1_500_000_000)],
            modules: Vec::new(),
            processes: Default::default(),
            timeline: Vec::new(),
        };
        assert!((seconds_per_sample(&p) - 0.5).abs() < 1e-12);
        let row = &StatprofTable::default().rows(&p).unwrap()[0];
        assert!((row.self_secs - 1.5).abs() < 1e-12);
        assert!((total_seconds(&p) - 1.5).abs() < 1e-12);

        p.stacks[0].period = 0;
        assert!((seconds_per_sample(&p) - 0.01).abs() < 1e-12);
        assert!((total_seconds(&p) - 0.03).abs() < 1e-12);
        p.meta.frequency = 0;
        assert_eq!(seconds_per_sample(&p), 0.0);
    }

    #[test]
    fn row_names() {
        let mut f = native("run", "src/lib.rs", 42, 40);
        assert_eq!(row_name(&f, false).unwrap(), "run (lib.rs:40)");
        assert_eq!(row_name(&f, true).unwrap(), "lib.rs:42:run");
        f.decl_file = Some("/src/decl.rs".into());
        assert_eq!(row_name(&f, false).unwrap(), "run (decl.rs:40)");
        f.decl_line = None;
        assert_eq!(row_name(&f, false).unwrap(), "run (decl.rs)");
        f.line = None;
        assert_eq!(row_name(&f, true).unwrap(), "run (lib.rs)");
        f.file = None;
        f.decl_file = None;
        assert_eq!(row_name(&f, false).unwrap(), "run (app)");
        assert_eq!(row_name(&f, true).unwrap(), "run (app)");
        f.module = None;
        assert_eq!(row_name(&f, true).unwrap(), "run");
        let mut odd = Frame::bare("libc.so.6+0x1f00", FrameKind::Unresolved);
        odd.module = Some("libc.so.6".into());
        assert_eq!(row_name(&odd, false).unwrap(), "libc.so.6+0x1f00");
        assert_eq!(
            row_name(&Frame::bare("a\nb", FrameKind::Native), false).unwrap(),
            "a b"
        );
        assert_eq!(row_name(&Frame::bare("p", FrameKind::Root), false), None);
    }
}
