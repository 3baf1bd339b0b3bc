//! What sprofd may do here, and one-line explanations when the kernel says no.

use sprof_perf::{procfs, SamplerError};

use crate::config::SessionConfig;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;

pub(crate) fn has_capability(cap: u32) -> bool {
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

/// Turns a failure to start sampling into a message that says what to do.
pub fn explain(e: SamplerError, target: &str, config: &SessionConfig) -> anyhow::Error {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) if matches!(e, SamplerError::Open { .. }) => anyhow::anyhow!(
            "cannot profile {target}: perf_event_open: permission denied ({}, sprofd is not root and lacks CAP_PERFMON). Run as root (sudo), grant CAP_PERFMON (sudo setcap cap_perfmon,cap_sys_ptrace+ep $(command -v sprofd)), or allow it system-wide with {} (see the kernel's perf-security documentation). In containers, a seccomp profile may also block perf_event_open",
            paranoid_text(),
            paranoid_advice(procfs::perf_event_paranoid())
        ),
        Some(libc::ESRCH) => anyhow::anyhow!("cannot profile {target}: the process no longer exists"),
        Some(libc::EMFILE) | Some(libc::ENFILE) => anyhow::anyhow!(
            "cannot profile {target}: out of file descriptors (sprofd needs one per thread per CPU); raise the limit with ulimit -n"
        ),
        Some(libc::EINVAL) => anyhow::anyhow!(
            "cannot profile {target}: the kernel rejected the sampling settings (EINVAL): {} Hz (kernel.perf_event_max_sample_rate = {}), user stack copy {} bytes",
            config.frequency,
            procfs::perf_event_max_sample_rate().map(|m| m.to_string()).unwrap_or_else(|| "?".into()),
            config.stack_size
        ),
        Some(libc::EPERM) => anyhow::anyhow!(
            "cannot profile {target}: {e}: the ring buffer exceeds the locked-memory budget (kernel.perf_event_mlock_kb); run as root or grant CAP_IPC_LOCK"
        ),
        _ => anyhow::anyhow!("cannot profile {target}: {e}"),
    }
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
