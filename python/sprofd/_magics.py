"""The IPython magics: `%sprofd`, `%%sprofd` and `%sprofd_lines` (`%load_ext sprofd`).

They attach sprofd to the kernel's own process around the statement or cell, then display
the profile as rich output (HTML, with the table as plain text), which Jupyter, VS Code,
nbconvert and the terminal each show in their way.
"""

import subprocess
import sys

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class, needs_local_scope
from IPython.display import display

from . import _args
from ._attach import Attach, SprofdError, find_binary
from ._lines import LinesReport, code_of


_FLAGS = {}


def binary_has_flag(binary, flag):
    """Whether `sprofd attach --help` lists `flag` (cached per binary)."""
    key = (binary, flag)
    if key not in _FLAGS:
        try:
            out = subprocess.run([binary, "attach", "--help"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        _FLAGS[key] = flag in out
    return _FLAGS[key]


@magics_class
class SprofdMagics(Magics):
    @line_cell_magic
    def sprofd(self, line, cell=None):
        """Profile a statement (%sprofd [options] statement) or a cell (%%sprofd [options])
        with sprofd: Python and native frames of every thread of this kernel, shown inline
        as a flame graph and the table of the top functions.

        Options (as `sprofd attach` takes them): -F HZ, --mode cpu|wall|..., --python-view
        python|mixed|native, -o FILE (repeatable; any format sprofd writes), -r (return the
        profile: .table(), .folded(), .save(path)), -q (display nothing), --rows N,
        --subprocesses. `%sprofd -h` shows them all."""
        opts, statement = self._parse(line, "%sprofd", lines=False)
        if opts is None:
            return None
        code = cell if cell is not None else statement
        if not code.strip():
            raise UsageError("%sprofd: nothing to profile (give a statement, or use %%sprofd over a cell)")
        profile = self._profile(opts, code)
        if not opts.quiet:
            display(profile)
        return profile if opts.return_ else None

    @needs_local_scope
    @line_magic
    def sprofd_lines(self, line, local_ns=None):
        """%sprofd_lines -f FUNC [-f FUNC2 ...] [options] statement: the source of FUNC with
        the share of samples on each line, as %lprun shows it, from samples: nothing is
        decorated or traced. -r returns the report (.functions[i].shares())."""
        opts, statement = self._parse(line, "%sprofd_lines", lines=True)
        if opts is None:
            return None
        if not statement.strip():
            raise UsageError("%sprofd_lines: give the statement to run after the options")
        ns = dict(self.shell.user_ns)
        ns.update(local_ns or {})
        funcs = []
        for expr in opts.functions:
            try:
                func = eval(expr, self.shell.user_global_ns, ns)
                code_of(func)
            except Exception as e:
                raise UsageError("%%sprofd_lines: -f %s: %s" % (expr, e))
            funcs.append(func)
        profile = self._profile(opts, statement)
        report = LinesReport(funcs, profile)
        if not opts.quiet:
            display(report)
        return report if opts.return_ else None

    def _parse(self, line, prog, lines):
        try:
            return _args.split_line(line, prog=prog, lines=lines)
        except _args.ArgumentError as e:
            raise UsageError(str(e))

    def _profile(self, opts, code):
        try:
            binary = find_binary()
            args = _args.sprofd_args(opts, subprocesses_flag=binary_has_flag(binary, "--subprocesses"))
            session = Attach(args, binary=binary, rows=opts.rows).start()
        except SprofdError as e:
            raise UsageError(str(e))
        try:
            self.shell.run_cell(code, store_history=False, silent=False)
        except KeyboardInterrupt:
            print("sprofd: interrupted; the profile covers the part that ran", file=sys.stderr)
        finally:
            try:
                profile = session.stop()
            except SprofdError as e:
                raise UsageError(str(e))
        return profile


def load(ipython):
    ipython.register_magics(SprofdMagics)
