//! `sprofd diff`: reads the two profiles, writes the differential outputs and prints the
//! table. The comparison itself is `flamegraph_out::Differential`'s.

use std::io::Write;

use anyhow::Context;
use flamegraph_out::{read_stacks, DiffSvg, Differential, ExportError};

use crate::config::{DiffConfig, DiffKind};
use crate::output;

/// Runs a diff; the exit code is 1 when an output failed (the others are still written).
pub fn run(config: &DiffConfig) -> anyhow::Result<i32> {
    // Reserved first, so a bad output path is reported before any reading.
    let outputs = config
        .outputs
        .iter()
        .map(|(spec, kind)| Ok((output::prepare(spec.clone())?, *kind)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let before = read_stacks(&config.before)?;
    let after = read_stacks(&config.after)?;
    let diff =
        Differential::new(&before, &after, config.normalize).context("comparing the profiles")?;
    let svg = DiffSvg::new(
        &config.before.display().to_string(),
        &config.after.display().to_string(),
        &diff,
    );

    let owner = output::sudo_owner();
    let mut failed = false;
    for (out, kind) in outputs {
        let path = out.spec.path.clone();
        let written = out.write_with(owner, |w| Ok(write(&diff, &svg, kind, config.rows, w)?));
        match written {
            Ok(()) => eprintln!("sprofd: wrote {}", path.display()),
            Err(e) => {
                eprintln!("sprofd: error: {e}");
                failed = true;
            }
        }
    }
    if !config.quiet {
        let stdout = std::io::stdout();
        if let Err(e) = diff.write_table(Some(config.rows), &mut stdout.lock()) {
            eprintln!("sprofd: error: writing the table to stdout: {e}");
            failed = true;
        }
    }
    Ok(i32::from(failed))
}

fn write(
    diff: &Differential,
    svg: &DiffSvg,
    kind: DiffKind,
    rows: usize,
    w: &mut dyn Write,
) -> Result<(), ExportError> {
    match kind {
        DiffKind::Svg => diff.write_svg(svg, w),
        DiffKind::Folded => diff.write_folded(w),
        DiffKind::Table => diff.write_table(Some(rows), w),
    }
}
