"""The magics' command lines and the pure helpers of the sprofd Python package, without a
kernel, IPython or sampling: `python3 -m unittest tests/package/test_magic_args.py` with
python/ on PYTHONPATH (tests/package/magics.sh runs it)."""

import unittest

from sprofd import _args, _attach, _lines, _profile


class SplitLine(unittest.TestCase):
    def split(self, line, **kw):
        return _args.split_line(line, **kw)

    def test_statement_is_kept_verbatim(self):
        opts, stmt = self.split("-F 4999 -o a.svg --output=b.folded work('x  y', n=2)  # c")
        self.assertEqual(opts.frequency, 4999)
        self.assertEqual(opts.output, ["a.svg", "b.folded"])
        self.assertEqual(stmt, "work('x  y', n=2)  # c")

    def test_defaults(self):
        opts, stmt = self.split("work()")
        self.assertEqual(opts.frequency, _args.DEFAULT_FREQUENCY)
        self.assertIsNone(opts.mode)
        self.assertIsNone(opts.python_view)
        self.assertEqual(opts.output, [])
        self.assertFalse(opts.return_ or opts.quiet or opts.subprocesses)
        self.assertEqual(stmt, "work()")
        self.assertEqual(_args.sprofd_args(opts), ["-F", str(_args.DEFAULT_FREQUENCY)])

    def test_cell_magic_line_has_no_statement(self):
        opts, stmt = self.split("  -r --mode wall  ")
        self.assertTrue(opts.return_)
        self.assertEqual(opts.mode, "wall")
        self.assertEqual(stmt, "")

    def test_attached_values_and_flags(self):
        opts, stmt = self.split("-F999 -rq --python-view=mixed -o 'my file.svg' f()")
        self.assertEqual(opts.frequency, 999)
        self.assertTrue(opts.return_ and opts.quiet)
        self.assertEqual(opts.python_view, "mixed")
        self.assertEqual(opts.output, ["my file.svg"])
        self.assertEqual(stmt, "f()")

    def test_double_dash_ends_options(self):
        opts, stmt = self.split("-F 99 -- -x + 1")
        self.assertEqual(opts.frequency, 99)
        self.assertEqual(stmt, "-x + 1")

    def test_mode_is_passed_through_unchecked(self):
        # Modes the installed sprofd has (gil, memory...) are its business, not the magic's.
        opts, _ = self.split("--mode gil f()")
        self.assertEqual(_args.sprofd_args(opts)[-2:], ["--mode", "gil"])
        opts, _ = self.split("--mode=memory --python-view native -o x.pb.gz f()")
        self.assertEqual(
            _args.sprofd_args(opts),
            ["-F", str(_args.DEFAULT_FREQUENCY), "--mode", "memory", "--python-view", "native", "-o", "x.pb.gz"],
        )

    def test_subprocesses_only_where_sprofd_has_it(self):
        opts, _ = self.split("--subprocesses f()")
        self.assertNotIn("--subprocesses", _args.sprofd_args(opts, subprocesses_flag=False))
        self.assertIn("--subprocesses", _args.sprofd_args(opts, subprocesses_flag=True))

    def test_bad_lines_are_one_line_errors(self):
        for line in ["-F 0 f()", "-F x f()", "-F", "--python-view ruby f()", "--rows 0 f()",
                     "--no-such-option f()", "--mode", "-o", "-F '99 f()"]:
            with self.assertRaises(_args.ArgumentError, msg=line) as cm:
                self.split(line)
            self.assertNotIn("\n", str(cm.exception), line)
            self.assertTrue(str(cm.exception).startswith("%sprofd: "), str(cm.exception))

    def test_lines_magic_needs_a_function(self):
        with self.assertRaises(_args.ArgumentError):
            self.split("work()", prog="%sprofd_lines", lines=True)
        opts, stmt = self.split("-f work -f mod.helper -F 1999 work(3)", prog="%sprofd_lines", lines=True)
        self.assertEqual(opts.functions, ["work", "mod.helper"])
        self.assertEqual(opts.frequency, 1999)
        self.assertEqual(stmt, "work(3)")

    def test_help_runs_nothing(self):
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()) as out:
            self.assertEqual(self.split("-h"), (None, None))
        self.assertIn("--python-view", out.getvalue())
        self.assertIn("usage: %sprofd [options] statement, or %%sprofd [options] over a cell", out.getvalue())


class Helpers(unittest.TestCase):
    FOLDED = "\n".join(
        [
            "python;<module> (a.py:1);work (a.py:10);part_a (a.py:3);burn (a.py:20) 50",
            "python;<module> (a.py:1);work (a.py:11);part_b (a.py:4) 30",
            "python;<module> (a.py:1);work (a.py:12);deflate;libz.so.1+0x10 20",
            "python;main 7",
            "garbage line",
        ]
    )

    def test_folded_and_python_share(self):
        p = _profile.Profile("", self.FOLDED, "", elapsed=1.0)
        self.assertEqual(p.samples, 107)
        self.assertAlmostEqual(p.python_share(), 100 / 107)
        self.assertFalse(any("only" in n for n in p.notes()))
        few = _profile.Profile("", "python;f (a.py:1) 10", "")
        self.assertTrue(any("only 10 samples" in n and "-F" in n for n in few.notes()))

    def test_python_frames(self):
        self.assertEqual(_profile.python_frame("work (a.py:10)"), ("work", "a.py", 10))
        self.assertEqual(_profile.python_frame("f (<ipython-input-1-ab>:3)"), ("f", "<ipython-input-1-ab>", 3))
        self.assertEqual(_profile.python_frame("C.m.<locals>.g (x.py)"), ("C.m.<locals>.g", "x.py", None))
        self.assertEqual(_profile.python_frame("<module> (<frozen runpy>:198)"), ("<module>", "<frozen runpy>", 198))
        for native in ["deflate", "libz.so.1+0x10", "adler32_z (libz.so.1.2.13)", "foo(int)",
                       "unicodekeys_lookup_unicode (dictobject.c:914)", "f (x.rs:3)"]:
            self.assertIsNone(_profile.python_frame(native), native)

    def test_lines_count_each_line_once_per_sample(self):
        # Recursion: work at lines 10 and 11 in one sample counts once for each line.
        stacks = {"m;work (a.py:10);work (a.py:11);y": 4, "m;work (a.py:12)": 6, "m;other (a.py:11)": 9}
        by_line, within = _lines.count_lines(stacks, {"work"}, "a.py", 9, 12)
        self.assertEqual(within, 10)
        self.assertEqual(by_line, {10: 4, 11: 4, 12: 6})
        by_line, within = _lines.count_lines(stacks, {"work"}, "b.py", 9, 12)
        self.assertEqual((by_line, within), ({}, 0))

    def test_table_is_cut_to_rows(self):
        rows = ["%6.2f row%d" % (1.0, i) for i in range(40)]
        table = "\n".join(["h1", "h2"] + rows + ["---", "Sample count: 40"]) + "\n"
        cut = _profile.cut_table(table, 30)
        self.assertIn("row29", cut)
        self.assertNotIn("row30", cut)
        self.assertIn("10 more rows", cut)
        self.assertTrue(cut.endswith("Sample count: 40\n"))
        self.assertEqual(_profile.cut_table(table, 40), table)

    def test_save_by_extension(self):
        import os
        import tempfile

        p = _profile.Profile("<svg/>", "a;b 3\n", "table\n")
        with tempfile.TemporaryDirectory() as d:
            for name, text in [("x.svg", "<svg/>"), ("x.folded", "a;b 3\n"), ("x.TXT", "table\n")]:
                p.save(os.path.join(d, name))
                with open(os.path.join(d, name)) as f:
                    self.assertEqual(f.read(), text)
            with self.assertRaises(ValueError):
                p.save(os.path.join(d, "x.pb.gz"))

    def test_flamegraph_iframe_escapes_and_sizes(self):
        frame = _profile.flamegraph_iframe('<svg height="500" x="a&quot;"><title>f</title></svg>')
        self.assertIn("height:520px", frame)
        self.assertNotIn("<svg", frame)
        self.assertIn("&lt;svg", frame)

    def test_rich_output(self):
        p = _profile.Profile('<svg height="100"></svg>', "a;f (x.py:1) 70\n", "h1\nh2\n 1.0 f\n---\nSample count: 70\n",
                             summary="sprofd: 70 samples in 0.07 s from 1 threads")
        bundle = p._repr_mimebundle_()
        self.assertEqual(set(bundle), {"text/html", "text/plain"})
        self.assertIn("<iframe srcdoc=", bundle["text/html"])
        self.assertIn("Sample count: 70", bundle["text/html"])
        self.assertTrue(bundle["text/plain"].startswith("sprofd: 70 samples"))
        self.assertIn("Sample count: 70", bundle["text/plain"])

    def test_error_line(self):
        clap = ["error: invalid value 'gil' for '--mode <MODE>'", "  [possible values: cpu, wall, off-cpu]",
                "", "For more information, try '--help'."]
        self.assertEqual(_attach.error_line(clap),
                         "sprofd: error: invalid value 'gil' for '--mode <MODE>' [possible values: cpu, wall, off-cpu]")
        own = ["sprofd: warning: x", "sprofd: error: cannot profile PID 1: permission denied"]
        self.assertEqual(_attach.error_line(own), own[1])
        self.assertEqual(_attach.error_line(["odd", "last"]), "last")
        self.assertIsNone(_attach.error_line([]))

    def test_yama_lines(self):
        self.assertIsNone(_attach.yama_warning(None, False))
        self.assertIsNone(_attach.yama_warning(1, False))
        self.assertIsNone(_attach.yama_warning(2, True))
        for scope in (2, 3):
            line = _attach.yama_warning(scope, False)
            self.assertIn("kernel.yama.ptrace_scope=%d" % scope, line)
            self.assertNotIn("\n", line)
        self.assertIn("sysctl kernel.yama.ptrace_scope=1", _attach.yama_warning(2, False))


class Ptracer(unittest.TestCase):
    """Yama's PR_SET_PTRACER sequence around a profile (this host may have no Yama: prctl is
    replaced by a recorder)."""

    def test_names_itself_then_the_child_then_revokes(self):
        import os

        calls = []
        t = _attach._Ptracer.__new__(_attach._Ptracer)
        t.active = True
        t._prctl = lambda option, pid, *rest: calls.append((option, pid.value))
        t.allow_descendants()
        t.allow(4242)
        t.revoke()
        self.assertEqual(
            calls,
            [(0x59616D61, os.getpid()), (0x59616D61, 4242), (0x59616D61, 0)],
        )

    def test_inactive_without_yama_scope_1(self):
        calls = []
        t = _attach._Ptracer.__new__(_attach._Ptracer)
        t.active = False
        t._prctl = lambda *a: calls.append(a)
        t.allow_descendants()
        t.revoke()
        self.assertEqual(calls, [])


class Binary(unittest.TestCase):
    def test_sprofd_bin_first_then_the_environment(self):
        import os
        import sys

        old = os.environ.get("SPROFD_BIN")
        try:
            os.environ["SPROFD_BIN"] = "/opt/x/sprofd"
            self.assertEqual(_attach.find_binary(), "/opt/x/sprofd")
        finally:
            if old is None:
                del os.environ["SPROFD_BIN"]
            else:
                os.environ["SPROFD_BIN"] = old
        self.assertIn(os.path.join(sys.prefix, "bin"), _attach.script_dirs())


if __name__ == "__main__":
    unittest.main()
