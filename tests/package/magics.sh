#!/usr/bin/env bash
# The Python package's magics as a notebook user meets them (issue 23): the wheel installed into
# target/magics-venv (Debian's python3 with IPython, ipykernel and nbclient from PyPI, made by
# `bash tests/deps.sh package`), then
#   - the magics' argument parsing and helpers, without a kernel;
#   - IPython running an .ipy script with %sprofd -o P.folded over a 50/30/20 split,
#     %sprofd_lines, a thread pool, a child process, sprofd.profile() and a too-short statement:
#     as root, and as an unprivileged user (at the default kernel.perf_event_paranoid 2);
#   - nbclient executing a notebook with %%sprofd cells; the saved notebook must hold the flame
#     graphs (zlib's deflate drawn on its Python caller) and the tables, and Chromium must run
#     the flame graphs' script inside their iframes (labels fitted, click to zoom).
# Run by `make test` (through `make package-test`), after wheel.sh, whose wheel it installs.
# SPROFD_REQUIRE_LIVE=1 turns a skip into a failure.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
fail() { echo "package-test: magics: FAILED: $*" >&2; exit 1; }
skip() {
	[[ ${SPROFD_REQUIRE_LIVE:-0} == 1 ]] && fail "$* (SPROFD_REQUIRE_LIVE=1)"
	echo "package-test: magics: SKIP $*"
}
passed=0

# No kernel, no sampling: the command lines of the magics and the package's pure helpers.
out=$(PYTHONPATH=python python3 tests/package/test_magic_args.py 2>&1) || fail "argument parsing: $out"
passed=$((passed + 1))

venv=target/magics-venv
if [[ ! -x $venv/bin/ipython ]]; then
	skip "the live magics: no $venv (bash tests/deps.sh package makes it)"
	echo "package-test: magics: $passed passed, 0 failed, 1 skipped"
	exit 0
fi
wheel=$(ls target/wheels/sprofd-*.whl 2>/dev/null | head -n 1 || true)
if [[ -z $wheel ]]; then
	python3 -m maturin build --release -q -o target/wheels >/dev/null 2>&1 || fail "maturin build"
	wheel=$(ls target/wheels/sprofd-*.whl | head -n 1)
fi
# The venv is kept between runs (its packages come from PyPI); the wheel is this build's.
"$venv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$wheel" || fail "pip install $wheel"
[[ -x $venv/bin/sprofd ]] || fail "the wheel put no sprofd in $venv/bin"

paranoid=$(cat /proc/sys/kernel/perf_event_paranoid)
if [[ $(id -u) != 0 && $paranoid -gt 2 ]]; then
	skip "the live magics: kernel.perf_event_paranoid=$paranoid forbids perf_event_open to users"
	echo "package-test: magics: $passed passed, 0 failed, 1 skipped"
	exit 0
fi

work=$(mktemp -d /tmp/sprofd-magics-XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
mkdir "$work/ipy" "$work/nb" "$work/user"
"$venv/bin/python" tests/package/magics_check.py ipy "$work/ipy" || fail "IPython as uid $(id -u)"
passed=$((passed + 1))
"$venv/bin/python" tests/package/magics_check.py notebook "$work/nb" 2> >(grep -v 'Kernel is running over TCP' >&2) \
	|| fail "the notebook"
passed=$((passed + 1))
# The saved notebook's outputs in a browser (Chromium through Playwright, as tests/deps.sh has them).
if [[ -x /usr/bin/chromium ]] && python3 -c 'import playwright' 2>/dev/null; then
	python3 tests/package/magics_render.py "$work/nb/profiled.ipynb" "$work/nb" || fail "the notebook in Chromium"
	passed=$((passed + 1))
else
	skip "rendering the notebook's outputs: no /usr/bin/chromium or no playwright for python3"
fi

if [[ $(id -u) != 0 ]]; then
	echo "package-test: magics: $passed passed, 0 failed (already unprivileged: no second user)"
	exit 0
fi
# The unprivileged run: a throwaway user (the hostile tests' own) with no capabilities.
user=sprofd-rt
id -u "$user" >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin "$user" >/dev/null 2>&1 || true
id -u "$user" >/dev/null 2>&1 || fail "cannot create the user $user"
chown "$user" "$work/user"
setpriv --reuid="$user" --regid="$user" --clear-groups --inh-caps=-all -- \
	env HOME="$work/user" SPROFD_EXPECT_USER_ONLY=$((paranoid >= 2)) \
	"$venv/bin/python" tests/package/magics_check.py ipy "$work/user" || fail "IPython as $user (perf_event_paranoid $paranoid)"
passed=$((passed + 1))
echo "package-test: magics: $passed passed, 0 failed"
