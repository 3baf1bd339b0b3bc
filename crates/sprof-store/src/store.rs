//! The data directory: `windows/` holds one file per window, `corrupt/` what could not be
//! read (or was not a file sprofd wrote), and nothing else is written.
//!
//! Who and what is trusted (see [`crate::safe_fs`] for how): the data directory, `windows/`
//! and `corrupt/` must be directories owned by the daemon's euid, never reached through a
//! symlink planted by someone else, below no directory every user can write without the
//! sticky bit; they are opened once and every later create, rename and unlink is relative to
//! the open directories. A window file is read only if it is a regular file of the store's
//! owner, at most [`MAX_WINDOW_FILE`] bytes, decompressing to at most [`MAX_WINDOW_DECODED`].

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::safe_fs::{self, DirProblem, WindowProblem};
use crate::units::unix_millis;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    /// The data directory (or `windows/`, `corrupt/`) is not one sprofd may use.
    #[error("untrusted data directory: {path} {reason}")]
    Untrusted { path: PathBuf, reason: String },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("window file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// Not a file sprofd wrote (a FIFO, a symlink, another user's file, far too large): it
    /// was not read.
    #[error("window file {path} {reason}")]
    Refused { path: PathBuf, reason: String },
}

impl StoreError {
    /// Whether the error is the disk being full (the window is worth keeping for later).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Write { source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
    }

    fn from_dir(path: &Path, p: DirProblem) -> StoreError {
        match p {
            DirProblem::Io(source) => StoreError::Dir {
                path: path.to_path_buf(),
                source,
            },
            DirProblem::Untrusted(reason) => StoreError::Untrusted {
                path: path.to_path_buf(),
                reason,
            },
        }
    }

    fn from_window(path: &Path, p: WindowProblem) -> StoreError {
        match p {
            WindowProblem::Io(source) => StoreError::Read {
                path: path.to_path_buf(),
                source,
            },
            WindowProblem::Refused(reason) => StoreError::Refused {
                path: path.to_path_buf(),
                reason,
            },
        }
    }

    /// The reason alone, for a quarantine warning that names the file itself.
    fn reason(&self) -> String {
        match self {
            StoreError::Corrupt { reason, .. } | StoreError::Refused { reason, .. } => {
                reason.clone()
            }
            StoreError::Read { source, .. } => source.to_string(),
            other => other.to_string(),
        }
    }
}

/// How much history is kept: windows older than `max_age` go, then the oldest until the
/// total is at most `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Duration,
    pub max_bytes: u64,
}

/// One stored window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWindow {
    /// Unix milliseconds of the window's first and last instant.
    pub start_ms: u64,
    pub end_ms: u64,
    pub path: PathBuf,
    pub bytes: u64,
    /// The uid the file must belong to for it to be read: the data directory's owner.
    pub owner: u32,
}

impl StoredWindow {
    /// Whether the window overlaps `[from_ms, to_ms]`.
    pub fn overlaps(&self, from_ms: u64, to_ms: u64) -> bool {
        self.start_ms <= to_ms && self.end_ms >= from_ms
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteReport {
    pub bytes: u64,
    /// Windows deleted by retention after it.
    pub deleted: usize,
}

/// The index of stored windows, oldest first, and the directories they live in (open).
#[derive(Debug)]
pub struct WindowStore {
    windows_dir: PathBuf,
    corrupt_dir: PathBuf,
    /// `windows/` and `corrupt/` as opened and checked at [`WindowStore::open`].
    windows_fd: File,
    corrupt_fd: File,
    owner: u32,
    windows: Vec<StoredWindow>,
    total_bytes: u64,
    retention: Retention,
    /// Windows deleted by retention since the store was opened.
    pub deleted: u64,
    /// Window files moved to `corrupt/` since the store was opened.
    pub quarantined: u64,
}

/// Files under `windows/` larger than this are not windows sprofd wrote (a ten-second window
/// of a busy host is tens of KiB; an hour-long one a few MiB).
pub const MAX_WINDOW_FILE: u64 = 64 << 20;

/// Most bytes a window may decompress to: a gzip bomb under `windows/` is refused instead of
/// taking the daemon's memory (`sprofd diff` allows 1 GiB for a profile given by hand).
pub const MAX_WINDOW_DECODED: u64 = 128 << 20;

/// Windows that start later than this after now are not kept: they are moved to `corrupt/`
/// (a planted file, or a clock that stepped back by more than a day) instead of sitting
/// beyond the reach of retention for ever.
pub const MAX_FUTURE: Duration = Duration::from_secs(24 * 3600);

impl WindowStore {
    /// Opens (creating, mode 0700) the data directory and indexes its windows; see the module
    /// documentation for which directories are refused. Files that do not decompress (torn by
    /// a crash of the disk, truncated by hand), are not regular files of the daemon's uid, or
    /// start more than [`MAX_FUTURE`] after now are moved to `corrupt/`; leftover temporary
    /// files are removed. The warnings say what was skipped.
    pub fn open(
        dir: &Path,
        retention: Retention,
    ) -> Result<(WindowStore, Vec<String>), StoreError> {
        let owner = safe_fs::euid();
        let data = safe_fs::open_data_dir(dir, Some(owner), true)
            .map_err(|p| StoreError::from_dir(dir, p))?;
        let sub = |name: &str| {
            let path = dir.join(name);
            safe_fs::open_subdir(data.as_raw_fd(), OsStr::new(name), owner, true, true)
                .map(|fd| (path.clone(), fd))
                .map_err(|p| StoreError::from_dir(&path, p))
        };
        let (windows_dir, windows_fd) = sub("windows")?;
        let (corrupt_dir, corrupt_fd) = sub("corrupt")?;
        let mut store = WindowStore {
            windows_dir,
            corrupt_dir,
            windows_fd,
            corrupt_fd,
            owner,
            windows: Vec::new(),
            total_bytes: 0,
            retention,
            deleted: 0,
            quarantined: 0,
        };
        let warnings = store.index(SystemTime::now())?;
        Ok((store, warnings))
    }

    /// The windows of a data directory, oldest first, without changing anything in it (for
    /// `sprofd report`, which may run beside the daemon or as another user, often root). The
    /// files belong to the data directory's owner: `windows/` must too, and must not be a
    /// symlink. Files are not opened: [`WindowStore::load`] checks each when it is read.
    pub fn list(dir: &Path) -> Result<Vec<StoredWindow>, StoreError> {
        let data =
            safe_fs::open_data_dir(dir, None, false).map_err(|p| StoreError::from_dir(dir, p))?;
        let windows_dir = dir.join("windows");
        let dir_err = |source| StoreError::Dir {
            path: windows_dir.clone(),
            source,
        };
        let owner = data.metadata().map_err(dir_err)?.uid();
        let windows_fd =
            safe_fs::open_subdir(data.as_raw_fd(), OsStr::new("windows"), owner, false, false)
                .map_err(|p| StoreError::from_dir(&windows_dir, p))?;
        let mut windows: Vec<StoredWindow> = safe_fs::list_dir(&windows_fd)
            .map_err(dir_err)?
            .into_iter()
            .filter_map(|name| {
                let (start_ms, end_ms) = parse_window_name(&name.to_string_lossy())?;
                // lstat only: what it really is decides when it is read.
                let st = safe_fs::lstat_at(windows_fd.as_raw_fd(), &name).ok()?;
                Some(StoredWindow {
                    start_ms,
                    end_ms,
                    bytes: u64::try_from(st.st_size).unwrap_or(0),
                    path: windows_dir.join(&name),
                    owner,
                })
            })
            .collect();
        windows.sort_by_key(|w| (w.start_ms, w.end_ms));
        Ok(windows)
    }

    fn index(&mut self, now: SystemTime) -> Result<Vec<String>, StoreError> {
        let names = safe_fs::list_dir(&self.windows_fd).map_err(|source| StoreError::Dir {
            path: self.windows_dir.clone(),
            source,
        })?;
        let future_ms = future_limit(now);
        let mut warnings = Vec::new();
        for name in names {
            let path = self.windows_dir.join(&name);
            let text = name.to_string_lossy();
            if text.starts_with(".tmp-") {
                let _ = safe_fs::unlink_at(self.windows_fd.as_raw_fd(), &name);
                continue;
            }
            let Some((start_ms, end_ms)) = parse_window_name(&text) else {
                warnings.push(format!("ignoring {}: not a window file", path.display()));
                continue;
            };
            if start_ms > future_ms {
                warnings.push(self.quarantine(&path, "starts more than a day from now"));
                continue;
            }
            let checked = safe_fs::open_window(
                self.windows_fd.as_raw_fd(),
                &name,
                self.owner,
                MAX_WINDOW_FILE,
            )
            .map_err(|p| StoreError::from_window(&path, p))
            .and_then(|w| {
                let bytes = read_all(w.file, &path)?;
                check_gzip(&bytes, MAX_WINDOW_DECODED).map_err(|reason| StoreError::Corrupt {
                    path: path.clone(),
                    reason,
                })?;
                Ok(w.len)
            });
            match checked {
                Ok(bytes) => self.windows.push(StoredWindow {
                    start_ms,
                    end_ms,
                    path,
                    bytes,
                    owner: self.owner,
                }),
                Err(e) => warnings.push(self.quarantine(&path, &e.reason())),
            }
        }
        self.windows.sort_by_key(|w| (w.start_ms, w.end_ms));
        self.total_bytes = self.windows.iter().map(|w| w.bytes).sum();
        Ok(warnings)
    }

    /// Moves a window file that cannot be read to `corrupt/` and forgets it; returns the
    /// warning to log. The entry itself is moved (a symlink stays a symlink, a FIFO is never
    /// opened).
    pub fn quarantine(&mut self, path: &Path, reason: &str) -> String {
        self.quarantined += 1;
        if let Some(i) = self.windows.iter().position(|w| w.path == path) {
            let w = self.windows.remove(i);
            self.total_bytes -= w.bytes;
        }
        let moved = path
            .file_name()
            .filter(|_| path.parent() == Some(self.windows_dir.as_path()))
            .and_then(|name| {
                safe_fs::rename_at(
                    self.windows_fd.as_raw_fd(),
                    name,
                    self.corrupt_fd.as_raw_fd(),
                    name,
                )
                .ok()
                .map(|()| self.corrupt_dir.join(name))
            });
        match moved {
            Some(to) => format!(
                "skipping window file {} ({reason}); moved to {}",
                path.display(),
                to.display()
            ),
            None => format!("skipping window file {} ({reason})", path.display()),
        }
    }

    /// Stores one window (the bytes of a gzipped pprof) covering `[start, end]`: written to a
    /// temporary file (0600), synced, renamed into place, then retention runs. When the disk
    /// is full, the oldest windows make room, up to a tenth of the history, before the error
    /// is returned.
    pub fn write(
        &mut self,
        start: SystemTime,
        end: SystemTime,
        bytes: &[u8],
        now: SystemTime,
    ) -> Result<WriteReport, StoreError> {
        let (start_ms, end_ms) = (unix_millis(start), unix_millis(end).max(unix_millis(start)));
        let name = format!("{start_ms}-{end_ms}.pb.gz");
        let path = self.windows_dir.join(&name);
        let mut deleted = 0;
        let mut room = self.windows.len() / 10;
        loop {
            match write_atomically(&self.windows_fd, OsStr::new(&name), bytes) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && room > 0 => {
                    room -= 1;
                    deleted += usize::from(self.delete_oldest());
                }
                Err(source) => return Err(StoreError::Write { path, source }),
            }
        }
        self.windows.retain(|w| w.path != path);
        self.windows.push(StoredWindow {
            start_ms,
            end_ms,
            path,
            bytes: bytes.len() as u64,
            owner: self.owner,
        });
        self.windows.sort_by_key(|w| (w.start_ms, w.end_ms));
        self.total_bytes = self.windows.iter().map(|w| w.bytes).sum();
        deleted += self.prune(now);
        Ok(WriteReport {
            bytes: bytes.len() as u64,
            deleted,
        })
    }

    /// Applies retention now; returns how many windows were deleted. Windows starting more
    /// than [`MAX_FUTURE`] after `now` are moved to `corrupt/` first (counted in
    /// [`WindowStore::quarantined`], not here): kept, they would never be the oldest.
    pub fn prune(&mut self, now: SystemTime) -> usize {
        let future_ms = future_limit(now);
        let future: Vec<PathBuf> = self
            .windows
            .iter()
            .filter(|w| w.start_ms > future_ms)
            .map(|w| w.path.clone())
            .collect();
        for path in future {
            self.quarantine(&path, "starts more than a day from now");
        }
        let oldest_kept = unix_millis(now)
            .saturating_sub(u64::try_from(self.retention.max_age.as_millis()).unwrap_or(u64::MAX));
        let mut n = 0;
        while let Some(w) = self.windows.first() {
            if w.end_ms >= oldest_kept && self.total_bytes <= self.retention.max_bytes {
                break;
            }
            n += usize::from(self.delete_oldest());
        }
        n
    }

    fn delete_oldest(&mut self) -> bool {
        if self.windows.is_empty() {
            return false;
        }
        let w = self.windows.remove(0);
        self.total_bytes -= w.bytes;
        self.deleted += 1;
        // Already gone (deleted by hand) counts as deleted too.
        if let Some(name) = w.path.file_name() {
            let _ = safe_fs::unlink_at(self.windows_fd.as_raw_fd(), name);
        }
        true
    }

    /// Changes retention (a reloaded config); applied at the next write or [`prune`].
    ///
    /// [`prune`]: WindowStore::prune
    pub fn set_retention(&mut self, retention: Retention) {
        self.retention = retention;
    }

    /// The stored windows overlapping `[from_ms, to_ms]`, oldest first.
    pub fn windows_between(&self, from_ms: u64, to_ms: u64) -> Vec<StoredWindow> {
        self.windows
            .iter()
            .filter(|w| w.overlaps(from_ms, to_ms))
            .cloned()
            .collect()
    }

    pub fn windows(&self) -> &[StoredWindow] {
        &self.windows
    }

    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }
}

fn future_limit(now: SystemTime) -> u64 {
    unix_millis(now).saturating_add(u64::try_from(MAX_FUTURE.as_millis()).unwrap_or(u64::MAX))
}

fn read_all(file: File, path: &Path) -> Result<Vec<u8>, StoreError> {
    let mut bytes = Vec::new();
    file.take(MAX_WINDOW_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| StoreError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > MAX_WINDOW_FILE {
        return Err(StoreError::Refused {
            path: path.to_path_buf(),
            reason: "grew larger than any window while it was read".into(),
        });
    }
    Ok(bytes)
}

/// Reads a stored window's bytes (gzipped), if its file is a regular file of the window's
/// owner of at most [`MAX_WINDOW_FILE`] bytes: a FIFO, device or symlink is never followed or
/// read (a FIFO would block the reader for ever).
pub fn read_window(w: &StoredWindow) -> Result<Vec<u8>, StoreError> {
    let file = safe_fs::open_window(libc::AT_FDCWD, w.path.as_os_str(), w.owner, MAX_WINDOW_FILE)
        .map_err(|p| StoreError::from_window(&w.path, p))?;
    read_all(file.file, &w.path)
}

/// Decompresses a window, refusing more than `max` bytes of output.
fn gunzip(bytes: &[u8], max: u64) -> Result<Vec<u8>, String> {
    let mut raw = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(max + 1)
        .read_to_end(&mut raw)
        .map_err(|e| format!("gzip: {e}"))?;
    if raw.len() as u64 > max {
        return Err(format!("decompresses to more than {max} bytes"));
    }
    Ok(raw)
}

/// Whether a window decompresses to its end (gzip checks its CRC and length there) within
/// `max` bytes, without keeping what it decompresses to.
fn check_gzip(bytes: &[u8], max: u64) -> Result<(), String> {
    let n = io::copy(
        &mut flate2::read::MultiGzDecoder::new(bytes).take(max + 1),
        &mut io::sink(),
    )
    .map_err(|e| format!("gzip: {e}"))?;
    if n > max {
        return Err(format!("decompresses to more than {max} bytes"));
    }
    Ok(())
}

impl WindowStore {
    /// Reads and decodes a stored window (see [`read_window`] for which files are read, and
    /// [`MAX_WINDOW_DECODED`]); a file that does not decode or is refused is quarantined by
    /// the caller with [`WindowStore::quarantine`] (the error says so).
    pub fn load(w: &StoredWindow) -> Result<sprof_core::SymbolizedProfile, StoreError> {
        let raw = WindowStore::load_raw(w)?;
        flamegraph_out::read_pprof(&raw).map_err(|e| StoreError::Corrupt {
            path: w.path.clone(),
            reason: e.to_string(),
        })
    }

    /// Reads and decompresses a stored window (every gzip member, within
    /// [`MAX_WINDOW_DECODED`]): the protobuf that [`WindowStore::load`] decodes, for readers
    /// of fields pprof does not have (the daemon's RSS series).
    pub fn load_raw(w: &StoredWindow) -> Result<Vec<u8>, StoreError> {
        gunzip(&read_window(w)?, MAX_WINDOW_DECODED).map_err(|reason| StoreError::Corrupt {
            path: w.path.clone(),
            reason,
        })
    }
}

/// `START-END.pb.gz`, unix milliseconds.
fn parse_window_name(name: &str) -> Option<(u64, u64)> {
    let (start, end) = name.strip_suffix(".pb.gz")?.split_once('-')?;
    let (start, end) = (start.parse().ok()?, end.parse().ok()?);
    (start <= end).then_some((start, end))
}

/// Writes `name` in `dir` through a temporary file (0600, created exclusively, never through
/// a symlink), synced, renamed into place, and the directory synced.
fn write_atomically(dir: &File, name: &OsStr, bytes: &[u8]) -> io::Result<()> {
    let tmp = format!(
        ".tmp-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let tmp = OsStr::new(&tmp);
    let fd = dir.as_raw_fd();
    let result = (|| {
        let mut f = File::from(safe_fs::open_at(
            fd,
            tmp,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o600,
        )?);
        f.write_all(bytes)?;
        f.sync_all()?;
        safe_fs::rename_at(fd, tmp, fd, name)?;
        // The rename itself is durable once the directory is synced.
        dir.sync_all()
    })();
    if result.is_err() {
        let _ = safe_fs::unlink_at(fd, tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    /// A path that does not exist yet, in a temporary directory removed when the first is
    /// dropped.
    fn temp_dir(name: &str) -> (tempfile::TempDir, PathBuf) {
        let prefix = format!("sprof-store-{name}-");
        let d = tempfile::Builder::new().prefix(&prefix).tempdir().unwrap();
        let path = d.path().join("data");
        (d, path)
    }

    fn gz(payload: &[u8]) -> Vec<u8> {
        use flate2::write::GzEncoder;
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(payload).unwrap();
        e.finish().unwrap()
    }

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    const DAY: u64 = 86400;

    #[test]
    fn windows_are_private_indexed_and_pruned_by_age_and_size() {
        let (_dir, dir) = temp_dir("retention");
        let retention = Retention {
            max_age: Duration::from_secs(2 * DAY),
            max_bytes: 1 << 20,
        };
        let (mut s, w) = WindowStore::open(&dir, retention).unwrap();
        assert!(w.is_empty());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let now = t(10 * DAY);
        for day in [7, 8, 9] {
            s.write(t(day * DAY), t(day * DAY + 10), &gz(b"x"), now)
                .unwrap();
        }
        // Day 7 is older than two days.
        assert_eq!(s.windows().len(), 2);
        assert_eq!(s.deleted, 1);
        let file = &s.windows()[0].path;
        assert_eq!(mode(file), 0o600);
        assert_eq!(
            s.windows_between(unix_millis(t(9 * DAY)), u64::MAX).len(),
            1
        );
        // Size: a budget of two files' worth keeps the newest two.
        let one = s.windows()[0].bytes;
        s.set_retention(Retention {
            max_age: Duration::from_secs(100 * DAY),
            max_bytes: 2 * one,
        });
        s.write(t(9 * DAY + 20), t(9 * DAY + 30), &gz(b"x"), now)
            .unwrap();
        assert_eq!(s.windows().len(), 2);
        assert_eq!(s.total_bytes(), 2 * one);
        // Reopened, the index is the same.
        let (again, w) = WindowStore::open(&dir, retention).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(again.windows(), s.windows());
    }

    #[test]
    fn torn_files_are_moved_aside_and_temporaries_removed() {
        let (_dir, dir) = temp_dir("torn");
        let retention = Retention {
            max_age: Duration::from_secs(DAY),
            max_bytes: 1 << 30,
        };
        let now = t(DAY);
        let (mut s, _) = WindowStore::open(&dir, retention).unwrap();
        s.write(t(DAY - 20), t(DAY - 10), &gz(&[7; 4000]), now)
            .unwrap();
        s.write(t(DAY - 10), t(DAY), &gz(&[8; 4000]), now).unwrap();
        let victim = s.windows()[1].path.clone();
        let bytes = fs::read(&victim).unwrap();
        fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
        fs::write(dir.join("windows/.tmp-1-2"), b"half").unwrap();
        fs::write(dir.join("windows/notes.txt"), b"?").unwrap();
        let (s, warnings) = WindowStore::open(&dir, retention).unwrap();
        assert_eq!(s.windows().len(), 1);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings
            .iter()
            .any(|w| w.contains("moved to") && w.contains("corrupt")));
        assert!(dir
            .join("corrupt")
            .join(victim.file_name().unwrap())
            .exists());
        assert!(!dir.join("windows/.tmp-1-2").exists());
    }

    fn is_root() -> bool {
        safe_fs::euid() == 0
    }

    fn retention() -> Retention {
        Retention {
            max_age: Duration::from_secs(100 * 365 * DAY),
            max_bytes: 1 << 40,
        }
    }

    /// Runs `f` on another thread and fails the test if it takes longer than `secs`: a FIFO
    /// opened by mistake blocks for ever, and the test must fail rather than hang.
    fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(secs))
            .expect("blocked (did it open a FIFO?)")
    }

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn refused(r: Result<(WindowStore, Vec<String>), StoreError>) -> String {
        match r {
            Err(e @ StoreError::Untrusted { .. }) => e.to_string(),
            Err(e) => panic!("refused for the wrong reason: {e}"),
            Ok(_) => panic!("opened an untrusted data directory"),
        }
    }

    /// A window that `now` keeps, as the daemon would name it.
    fn window_name(start_s: u64) -> String {
        format!("{}-{}.pb.gz", start_s * 1000, start_s * 1000 + 10_000)
    }

    fn now_s() -> u64 {
        unix_millis(SystemTime::now()) / 1000
    }

    #[test]
    fn symlinked_windows_or_corrupt_dir_is_refused_and_its_target_untouched() {
        for sub in ["windows", "corrupt"] {
            let (_dir, dir) = temp_dir(&format!("link-{sub}"));
            let (_victim, victim) = temp_dir(&format!("link-{sub}-victim"));
            fs::create_dir_all(&dir).unwrap();
            fs::create_dir_all(&victim).unwrap();
            fs::set_permissions(&victim, fs::Permissions::from_mode(0o755)).unwrap();
            std::os::unix::fs::symlink(&victim, dir.join(sub)).unwrap();
            let e = refused(WindowStore::open(&dir, retention()));
            assert!(e.contains(sub) && e.contains("symbolic link"), "{e}");
            assert_eq!(mode(&victim), 0o755, "the target was chmod'ed");
            assert_eq!(fs::read_dir(&victim).unwrap().count(), 0);
            if sub == "windows" {
                let e = WindowStore::list(&dir).unwrap_err().to_string();
                assert!(e.contains("symbolic link"), "{e}");
            }
            fs::remove_dir_all(&dir).unwrap();
            fs::remove_dir_all(&victim).unwrap();
        }
    }

    #[test]
    fn data_dir_symlink_is_followed_only_when_root_or_the_owner_made_it() {
        let (_base, base) = temp_dir("link-data");
        let real = base.join("private/sprofd");
        fs::create_dir_all(&real).unwrap();
        fs::set_permissions(base.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
        let link = base.join("sprofd");
        std::os::unix::fs::symlink("private/sprofd", &link).unwrap();
        // Ours (or root's): followed, as systemd's DynamicUser StateDirectory link is.
        let (s, _) = WindowStore::open(&link, retention()).unwrap();
        drop(s);
        assert!(real.join("windows").is_dir());
        if is_root() {
            // Another user's link: refused, and what it points to is left alone.
            fs::set_permissions(&real, fs::Permissions::from_mode(0o755)).unwrap();
            std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
            let e = refused(WindowStore::open(&link, retention()));
            assert!(e.contains("symbolic link owned by uid 65534"), "{e}");
            assert_eq!(mode(&real), 0o755);
            // Nor higher up: `/tmp/x/data` with `x` another user's link.
            let up = base.join("up");
            std::os::unix::fs::symlink("private", &up).unwrap();
            std::os::unix::fs::lchown(&up, Some(65534), Some(65534)).unwrap();
            let e = refused(WindowStore::open(&up.join("elsewhere"), retention()));
            assert!(e.contains("reached through"), "{e}");
            assert!(!real.parent().unwrap().join("elsewhere").exists());
        } else {
            eprintln!("SKIP foreign symlink half: needs root to lchown");
        }
    }

    #[test]
    fn foreign_owned_dirs_are_refused() {
        if !is_root() {
            eprintln!("SKIP foreign_owned_dirs_are_refused: needs root to chown");
            return;
        }
        for which in ["", "windows", "corrupt"] {
            let (_dir, dir) = temp_dir(&format!("foreign-{which}"));
            let (s, _) = WindowStore::open(&dir, retention()).unwrap();
            drop(s);
            let target = dir.join(which);
            std::os::unix::fs::chown(&target, Some(65534), Some(65534)).unwrap();
            fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
            let e = refused(WindowStore::open(&dir, retention()));
            assert!(e.contains("owned by uid 65534"), "{which}: {e}");
            assert_eq!(mode(&target), 0o755, "{which}: chmod'ed anyway");
            fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn world_writable_parent_needs_the_sticky_bit_and_open_modes_are_closed() {
        let (_base, base) = temp_dir("parent");
        fs::create_dir_all(&base).unwrap();
        fs::set_permissions(&base, fs::Permissions::from_mode(0o777)).unwrap();
        let e = refused(WindowStore::open(&base.join("data"), retention()));
        assert!(e.contains("every user can write"), "{e}");
        assert!(!base.join("data").exists(), "created before the check");
        // With the sticky bit (as /tmp): fine, and an existing 0755 dir becomes 0700.
        fs::set_permissions(&base, fs::Permissions::from_mode(0o1777)).unwrap();
        fs::create_dir(base.join("data")).unwrap();
        fs::set_permissions(base.join("data"), fs::Permissions::from_mode(0o755)).unwrap();
        let (_s, _) = WindowStore::open(&base.join("data"), retention()).unwrap();
        for d in ["data", "data/windows", "data/corrupt"] {
            assert_eq!(mode(&base.join(d)), 0o700, "{d}");
        }
    }

    #[test]
    fn fifo_symlink_and_device_windows_are_quarantined_without_being_opened() {
        let (_dir, dir) = temp_dir("special");
        let (mut s, _) = WindowStore::open(&dir, retention()).unwrap();
        let now = SystemTime::now();
        s.write(
            now - Duration::from_secs(20),
            now - Duration::from_secs(10),
            &gz(b"ok"),
            now,
        )
        .unwrap();
        drop(s);
        let secret = dir.join("secret");
        fs::write(&secret, gz(b"not for the daemon")).unwrap();
        let t = now_s() - 1000;
        let fifo = dir.join("windows").join(window_name(t));
        let link = dir.join("windows").join(window_name(t + 10));
        mkfifo(&fifo);
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let mut special = vec![fifo.clone(), link.clone()];
        if is_root() {
            let dev = dir.join("windows").join(window_name(t + 20));
            let c = std::ffi::CString::new(dev.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: `c` is a NUL-terminated path; 1:3 is /dev/null's device number.
            let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) };
            assert_eq!(rc, 0, "mknod");
            special.push(dev);
        } else {
            eprintln!("SKIP device half: needs root to mknod");
        }
        // report's view first: listed, but refused when read, quickly.
        let listed = WindowStore::list(&dir).unwrap();
        let refusals = within(5, move || {
            listed
                .iter()
                .filter_map(|w| match WindowStore::load(w) {
                    // The real window is no pprof ("ok"): only refusals count here.
                    Err(e @ StoreError::Refused { .. }) => Some(e.to_string()),
                    _ => None,
                })
                .collect::<Vec<_>>()
        });
        assert_eq!(refusals.len(), special.len(), "{refusals:?}");
        assert!(refusals.iter().any(|e| e.contains("FIFO")), "{refusals:?}");
        assert!(
            refusals.iter().any(|e| e.contains("symbolic link")),
            "{refusals:?}"
        );
        let d = dir.clone();
        let (s, warnings) = within(5, move || WindowStore::open(&d, retention()).unwrap());
        assert_eq!(s.windows().len(), 1, "{warnings:?}");
        assert_eq!(s.quarantined as usize, special.len());
        assert_eq!(warnings.len(), special.len(), "one line each: {warnings:?}");
        for p in &special {
            let moved = dir.join("corrupt").join(p.file_name().unwrap());
            assert!(
                fs::symlink_metadata(&moved).is_ok(),
                "{} not moved",
                p.display()
            );
        }
        assert!(
            fs::symlink_metadata(dir.join("corrupt").join(link.file_name().unwrap()))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn windows_of_another_owner_are_not_read() {
        if !is_root() {
            eprintln!("SKIP windows_of_another_owner_are_not_read: needs root to chown");
            return;
        }
        let (_dir, dir) = temp_dir("owner");
        let (_s, _) = WindowStore::open(&dir, retention()).unwrap();
        let w = dir.join("windows").join(window_name(now_s() - 100));
        fs::write(&w, gz(b"planted")).unwrap();
        std::os::unix::fs::chown(&w, Some(65534), Some(65534)).unwrap();
        let listed = WindowStore::list(&dir).unwrap();
        let e = WindowStore::load(&listed[0]).unwrap_err().to_string();
        assert!(e.contains("owned by uid 65534"), "{e}");
        let (s, warnings) = WindowStore::open(&dir, retention()).unwrap();
        assert!(s.windows().is_empty());
        assert!(warnings[0].contains("owned by uid 65534"), "{warnings:?}");
    }

    #[test]
    fn gzip_bomb_window_is_refused_by_its_decompressed_size() {
        let (_dir, dir) = temp_dir("bomb");
        let (_s, _) = WindowStore::open(&dir, retention()).unwrap();
        // Gzip members concatenate: one MiB of zeros compressed once, repeated past the cap.
        let member = gz(&vec![0; 1 << 20]);
        let copies = (MAX_WINDOW_DECODED >> 20) as usize + 1;
        let bomb = member.repeat(copies);
        assert!((bomb.len() as u64) < MAX_WINDOW_FILE / 100, "a small file");
        let path = dir.join("windows").join(window_name(now_s() - 100));
        fs::write(&path, &bomb).unwrap();
        let listed = WindowStore::list(&dir).unwrap();
        let e = WindowStore::load(&listed[0]).unwrap_err().to_string();
        assert!(e.contains("decompresses to more than"), "{e}");
        let (s, warnings) = WindowStore::open(&dir, retention()).unwrap();
        assert!(s.windows().is_empty());
        assert!(
            warnings[0].contains("decompresses to more than"),
            "{warnings:?}"
        );
        // Just under the cap still passes the index's check.
        assert!(check_gzip(&member.repeat(copies - 1), MAX_WINDOW_DECODED).is_ok());
    }

    #[test]
    fn windows_far_in_the_future_do_not_escape_retention() {
        let (_dir, dir) = temp_dir("future");
        let now = now_s();
        let (mut s, _) = WindowStore::open(&dir, retention()).unwrap();
        s.write(t(now - 20), t(now - 10), &gz(b"x"), t(now))
            .unwrap();
        drop(s);
        // Planted in 2100: moved aside at start.
        let planted = dir.join("windows").join(window_name(4_102_444_800));
        fs::write(&planted, gz(b"x")).unwrap();
        // An hour ahead (a clock that stepped back a little): kept.
        let soon = dir.join("windows").join(window_name(now + 3600));
        fs::write(&soon, gz(b"x")).unwrap();
        let (mut s, warnings) = WindowStore::open(&dir, retention()).unwrap();
        assert_eq!(s.windows().len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("more than a day from now"),
            "{warnings:?}"
        );
        assert!(!planted.exists());
        assert!(dir
            .join("corrupt")
            .join(planted.file_name().unwrap())
            .exists());
        // While running: the clock steps back two days; what is now far ahead goes too.
        let earlier = t(now - 2 * DAY);
        s.write(
            earlier,
            earlier + Duration::from_secs(10),
            &gz(b"y"),
            earlier,
        )
        .unwrap();
        assert_eq!(s.windows().len(), 1);
        assert_eq!(s.windows()[0].start_ms, unix_millis(earlier));
        assert_eq!(s.quarantined, 3);
    }

    #[test]
    fn window_names_round_trip_and_junk_is_not_a_window() {
        assert_eq!(parse_window_name("1000-2000.pb.gz"), Some((1000, 2000)));
        for bad in [
            "2000-1000.pb.gz",
            "x-1.pb.gz",
            "1000.pb.gz",
            "1-2.pb",
            "../1-2.pb.gz",
        ] {
            assert_eq!(parse_window_name(bad), None, "{bad}");
        }
    }
}
