//! Reading the source files a profile's lines come from, for the annotated source and the
//! heatmap.
//!
//! Files are read where the target sees them: beneath `/proc/PID/root` while the process
//! lives (containers included), with a relative Python path (`python3 app.py`) taken from
//! the process's working directory; beneath `/` once it has exited (`record`'s target) or
//! for a saved profile (`sprofd annotate`). `--source-map FROM=TO` rewrites path prefixes
//! and `--source-root DIR` looks the path (and its shorter tails) up under DIR, for builds
//! made elsewhere; those are the user's own choices and are read from the host.
//!
//! The daemon runs as root and the paths come from the profiled process (a Python
//! `co_filename` is whatever the code says), so every open goes through
//! [`sprof_core::untrusted`]: resolved beneath the root with no link out of it,
//! non-blocking, a regular file of at most [`MAX_SOURCE_BYTES`], owned by the process's
//! user or by root, writable by no one else. A root-owned file is read only when anyone may
//! read it (a confused deputy otherwise: `co_filename = "/etc/shadow"`, then served by the
//! daemon to whoever may query it).
//!
//! A file modified after the process started no longer holds the lines that ran: it is
//! reported as changed rather than printed with the wrong text.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use flamegraph_out::{profile_files, SourceFiles, SourceText};
use sprof_core::untrusted::{self, OpenRules, Refusal, Symlinks};
use sprof_core::SymbolizedProfile;

/// Largest source file read.
pub const MAX_SOURCE_BYTES: u64 = 4 << 20;
/// Most files read for one profile (the busiest); the others are reported as not read.
pub const MAX_SOURCE_FILES: usize = 256;
/// Most bytes read for one profile: a daemon query may not make it hold gigabytes.
pub const MAX_TOTAL_SOURCE_BYTES: usize = 64 << 20;

/// Where to look for sources besides the target's own root.
#[derive(Debug, Clone, Default)]
pub struct SourceConfig {
    /// `--source-root DIR`.
    pub root: Option<PathBuf>,
    /// `--source-map FROM=TO`, in the order given; the first matching prefix applies.
    pub map: Vec<(String, String)>,
}

impl SourceConfig {
    /// Parses one `--source-map FROM=TO`.
    pub fn parse_map(s: &str) -> Result<(String, String), String> {
        match s.split_once('=') {
            Some((from, to)) if !from.is_empty() && !to.is_empty() => {
                Ok((from.to_string(), to.to_string()))
            }
            _ => Err(format!("--source-map {s:?}: expected FROM=TO")),
        }
    }
}

/// Who the files are read for.
#[derive(Debug, Clone)]
struct Reader {
    /// The directory paths resolve beneath, as if it were `/`.
    root: PathBuf,
    /// Where relative paths start (inside `root`).
    cwd: Option<String>,
    /// Uids whose files are accepted (the process's, or the user's).
    owners: Vec<u32>,
    /// When the code was loaded: a file modified later is reported as changed.
    started: Option<SystemTime>,
}

/// Reads the source files of `profile` (see the module documentation). `fallback_start` is
/// when the process started as far as the caller knows (used once it has exited, or for a
/// saved profile: when the profile was taken).
pub fn read_sources(
    profile: &SymbolizedProfile,
    config: &SourceConfig,
    fallback_start: Option<SystemTime>,
) -> SourceFiles {
    let mut files = SourceFiles::new();
    let pids = pid_of_files(profile);
    let mut readers: HashMap<Option<u32>, Reader> = HashMap::new();
    let mut budget = MAX_TOTAL_SOURCE_BYTES;
    for (n, path) in profile_files(profile).into_iter().enumerate() {
        if n >= MAX_SOURCE_FILES {
            files.insert(
                path,
                SourceText::Unavailable("not read (too many files)".into()),
            );
            continue;
        }
        let pid = pids.get(path.as_str()).copied().or(profile.meta.pid);
        let reader = readers
            .entry(pid)
            .or_insert_with(|| reader_for(pid, fallback_start));
        if budget == 0 {
            files.insert(
                path,
                SourceText::Unavailable("not read (too much source)".into()),
            );
            continue;
        }
        let text = read_one(&path, reader, config);
        if let SourceText::Lines(lines) = &text {
            let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
            budget = budget.saturating_sub(bytes);
        }
        files.insert(path, text);
    }
    files
}

/// The first process whose stacks name each file.
fn pid_of_files(profile: &SymbolizedProfile) -> HashMap<&str, u32> {
    let mut out = HashMap::new();
    for stack in &profile.stacks {
        let Some(t) = stack.thread else { continue };
        for &f in &stack.frames {
            if let Some(file) = profile
                .frames
                .get(f as usize)
                .and_then(|f| f.file.as_deref())
            {
                out.entry(file).or_insert(t.pid);
            }
        }
    }
    out
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// How to read files for `pid`: inside its root while it lives, else on the host.
fn reader_for(pid: Option<u32>, fallback_start: Option<SystemTime>) -> Reader {
    if let Some(pid) = pid {
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        let uids = sprof_perf::procfs::parse_status_ids(
            &std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default(),
        )
        .uids;
        if !uids.is_empty() && std::fs::File::open(&root).is_ok() {
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
                .ok()
                .map(|p| p.display().to_string());
            return Reader {
                root,
                cwd,
                owners: uids,
                started: process_start(pid).or(fallback_start),
            };
        }
    }
    let mut owners = vec![euid()];
    if let Some((uid, _)) = crate::output::sudo_owner() {
        owners.push(uid);
    }
    Reader {
        root: PathBuf::from("/"),
        cwd: std::env::current_dir()
            .ok()
            .map(|p| p.display().to_string()),
        owners,
        started: fallback_start,
    }
}

/// When `pid` started, from its start time in ticks after boot and the boot time.
fn process_start(pid: u32) -> Option<SystemTime> {
    let stat = sprof_perf::procfs::stat(sprof_core::Pid(pid)).ok()?;
    let btime: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|&t| t > 0)?;
    let start_ms = btime * 1000 + stat.start_time * 1000 / ticks;
    Some(SystemTime::UNIX_EPOCH + Duration::from_millis(start_ms))
}

/// The candidates for `path`: rewritten by the map, under the source root, or as the target
/// sees it. Each is (root directory, path beneath it, whether the user chose it).
fn candidates(path: &str, reader: &Reader, config: &SourceConfig) -> Vec<(PathBuf, String, bool)> {
    for (from, to) in &config.map {
        if let Some(rest) = path.strip_prefix(from.as_str()) {
            let mapped = format!("{to}{rest}");
            let abs = if mapped.starts_with('/') {
                mapped
            } else {
                format!("{}/{mapped}", reader_cwd_host())
            };
            return vec![(PathBuf::from("/"), abs, true)];
        }
    }
    if let Some(root) = &config.root {
        // `/build/x/src/a.c` under DIR: DIR/build/x/src/a.c, DIR/x/src/a.c, DIR/src/a.c, …
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        return (0..parts.len())
            .map(|i| (root.clone(), parts[i..].join("/"), true))
            .collect();
    }
    let full = if path.starts_with('/') {
        path.to_string()
    } else {
        match &reader.cwd {
            Some(cwd) => format!("{cwd}/{path}"),
            None => path.to_string(),
        }
    };
    vec![(reader.root.clone(), full, false)]
}

fn reader_cwd_host() -> String {
    std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| ".".into())
}

/// Reads one file: its lines, or why they are not shown.
fn read_one(path: &str, reader: &Reader, config: &SourceConfig) -> SourceText {
    let mut last_error = None;
    for (root, beneath, chosen) in candidates(path, reader, config) {
        match open(&root, &beneath, reader, chosen) {
            Ok((text, mtime)) => {
                if let (Some(started), Some(mtime)) = (reader.started, mtime) {
                    // why: a second of slack for file systems with coarse timestamps and for a
                    // file written in the same second the process was started.
                    if mtime > started + Duration::from_secs(1) {
                        return SourceText::Unavailable(format!(
                            "{beneath}: changed since the process started (modified {} s after it)",
                            mtime.duration_since(started).unwrap_or_default().as_secs()
                        ));
                    }
                }
                return SourceText::Lines(text.lines().map(str::to_string).collect());
            }
            Err(e) => last_error = Some((beneath, e)),
        }
    }
    match last_error {
        Some((beneath, e)) if e.is_missing() => {
            SourceText::Unavailable(format!("{beneath}: missing"))
        }
        Some((beneath, e)) => SourceText::Unavailable(format!("{beneath}: not read: {e}")),
        None => SourceText::Unavailable("not found".into()),
    }
}

fn open(
    root: &Path,
    beneath: &str,
    reader: &Reader,
    chosen: bool,
) -> Result<(String, Option<SystemTime>), Refusal> {
    let mut owners = reader.owners.clone();
    owners.push(0);
    let rules = OpenRules {
        owners,
        max_bytes: MAX_SOURCE_BYTES,
        symlinks: Symlinks::InRoot,
        forbidden_mode: 0o002,
    };
    let file = untrusted::open_checked(root, beneath, &rules)?;
    let meta = file.metadata()?;
    // A file only root may read is never shown for a path the process chose, even for a
    // root process: the daemon serves what it reads to other users.
    if meta.uid() == 0 && !chosen && meta.mode() & 0o004 == 0 {
        return Err(Refusal::Owner { uid: 0 });
    }
    let mut bytes = Vec::new();
    file.take(MAX_SOURCE_BYTES).read_to_end(&mut bytes)?;
    Ok((
        String::from_utf8_lossy(&bytes).into_owned(),
        meta.modified().ok(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sprof_core::{Frame, FrameKind};

    fn profile(paths: &[&str]) -> SymbolizedProfile {
        let frames: Vec<Frame> = paths
            .iter()
            .map(|p| Frame {
                function: "f".into(),
                file: Some(p.to_string()),
                line: Some(2),
                decl_line: Some(1),
                decl_file: Some(p.to_string()),
                module: None,
                kind: FrameKind::Python,
            })
            .collect();
        let stacks: Vec<[u32; 1]> = (0..frames.len() as u32).map(|i| [i]).collect();
        let stacks: Vec<(&[u32], u64)> = stacks.iter().map(|s| (&s[..], 1)).collect();
        sprof_testkit::profile(frames, &stacks, 1)
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sprofd-src-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn files_are_read_and_missing_or_changed_ones_say_so() {
        let d = scratch("read");
        let ok = d.join("ok.py");
        std::fs::write(&ok, "def f():\n    pass\n").unwrap();
        let gone = d.join("gone.py");
        let p = profile(&[ok.to_str().unwrap(), gone.to_str().unwrap()]);
        let files = read_sources(&p, &SourceConfig::default(), None);
        assert_eq!(files.line(ok.to_str().unwrap(), 2), Some("    pass"));
        assert!(matches!(
            files.get(gone.to_str().unwrap()),
            Some(SourceText::Unavailable(why)) if why.ends_with("missing")
        ));
        // Started an hour ago: the file written now changed since.
        let started = SystemTime::now() - Duration::from_secs(3600);
        let files = read_sources(&p, &SourceConfig::default(), Some(started));
        assert!(matches!(
            files.get(ok.to_str().unwrap()),
            Some(SourceText::Unavailable(why)) if why.contains("changed since the process started")
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn source_map_and_root_find_files_built_elsewhere() {
        let d = scratch("map");
        std::fs::create_dir_all(d.join("src")).unwrap();
        std::fs::write(d.join("src/a.c"), "int a;\nint b;\n").unwrap();
        let p = profile(&["/build/tree/src/a.c"]);
        let mapped = SourceConfig {
            root: None,
            map: vec![("/build/tree".into(), d.display().to_string())],
        };
        assert_eq!(
            read_sources(&p, &mapped, None).line("/build/tree/src/a.c", 2),
            Some("int b;")
        );
        let rooted = SourceConfig {
            root: Some(d.clone()),
            map: Vec::new(),
        };
        assert_eq!(
            read_sources(&p, &rooted, None).line("/build/tree/src/a.c", 1),
            Some("int a;")
        );
        assert!(SourceConfig::parse_map("a=b").is_ok());
        assert!(SourceConfig::parse_map("=b").is_err());
        assert!(SourceConfig::parse_map("ab").is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_fifo_or_a_file_writable_by_others_is_not_read() {
        use std::os::unix::fs::PermissionsExt;
        let d = scratch("bad");
        let shared = d.join("shared.py");
        std::fs::write(&shared, "x\n").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o666)).unwrap();
        let fifo = d.join("fifo.py");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        // Only root may read it: never shown for a path a process named (as root, the test
        // creates one; otherwise the file is not root's and the owner check refuses it).
        let secret = d.join("secret.py");
        std::fs::write(&secret, "x\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let p = profile(&[
            shared.to_str().unwrap(),
            fifo.to_str().unwrap(),
            secret.to_str().unwrap(),
        ]);
        let files = read_sources(&p, &SourceConfig::default(), None);
        if euid() == 0 {
            assert!(
                matches!(
                    files.get(secret.to_str().unwrap()),
                    Some(SourceText::Unavailable(_))
                ),
                "a root-only file is not read"
            );
        }
        for f in [&shared, &fifo] {
            assert!(
                matches!(files.get(f.to_str().unwrap()), Some(SourceText::Unavailable(why)) if why.contains("not read")),
                "{:?}",
                files.get(f.to_str().unwrap())
            );
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
