"""The magics' command lines: options first (as the `sprofd` CLI spells them), then the
statement, kept exactly as typed. No IPython here, so the parsing is tested without a kernel.
"""

import argparse
import shlex

PYTHON_VIEWS = ("python", "mixed", "native")
#: Samples per second when -F is not given: a one-second cell gives ~1000 samples. The CLI's
#: default (99 Hz) suits long attaches, not cells.
DEFAULT_FREQUENCY = 999


class ArgumentError(ValueError):
    """A magic's command line that cannot be used; the message is one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ArgumentError("%s: %s" % (self.prog, message))

    def exit(self, status=0, message=None):
        # -h: argparse printed the help; the magic returns without running anything.
        raise _HelpShown()


class _HelpShown(Exception):
    pass


def _parser(prog, lines):
    if lines:
        usage = "%s -f FUNC [-f FUNC ...] [options] statement" % prog
        what = ("The source of each FUNC with the share of samples on each line (like %lprun), "
                "from sampling the statement with sprofd: nothing is decorated or traced.")
    else:
        usage = "%s [options] statement, or %%%s [options] over a cell" % (prog, prog)
        what = ("Sample this kernel's threads (Python and native frames) with sprofd while the "
                "statement or cell runs; show the flame graph and the table of top functions.")
    # argparse formats the usage with %: the magics' own % signs are doubled.
    p = _Parser(prog=prog, usage=usage.replace("%", "%%"), description=what, add_help=True,
                allow_abbrev=False)
    p.add_argument("-F", "--frequency", type=int, default=DEFAULT_FREQUENCY, metavar="HZ",
                   help="samples per second per thread (default %d)" % DEFAULT_FREQUENCY)
    p.add_argument("--mode", metavar="MODE", default=None,
                   help="what time to measure, passed to sprofd: cpu (default), wall, and the "
                        "modes the installed sprofd has (see `sprofd attach --help`)")
    p.add_argument("--python-view", choices=PYTHON_VIEWS, default=None,
                   help="python (default): Python functions with the native code they call; "
                        "mixed: every native frame too; native: no Python frames")
    p.add_argument("-o", "--output", action="append", default=[], metavar="FILE",
                   help="also write FILE (repeatable); the format follows the extension: .svg, "
                        ".folded, .txt, .pb.gz/.pprof, .speedscope.json")
    p.add_argument("-r", "--return", dest="return_", action="store_true",
                   help="return the profile as an object (.table(), .folded(), .save())")
    p.add_argument("-q", "--quiet", action="store_true", help="show nothing inline")
    p.add_argument("--rows", type=int, default=None, metavar="N", help="rows of the table")
    p.add_argument("--subprocesses", action="store_true",
                   help="also profile the processes the kernel started before (a multiprocessing "
                        "pool from an earlier cell); those the statement starts are always followed")
    if lines:
        p.add_argument("-f", "--function", action="append", required=True, dest="functions",
                       metavar="FUNC", help="the function to annotate (an expression; repeatable)")
    return p


def _takes_value(parser, token):
    """Whether option `token` (without `=value`) consumes the next word."""
    for action in parser._actions:
        if token in action.option_strings:
            return action.nargs != 0
    return False


def split_line(line, prog="%sprofd", lines=False):
    """(options namespace, statement) of a magic's line: the leading words that are options,
    and the rest verbatim (quotes, spacing and all). `--` ends the options explicitly.

    Returns (None, None) when -h printed the help."""
    parser = _parser(prog, lines)
    words = []
    rest = line.lstrip()
    pending_value = False
    while rest:
        if not pending_value and not rest.startswith("-"):
            break
        lex = shlex.shlex(rest, posix=True)
        lex.whitespace_split = True
        lex.commenters = ""
        try:
            word = lex.get_token()
        except ValueError as e:
            raise ArgumentError("%s: %s" % (prog, e))
        consumed = lex.instream.tell()
        if word is None:
            break
        rest = rest[consumed:].lstrip()
        if word == "--" and not pending_value:
            break
        words.append(word)
        if pending_value:
            pending_value = False
        elif word.startswith("--"):
            pending_value = "=" not in word and _takes_value(parser, word)
        elif len(word) == 2:
            pending_value = _takes_value(parser, word)
        # -F999 style: the value is in the word itself.
    if pending_value:
        raise ArgumentError("%s: %s needs a value" % (prog, words[-1]))
    try:
        opts = parser.parse_args(words)
    except _HelpShown:
        return None, None
    check(opts, prog)
    return opts, rest


def check(opts, prog):
    if opts.frequency < 1:
        raise ArgumentError("%s: -F must be at least 1 Hz" % prog)
    if opts.rows is not None and opts.rows < 1:
        raise ArgumentError("%s: --rows must be at least 1" % prog)
    if opts.mode is not None and (not opts.mode or opts.mode.startswith("-")):
        raise ArgumentError("%s: --mode needs a mode name" % prog)


def sprofd_args(opts, subprocesses_flag=False):
    """The `sprofd attach` arguments for parsed options (outputs included); --rows and -r are
    the magic's own. `subprocesses_flag`: whether the installed sprofd has --subprocesses."""
    args = ["-F", str(opts.frequency)]
    if opts.mode:
        args += ["--mode", opts.mode]
    if opts.python_view:
        args += ["--python-view", opts.python_view]
    if opts.subprocesses and subprocesses_flag:
        args.append("--subprocesses")
    for path in opts.output:
        args += ["-o", path]
    return args


def usage(prog="%sprofd", lines=False):
    return _parser(prog, lines).format_help()


def quote(words):
    """A command line for messages."""
    return " ".join(shlex.quote(w) for w in words)
