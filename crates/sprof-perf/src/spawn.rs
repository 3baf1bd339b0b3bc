//! Launching a command paused at the edge of `exec`, so that sampling covers it from its
//! first instruction.
//!
//! `std::process::Command::spawn` returns only after `exec`, too late to open events that
//! follow the child from the start, so sprofd forks by hand: the child blocks on a pipe, the
//! parent opens `enable_on_exec` events on it, then lets it `exec`. A second, close-on-exec
//! pipe carries an `exec` failure back, so "command not found" is an error and not an exit
//! status.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("command not found: {0}")]
    NotFound(String),
    #[error("{0}: permission denied (not executable)")]
    NotExecutable(String),
    #[error("cannot execute {program}: {source}")]
    Exec { program: String, source: io::Error },
    #[error("cannot start {program}: {source}")]
    Fork { program: String, source: io::Error },
    #[error("an argument contains a NUL byte")]
    Nul,
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(c) => write!(f, "exit status {c}"),
            ExitStatus::Signaled(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// Finds `program` the way a shell would: as a path if it has a slash, else along `$PATH`.
pub fn resolve_program(program: &OsStr) -> Result<PathBuf, SpawnError> {
    let name = program.to_string_lossy().into_owned();
    let candidates: Vec<PathBuf> = if program.as_bytes().contains(&b'/') {
        vec![PathBuf::from(program)]
    } else {
        let path =
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        std::env::split_paths(&path)
            .map(|d| d.join(program))
            .collect()
    };
    let mut found_unexecutable = false;
    for c in candidates {
        if let Ok(meta) = std::fs::metadata(&c) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(c);
            }
            found_unexecutable = true;
        }
    }
    if found_unexecutable {
        Err(SpawnError::NotExecutable(name))
    } else {
        Err(SpawnError::NotFound(name))
    }
}

/// A forked child waiting for [`PausedChild::resume`] before it `exec`s.
#[derive(Debug)]
pub struct PausedChild {
    pid: i32,
    program: String,
    go: Option<OwnedFd>,
    exec_error: OwnedFd,
}

/// A child that has `exec`ed.
#[derive(Debug)]
pub struct RunningChild {
    pid: i32,
    status: Option<ExitStatus>,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two new fds that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forks a child that will run `argv` once resumed, with sprofd's standard streams.
pub fn spawn_paused(argv: &[OsString]) -> Result<PausedChild, SpawnError> {
    spawn_paused_with(argv, None)
}

/// Like [`spawn_paused`], with the child's stdin, stdout and stderr on `streams` when given
/// (a live terminal view owns the terminal: the command must neither draw on it nor read
/// its keys).
pub fn spawn_paused_with(
    argv: &[OsString],
    streams: Option<&OwnedFd>,
) -> Result<PausedChild, SpawnError> {
    let first = argv
        .first()
        .ok_or_else(|| SpawnError::NotFound(String::new()))?;
    let program = first.to_string_lossy().into_owned();
    let path = resolve_program(first)?;
    // Everything the child touches is prepared before fork: after it, only async-signal-safe
    // calls are allowed in a process that may have other threads.
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| SpawnError::Nul)?;
    let c_args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| SpawnError::Nul)?;
    let mut c_argv: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
    c_argv.push(std::ptr::null());

    let fork_err = |source| SpawnError::Fork {
        program: program.clone(),
        source,
    };
    let (go_read, go_write) = pipe().map_err(fork_err)?;
    let (err_read, err_write) = pipe().map_err(fork_err)?;

    // SAFETY: fork has no preconditions; the child branch below only calls async-signal-safe
    // functions (read, close, dup2, execv, write, _exit) on data prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(fork_err(io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: see above; every pointer was built before fork and stays alive.
        unsafe {
            libc::close(go_write.as_raw_fd());
            libc::close(err_read.as_raw_fd());
            let mut b = 0u8;
            let n = libc::read(go_read.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
            if n != 1 {
                // The parent gave up (or died): do not run the command unprofiled.
                libc::_exit(127);
            }
            libc::close(go_read.as_raw_fd());
            if let Some(fd) = streams {
                for target in 0..3 {
                    libc::dup2(fd.as_raw_fd(), target);
                }
            }
            libc::execv(c_path.as_ptr(), c_argv.as_ptr());
            let errno = *libc::__errno_location();
            let bytes = errno.to_ne_bytes();
            libc::write(err_write.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
            libc::_exit(127);
        }
    }
    drop(go_read);
    drop(err_write);
    Ok(PausedChild {
        pid,
        program,
        go: Some(go_write),
        exec_error: err_read,
    })
}

impl PausedChild {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Lets the child `exec`. Returns once `exec` succeeded, or its error.
    pub fn resume(mut self) -> Result<RunningChild, SpawnError> {
        let go = self.go.take();
        if let Some(go) = &go {
            // SAFETY: writing one byte from a valid buffer to our pipe end.
            unsafe { libc::write(go.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        }
        drop(go);
        let mut buf = [0u8; 4];
        // The write end closes on a successful exec, so this read returns 0 then.
        // SAFETY: reading into a valid 4-byte buffer from our pipe end.
        let n = unsafe { libc::read(self.exec_error.as_raw_fd(), buf.as_mut_ptr().cast(), 4) };
        let pid = self.pid;
        self.pid = 0; // the child is no longer ours to kill in Drop
        if n == 4 {
            let mut child = RunningChild { pid, status: None };
            let _ = child.wait();
            return Err(SpawnError::Exec {
                program: self.program.clone(),
                source: io::Error::from_raw_os_error(i32::from_ne_bytes(buf)),
            });
        }
        Ok(RunningChild { pid, status: None })
    }
}

impl Drop for PausedChild {
    fn drop(&mut self) {
        if self.pid > 0 {
            // SAFETY: the pid is our own unreaped child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

fn decode(status: i32) -> ExitStatus {
    if libc::WIFSIGNALED(status) {
        ExitStatus::Signaled(libc::WTERMSIG(status))
    } else {
        ExitStatus::Exited(libc::WEXITSTATUS(status))
    }
}

impl RunningChild {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The exit status if the child has ended, without blocking.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_some() {
            return Ok(self.status);
        }
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        if r == self.pid {
            self.status = Some(decode(status));
        }
        Ok(self.status)
    }

    /// Blocks until the child ends.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(s) = self.status {
                return Ok(s);
            }
            let mut status = 0;
            // SAFETY: waitpid on our own child with a valid status pointer.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.status = Some(decode(status));
        }
    }
}
