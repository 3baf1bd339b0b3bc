//! What sprofd may do here (the command line's kernel counting, the daemon's capabilities),
//! and one-line explanations when the kernel says no.

use sprof_perf::{procfs, SamplerError, SamplingPolicy, StackCapture};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_SYSLOG: u32 = 34;

fn has_capability(cap: u32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << cap) != 0)
}

fn is_root() -> bool {
    sprof_perf::sys::euid() == 0
}

/// Whether events may count while the thread runs in the kernel (and show kernel frames).
pub fn can_count_kernel() -> bool {
    is_root()
        || has_capability(CAP_PERFMON)
        || has_capability(CAP_SYS_ADMIN)
        || procfs::perf_event_paranoid().is_some_and(|p| p <= 1)
}

fn paranoid_text() -> String {
    match procfs::perf_event_paranoid() {
        Some(p) => format!("kernel.perf_event_paranoid={p}"),
        None => "kernel.perf_event_paranoid unreadable".into(),
    }
}

/// The line attach and record print when the events count user space only, as the kernel
/// allows an unprivileged user at perf_event_paranoid 2 (the default): the shares are of
/// user-space time, which a reader should know.
pub fn user_only_note() -> Option<String> {
    (!can_count_kernel()).then(|| {
        format!(
            "sprofd: sampling user space only (not root, no CAP_PERFMON, {}): time spent in the kernel is not counted",
            paranoid_text()
        )
    })
}

/// The sysctl that lets users sample: above 2 (Debian's 3, Ubuntu's 4) no user may open any
/// event, and 2 is enough for one's own processes, user space only (profiling one's own
/// notebook kernel); 1 adds kernel time and frames.
fn paranoid_advice(paranoid: Option<i64>) -> &'static str {
    match paranoid {
        Some(p) if p > 2 => "sysctl kernel.perf_event_paranoid=2 (users may then profile their own processes, user space only; 1: with kernel frames)",
        _ => "sysctl kernel.perf_event_paranoid=1",
    }
}

pub fn kernel_denied_message() -> String {
    format!(
        "--kernel needs root, CAP_PERFMON, or kernel.perf_event_paranoid <= 1 ({}). Run with sudo, grant the capability (sudo setcap cap_perfmon,cap_sys_ptrace+ep $(command -v sprofd)), or drop --kernel",
        paranoid_text()
    )
}

pub fn switch_denied_message() -> String {
    format!(
        "--mode wall and --mode off-cpu sample context switches, which happen in the kernel: they need root, CAP_PERFMON, or kernel.perf_event_paranoid <= 1 ({}). Run with sudo or grant the capability (sudo setcap cap_perfmon,cap_sys_ptrace+ep $(command -v sprofd))",
        paranoid_text()
    )
}

/// Turns a failure to start sampling into a message that says what to do; `daemon` for the
/// daemon's sources (the host or a set of pids), whose remedies are the service's.
pub fn explain(
    e: SamplerError,
    target: &str,
    policy: &SamplingPolicy,
    daemon: bool,
) -> anyhow::Error {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) if daemon => anyhow::anyhow!(
            "cannot profile {target}: perf_event_open: permission denied (kernel.perf_event_paranoid={}); the daemon needs CAP_PERFMON",
            procfs::perf_event_paranoid().map_or("?".to_string(), |p| p.to_string())
        ),
        Some(libc::EACCES) | Some(libc::EPERM) if matches!(e, SamplerError::Open { .. }) => anyhow::anyhow!(
            "cannot profile {target}: perf_event_open: permission denied ({}, sprofd is not root and lacks CAP_PERFMON). Run as root (sudo), grant CAP_PERFMON (sudo setcap cap_perfmon,cap_sys_ptrace+ep $(command -v sprofd)), or allow it system-wide with {} (see the kernel's perf-security documentation). In containers, a seccomp profile may also block perf_event_open",
            paranoid_text(),
            paranoid_advice(procfs::perf_event_paranoid())
        ),
        Some(libc::ESRCH) if daemon => anyhow::anyhow!("cannot profile {target}: no such process"),
        Some(libc::ESRCH) => anyhow::anyhow!("cannot profile {target}: the process no longer exists"),
        Some(libc::EMFILE) | Some(libc::ENFILE) if daemon => {
            anyhow::anyhow!("cannot profile {target}: out of file descriptors (raise LimitNOFILE= or ulimit -n)")
        }
        Some(libc::EMFILE) | Some(libc::ENFILE) => anyhow::anyhow!(
            "cannot profile {target}: out of file descriptors (sprofd needs one per thread per CPU); raise the limit with ulimit -n"
        ),
        Some(libc::EINVAL) if !daemon => anyhow::anyhow!(
            "cannot profile {target}: the kernel rejected the sampling settings (EINVAL): {} Hz (kernel.perf_event_max_sample_rate = {}), user stack copy {} bytes",
            policy.frequency,
            procfs::perf_event_max_sample_rate().map(|m| m.to_string()).unwrap_or_else(|| "?".into()),
            match policy.capture {
                StackCapture::UserStack { bytes } => bytes,
                StackCapture::FramePointer => 0,
            }
        ),
        Some(libc::EPERM) => anyhow::anyhow!(
            "cannot profile {target}: {e}: the ring buffer exceeds the locked-memory budget (kernel.perf_event_mlock_kb); run as root or grant CAP_IPC_LOCK"
        ),
        _ => anyhow::anyhow!("cannot profile {target}: {e}"),
    }
}

/// A capability whole-host profiling uses.
struct Cap {
    bit: u32,
    name: &'static str,
    why: &'static str,
    required: bool,
}

const CAPS: [Cap; 5] = [
    Cap {
        bit: CAP_PERFMON,
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
        bit: CAP_SYSLOG,
        name: "CAP_SYSLOG",
        why: "kernel symbol addresses",
        required: false,
    },
];

/// Checks the capabilities the daemon needs to profile other users' processes, at start, so
/// that a missing one is one line naming it rather than a host of nameless frames. `Err` is
/// the line to print (the daemon refuses to start); the warnings name what is missing but
/// optional.
pub fn check_daemon(host_wide: bool, kernel: bool) -> Result<Vec<String>, String> {
    let paranoid = procfs::perf_event_paranoid();
    let mut missing = Vec::new();
    let mut warnings = Vec::new();
    for cap in &CAPS {
        let has = has_capability(cap.bit)
            // Before 5.8, CAP_SYS_ADMIN is what perf checks; a paranoid setting of -1
            // opens per-CPU events to everyone.
            || (cap.bit == CAP_PERFMON
                && (has_capability(CAP_SYS_ADMIN) || paranoid.is_some_and(|p| p < 0)));
        if has {
            continue;
        }
        if cap.required && host_wide {
            missing.push(cap);
        } else if cap.bit != CAP_SYSLOG || kernel {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paranoid_advice_names_the_least_setting_that_helps() {
        assert!(paranoid_advice(Some(3)).starts_with("sysctl kernel.perf_event_paranoid=2 "));
        assert!(paranoid_advice(Some(4)).starts_with("sysctl kernel.perf_event_paranoid=2 "));
        assert_eq!(
            paranoid_advice(Some(2)),
            "sysctl kernel.perf_event_paranoid=1"
        );
        assert_eq!(paranoid_advice(None), "sysctl kernel.perf_event_paranoid=1");
    }
}
