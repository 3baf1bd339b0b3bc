//! What the daemon needs to profile other users' processes, checked at start so that a
//! missing capability is one line naming it rather than a host of nameless frames.

use sprof_perf::{procfs, SamplerError};

use crate::privileges::has_capability;

struct Cap {
    bit: u32,
    name: &'static str,
    why: &'static str,
    required: bool,
}

const CAPS: [Cap; 5] = [
    Cap {
        bit: 38,
        name: "CAP_PERFMON",
        why: "per-CPU perf events for every process",
        required: true,
    },
    Cap {
        bit: 19,
        name: "CAP_SYS_PTRACE",
        why: "other users' /proc/PID/maps and memory (stacks, Python frames)",
        required: true,
    },
    Cap {
        bit: 2,
        name: "CAP_DAC_READ_SEARCH",
        why: "other users' binaries and debug files",
        required: true,
    },
    Cap {
        bit: 40,
        name: "CAP_CHECKPOINT_RESTORE",
        why: "/proc/PID/map_files (deleted or replaced binaries, containers)",
        required: false,
    },
    Cap {
        bit: 34,
        name: "CAP_SYSLOG",
        why: "kernel symbol addresses",
        required: false,
    },
];

const CAP_SYS_ADMIN: u32 = 21;

/// Checks the capabilities whole-host profiling needs. `Err` is the line to print (the
/// daemon refuses to start); the warnings name what is missing but optional.
pub fn check(host_wide: bool, kernel: bool) -> Result<Vec<String>, String> {
    let paranoid = procfs::perf_event_paranoid();
    let mut missing = Vec::new();
    let mut warnings = Vec::new();
    for cap in &CAPS {
        let has = has_capability(cap.bit)
            // Before 5.8, CAP_SYS_ADMIN is what perf checks; a paranoid setting of -1
            // opens per-CPU events to everyone.
            || (cap.bit == 38 && (has_capability(CAP_SYS_ADMIN) || paranoid.is_some_and(|p| p < 0)));
        if has {
            continue;
        }
        if cap.required && host_wide {
            missing.push(cap);
        } else if cap.bit != 34 || kernel {
            warnings.push(format!(
                "{} is missing ({}): those will be unavailable",
                cap.name, cap.why
            ));
        }
    }
    if missing.is_empty() {
        return Ok(warnings);
    }
    let names: Vec<&str> = missing.iter().map(|c| c.name).collect();
    let whys: Vec<String> = missing
        .iter()
        .map(|c| format!("{}: {}", c.name, c.why))
        .collect();
    Err(format!(
        "profiling the whole host needs {} (missing; {}). Run it as the sprofd.service unit, which grants them, or as root, or narrow it with --pid to processes of this user",
        names.join(", "),
        whys.join("; ")
    ))
}

/// A failure to open the events, as one line.
pub fn explain_open(e: SamplerError, target: &str) -> anyhow::Error {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => anyhow::anyhow!(
            "cannot profile {target}: perf_event_open: permission denied (kernel.perf_event_paranoid={}); the daemon needs CAP_PERFMON",
            procfs::perf_event_paranoid().map_or("?".to_string(), |p| p.to_string())
        ),
        Some(libc::ESRCH) => anyhow::anyhow!("cannot profile {target}: no such process"),
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            anyhow::anyhow!("cannot profile {target}: out of file descriptors (raise LimitNOFILE= or ulimit -n)")
        }
        _ => anyhow::anyhow!("cannot profile {target}: {e}"),
    }
}
