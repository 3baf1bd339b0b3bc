//! The labels of the processes in a slice (command line as `--cmdline` says to keep it,
//! cgroup, uid), read from /proc once per process per window.

use std::collections::HashMap;

use sprof_core::{Pid, ProcessLabels, SymbolizedProfile};
use sprof_perf::procfs;

use super::config::CmdlineMode;

/// Bytes of /proc/PID/cmdline read at most (the kernel allows megabytes; 512 chars are kept).
const MAX_CMDLINE_READ: u64 = 64 << 10;

/// Labels read in this window.
pub struct Labels {
    cmdline: CmdlineMode,
    processes: HashMap<u32, ProcessLabels>,
}

impl Labels {
    pub fn new(cmdline: CmdlineMode) -> Labels {
        Labels {
            cmdline,
            processes: HashMap::new(),
        }
    }

    /// Labels the processes of `profile`, reading those not read in this window yet.
    pub fn label(&mut self, profile: &mut SymbolizedProfile) {
        let mut pids: Vec<u32> = profile
            .stacks
            .iter()
            .filter_map(|s| s.thread.map(|t| t.pid))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        for pid in pids {
            let mode = self.cmdline;
            let labels = self.processes.entry(pid).or_insert_with(|| ProcessLabels {
                cmdline: read_cmdline(pid, mode),
                cgroup: procfs::cgroup(Pid(pid)).unwrap_or_default(),
                uid: procfs::uid(Pid(pid)).ok(),
            });
            if *labels != ProcessLabels::default() {
                profile.processes.insert(pid, labels.clone());
            }
        }
    }

    /// A new window: processes are read again (a pid may now be another process).
    pub fn clear(&mut self) {
        self.processes.clear();
    }
}

/// A process's command line as `--cmdline` says to keep it.
fn read_cmdline(pid: u32, mode: CmdlineMode) -> String {
    use std::io::Read;
    let redact = match mode {
        CmdlineMode::Off => return String::new(),
        CmdlineMode::Redacted => true,
        CmdlineMode::Full => false,
    };
    let mut raw = Vec::new();
    let read = std::fs::File::open(format!("/proc/{pid}/cmdline"))
        .and_then(|f| f.take(MAX_CMDLINE_READ).read_to_end(&mut raw));
    match read {
        Ok(_) => super::redact::cmdline(&raw, redact),
        Err(_) => String::new(),
    }
}
