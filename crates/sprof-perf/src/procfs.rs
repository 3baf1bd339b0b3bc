//! Readers for the `/proc` and `/sys` files the sampler consults.
//!
//! Every reader maps "the process is gone" (ENOENT, ESRCH) to [`ProcError::Gone`] so callers
//! can treat an exiting target as the normal event it is.

use std::io;
use std::path::PathBuf;

use std::os::unix::fs::OpenOptionsExt;

use sprof_core::{untrusted, JitFile, Mapping, PerfMapRead, Pid, Tid};

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("process {0} does not exist (or has exited)")]
    Gone(Pid),
    #[error("permission denied reading {path}")]
    Denied { path: String },
    #[error("reading {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("unexpected contents in {path}")]
    Malformed { path: String },
}

/// Most bytes read of one /proc file: a process can make its maps (tens of thousands of
/// mappings under long paths) or its command line hundreds of MB. Cut at the last whole line.
const MAX_PROC_FILE: u64 = 8 << 20;

fn read(pid: Pid, path: PathBuf) -> Result<String, ProcError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(MAX_PROC_FILE).read_to_end(&mut bytes))
        .map_err(|e| map_err(pid, path, e))?;
    if bytes.len() as u64 == MAX_PROC_FILE {
        let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        bytes.truncate(end);
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn map_err(pid: Pid, path: PathBuf, e: io::Error) -> ProcError {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ESRCH) => ProcError::Gone(pid),
        Some(libc::EACCES) | Some(libc::EPERM) => ProcError::Denied {
            path: path.display().to_string(),
        },
        _ => ProcError::Io {
            path: path.display().to_string(),
            source: e,
        },
    }
}

/// What `/proc/PID/stat` says about a process that matters before attaching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub comm: String,
    pub state: char,
    /// The parent's pid (0 for the first process of a pid namespace).
    pub ppid: u32,
    pub flags: u64,
    /// Start time in clock ticks after boot: with the pid, a process identity that survives
    /// pid reuse.
    pub start_time: u64,
}

/// `PF_KTHREAD` from include/linux/sched.h.
const PF_KTHREAD: u64 = 0x0020_0000;

impl ProcStat {
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z' || self.state == 'X'
    }
}

/// Parses the text of `/proc/PID/stat`. The comm is in parentheses and may itself contain
/// spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // fields[0] is field 3 (state); flags is field 9, starttime field 22.
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let flags = fields.get(6)?.parse().ok()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some(ProcStat {
        comm,
        state,
        ppid,
        flags,
        start_time,
    })
}

pub fn stat(pid: Pid) -> Result<ProcStat, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    let text = read(pid, path.clone())?;
    parse_stat(&text).ok_or(ProcError::Malformed {
        path: path.display().to_string(),
    })
}

/// The threads of a process.
pub fn tasks(pid: Pid) -> Result<Vec<Tid>, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/task"));
    let dir = std::fs::read_dir(&path).map_err(|e| map_err(pid, path.clone(), e))?;
    let mut tids: Vec<Tid> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .map(Tid)
        .collect();
    tids.sort();
    Ok(tids)
}

/// Every process now in `/proc` (by their pids in our pid namespace), sorted.
pub fn processes() -> io::Result<Vec<Pid>> {
    let mut pids: Vec<Pid> = std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .map(Pid)
        .collect();
    pids.sort();
    Ok(pids)
}

/// Most descendants [`descendants`] returns: a fork bomb is not a reason to open events
/// without end.
pub const MAX_DESCENDANTS: usize = 4096;

/// The processes now descended from `pid` (children, their children, ...), parents before
/// children, at most [`MAX_DESCENDANTS`]. One pass over `/proc`: a process forked during the
/// pass may be missed, but the events of its (attached) parent are inherited by it.
pub fn descendants(pid: Pid) -> Vec<Pid> {
    let mut children: std::collections::HashMap<u32, Vec<Pid>> = Default::default();
    for p in processes().unwrap_or_default() {
        if let Ok(st) = stat(p) {
            children.entry(st.ppid).or_default().push(p);
        }
    }
    let mut out = Vec::new();
    let mut queue = std::collections::VecDeque::from([pid]);
    while let Some(p) = queue.pop_front() {
        for &c in children.get(&p.0).map(Vec::as_slice).unwrap_or_default() {
            if out.len() >= MAX_DESCENDANTS || c == pid || out.contains(&c) {
                continue;
            }
            out.push(c);
            queue.push_back(c);
        }
    }
    out
}

/// A thread's name.
pub fn thread_comm(pid: Pid, tid: Tid) -> Result<String, ProcError> {
    let text = read(pid, PathBuf::from(format!("/proc/{pid}/task/{tid}/comm")))?;
    Ok(text.trim_end_matches('\n').to_string())
}

/// The executable mappings of a process.
pub fn exec_mappings(pid: Pid) -> Result<Vec<Mapping>, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/maps"));
    let text = read(pid, path.clone())?;
    let parsed = sprof_core::parse_maps(text.as_bytes()).map_err(|_| ProcError::Malformed {
        path: path.display().to_string(),
    })?;
    Ok(parsed
        .mappings
        .into_iter()
        .filter(|m| m.executable)
        .collect())
}

/// What `/proc/PID/status` says about a process's identity inside its namespaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcIds {
    /// The process's pid in its own (innermost) pid namespace: last field of `NStgid:`.
    pub ns_tgid: Option<u32>,
    /// Real and effective uid.
    pub uids: Vec<u32>,
}

/// Parses the text of `/proc/PID/status` for [`ProcIds`].
pub fn parse_status_ids(text: &str) -> ProcIds {
    let mut ids = ProcIds::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("NStgid:") {
            ids.ns_tgid = rest.split_whitespace().last().and_then(|f| f.parse().ok());
        } else if let Some(rest) = line.strip_prefix("Uid:") {
            ids.uids = rest
                .split_whitespace()
                .take(2)
                .filter_map(|f| f.parse().ok())
                .collect();
        }
    }
    ids
}

/// A process's resident memory and CPU time at one moment: what `mprof` plots, read from
/// `/proc/PID/status` (the `Rss*` lines, kB) and `/proc/PID/stat` (utime + stime, ticks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceUsage {
    /// Anonymous resident bytes (heap, stacks, private writes).
    pub rss_anon: u64,
    /// File-backed resident bytes (code, mapped files).
    pub rss_file: u64,
    /// Shared-memory resident bytes (shmem, tmpfs, SysV).
    pub rss_shmem: u64,
    /// The most resident bytes so far (`VmHWM`, what `ru_maxrss` reports): a peak between
    /// two readings shows here.
    pub rss_hwm: u64,
    /// User plus system CPU time so far, nanoseconds.
    pub cpu_ns: u64,
}

impl ResourceUsage {
    /// All resident bytes (what `VmRSS` says).
    pub fn rss(&self) -> u64 {
        self.rss_anon + self.rss_file + self.rss_shmem
    }
}

/// Parses the `Rss*` and `VmHWM` lines of `/proc/PID/status` into `usage` (a kernel thread
/// has none).
pub fn parse_status_rss(text: &str, usage: &mut ResourceUsage) {
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let field = match key {
            "RssAnon" => &mut usage.rss_anon,
            "RssFile" => &mut usage.rss_file,
            "RssShmem" => &mut usage.rss_shmem,
            "VmHWM" => &mut usage.rss_hwm,
            _ => continue,
        };
        let kb: u64 = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        *field = kb.saturating_mul(1024);
    }
}

/// Parses utime + stime (fields 14 and 15) of `/proc/PID/stat`, in clock ticks.
pub fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    let close = text.rfind(')')?;
    let mut fields = text.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime.saturating_add(stime))
}

/// Reads a process's [`ResourceUsage`] now: two small /proc reads, no lock of the target's
/// memory map (unlike `smaps_rollup`), so it is cheap enough to poll every few ms.
pub fn resource_usage(pid: Pid) -> Result<ResourceUsage, ProcError> {
    let mut usage = ResourceUsage::default();
    let status = read(pid, PathBuf::from(format!("/proc/{pid}/status")))?;
    parse_status_rss(&status, &mut usage);
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    let stat = read(pid, path.clone())?;
    let ticks = parse_stat_cpu_ticks(&stat).ok_or(ProcError::Malformed {
        path: path.display().to_string(),
    })?;
    // SAFETY: sysconf has no memory effects; _SC_CLK_TCK is always valid.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .unwrap_or(100)
        .max(1);
    usage.cpu_ns = ticks.saturating_mul(1_000_000_000 / hz);
    Ok(usage)
}

/// Opens one of a process's JIT symbol files. The perf map is `/tmp/perf-<NStgid>.map` as
/// the process sees it: opened inside its root with no symlink followed, so a link planted
/// by the process's user cannot point sprofd at a file that user could not read (see
/// [`sprof_core::untrusted`]). A jitdump is the file the process mapped, opened through
/// `/proc/PID/map_files`. `Ok(None)`: no such file (yet). The caller may keep the file open
/// to read what the process writes up to its exit (CPython flushes its jitdump only then).
/// Check it with [`read_jit_file`] before every read.
pub fn open_jit_file(pid: Pid, file: JitFile<'_>) -> Result<Option<JitFileHandle>, String> {
    let status = match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(s) => s,
        Err(_) => return Ok(None),
    };
    let ids = parse_status_ids(&status);
    let (opened, shown) = match file {
        JitFile::PerfMap => {
            let Some(nspid) = ids.ns_tgid else {
                return Ok(None);
            };
            let name = format!("tmp/perf-{nspid}.map");
            let root = format!("/proc/{pid}/root");
            let opened = std::fs::File::open(&root).and_then(|r| {
                untrusted::open_beneath(&r.into(), &name, true).map(std::fs::File::from)
            });
            (opened, format!("{root}/{name}"))
        }
        JitFile::JitDump(m) => {
            let path = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(&path);
            (opened, m.path.clone())
        }
    };
    match opened {
        Ok(file) => Ok(Some(JitFileHandle { file, ids, shown })),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            Err(format!("{shown}: a symlink, not followed"))
        }
        Err(e) => Err(format!("{shown}: {e}")),
    }
}

/// An open JIT symbol file, with the identity of the process it belongs to.
#[derive(Debug)]
pub struct JitFileHandle {
    file: std::fs::File,
    ids: ProcIds,
    shown: String,
}

/// Reads an open JIT symbol file: accepted only as a regular file owned by one of the
/// process's own uids (root only for a process running as root), writable by no one else,
/// and not sparse. Appends at most `max` bytes from `offset` to `buf`.
pub fn read_jit_file(h: &JitFileHandle, offset: u64, max: usize, buf: &mut Vec<u8>) -> PerfMapRead {
    read_checked_jit_file(&h.file, &h.ids, offset, max, buf)
        .unwrap_or_else(|why| PerfMapRead::Rejected(format!("{}: {why}", h.shown)))
}

/// The ownership checks, then the read: `Err` says why the file is refused.
fn read_checked_jit_file(
    file: &std::fs::File,
    ids: &ProcIds,
    offset: u64,
    max: usize,
    buf: &mut Vec<u8>,
) -> Result<PerfMapRead, String> {
    use std::os::unix::fs::FileExt;
    let rules = untrusted::OpenRules {
        // why: not root unless the process runs as root; a root-owned file is readable by
        // sprofd, not necessarily by the process's user (a confused deputy otherwise).
        owners: ids.uids.clone(),
        // The table above bounds what is read of a map over its life.
        max_bytes: u64::MAX,
        symlinks: untrusted::Symlinks::Refused,
        forbidden_mode: 0o022,
    };
    untrusted::check(file, &rules).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    // Sized to what the file holds now, so a small growth costs a small buffer.
    let want = usize::try_from(len.saturating_sub(offset))
        .unwrap_or(usize::MAX)
        .min(max);
    let start = buf.len();
    buf.resize(start + want, 0);
    let mut got = 0;
    while got < want {
        match file.read_at(&mut buf[start + got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    buf.truncate(start + got);
    Ok(PerfMapRead::Read { file_len: len })
}

/// The effective uid of a process: whose it is, as `/proc` (and `hidepid=`) sees it (a
/// setuid program its user started is root's).
pub fn uid(pid: Pid) -> Result<u32, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let status = read(pid, path.clone())?;
    parse_status_ids(&status)
        .uids
        .get(1)
        .copied()
        .ok_or_else(|| map_err(pid, path, io::Error::from(io::ErrorKind::InvalidData)))
}

/// The command line of a process, arguments joined by spaces.
pub fn cmdline(pid: Pid) -> Result<String, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/cmdline"));
    let bytes = std::fs::read(&path).map_err(|e| map_err(pid, path, e))?;
    let parts: Vec<String> = bytes
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    Ok(parts.join(" "))
}

/// A process's cgroup, what its container or unit is: the cgroup v2 path
/// (`0::/system.slice/x.scope` gives `/system.slice/x.scope`) unless it is the root, else the
/// first v1 hierarchy's path that is not the root (hybrid hosts), else `/`.
pub fn cgroup(pid: Pid) -> Result<String, ProcError> {
    let text = read(pid, PathBuf::from(format!("/proc/{pid}/cgroup")))?;
    Ok(parse_cgroup(&text))
}

pub fn parse_cgroup(text: &str) -> String {
    let entries: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let id = parts.next()?;
            parts.next()?;
            Some((id, parts.next()?))
        })
        .collect();
    let v2 = entries.iter().find(|(id, _)| *id == "0").map(|e| e.1);
    let path = match v2 {
        Some(p) if p != "/" => p,
        _ => entries
            .iter()
            .map(|e| e.1)
            .find(|p| *p != "/")
            .unwrap_or(if entries.is_empty() { "" } else { "/" }),
    };
    path.chars().take(256).collect()
}

/// The online CPUs, from `/sys/devices/system/cpu/online` (e.g. `0-3,6`).
pub fn online_cpus() -> Vec<u32> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let cpus = parse_cpu_list(text.trim());
    if cpus.is_empty() {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        (0..n as u32).collect()
    } else {
        cpus
    }
}

pub fn parse_cpu_list(text: &str) -> Vec<u32> {
    let mut cpus = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    cpus.extend(a..=b.min(a + 4096));
                }
            }
            None => cpus.extend(part.parse::<u32>().ok()),
        }
    }
    cpus
}

fn sysctl(name: &str) -> Option<i64> {
    std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `kernel.perf_event_paranoid`.
pub fn perf_event_paranoid() -> Option<i64> {
    sysctl("perf_event_paranoid")
}

/// `kernel.perf_event_max_sample_rate`.
pub fn perf_event_max_sample_rate() -> Option<u64> {
    sysctl("perf_event_max_sample_rate").and_then(|v| u64::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ids_take_the_innermost_pid_and_real_and_effective_uid() {
        let text = "Name:\tpython3\nUid:\t1000\t1001\t1000\t1000\nNStgid:\t4242\t17\t1\n";
        let ids = parse_status_ids(text);
        assert_eq!(ids.ns_tgid, Some(1));
        assert_eq!(ids.uids, vec![1000, 1001]);
        assert_eq!(parse_status_ids("garbage\nNStgid:\n"), ProcIds::default());
    }

    #[test]
    fn stat_with_parentheses_in_comm() {
        let text = "4242 (my (weird) prog) R 1 4242 4242 0 -1 4194304 100 0 0 0 7 3 0 0 20 0 1 0 123456 1000 10";
        let s = parse_stat(text).unwrap();
        assert_eq!(s.comm, "my (weird) prog");
        assert_eq!(s.state, 'R');
        assert_eq!(s.start_time, 123456);
        assert!(!s.is_kernel_thread());
        let k =
            parse_stat("2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0").unwrap();
        assert!(k.is_kernel_thread());
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,6"), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_cpu_list("0"), vec![0]);
        assert!(parse_cpu_list("x-y").is_empty());
    }

    #[test]
    fn own_process_is_readable() {
        let me = Pid(std::process::id());
        assert!(!stat(me).unwrap().is_zombie());
        assert!(tasks(me).unwrap().contains(&Tid(std::process::id())));
        assert!(exec_mappings(me)
            .unwrap()
            .iter()
            .any(|m| m.kind == sprof_core::MappingKind::File));
        assert!(matches!(stat(Pid(u32::MAX / 2)), Err(ProcError::Gone(_))));
    }

    #[test]
    fn cgroup_is_the_v2_path_or_the_first_informative_v1_one() {
        assert_eq!(
            parse_cgroup("0::/system.slice/docker-1f.scope\n"),
            "/system.slice/docker-1f.scope"
        );
        let hybrid = "9:name=systemd:/\n4:memory:/docker/abc\n1:cpu:/\n0::/\n";
        assert_eq!(parse_cgroup(hybrid), "/docker/abc");
        assert_eq!(parse_cgroup("1:cpu:/\n0::/\n"), "/");
        assert_eq!(parse_cgroup(""), "");
    }

    #[test]
    fn resident_memory_comes_from_the_rss_lines_and_cpu_from_utime_stime() {
        let mut u = ResourceUsage::default();
        parse_status_rss(
            "Name:\tx\nVmHWM:\t    5120 kB\nVmRSS:\t    3072 kB\nRssAnon:\t    1024 kB\nRssFile:\t    2048 kB\nRssShmem:\t       0 kB\n",
            &mut u,
        );
        assert_eq!(
            (u.rss_anon, u.rss_file, u.rss_shmem, u.rss(), u.rss_hwm),
            (1 << 20, 2 << 20, 0, 3 << 20, 5 << 20)
        );
        let stat = "42 (a) b) c) R 1 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 1 0 99 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(300));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        let me = resource_usage(Pid(std::process::id())).unwrap();
        assert!(me.rss_anon > 0 && me.rss_file > 0);
    }
}
