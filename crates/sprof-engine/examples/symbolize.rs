//! Times symbolization alone of a recorded session: replays a `sprofd record --save-events`
//! recording through the engine (unwinding every sample against the binaries on disk, as
//! the live session did), then symbolizes the profile's unique frames with a fresh
//! [`SymbolService`] — ELF parsing, DWARF context construction, inline expansion and
//! demangling all included, as in `sprofd record` at the end of a run. Used by
//! `bench/symbolize.sh`.
//!
//! Usage: `cargo run --release -p sprof-engine --example symbolize -- RECORDING [FOLDED]`
//!
//! Prints one `key value` line per figure (`unique_frames`, `module_frames`, `modules`,
//! `display_frames`, `named`, `replay_ms`, `symbolize_ms`, `total_ms`) and, with FOLDED,
//! writes the symbolized stacks there as collapsed stacks (`a;b;c COUNT`) for checking.

use std::collections::HashSet;
use std::io::Write;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use sprof_core::{FrameKey, ProfileMeta};
use sprof_engine::replay::ReplaySource;
use sprof_engine::{Engine, EngineConfig};
use sprof_symbolizer::SymbolService;
// Reads mapped files from disk, as the live session's loader read them from the process.
use sprof_testkit::FileLoader;
use sprof_unwind::UnwindMode;

fn main() {
    let t_start = Instant::now();
    let mut args = std::env::args().skip(1);
    let Some(recording) = args.next() else {
        eprintln!("usage: symbolize RECORDING [FOLDED]");
        std::process::exit(2);
    };
    let folded = args.next();
    let mut source = match ReplaySource::open(recording.as_ref(), 4096) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{recording}: {e}");
            std::process::exit(1);
        }
    };
    let mut engine = Engine::new(
        EngineConfig {
            unwind: UnwindMode::Auto,
            kernel_frames: false,
            time_unwind: false,
        },
        Box::new(FileLoader),
    );
    sprof_engine::run(&mut source, &mut engine, Duration::ZERO, |_| {
        ControlFlow::<()>::Continue(())
    });
    let raw = engine.snapshot();
    let replay = t_start.elapsed();

    // The measured part: a service with nothing cached, as at the end of `sprofd record`.
    let t0 = Instant::now();
    let mut symbols = SymbolService::new(false);
    symbols.set_debuginfod(None);
    let profile = symbols.symbolize(&raw, engine.modules(), ProfileMeta::default());
    let symbolize = t0.elapsed();

    let module_frames = raw
        .frames
        .iter()
        .filter(|k| matches!(k, FrameKey::Module { .. }))
        .count();
    let modules: HashSet<_> = raw
        .frames
        .iter()
        .filter_map(|k| match k {
            FrameKey::Module { module, .. } => Some(*module),
            _ => None,
        })
        .collect();
    println!("samples {}", raw.stats.samples);
    println!("unique_frames {}", raw.frames.len());
    println!("module_frames {module_frames}");
    println!("modules {}", modules.len());
    println!("display_frames {}", profile.frames.len());
    println!("named {}", symbols.stats.resolved);
    println!("replay_ms {:.3}", replay.as_secs_f64() * 1e3);
    println!("symbolize_ms {:.3}", symbolize.as_secs_f64() * 1e3);
    println!("total_ms {:.3}", t_start.elapsed().as_secs_f64() * 1e3);

    if let Some(path) = folded {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap_or_else(|e| {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }));
        for s in &profile.stacks {
            let names: Vec<&str> = s
                .frames
                .iter()
                .map(|&f| profile.frames[f as usize].function.as_str())
                .collect();
            let _ = writeln!(out, "{} {}", names.join(";"), s.samples);
        }
    }
}
