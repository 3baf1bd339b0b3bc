"""A finished profile as Python sees it: the flame graph, the folded stacks and the table that
sprofd wrote, read back into memory, and their rich display (HTML for notebooks, the table
as text for terminals).
"""

import html
import os
import re
import shutil

#: Fewer samples than this make shares too rough to read much into (a share p from n
#: samples is off by about sqrt(p(1-p)/n): 7 percentage points at 50 samples).
FEW_SAMPLES = 50

#: Rows of the table shown inline (`.table()` has them all), as `sprofd attach` prints.
DEFAULT_ROWS = 30

#: A Python frame's label in folded stacks: `qualname (file.py:line)`, as py-spy writes it.
_PY_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

_SUFFIXES = {
    ".svg": "svg",
    ".folded": "folded",
    ".txt": "table",
}


class Profile:
    """What one profiled statement, cell or block gave: `.table()`, `.folded()`, `.svg()`,
    `.save(path)`, `.samples`, and `.stacks()` (folded stacks as a dict). Displayed inline in
    notebooks (flame graph and table)."""

    def __init__(self, svg, folded, table, elapsed=None, messages=(), summary=None, rows=None):
        self.rows = rows or DEFAULT_ROWS
        self._svg = svg
        self._folded = folded
        self._table = table
        self.elapsed = elapsed
        self.messages = list(messages)
        self.summary = summary
        self._stacks = parse_folded(folded)
        self.samples = sum(self._stacks.values())

    @classmethod
    def load(cls, directory, **kw):
        def read(name):
            try:
                with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as f:
                    return f.read()
            except FileNotFoundError:
                return ""

        try:
            return cls(read("profile.svg"), read("profile.folded"), read("profile.txt"), **kw)
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def table(self):
        """The statprof table (top functions by self time), as `sprofd attach` prints it."""
        return self._table

    def folded(self):
        """The folded stacks, `root;caller;leaf COUNT` per line."""
        return self._folded

    def svg(self):
        """The interactive flame graph (SVG with its search and zoom script)."""
        return self._svg

    def stacks(self):
        """The folded stacks as {stack: samples}, frames joined by `;`."""
        return dict(self._stacks)

    def python_share(self):
        """Share of samples (0..1) whose stack holds at least one Python frame."""
        if not self.samples:
            return 0.0
        n = sum(c for s, c in self._stacks.items() if any(is_python_frame(f) for f in s.split(";")))
        return n / self.samples

    def save(self, path):
        """Writes the flame graph (.svg), folded stacks (.folded) or table (.txt), by the
        path's ending. Other formats (.pb.gz, .speedscope.json) are written while profiling:
        pass `-o FILE` to the magic or `output=` to `sprofd.profile()`."""
        path = os.fspath(path)
        for suffix, kind in _SUFFIXES.items():
            if path.lower().endswith(suffix):
                text = {"svg": self._svg, "folded": self._folded, "table": self._table}[kind]
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
                return path
        raise ValueError(
            "%s: save() writes .svg, .folded or .txt; other formats are written while "
            "profiling (-o FILE, or sprofd.profile(output=...))" % path
        )

    def notes(self):
        """Lines worth showing under the profile: sprofd's warnings and a word on too few samples."""
        notes = [m for m in self.messages if m.strip()]
        if self.summary:
            notes.insert(0, self.summary)
        if self.samples < FEW_SAMPLES:
            notes.append(few_samples_note(self.samples))
        return notes

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/html": self._repr_html_(), "text/plain": self._repr_plain()}

    def shown_table(self):
        """The table cut to `rows` rows (header and footer kept)."""
        return cut_table(self._table, self.rows)

    def _repr_plain(self):
        return "\n".join(self.notes() + [self.shown_table().rstrip("\n")]) + "\n"

    def _repr_html_(self):
        parts = []
        if self._svg:
            parts.append(flamegraph_iframe(self._svg))
        notes = self.notes()
        if notes:
            parts.append(
                '<div style="font-family:monospace;font-size:12px;color:#555">%s</div>'
                % "<br>".join(html.escape(n) for n in notes)
            )
        parts.append('<pre style="font-size:12px">%s</pre>' % html.escape(self.shown_table()))
        return "\n".join(parts)

    def __repr__(self):
        return "<sprofd.Profile: %d samples>" % self.samples


def cut_table(table, rows):
    """The statprof table with at most `rows` rows: its two header lines, the rows, a line
    saying how many were left out, and the footer from `---` on."""
    lines = table.splitlines()
    try:
        footer = lines.index("---")
    except ValueError:
        footer = len(lines)
    head, body, tail = lines[:2], lines[2:footer], lines[footer:]
    if len(body) <= rows:
        return table
    more = ["  ... %d more rows (.table() has them all; --rows N shows more)" % (len(body) - rows)]
    return "\n".join(head + body[:rows] + more + tail) + "\n"


def few_samples_note(n):
    return (
        "sprofd: only %d samples: shares this rough say little. Sample faster "
        "(e.g. -F 4999) or run the work in a loop for a second or more" % n
    )


def flamegraph_iframe(svg):
    """The flame graph in an iframe of its own: its script (search, zoom) runs there, and
    several flame graphs on one page do not share element ids. The height follows the SVG's."""
    m = re.search(r'<svg[^>]*\sheight="(\d+)', svg[:4096])
    height = min(int(m.group(1)) + 20, 1200) if m else 600
    return (
        '<iframe srcdoc="%s" style="width:100%%;height:%dpx;border:none" '
        'sandbox="allow-scripts"></iframe>' % (html.escape(svg, quote=True), height)
    )


def parse_folded(text):
    """{stack: count} from folded lines; lines that do not end in a count are skipped."""
    stacks = {}
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks[stack] = stacks.get(stack, 0) + int(count)
    return stacks


def python_frame(label):
    """(name, file base name, line or None) of a Python frame's label, else None."""
    m = _PY_FRAME.match(label)
    # Native frames with debug info read `function (file.c:line)` too: a Python frame's file
    # is a .py file or a pseudo-file (`<string>`, `<frozen runpy>`, `<ipython-input-1-...>`).
    if not m or not _is_python_file(m.group("file")):
        return None
    line = m.group("line")
    return m.group("name"), m.group("file"), int(line) if line else None


def _is_python_file(name):
    return name.endswith((".py", ".pyw")) or (name.startswith("<") and name.endswith(">"))


def is_python_frame(label):
    return python_frame(label) is not None
