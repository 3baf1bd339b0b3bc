//! The `sprofd` binary: command-line front end of the profiler.
//!
//! `anyhow` lives only here: library errors are typed, and this edge turns them into one
//! line on stderr and a non-zero exit, never a panic or a backtrace.

mod cli;
mod config;
mod loader;
mod output;
mod privileges;
mod session;
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
    let max_rate = sprof_perf::procfs::perf_event_max_sample_rate();
    let driver = match cli.command {
        Command::Attach { pid, opts } => opts
            .into_config(Target::Pid(pid), max_rate)
            .map(Driver::Session),
        Command::Record { opts, command } => opts
            .into_config(Target::Command(command), max_rate)
            .map(Driver::Session),
        Command::Top { pid, opts, command } => {
            let target = match pid {
                Some(pid) => Target::Pid(pid),
                None => Target::Command(command),
            };
            opts.into_config(target, max_rate).map(Driver::Top)
        }
    };
    let code = match driver {
        Err(e) => {
            eprintln!("sprofd: error: {e}");
            2
        }
        Ok(driver) => match std::panic::catch_unwind(|| match driver {
            Driver::Session(config) => session::run(config),
            Driver::Top(config) => top::run(config),
        }) {
            Ok(Ok(code)) => code,
            Ok(Err(e)) => {
                eprintln!("sprofd: error: {}", one_line(&e));
                1
            }
            Err(_) => 101,
        },
    };
    std::process::exit(code);
}

/// What the command line asked for.
enum Driver {
    /// `attach` and `record`.
    Session(config::SessionConfig),
    Top(config::TopConfig),
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
