//! `sprofd annotate PROFILE [REGEX]`: the annotated source of a saved profile (pprof's
//! `-list` for every language sprofd profiles, and for any pprof with line information).
//!
//! The profile is read back into frames with lines (`flamegraph_out::read_pprof`, or
//! folded `--by-line` labels), the source files are read on this host
//! ([`crate::sources`], with `--source-root`/`--source-map` for builds made elsewhere) and
//! the listing is `flamegraph_out::AnnotatedSource`'s, as `-o NAME.lines.txt` writes it.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use flamegraph_out::{
    decode_pprof, profile_from_proto, profile_from_stacks, AnnotatedSource, Exporter, Heatmap,
    NameFilter, OutputFormat, Stacks,
};
use sprof_core::SymbolizedProfile;

use crate::cli::AnnotateArgs;
use crate::config::OutputSpec;
use crate::output;

/// Largest profile file read (a folded file is text; pprof bounds its own decoding).
const MAX_PROFILE_BYTES: u64 = 512 << 20;

/// Longest compiled REGEX, in bytes of regex program: a pattern is a user's, but a huge one
/// should fail cleanly rather than take the memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

pub fn run(args: &AnnotateArgs) -> anyhow::Result<i32> {
    // The output is reserved first, so a bad path is reported before any reading.
    let out = match &args.output {
        Some(path) => {
            // `-o FILE.html` is the heatmap, whatever precedes `.html`.
            let is_html = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("html"));
            let spec = if is_html {
                OutputSpec {
                    path: path.clone(),
                    format: OutputFormat::Heatmap,
                }
            } else {
                OutputSpec::from_path(path.clone())?
            };
            if !matches!(spec.format, OutputFormat::Lines | OutputFormat::Heatmap) {
                bail!(
                    "{}: sprofd annotate writes .lines.txt or .html (the heatmap)",
                    spec.path.display()
                );
            }
            Some(output::prepare(spec)?)
        }
        None => None,
    };
    let only = match &args.regex {
        Some(re) => {
            let re = regex::RegexBuilder::new(re)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    // The regex crate's message spans lines (the pattern, a caret, the
                    // error): its last line says what is wrong.
                    let msg = e.to_string();
                    let last = msg.lines().last().unwrap_or_default().trim();
                    anyhow::anyhow!("REGEX {re:?}: {}", last.trim_start_matches("error: "))
                })?;
            Some(NameFilter(Arc::new(move |name: &str| re.is_match(name))))
        }
        None => None,
    };
    let (profile, taken) = read_profile(&args.profile)?;
    if !profile
        .frames
        .iter()
        .any(|f| f.line.is_some() && f.file.is_some())
    {
        bail!(
            "{}: no frame has a source line (write .folded with --by-line, or use a .pb.gz)",
            args.profile.display()
        );
    }
    let sources = crate::sources::read_sources(&profile, &args.source.config(), taken);
    let sources = Arc::new(sources);
    let listing = AnnotatedSource {
        functions: args.source.functions,
        only,
        sources: sources.clone(),
    };
    match out {
        Some(out) => {
            let path = out.spec.path.clone();
            let exporter: Box<dyn Exporter> = if out.spec.format == OutputFormat::Heatmap {
                Box::new(Heatmap { sources })
            } else {
                Box::new(listing)
            };
            out.write_with(output::sudo_owner(), |w| Ok(exporter.export(&profile, w)?))?;
            eprintln!("sprofd: wrote {}", path.display());
        }
        None => {
            let stdout = std::io::stdout();
            listing
                .export(&profile, &mut stdout.lock())
                .context("writing to stdout")?;
        }
    }
    Ok(0)
}

/// The profile in `path`, and when it was taken (as far as the file says): pprof's
/// `time_nanos`, or a folded file's modification time.
fn read_profile(path: &Path) -> anyhow::Result<(SymbolizedProfile, Option<SystemTime>)> {
    let format = OutputFormat::from_path(path);
    if !matches!(format, Some(OutputFormat::Pprof | OutputFormat::Folded)) {
        bail!(
            "{}: sprofd annotate reads .pb.gz, .pprof or .folded (written with --by-line)",
            path.display()
        );
    }
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("{}", path.display()))?;
    if !meta.is_file() {
        bail!("{}: not a regular file", path.display());
    }
    let mut bytes = Vec::new();
    file.take(MAX_PROFILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{}", path.display()))?;
    if bytes.len() as u64 > MAX_PROFILE_BYTES {
        bail!("{}: larger than {MAX_PROFILE_BYTES} bytes", path.display());
    }
    if format == Some(OutputFormat::Folded) {
        let stacks = Stacks::parse_folded(&bytes)
            .with_context(|| format!("{}: not folded stacks", path.display()))?;
        return Ok((profile_from_stacks(&stacks), meta.modified().ok()));
    }
    let proto = decode_pprof(&bytes).with_context(|| format!("{}", path.display()))?;
    let profile = profile_from_proto(&proto).with_context(|| format!("{}", path.display()))?;
    let taken = u64::try_from(proto.time_nanos)
        .ok()
        .filter(|&t| t > 0)
        .map(|t| SystemTime::UNIX_EPOCH + Duration::from_nanos(t));
    Ok((profile, taken))
}
