//! The end of a command-line session: why it stopped, the signal passed on to a launched
//! command, the summary line, `--verbose`'s statistics and sprofd's exit code.

use std::time::{Duration, Instant};

use sprof_core::SourceStats;
use sprof_engine::Engine;
use sprof_perf::spawn::ExitStatus;

use super::{Profiled, SessionSymbolizer};

/// Why sampling stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Duration,
    Interrupted,
    Terminated,
    TargetExited,
    /// The user left a live view (`q`).
    Quit,
}

/// A launched command hears of Ctrl-C from the terminal itself; if it was sprofd alone that
/// was signalled, pass the signal on.
pub fn forward_signal(profiled: &mut Profiled, reason: StopReason) {
    let Profiled::Launched { child, .. } = profiled else {
        return;
    };
    let sig = match reason {
        StopReason::Interrupted => libc::SIGINT,
        StopReason::Terminated => libc::SIGTERM,
        _ => return,
    };
    let deadline = Instant::now() + Duration::from_millis(100);
    while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(5));
    }
    if matches!(child.try_wait(), Ok(None)) {
        let _ = sprof_perf::sys::kill(child.pid(), sig);
    }
}

/// The `sprofd: interrupted; 3100 samples in 3.10 s from 4 threads` line at the end.
pub fn summary(
    reason: StopReason,
    profiled: &Profiled,
    stats: &sprof_core::SessionStats,
    secs: f64,
    threads: usize,
) -> String {
    let what = match reason {
        StopReason::Duration | StopReason::Quit => String::new(),
        StopReason::Interrupted => "interrupted; ".into(),
        StopReason::Terminated => "terminated; ".into(),
        StopReason::TargetExited => match profiled {
            Profiled::Attached { pid, .. } => format!("PID {pid} exited; "),
            Profiled::Launched { program, .. } => format!("{program} exited; "),
        },
    };
    let lost = if stats.lost > 0 {
        format!(", {} lost", stats.lost)
    } else {
        String::new()
    };
    format!(
        "sprofd: {what}{} samples in {secs:.2} s from {threads} threads{lost}",
        stats.samples
    )
}

/// sprofd's exit code: 1 if an output failed, else a launched command's own status.
pub fn exit_code(profiled: Profiled, failed: bool) -> i32 {
    let code = i32::from(failed);
    let Profiled::Launched { mut child, program } = profiled else {
        return code;
    };
    if matches!(child.try_wait(), Ok(None)) {
        eprintln!("sprofd: waiting for {program} to exit (Ctrl-C again to abort)");
    }
    match child.wait() {
        Ok(status) => {
            eprintln!("sprofd: {program} ended with {status}");
            match (failed, status) {
                (true, _) => code,
                (false, ExitStatus::Exited(c)) => c,
                (false, ExitStatus::Signaled(s)) => 128 + s,
            }
        }
        Err(e) => {
            eprintln!("sprofd: waiting for {program}: {e}");
            code
        }
    }
}

/// `--verbose`: what the session cost, for users tuning it and for the benchmark.
pub fn print_statistics(engine: &Engine, symbols: &SessionSymbolizer, source: SourceStats) {
    let s = engine.stats();
    eprintln!(
        "sprofd: stats: unwind per sample median {:.2} µs, p99 {:.2} µs over {} samples ({} DWARF walks, {} stack copies filled --stack-size)",
        f64::from(s.unwind_median_ns) / 1000.0,
        f64::from(s.unwind_p99_ns) / 1000.0,
        s.unwind_timed,
        s.unwind.dwarf_walks,
        s.unwind.stack_copy_full
    );
    eprintln!(
        "sprofd: stats: {} modules read ({:.1} MiB), symbolization {:.3} s, {} records undecodable",
        s.modules,
        s.module_bytes as f64 / (1 << 20) as f64,
        symbols.last_symbolize().as_secs_f64(),
        source.unparsed
    );
    let f = symbols.stats();
    eprintln!(
        "sprofd: stats: frames named {}; unnamed: {} outside any known module, {} in unreadable files, {} in files without symbols, {} with no covering symbol",
        f.resolved, f.unknown_module, f.unreadable_file, f.no_symbols, f.no_symbol
    );
    eprintln!(
        "sprofd: stats: JIT: {} walks through {} JIT frames ({} ended at a JIT frame); {} JIT frames named, {} not",
        s.unwind.jit_walks, s.unwind.jit_frames, s.unwind.jit_truncated, f.jit_resolved, f.jit_unknown
    );
    for line in engine.hook_reports() {
        eprintln!("sprofd: stats: {line}");
    }
}
