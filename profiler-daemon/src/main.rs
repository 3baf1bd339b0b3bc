//! The `sprofd` binary: command-line front end of the profiler.
//!
//! `anyhow` lives only here: library errors are typed, and this edge turns them into one
//! line on stderr and a non-zero exit, never a panic or a backtrace.

mod annotate;
mod cli;
mod config;
mod daemon;
mod diff;
mod driver;
mod loader;
mod output;
mod privileges;
mod record;
mod resources;
mod sources;
mod top;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config::Target;

fn main() {
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("sprofd: internal error: {msg}{at} (please report this)");
    }));

    let cli = Cli::parse();
    let code = match cli.command {
        Command::Diff(args) => match args.into_config() {
            Err(e) => usage_error(&e),
            Ok(config) => run_catching(|| diff::run(&config)),
        },
        Command::Attach { pid, opts } => profile(opts.into_config(Target::Pid(pid), max_rate())),
        Command::Record { opts, command } => {
            profile(opts.into_config(Target::Command(command), max_rate()))
        }
        Command::Daemon(args) => match args.into_config(max_rate()) {
            Err(e) => {
                eprintln!("sprofd: error: {e}");
                2
            }
            Ok(config) => run_catching(|| daemon::run(config)),
        },
        Command::Annotate(args) => run_catching(|| annotate::run(&args)),
        Command::Report(args) => match args.into_config() {
            Err(e) => {
                eprintln!("sprofd: error: {e}");
                2
            }
            Ok(config) => run_catching(|| daemon::report(config)),
        },
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "sprofd", &mut std::io::stdout());
            0
        }
        Command::Manpage => {
            use clap::CommandFactory;
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("sprofd: error: writing the man page: {e}");
                    1
                }
            }
        }
        Command::Top { pid, opts, command } => {
            let target = match pid {
                Some(pid) => Target::Pid(pid),
                None => Target::Command(command),
            };
            match opts.into_config(target, max_rate()) {
                Err(e) => usage_error(&e),
                Ok(config) => run_catching(|| top::run(config)),
            }
        }
    };
    std::process::exit(code);
}

fn max_rate() -> Option<u64> {
    sprof_perf::procfs::perf_event_max_sample_rate()
}

fn profile(config: Result<config::SessionConfig, cli::UsageError>) -> i32 {
    match config {
        Err(e) => usage_error(&e),
        Ok(config) => run_catching(|| record::run(config)),
    }
}

fn usage_error(e: &cli::UsageError) -> i32 {
    eprintln!("sprofd: error: {e}");
    2
}

/// Runs a command; its error becomes one line on stderr and exit 1, a panic (already
/// reported by the hook) exit 101.
fn run_catching(f: impl FnOnce() -> anyhow::Result<i32> + std::panic::UnwindSafe) -> i32 {
    match std::panic::catch_unwind(f) {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("sprofd: error: {}", one_line(&e));
            1
        }
        Err(_) => 101,
    }
}

/// The error and its causes on one line, each cause once: typed errors often already
/// include their source's text in their own message.
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}
