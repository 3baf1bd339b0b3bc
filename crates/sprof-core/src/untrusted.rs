//! Opening files on a profiled process's behalf.
//!
//! Everything a target offers (its perf map, its jitdump, the debug file its
//! `.gnu_debuglink` names, a build-id path inside its root) may have been planted by a local
//! user to make sprofd, which runs as root or with `CAP_DAC_READ_SEARCH`, hang, read for
//! ever, or read a file that user could not. This module owns the one rule set for such
//! opens:
//!
//! * the path is resolved beneath the target's root (`openat2` with `RESOLVE_IN_ROOT`), so
//!   neither `..` nor an absolute symlink leaves it, and magic links are refused;
//! * optionally no symlink at all is followed ([`Symlinks::Refused`]): a name planted in a
//!   directory the user writes cannot point at a file elsewhere;
//! * the open never blocks (`O_NONBLOCK`): a FIFO or a device answers at once, and is then
//!   refused because it is not a regular file;
//! * the opened file (not the path, which may have changed since) must be a regular file of
//!   at most [`OpenRules::max_bytes`], owned by one of [`OpenRules::owners`], writable by
//!   nobody else, and not sparse (a file claiming gigabytes with no blocks behind them costs
//!   seconds to read and proves nothing).

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Whether symlinks on the way to the file are followed (always inside the root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symlinks {
    /// Followed, but resolved inside the root: right for system layouts (`/usr/lib/debug/
    /// .build-id/ab/cd….debug` is a symlink) in a root only root may write.
    InRoot,
    /// Any symlink refuses the open: right for names in directories a user may write.
    Refused,
}

/// What an opened file must be to be read.
#[derive(Debug, Clone)]
pub struct OpenRules {
    /// Accepted owners (uids); empty accepts none.
    pub owners: Vec<u32>,
    /// Largest accepted size in bytes.
    pub max_bytes: u64,
    pub symlinks: Symlinks,
    /// Mode bits that refuse the file: `0o022` where another user's write could change
    /// what a process is said to run, `0o002` at least.
    pub forbidden_mode: u32,
}

/// Why a file was not opened. The `Display` form is the one-line reason reported.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a regular file")]
    NotRegular,
    #[error("{len} bytes, more than the limit of {max}")]
    TooLarge { len: u64, max: u64 },
    #[error("sparse ({len} bytes, {allocated} allocated)")]
    Sparse { len: u64, allocated: u64 },
    #[error("owned by uid {uid}, not by the process's user or root")]
    Owner { uid: u32 },
    #[error("writable by others (mode {mode:o})")]
    WritableByOthers { mode: u32 },
}

impl Refusal {
    /// The file is simply not there (or the process is gone): nothing to report.
    pub fn is_missing(&self) -> bool {
        matches!(self, Refusal::Io(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH | libc::ENOTDIR)))
    }
}

/// Opens `path` read-only beneath the directory `root` as if `root` were `/`: symlinks,
/// absolute ones included, and `..` cannot leave it, and magic links (`/proc/*/fd/*`) are
/// refused; with `no_symlinks`, every symlink is. Non-blocking, so a FIFO planted at the path
/// cannot hang the caller. No check of what was opened: see [`open_checked`].
pub fn open_beneath(root: &OwnedFd, path: &str, no_symlinks: bool) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let mut resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    if no_symlinks {
        resolve |= ResolveFlags::NO_SYMLINKS;
    }
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    // A path with a NUL byte is refused by rustix with EINVAL, as CString refused it before.
    let path = path.trim_start_matches('/');
    Ok(rustix::fs::openat2(
        root,
        path,
        flags,
        Mode::empty(),
        resolve,
    )?)
}

/// Opens `path` beneath `root` under `rules` (see the module documentation).
pub fn open_checked(root: &Path, path: &str, rules: &OpenRules) -> Result<File, Refusal> {
    let root = File::open(root)?;
    let fd = open_beneath(&root.into(), path, rules.symlinks == Symlinks::Refused)?;
    let file = File::from(fd);
    check(&file, rules)?;
    Ok(file)
}

/// The checks of [`open_checked`] on a file already open (a reader that keeps a file open
/// checks again before every read: its owner or mode may have changed).
pub fn check(file: &File, rules: &OpenRules) -> Result<(), Refusal> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Refusal::NotRegular);
    }
    if !rules.owners.contains(&meta.uid()) {
        return Err(Refusal::Owner { uid: meta.uid() });
    }
    if meta.mode() & (rules.forbidden_mode | 0o002) != 0 {
        return Err(Refusal::WritableByOthers {
            mode: meta.mode() & 0o7777,
        });
    }
    let len = meta.len();
    if len > rules.max_bytes {
        return Err(Refusal::TooLarge {
            len,
            max: rules.max_bytes,
        });
    }
    // why: a sparse file reads as zeros at memory speed for as long as it claims to be; a
    // real debug file or symbol map has its bytes on disk. Half allocated is generous to
    // file systems that compress or deduplicate.
    let allocated = meta.blocks().saturating_mul(512);
    if len > SPARSE_FLOOR && allocated < len / 2 {
        return Err(Refusal::Sparse { len, allocated });
    }
    Ok(())
}

/// Files up to this size are never called sparse (a file's tail may share a block, and
/// some file systems inline small files).
const SPARSE_FLOOR: u64 = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A temporary directory (removed when the first is dropped) and its path.
    fn dir(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let prefix = format!("sprof-untrusted-{name}-");
        let d = tempfile::Builder::new().prefix(&prefix).tempdir().unwrap();
        let path = d.path().to_path_buf();
        (d, path)
    }

    fn rules(symlinks: Symlinks) -> OpenRules {
        OpenRules {
            // SAFETY: geteuid cannot fail.
            owners: vec![rustix::process::geteuid().as_raw()],
            max_bytes: 16 << 20,
            symlinks,
            forbidden_mode: 0o022,
        }
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let (_d, d) = dir("fifo");
        let fifo = d.join("x.debug");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let err = open_checked(&d, "x.debug", &rules(Symlinks::InRoot)).unwrap_err();
        assert!(matches!(err, Refusal::NotRegular), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn symlinks_stay_in_the_root_or_are_refused() {
        let (_d, d) = dir("links");
        let (_outside, outside) = dir("links-outside");
        std::fs::write(outside.join("secret"), b"secret").unwrap();
        std::fs::write(d.join("secret"), b"inside").unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), d.join("abs")).unwrap();
        std::os::unix::fs::symlink("secret", d.join("rel")).unwrap();
        // An absolute link resolves inside the root: to d/…/secret, which does not exist.
        let abs = open_checked(&d, "abs", &rules(Symlinks::InRoot));
        assert!(abs.as_ref().is_err_and(Refusal::is_missing), "{abs:?}");
        let rel = open_checked(&d, "rel", &rules(Symlinks::InRoot)).unwrap();
        assert_eq!(std::io::read_to_string(rel).unwrap(), "inside");
        let refused = open_checked(&d, "rel", &rules(Symlinks::Refused)).unwrap_err();
        assert!(matches!(&refused, Refusal::Io(e) if e.raw_os_error() == Some(libc::ELOOP)));
        std::fs::remove_dir_all(&d).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn sparse_large_foreign_and_shared_files_are_refused() {
        let (_d, d) = dir("checks");
        let sparse = File::create(d.join("sparse")).unwrap();
        sparse.set_len(8 << 20).unwrap();
        let err = open_checked(&d, "sparse", &rules(Symlinks::Refused)).unwrap_err();
        assert!(matches!(err, Refusal::Sparse { .. }), "{err}");
        let big = File::create(d.join("big")).unwrap();
        big.set_len(32 << 20).unwrap();
        let err = open_checked(&d, "big", &rules(Symlinks::Refused)).unwrap_err();
        assert!(matches!(err, Refusal::TooLarge { .. }), "{err}");
        std::fs::write(d.join("mine"), b"x").unwrap();
        let me = std::fs::metadata(d.join("mine")).unwrap().uid();
        let others = OpenRules {
            owners: vec![me + 1],
            ..rules(Symlinks::Refused)
        };
        let err = open_checked(&d, "mine", &others).unwrap_err();
        assert!(matches!(err, Refusal::Owner { .. }), "{err}");
        std::fs::set_permissions(d.join("mine"), std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = open_checked(&d, "mine", &rules(Symlinks::Refused)).unwrap_err();
        assert!(matches!(err, Refusal::WritableByOthers { .. }), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
