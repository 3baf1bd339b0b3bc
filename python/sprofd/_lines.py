"""Per-line shares of a function from sampled stacks, shown as its annotated source (the view
`%lprun` gives, without decorating or tracing anything).

Every Python frame in sprofd's folded stacks is labelled `qualname (file.py:line)` with the
line it was executing; a sample counts for each line of the function that is on its stack
(the line running in the function itself, and the lines waiting on a call), each line at
most once per sample, so recursion never counts a line twice.
"""

import html
import inspect
import os

from ._profile import FEW_SAMPLES, few_samples_note, python_frame


class FunctionLines:
    """The samples of one function by source line: `.shares()` ({line: share of the
    function's samples}), `.samples` (samples with the function on the stack), `.total`
    (all samples), and the annotated source as text or HTML."""

    def __init__(self, func, profile):
        code = code_of(func)
        self.name = getattr(code, "co_qualname", None) or getattr(func, "__qualname__", code.co_name)
        self.short_name = code.co_name
        self.filename = code.co_filename
        try:
            source, first = inspect.getsourcelines(func)
        except (OSError, TypeError):
            source, first = [], code.co_firstlineno
        self.first = first
        self.source = [l.rstrip("\n") for l in source]
        self.total = profile.samples
        self.by_line, self.samples = count_lines(
            profile.stacks(),
            {self.name, self.short_name},
            os.path.basename(self.filename),
            first,
            first + max(len(self.source), 1) - 1,
        )
        self.elapsed = profile.elapsed

    def shares(self):
        """{line number: samples with that line on the stack / samples in the function}."""
        if not self.samples:
            return {}
        return {line: n / self.samples for line, n in sorted(self.by_line.items())}

    def text(self):
        out = [
            "Function: %s at line %d" % (self.name, self.first),
            "File: %s" % self.filename,
            "Samples: %d with %s on the stack, of %d (%.1f%%)"
            % (self.samples, self.short_name, self.total, 100.0 * self.samples / max(self.total, 1)),
        ]
        if self.samples < FEW_SAMPLES:
            out.append(few_samples_note(self.samples))
        out.append("")
        header = "%6s %9s %8s  %s" % ("Line #", "Samples", "% Time", "Line Contents")
        out += [header, "=" * max(len(header), 60)]
        for i, src in enumerate(self.source):
            line = self.first + i
            n = self.by_line.get(line, 0)
            if n:
                out.append("%6d %9d %8.1f  %s" % (line, n, 100.0 * n / self.samples, src))
            else:
                out.append("%6d %9s %8s  %s" % (line, "", "", src))
        if not self.source:
            for line, n in sorted(self.by_line.items()):
                out.append("%6d %9d %8.1f  (source not available)" % (line, n, 100.0 * n / self.samples))
        return "\n".join(out) + "\n"

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {
            "text/plain": self.text(),
            "text/html": '<pre style="font-size:12px">%s</pre>' % html.escape(self.text()),
        }

    def __repr__(self):
        return "<sprofd.FunctionLines %s: %d samples>" % (self.name, self.samples)


class LinesReport:
    """The annotated source of several functions from one profile."""

    def __init__(self, functions, profile):
        self.profile = profile
        self.functions = [FunctionLines(f, profile) for f in functions]

    def __getitem__(self, i):
        return self.functions[i]

    def __iter__(self):
        return iter(self.functions)

    def text(self):
        return "\n".join(f.text() for f in self.functions)

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {
            "text/plain": self.text(),
            "text/html": '<pre style="font-size:12px">%s</pre>' % html.escape(self.text()),
        }


def code_of(func):
    """The code object of a function, method, decorated function or callable object."""
    f = inspect.unwrap(func) if callable(func) else func
    f = getattr(f, "__func__", f)
    code = getattr(f, "__code__", None)
    if code is None:
        raise TypeError("%r is not a Python function: its lines cannot be shown" % (func,))
    return code


def count_lines(stacks, names, base, first, last):
    """({line: samples}, samples with the function on the stack): frames named one of `names`
    in a file called `base`, at lines first..last."""
    by_line = {}
    within = 0
    for stack, count in stacks.items():
        lines = set()
        for label in stack.split(";"):
            frame = python_frame(label)
            if frame is None:
                continue
            name, file, line = frame
            if name in names and file == base and line is not None and first <= line <= last:
                lines.add(line)
        if lines:
            within += count
            for line in lines:
                by_line[line] = by_line.get(line, 0) + count
    return by_line, within
