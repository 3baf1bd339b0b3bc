//! sprofd's exporters: folded stacks, an interactive flame graph SVG, a statprof-style table,
//! pprof and speedscope.
//!
//! Every exporter takes a [`SymbolizedProfile`] (interned named frames plus per-stack counts,
//! root first) and writes to a `&mut dyn Write`; nothing else is needed, so exporters are
//! tested on hand-built profiles.
//!
//! * [`Folded`]: `root;caller;leaf COUNT` lines, identical label sequences merged, sorted
//!   bytewise (the contract between aggregation and every flame graph tool).
//! * [`Svg`]: inferno's interactive flame graph (search and zoom JavaScript included) drawn
//!   from those same folded lines; an empty profile gives a small note SVG, never an error.
//! * [`StatprofTable`]: the table of bos/statprof.py `display()`, by function or by line, with
//!   cumulative time counted once per sample so recursion never exceeds 100 %.
//! * [`Pprof`]: the gzipped `profile.proto` of `go tool pprof`, Parca and Pyroscope, root
//!   frames as `comm`/`thread_name` labels and inlined frames folded into their caller's
//!   location; [`read_pprof`] reads one back (for `sprofd diff`).
//! * [`Speedscope`]: speedscope's JSON file format, one sampled profile per thread.
//! * [`AnnotatedSource`]: the source of the hottest functions with samples per line
//!   (line_profiler's table, from samples), over [`line_profile`]'s counts and the
//!   [`SourceFiles`] the caller read.
//! * [`Heatmap`]: a self-contained page of the profiled source files, every line coloured
//!   by its samples (self or total), with callers, callees and search.
//! * [`TimelineSvg`]: resident memory and CPU use of the profiled processes over time (the
//!   series the session read, [`sprof_core::ProfileMeta::resources`]), the peak labelled and
//!   the heaviest functions marked where they weighed most.
//! * [`Differential`]: `sprofd diff`'s comparison of two profiles' [`Stacks`] (read back from
//!   folded or pprof files by [`read_stacks`]): differential folded lines, inferno's
//!   differential flame graph and a table of the largest changes in functions' shares.
//!
//! Frame names pass through [`frame_label`] on their way into folded stacks, the SVG and
//! speedscope.
//!
//! Output is written in many small pieces through an internal buffer; write errors (a full
//! disk, a closed pipe) come back as [`ExportError::Io`], never as panics.

use std::io::{self, Write};
use std::path::Path;

use sprof_core::SymbolizedProfile;

mod diff;
mod folded;
mod label;
mod lines;
mod pprof;
mod speedscope;
mod svg;
mod table;
mod timeline;

pub use diff::{
    read_stacks, Change, DiffLine, DiffSvg, Differential, FoldedLineError, ReadStacksError, Stacks,
};
pub use folded::{folded_lines, folded_lines_with, line_label, Folded, FoldedByLine};
pub use label::{frame_label, printable, MAX_LABEL_CHARS};
pub use lines::{
    frame_from_label, function_extent, line_profile, profile_files, profile_from_stacks,
    AnnotatedSource, Counts, FunctionLines, Heatmap, LineCounts, LineProfile, NameFilter,
    SourceFiles, SourceText,
};
pub use pprof::{
    check_gzip, decode_pprof, profile_from_proto, proto as pprof_proto, read_pprof, Pprof,
    PprofReadError, PprofValueType, KERNEL_MAPPING, MAX_PPROF_BYTES, MAX_STACK_FRAMES,
};
pub use speedscope::{Speedscope, SPEEDSCOPE_SCHEMA};
pub use svg::{default_subtitle, escape_xml, Svg};
pub use table::{StatprofTable, TableRow};
pub use timeline::TimelineSvg;

/// Writes a profile in one output format.
pub trait Exporter {
    /// Writes `profile` to `out`. The exporter buffers internally and flushes `out` before
    /// returning `Ok`.
    fn export(&self, profile: &SymbolizedProfile, out: &mut dyn Write) -> Result<(), ExportError>;
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Writing the output failed (full disk, closed pipe, ...).
    #[error("writing the profile failed: {0}")]
    Io(#[from] io::Error),
    /// inferno rejected the folded stacks.
    #[error("flame graph generation failed: {0}")]
    Flamegraph(String),
    /// A stack refers to a frame the profile does not have.
    #[error("stack {stack} refers to frame {frame}, but the profile has only {frames} frames")]
    BadFrameIndex {
        stack: usize,
        frame: u32,
        frames: usize,
    },
}

/// The output formats the CLI chooses between by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputFormat {
    /// Interactive flame graph (`.svg`).
    Svg,
    /// Folded stacks (`.folded`).
    Folded,
    /// statprof-style table (`.txt`).
    Table,
    /// Gzipped pprof profile (`.pb.gz`, `.pprof`).
    Pprof,
    /// speedscope JSON (`.speedscope.json`).
    Speedscope,
    /// Annotated source of the hottest functions (`.lines.txt`).
    Lines,
    /// The source heatmap page (`.heatmap.html`).
    Heatmap,
    /// Resident memory and CPU use over time (`.timeline.svg`).
    Timeline,
}

impl OutputFormat {
    /// File name endings and their formats; double extensions (`.pb.gz`) included, so match
    /// on the whole file name.
    const SUFFIXES: [(&'static str, OutputFormat); 9] = [
        // Before `.svg`, which it also ends in: the first match wins.
        (".timeline.svg", OutputFormat::Timeline),
        (".svg", OutputFormat::Svg),
        (".folded", OutputFormat::Folded),
        // Before `.txt`, which it also ends in: the first match wins.
        (".lines.txt", OutputFormat::Lines),
        (".txt", OutputFormat::Table),
        (".pb.gz", OutputFormat::Pprof),
        (".pprof", OutputFormat::Pprof),
        (".speedscope.json", OutputFormat::Speedscope),
        (".heatmap.html", OutputFormat::Heatmap),
    ];

    /// The format for a path's file name ending (`.svg`, `.timeline.svg`, `.folded`,
    /// `.lines.txt`, `.txt`, `.pb.gz`, `.pprof`, `.speedscope.json`, `.heatmap.html`, any
    /// case), if known. The ending must follow a non-empty name: `.svg` alone, like `svg`, is
    /// no format.
    pub fn from_path(path: &Path) -> Option<OutputFormat> {
        let name = path.file_name()?.to_str()?.as_bytes();
        Self::SUFFIXES
            .into_iter()
            .find(|(suffix, _)| {
                name.len() > suffix.len()
                    && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
            })
            .map(|(_, f)| f)
    }

    /// The exporter for this format with default settings (title and subtitle from the
    /// profile; table by function with at most [`StatprofTable::DEFAULT_MAX_ROWS`] rows).
    pub fn exporter(self) -> Box<dyn Exporter> {
        self.exporter_with(&ExportOptions::default())
    }

    /// The exporter for this format with `options`.
    pub fn exporter_with(self, options: &ExportOptions) -> Box<dyn Exporter> {
        match self {
            OutputFormat::Svg => Box::new(Svg::default()),
            OutputFormat::Folded if options.by_line => Box::new(FoldedByLine),
            OutputFormat::Folded => Box::new(Folded),
            OutputFormat::Table => Box::new(StatprofTable {
                by_line: options.by_line,
                max_rows: options.table_rows,
            }),
            OutputFormat::Pprof => Box::new(Pprof::default()),
            OutputFormat::Speedscope => Box::new(Speedscope),
            OutputFormat::Lines => Box::new(AnnotatedSource {
                functions: options.functions,
                only: None,
                sources: options.sources.clone(),
            }),
            OutputFormat::Heatmap => Box::new(Heatmap {
                sources: options.sources.clone(),
            }),
            OutputFormat::Timeline => Box::new(TimelineSvg),
        }
    }
}

/// Choices that apply to several formats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// Table rows per source line rather than per function; folded frames with their line.
    pub by_line: bool,
    /// Most table rows; `None` for all.
    pub table_rows: Option<usize>,
    /// Functions in the annotated source (`--functions`).
    pub functions: usize,
    /// The source files the annotated source and the heatmap show (read by the caller).
    pub sources: std::sync::Arc<SourceFiles>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            by_line: false,
            table_rows: Some(StatprofTable::DEFAULT_MAX_ROWS),
            functions: AnnotatedSource::DEFAULT_FUNCTIONS,
            sources: Default::default(),
        }
    }
}

/// Stack number `index`, after checking that its frame indices are in range.
pub(crate) fn checked_stack(
    profile: &SymbolizedProfile,
    index: usize,
) -> Result<&sprof_core::SampledStack, ExportError> {
    let stack = &profile.stacks[index];
    let frames = profile.frames.len();
    match stack.frames.iter().find(|&&f| f as usize >= frames) {
        Some(&frame) => Err(ExportError::BadFrameIndex {
            stack: index,
            frame,
            frames,
        }),
        None => Ok(stack),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_from_extension() {
        assert_eq!(
            OutputFormat::from_path(Path::new("out/x.svg")),
            Some(OutputFormat::Svg)
        );
        assert_eq!(
            OutputFormat::from_path(Path::new("x.SVG")),
            Some(OutputFormat::Svg)
        );
        assert_eq!(
            OutputFormat::from_path(Path::new("x.folded")),
            Some(OutputFormat::Folded)
        );
        assert_eq!(
            OutputFormat::from_path(Path::new("x.txt")),
            Some(OutputFormat::Table)
        );
        assert_eq!(
            OutputFormat::from_path(Path::new("out/cpu.pb.gz")),
            Some(OutputFormat::Pprof)
        );
        assert_eq!(
            OutputFormat::from_path(Path::new("CPU.PB.GZ")),
            Some(OutputFormat::Pprof)
        );
        assert_eq!(
            OutputFormat::from_path(Path::new("x.pprof")),
            Some(OutputFormat::Pprof)
        );
        assert_eq!(
            OutputFormat::from_path(Path::new("x.Speedscope.JSON")),
            Some(OutputFormat::Speedscope)
        );
        assert_eq!(
            OutputFormat::from_path(Path::new("hot.lines.txt")),
            Some(OutputFormat::Lines)
        );
        assert_eq!(
            OutputFormat::from_path(Path::new("lines.txt")),
            Some(OutputFormat::Table)
        );
        assert_eq!(
            OutputFormat::from_path(Path::new("x.heatmap.html")),
            Some(OutputFormat::Heatmap)
        );
        assert_eq!(
            OutputFormat::from_path(Path::new("mem.Timeline.SVG")),
            Some(OutputFormat::Timeline)
        );
        assert_eq!(
            OutputFormat::from_path(Path::new("timeline.svg")),
            Some(OutputFormat::Svg)
        );
        assert_eq!(OutputFormat::from_path(Path::new("x.html")), None);
        assert_eq!(OutputFormat::from_path(Path::new("x.gz")), None);
        assert_eq!(OutputFormat::from_path(Path::new("x.json")), None);
        assert_eq!(OutputFormat::from_path(Path::new("x.pb")), None);
        assert_eq!(OutputFormat::from_path(Path::new("pb.gz")), None);
        assert_eq!(OutputFormat::from_path(Path::new("svg")), None);
        assert_eq!(OutputFormat::from_path(Path::new(".svg")), None);
        assert_eq!(
            OutputFormat::from_path(Path::new("x.pb.gz/")),
            Some(OutputFormat::Pprof)
        );
    }
}
