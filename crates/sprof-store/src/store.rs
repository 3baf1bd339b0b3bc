//! The data directory: `windows/` holds one file per window, `corrupt/` what could not be
//! read, and nothing else is written.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::units::unix_millis;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("window file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

impl StoreError {
    /// Whether the error is the disk being full (the window is worth keeping for later).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Write { source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
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

/// The index of stored windows, oldest first, and the directory they live in.
#[derive(Debug)]
pub struct WindowStore {
    windows_dir: PathBuf,
    corrupt_dir: PathBuf,
    windows: Vec<StoredWindow>,
    total_bytes: u64,
    retention: Retention,
    /// Windows deleted by retention since the store was opened.
    pub deleted: u64,
    /// Window files moved to `corrupt/` since the store was opened.
    pub quarantined: u64,
}

/// Files under `windows/` larger than this are not windows sprofd wrote.
const MAX_WINDOW_FILE: u64 = 1 << 30;

impl WindowStore {
    /// Opens (creating, mode 0700) the data directory and indexes its windows. Files that do
    /// not decompress (torn by a crash of the disk, truncated by hand) are moved to
    /// `corrupt/`; leftover temporary files are removed. The warnings say what was skipped.
    pub fn open(
        dir: &Path,
        retention: Retention,
    ) -> Result<(WindowStore, Vec<String>), StoreError> {
        let windows_dir = dir.join("windows");
        let corrupt_dir = dir.join("corrupt");
        for d in [dir, &windows_dir] {
            create_private_dir(d)?;
        }
        let mut store = WindowStore {
            windows_dir,
            corrupt_dir,
            windows: Vec::new(),
            total_bytes: 0,
            retention,
            deleted: 0,
            quarantined: 0,
        };
        let warnings = store.index()?;
        Ok((store, warnings))
    }

    /// The windows of a data directory, oldest first, without changing anything in it (for
    /// `sprofd report`, which may run beside the daemon or as another user). Files are not
    /// checked: reading one that is corrupt fails then.
    pub fn list(dir: &Path) -> Result<Vec<StoredWindow>, StoreError> {
        let windows_dir = dir.join("windows");
        let entries = fs::read_dir(&windows_dir).map_err(|source| StoreError::Dir {
            path: windows_dir.clone(),
            source,
        })?;
        let mut windows: Vec<StoredWindow> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let (start_ms, end_ms) = parse_window_name(&e.file_name().to_string_lossy())?;
                Some(StoredWindow {
                    start_ms,
                    end_ms,
                    bytes: e.metadata().ok()?.len(),
                    path: e.path(),
                })
            })
            .collect();
        windows.sort_by_key(|w| (w.start_ms, w.end_ms));
        Ok(windows)
    }

    fn index(&mut self) -> Result<Vec<String>, StoreError> {
        let dir_err = |source| StoreError::Dir {
            path: self.windows_dir.clone(),
            source,
        };
        let mut warnings = Vec::new();
        for entry in fs::read_dir(&self.windows_dir).map_err(dir_err)? {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some((start_ms, end_ms)) = parse_window_name(&name) else {
                warnings.push(format!("ignoring {}: not a window file", path.display()));
                continue;
            };
            match check_window_file(&path) {
                Ok(bytes) => self.windows.push(StoredWindow {
                    start_ms,
                    end_ms,
                    path,
                    bytes,
                }),
                Err(reason) => warnings.push(self.quarantine(&path, &reason)),
            }
        }
        self.windows.sort_by_key(|w| (w.start_ms, w.end_ms));
        self.total_bytes = self.windows.iter().map(|w| w.bytes).sum();
        Ok(warnings)
    }

    /// Moves a window file that cannot be read to `corrupt/` and forgets it; returns the
    /// warning to log.
    pub fn quarantine(&mut self, path: &Path, reason: &str) -> String {
        self.quarantined += 1;
        if let Some(i) = self.windows.iter().position(|w| w.path == path) {
            let w = self.windows.remove(i);
            self.total_bytes -= w.bytes;
        }
        let moved = create_private_dir(&self.corrupt_dir).ok().and_then(|()| {
            let to = self.corrupt_dir.join(path.file_name()?);
            fs::rename(path, &to).ok().map(|()| to)
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
        let path = self.windows_dir.join(format!("{start_ms}-{end_ms}.pb.gz"));
        let mut deleted = 0;
        let mut room = self.windows.len() / 10;
        loop {
            match write_atomically(&self.windows_dir, &path, bytes) {
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
        });
        self.windows.sort_by_key(|w| (w.start_ms, w.end_ms));
        self.total_bytes = self.windows.iter().map(|w| w.bytes).sum();
        deleted += self.prune(now);
        Ok(WriteReport {
            bytes: bytes.len() as u64,
            deleted,
        })
    }

    /// Applies retention now; returns how many windows were deleted.
    pub fn prune(&mut self, now: SystemTime) -> usize {
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
        let _ = fs::remove_file(&w.path);
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

/// Reads a stored window's bytes (at most [`MAX_WINDOW_FILE`]).
pub fn read_window(path: &Path) -> Result<Vec<u8>, StoreError> {
    let read_err = |source| StoreError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    File::open(path)
        .map_err(read_err)?
        .take(MAX_WINDOW_FILE)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    Ok(bytes)
}

impl WindowStore {
    /// Reads and decodes a stored window; a file that does not decode is quarantined by the
    /// caller with [`WindowStore::quarantine`] (the error says so).
    pub fn load(path: &Path) -> Result<sprof_core::SymbolizedProfile, StoreError> {
        let bytes = read_window(path)?;
        flamegraph_out::read_pprof(&bytes).map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

/// `START-END.pb.gz`, unix milliseconds.
fn parse_window_name(name: &str) -> Option<(u64, u64)> {
    let (start, end) = name.strip_suffix(".pb.gz")?.split_once('-')?;
    let (start, end) = (start.parse().ok()?, end.parse().ok()?);
    (start <= end).then_some((start, end))
}

/// The file's size if it decompresses to its end (gzip checks its CRC and length there).
fn check_window_file(path: &Path) -> Result<u64, String> {
    let meta = fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_WINDOW_FILE {
        return Err("larger than any window".into());
    }
    let bytes = read_window(path).map_err(|e| e.to_string())?;
    flamegraph_out::check_gzip(&bytes).map_err(|e| e.to_string())?;
    Ok(meta.len())
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let err = |source| StoreError::Dir {
        path: dir.to_path_buf(),
        source,
    };
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) => return Err(err(e)),
    }
    let meta = fs::metadata(dir).map_err(err)?;
    if !meta.is_dir() {
        return Err(err(io::Error::other("not a directory")));
    }
    // An existing directory keeps its mode unless it is open to others.
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    Ok(())
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename itself is durable once the directory is synced.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sprof-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
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
        let dir = temp_dir("retention");
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
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn torn_files_are_moved_aside_and_temporaries_removed() {
        let dir = temp_dir("torn");
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
        fs::remove_dir_all(&dir).unwrap();
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
