"""sprofd from Python: profile this process's Python and native code with the `sprofd`
binary that came with this package.

In IPython and Jupyter::

    %load_ext sprofd
    %sprofd work()                 # a statement
    %%sprofd -F 4999               # a cell
    %sprofd_lines -f work work()   # work's source, with the share of samples per line

In scripts::

    import sprofd
    with sprofd.profile(output="work.svg") as p:
        work()
    print(p.result.table())

    @sprofd.profile(output="step.svg")
    def step(): ...

Sampling is done by a `sprofd attach` child of this process: nothing is traced or
instrumented, and threads (and processes started while it samples) are included. It works
without root: at kernel.perf_event_paranoid 2 it samples user space only.
"""

import functools

from ._args import DEFAULT_FREQUENCY
from ._attach import Attach, SprofdError, find_binary
from ._lines import FunctionLines, LinesReport
from ._profile import Profile

__all__ = ["profile", "Profile", "FunctionLines", "LinesReport", "SprofdError", "find_binary"]


class profile:
    """Context manager and decorator: samples this process while the block (or each call of
    the decorated function) runs. The last profile is `.result` (a :class:`Profile`).

    frequency: samples per second per thread; mode: what time to measure (cpu, wall, or
    another mode the installed sprofd has); python_view: python, mixed or native; output: a
    path or a list of paths sprofd writes (format by extension); args: any other `sprofd
    attach` arguments."""

    def __init__(self, frequency=DEFAULT_FREQUENCY, mode=None, python_view=None, output=(), args=()):
        self.frequency = frequency
        self.mode = mode
        self.python_view = python_view
        self.outputs = [output] if isinstance(output, str) or hasattr(output, "__fspath__") else list(output)
        self.extra = list(args)
        self.result = None
        self._session = None

    def _argv(self):
        argv = ["-F", str(self.frequency)]
        if self.mode:
            argv += ["--mode", self.mode]
        if self.python_view:
            argv += ["--python-view", self.python_view]
        for out in self.outputs:
            argv += ["-o", str(out)]
        return argv + self.extra

    def __enter__(self):
        if self._session is not None:
            raise RuntimeError("sprofd.profile is already sampling (it does not nest)")
        self._session = Attach(self._argv()).start()
        return self

    def __exit__(self, *exc):
        session, self._session = self._session, None
        self.result = session.stop()
        return False

    def __call__(self, func):
        @functools.wraps(func)
        def wrapper(*a, **kw):
            # A recursive call (or one from another thread) while sampling is already covered.
            if self._session is not None:
                return func(*a, **kw)
            with self:
                return func(*a, **kw)

        wrapper.sprofd = self
        return wrapper


def load_ipython_extension(ipython):
    """`%load_ext sprofd`: registers %sprofd, %%sprofd and %sprofd_lines."""
    from ._magics import load

    load(ipython)
