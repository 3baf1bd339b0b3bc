//! The few file-system calls the store makes relative to an open directory, never through a
//! path that someone else could swap for a symlink, and the checks that decide whether a
//! directory or a window file is sprofd's own.
//!
//! The daemon usually runs as root (or with CAP_DAC_READ_SEARCH): a path-based `chmod`,
//! `open` or `rename` in a directory another user can write lets that user aim it at any
//! file on the host. So the data directory is opened once, without following a symlink in
//! its last component (with one exception, see [`open_data_dir`]), checked (owner, type) and
//! kept open; `windows/` and `corrupt/` are opened relative to it with `O_NOFOLLOW`, and every
//! later create, rename and unlink is an `*at` call on those descriptors.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The effective uid of this process: who the store's files must belong to.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`: what the entry itself is, symlinks included.
pub fn lstat_at(dir: RawFd, name: &OsStr) -> io::Result<libc::stat> {
    let name = cstr(name)?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is a NUL-terminated string that outlives the call and `st` points to
    // writable memory the size of a `struct stat`; `dir` is AT_FDCWD or an open descriptor.
    let rc = unsafe {
        libc::fstatat(
            dir,
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatat returned 0, so it filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// `openat(dir, name, flags | O_CLOEXEC, mode)`.
pub fn open_at(dir: RawFd, name: &OsStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    let name = cstr(name)?;
    // SAFETY: `name` is NUL-terminated and outlives the call; the mode is passed as the
    // variadic argument open(2) expects (an unsigned int).
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `mkdirat(dir, name, mode)`; an existing entry of that name is not an error (what it is
/// gets checked when it is opened).
pub fn mkdir_at(dir: RawFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let name = cstr(name)?;
    // SAFETY: `name` is NUL-terminated and outlives the call.
    if unsafe { libc::mkdirat(dir, name.as_ptr(), mode as libc::mode_t) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    Ok(())
}

/// `renameat(from_dir, from, to_dir, to)`.
pub fn rename_at(from_dir: RawFd, from: &OsStr, to_dir: RawFd, to: &OsStr) -> io::Result<()> {
    let (from, to) = (cstr(from)?, cstr(to)?);
    // SAFETY: both names are NUL-terminated and outlive the call.
    if unsafe { libc::renameat(from_dir, from.as_ptr(), to_dir, to.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `unlinkat(dir, name, 0)`: removes the entry itself (a symlink, not its target).
pub fn unlink_at(dir: RawFd, name: &OsStr) -> io::Result<()> {
    let name = cstr(name)?;
    // SAFETY: `name` is NUL-terminated and outlives the call.
    if unsafe { libc::unlinkat(dir, name.as_ptr(), 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The names in an open directory (not `.` and `..`), read through a duplicate of its
/// descriptor so the listing is of the directory that was checked, not of whatever its path
/// names now.
pub fn list_dir(dir: &File) -> io::Result<Vec<OsString>> {
    let dup = dir.try_clone()?;
    // SAFETY: fdopendir takes ownership of the duplicated descriptor on success (closedir
    // below closes it); on failure we still own it, so it is released by `dup`'s drop.
    let stream = unsafe { libc::fdopendir(dup.as_raw_fd()) };
    if stream.is_null() {
        return Err(io::Error::last_os_error());
    }
    std::mem::forget(dup);
    // fdopendir starts at the descriptor's offset, which is shared with `dir`: rewind so a
    // second listing sees every entry.
    // SAFETY: `stream` is a valid DIR* from fdopendir.
    unsafe { libc::rewinddir(stream) };
    let mut names = Vec::new();
    let result = loop {
        // errno is the only way readdir tells the end from an error.
        // SAFETY: __errno_location returns this thread's errno slot.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `stream` is valid until closedir below.
        let entry = unsafe { libc::readdir(stream) };
        if entry.is_null() {
            let e = io::Error::last_os_error();
            break if e.raw_os_error() == Some(0) {
                Ok(())
            } else {
                Err(e)
            };
        }
        // SAFETY: readdir returned a valid dirent whose d_name is NUL-terminated; it stays
        // valid until the next readdir on the stream, and the bytes are copied right away.
        let name = unsafe { std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()) };
        let bytes = name.to_bytes();
        if bytes != b"." && bytes != b".." {
            names.push(OsString::from_vec(bytes.to_vec()));
        }
    };
    // SAFETY: `stream` came from fdopendir and is closed exactly once.
    unsafe { libc::closedir(stream) };
    result.map(|()| names)
}

/// Why a directory is not trusted as (part of) the data directory.
#[derive(Debug)]
pub enum DirProblem {
    Io(io::Error),
    Untrusted(String),
}

impl From<io::Error> for DirProblem {
    fn from(e: io::Error) -> Self {
        DirProblem::Io(e)
    }
}

fn file_type_name(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symbolic link",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        _ => "not a regular file",
    }
}

/// Opens `name` in `parent` as a directory without following a symlink, creating it (0700)
/// first when `create`; it must belong to `owner`. When `private`, a mode open to others is
/// reset to 0700 with `fchmod` on the opened directory.
pub fn open_subdir(
    parent: RawFd,
    name: &OsStr,
    owner: u32,
    create: bool,
    private: bool,
) -> Result<File, DirProblem> {
    if create {
        mkdir_at(parent, name, 0o700)?;
    }
    let fd = match open_at(
        parent,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    ) {
        Ok(fd) => fd,
        // ELOOP: a symlink; ENOTDIR: anything else that is not a directory.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
            let what = lstat_at(parent, name)
                .map(|st| file_type_name(st.st_mode))
                .unwrap_or("not a directory");
            return Err(DirProblem::Untrusted(format!(
                "is {what}, not a directory (symlinks are not followed there)"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let dir = File::from(fd);
    check_owner_and_mode(&dir, owner, private)?;
    Ok(dir)
}

/// The owner check and, when `private`, the `fchmod` to 0700 of an open directory.
pub fn check_owner_and_mode(dir: &File, owner: u32, private: bool) -> Result<(), DirProblem> {
    let meta = dir.metadata()?;
    if meta.uid() != owner {
        return Err(DirProblem::Untrusted(format!(
            "is owned by uid {}, not by uid {owner}{}",
            meta.uid(),
            if owner == euid() {
                " (the uid sprofd runs as)"
            } else {
                " (the data directory's owner)"
            }
        )));
    }
    if private && meta.mode() & 0o077 != 0 {
        // fchmod: the mode of the directory that was opened and checked, whatever its path
        // names by now.
        use std::os::unix::fs::PermissionsExt;
        dir.set_permissions(std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Refuses a directory every user can write to without the sticky bit: anyone could rename
/// the data directory away and put their own in its place between two runs (ssh's
/// StrictModes and sudo refuse the same).
pub fn check_not_open_to_all(path: &Path, meta: &std::fs::Metadata) -> Result<(), DirProblem> {
    let mode = meta.mode();
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        return Err(DirProblem::Untrusted(format!(
            "is below {}, which every user can write to without the sticky bit (mode {:o})",
            path.display(),
            mode & 0o7777
        )));
    }
    Ok(())
}

/// Opens the data directory `dir` (creating it and missing parents, 0700), checked as the
/// daemon needs it (`owner` = its euid, and a mode open to others is reset to 0700), or as
/// `sprofd report` reads it (`owner` = `None`: whoever owns it, nothing changed).
///
/// Its last component must be a directory owned by `owner`. A symlink there is followed only
/// when the symlink itself belongs to root or to `owner`: systemd's `DynamicUser=yes` makes
/// `/var/lib/sprofd` a root-owned symlink to `/var/lib/private/sprofd`, while a symlink
/// planted by another user is refused, there or anywhere above it (for the daemon). Every
/// directory above it (after resolving symlinks) must not be writable by every user unless it
/// has the sticky bit (as `/tmp` has).
pub fn open_data_dir(dir: &Path, owner: Option<u32>, create: bool) -> Result<File, DirProblem> {
    let abs = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()?.join(dir)
    };
    // A symlink on the way (`/tmp/x` -> wherever its maker likes) decides where the daemon
    // creates and writes as much as one at the end: only root's or the owner's are followed.
    // (`report`, reading only, checks every file's owner instead.)
    if let (Some(owner), Some(parent)) = (owner, abs.parent()) {
        for p in parent.ancestors() {
            let Ok(meta) = std::fs::symlink_metadata(p) else {
                continue;
            };
            if meta.file_type().is_symlink() && meta.uid() != 0 && meta.uid() != owner {
                return Err(DirProblem::Untrusted(format!(
                    "is reached through {}, a symbolic link owned by uid {}",
                    p.display(),
                    meta.uid()
                )));
            }
        }
    }
    open_data_dir_at(&abs, owner, create, true)
}

fn open_data_dir_at(
    abs: &Path,
    owner: Option<u32>,
    create: bool,
    follow_trusted_link: bool,
) -> Result<File, DirProblem> {
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Err(DirProblem::Untrusted(
            "is not a directory sprofd can use (it has no last component)".into(),
        ));
    };
    if create {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    let parent_real = std::fs::canonicalize(parent)?;
    for ancestor in parent_real.ancestors() {
        check_not_open_to_all(ancestor, &std::fs::metadata(ancestor)?)?;
    }
    let parent_fd = File::from(open_at(
        libc::AT_FDCWD,
        parent_real.as_os_str(),
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    )?);
    // The parent that was opened, not only the one that was looked at.
    check_not_open_to_all(&parent_real, &parent_fd.metadata()?)?;
    if let Ok(st) = lstat_at(parent_fd.as_raw_fd(), name) {
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            if !follow_trusted_link || (st.st_uid != 0 && Some(st.st_uid) != owner) {
                return Err(DirProblem::Untrusted(format!(
                    "is a symbolic link owned by uid {} (only a link of root's or of the data directory's owner is followed, one level)",
                    st.st_uid
                )));
            }
            // The target is checked as if it had been named directly; being canonical, it
            // ends in no symlink.
            let target = std::fs::canonicalize(abs)?;
            return open_data_dir_at(&target, owner, create, false);
        }
    }
    match owner {
        Some(owner) => open_subdir(parent_fd.as_raw_fd(), name, owner, create, true),
        None => {
            // `report`: whoever owns it; its files are checked against the owner found.
            let fd = open_at(
                parent_fd.as_raw_fd(),
                name,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP | libc::ENOTDIR) => {
                    DirProblem::Untrusted("is not a directory".into())
                }
                _ => DirProblem::Io(e),
            })?;
            Ok(File::from(fd))
        }
    }
}

/// A window file opened for reading, and its size.
pub struct WindowFile {
    pub file: File,
    pub len: u64,
}

/// Opens a window file for reading only if it is what sprofd writes: a regular file (a FIFO,
/// device or socket is never opened: it is `lstat`ed first, and the open itself is
/// `O_NONBLOCK|O_NOFOLLOW` in case it was swapped in between), owned by `owner`, at most
/// `max_len` bytes. The error says what it is instead.
pub fn open_window(
    dir: RawFd,
    name: &OsStr,
    owner: u32,
    max_len: u64,
) -> Result<WindowFile, WindowProblem> {
    let st = lstat_at(dir, name).map_err(WindowProblem::Io)?;
    check_window_stat(st.st_mode, st.st_uid, st.st_size as u64, owner, max_len)?;
    let fd = open_at(
        dir,
        name,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
        0,
    )
    .map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => WindowProblem::Refused("is a symbolic link".into()),
        _ => WindowProblem::Io(e),
    })?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(WindowProblem::Io)?;
    if meta.dev() != st.st_dev as u64 || meta.ino() != st.st_ino as u64 {
        return Err(WindowProblem::Refused(
            "was replaced while it was opened".into(),
        ));
    }
    check_window_stat(meta.mode(), meta.uid(), meta.len(), owner, max_len)?;
    Ok(WindowFile {
        file,
        len: meta.len(),
    })
}

fn check_window_stat(
    mode: u32,
    uid: u32,
    len: u64,
    owner: u32,
    max_len: u64,
) -> Result<(), WindowProblem> {
    if mode & libc::S_IFMT != libc::S_IFREG {
        return Err(WindowProblem::Refused(format!(
            "is {}, not a regular file",
            file_type_name(mode)
        )));
    }
    if uid != owner {
        return Err(WindowProblem::Refused(format!(
            "is owned by uid {uid}, not by the store's owner (uid {owner})"
        )));
    }
    if len > max_len {
        return Err(WindowProblem::Refused(format!(
            "is {len} bytes, more than any window ({max_len})"
        )));
    }
    Ok(())
}

/// Why a window file was not read.
#[derive(Debug)]
pub enum WindowProblem {
    /// The file could not be looked at (gone, permissions).
    Io(io::Error),
    /// It is not a file sprofd wrote: the reason.
    Refused(String),
}
