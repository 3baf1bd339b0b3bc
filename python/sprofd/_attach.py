"""Running `sprofd attach` on this very process: start it, wait until it samples, stop it.

This module owns the child process and its temporary directory. The profile it leaves
behind is read by :mod:`sprofd._profile`; the magics and :func:`sprofd.profile` only call
:class:`Attach`.
"""

import ctypes
import ctypes.util
import os
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time

from ._profile import Profile

#: How long sprofd may take to open its events (reading the target's maps and modules
#: happens later, while sampling): beyond this something is wrong.
READY_TIMEOUT = 60.0
#: How long sprofd may take to symbolize and write the outputs after SIGINT.
STOP_TIMEOUT = 300.0

#: The formats written for every session, so that `.table()`, `.folded()` and `.save()`
#: need no second run; the user's `-o` files come on top.
_OWN_OUTPUTS = ("profile.svg", "profile.folded", "profile.txt")

# prctl(2) option of Yama (include/uapi/linux/prctl.h): PR_SET_PTRACER, 'Yama' in ASCII.
_PR_SET_PTRACER = 0x59616D61


class SprofdError(Exception):
    """sprofd could not profile: its one-line reason."""


def find_binary():
    """The `sprofd` executable: $SPROFD_BIN, else the one this package's wheel installed (the
    scripts directory of the environment this module was imported from, or of the user scheme
    for `pip install --user`), else PATH."""
    env = os.environ.get("SPROFD_BIN")
    if env:
        return env
    dirs = script_dirs()
    for d in dirs:
        path = os.path.join(d, "sprofd")
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    found = shutil.which("sprofd")
    if found:
        return found
    raise SprofdError(
        "the sprofd binary was not found (not in %s nor on PATH); reinstall the wheel "
        "(pip install sprofd) or set SPROFD_BIN" % ", ".join(dirs)
    )


def script_dirs():
    """Where pip puts a wheel's scripts for this interpreter: the default scheme's directory,
    the user scheme's, and the environment's bin/."""
    dirs = [sysconfig.get_path("scripts")]
    user = "%s_user" % os.name
    if user in sysconfig.get_scheme_names():
        dirs.append(sysconfig.get_path("scripts", user))
    dirs.append(os.path.join(sys.prefix, "bin"))
    out = []
    for d in dirs:
        if d and d not in out:
            out.append(d)
    return out


def yama_scope():
    """kernel.yama.ptrace_scope, or None without Yama."""
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def yama_warning(scope, root):
    """The one line saying that Yama stops sprofd from reading Python frames, or None."""
    if scope is None or root or scope <= 1:
        return None
    if scope == 2:
        return (
            "sprofd: kernel.yama.ptrace_scope=2 lets only root (CAP_SYS_PTRACE) read another "
            "process's memory, so Python frames cannot be read (native frames still are): "
            "run `sudo sysctl kernel.yama.ptrace_scope=1`, or profile as root"
        )
    return (
        "sprofd: kernel.yama.ptrace_scope=%d forbids reading another process's memory, so "
        "Python frames cannot be read (native frames still are); it can only be lowered by a "
        "reboot with another setting in /etc/sysctl.d" % scope
    )


class _Ptracer:
    """Lets the sprofd child read this process under Yama's ptrace_scope 1, where a process
    may only read its descendants, and takes the permission back afterwards.

    prctl(PR_SET_PTRACER, pid) names one process that may; it is set to this process itself
    before the child exists (Yama then lets this process's descendants in: the child cannot
    be named before it is forked, and it may look before the parent names it), narrowed to
    the child once its pid is known, and revoked (0) when sampling ends."""

    def __init__(self):
        self.active = False
        if yama_scope() != 1 or os.geteuid() == 0:
            return
        name = ctypes.util.find_library("c") or "libc.so.6"
        try:
            self._prctl = ctypes.CDLL(name, use_errno=True).prctl
        except (OSError, AttributeError):
            return
        self.active = True

    def _set(self, pid):
        if self.active:
            self._prctl(_PR_SET_PTRACER, ctypes.c_ulong(pid), 0, 0, 0)

    def allow_descendants(self):
        self._set(os.getpid())

    def allow(self, pid):
        self._set(pid)

    def revoke(self):
        self._set(0)


class Attach:
    """One `sprofd attach` of this process (or of `pid`).

    ``args`` are extra command-line arguments (-F, --mode, the user's -o files, written by
    sprofd beside the session's own ...); ``rows``: rows of the table the profile displays."""

    def __init__(self, args=(), pid=None, binary=None, rows=None):
        self.args = list(args)
        self.rows = rows
        self.pid = os.getpid() if pid is None else pid
        self.binary = binary or find_binary()
        self.dir = None
        self.proc = None
        self.started = None
        self._stderr = []
        self._ptracer = None

    def start(self):
        warning = yama_warning(yama_scope(), os.geteuid() == 0)
        if warning:
            print(warning, file=sys.stderr)
        self.dir = tempfile.mkdtemp(prefix="sprofd-")
        own = []
        for name in _OWN_OUTPUTS:
            own += ["-o", os.path.join(self.dir, name)]
        read_end, write_end = os.pipe()
        argv = [self.binary, "attach", str(self.pid), "-q", "--ready-fd", str(write_end)]
        argv += own + self.args
        self._ptracer = _Ptracer()
        self._ptracer.allow_descendants()
        try:
            # A session of its own: Ctrl-C at a terminal interrupts the statement, and this
            # module then stops sprofd itself, so the profile of the part that ran is kept.
            # stderr goes to a file, read once sprofd has exited: a thread draining a pipe
            # would be one more thread of this process, and in the profile (all of it, in
            # wall-clock mode).
            with open(self._stderr_path(), "wb") as err:
                self.proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    pass_fds=(write_end,),
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as e:
            os.close(read_end)
            self._ptracer.revoke()
            self.cleanup()
            raise SprofdError("cannot run %s: %s" % (self.binary, e))
        finally:
            os.close(write_end)
        self._ptracer.allow(self.proc.pid)
        try:
            ready = _wait_ready(read_end, self.proc, READY_TIMEOUT)
        finally:
            os.close(read_end)
        if not ready:
            self._fail_start()
        self.started = time.monotonic()
        return self

    def _fail_start(self):
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._ptracer.revoke()
        lines = self._read_stderr()
        self.cleanup()
        raise SprofdError(
            error_line(lines) or "sprofd attach exited with %s before sampling" % self.proc.returncode
        )

    def _stderr_path(self):
        return os.path.join(self.dir, "stderr")

    def _read_stderr(self):
        try:
            with open(self._stderr_path(), encoding="utf-8", errors="replace") as f:
                self._stderr = f.read().splitlines()
        except OSError:
            self._stderr = []
        return self._stderr

    def stop(self):
        """Stops sampling (SIGINT: sprofd writes its outputs and exits) and returns the
        :class:`Profile`."""
        elapsed = time.monotonic() - self.started
        try:
            self.proc.send_signal(signal.SIGINT)
            try:
                code = self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.cleanup()
                raise SprofdError("sprofd did not finish writing the profile within %d s" % STOP_TIMEOUT)
        finally:
            self._ptracer.revoke()
        self._read_stderr()
        # The session's own files are read back and removed: where sprofd wrote them is noise.
        messages = [l for l in self._stderr if not _is_summary(l) and self.dir not in l]
        if code != 0:
            self.cleanup()
            raise SprofdError(error_line(messages) or "sprofd attach exited with %s" % code)
        return Profile.load(
            self.dir, elapsed=elapsed, messages=messages, summary=self.summary(), rows=self.rows
        )

    def summary(self):
        """sprofd's last line, e.g. `sprofd: 3100 samples in 3.10 s from 4 threads` (without
        the `interrupted; ` of the SIGINT that ended sampling: here that is the normal end)."""
        for line in reversed(self._stderr):
            if _is_summary(line):
                return line.replace("sprofd: interrupted; ", "sprofd: ", 1)
        return None

    def cleanup(self):
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def error_line(lines):
    """sprofd's error as one line: its `error:` line (clap's usage errors add the possible
    values on the next line, kept in brackets), else its last line."""
    lines = [l.strip() for l in lines if l.strip()]
    for i, line in enumerate(lines):
        if line.startswith(("error:", "sprofd: error:")):
            more = lines[i + 1] if i + 1 < len(lines) and lines[i + 1].startswith("[") else ""
            line = line if line.startswith("sprofd:") else "sprofd: " + line
            return (line + " " + more).strip()
    return lines[-1] if lines else None


def _is_summary(line):
    return line.startswith("sprofd: ") and " samples in " in line and " threads" in line


def _wait_ready(fd, proc, timeout):
    """Whether `ready` came on the pipe before sprofd exited (EOF) or the time ran out."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            proc.kill()
            return False
        r, _, _ = select.select([fd], [], [], min(left, 0.5))
        if not r:
            continue
        chunk = os.read(fd, 64)
        if not chunk:
            return False
        data += chunk
    return data.startswith(b"ready")
