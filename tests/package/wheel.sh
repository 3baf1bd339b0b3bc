#!/usr/bin/env bash
# The wheel as a Python user gets it: build it with maturin, install it into a fresh venv,
# and profile a Python script with the `sprofd` the venv puts on PATH. Run by `make test`
# (through `make package-test`). Needs root or perf_event_paranoid <= 2 for the profile;
# SPROFD_REQUIRE_LIVE=1 turns a skip into a failure.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
fail() { echo "package-test: FAILED: $*" >&2; exit 1; }
python3 -m maturin --version >/dev/null 2>&1 || fail "maturin missing (pip install maturin)"
rm -rf target/wheels
python3 -m maturin build --release -q -o target/wheels >/dev/null 2>&1
wheel=$(ls target/wheels/sprofd-*.whl)
case $wheel in *manylinux*x86_64.whl) ;; *) fail "unexpected wheel tag: $wheel" ;; esac
venv=$(mktemp -d /tmp/sprofd-wheel-XXXXXX)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install -q "$wheel"
[[ -x $venv/bin/sprofd ]] || fail "the wheel put no sprofd in $venv/bin"
version=$("$venv/bin/sprofd" --version)
grep -q "^sprofd 0.1.0 (commit " <<<"$version" || fail "sprofd --version: $version"
# pip show reads the metadata a Python user sees.
show=$("$venv/bin/pip" show sprofd)
grep -q "^Summary: A sampling profiler" <<<"$show" || fail "package summary: $show"
if [[ $(id -u) != 0 && ${SPROFD_REQUIRE_LIVE:-0} != 1 ]]; then
	echo "package-test: SKIP the live profile (needs root)"
	echo "package-test: 1 passed, 0 failed, 1 skipped"
	exit 0
fi
out=$venv/out.folded
"$venv/bin/sprofd" record -F 999 -q -o "$out" -- python3 "$ROOT/tests/fixtures/python/workload.py" split 1 >/dev/null 2>&1 \
	|| fail "sprofd record from the wheel"
grep -q "hot_a (workload.py:" "$out" || fail "no Python frames in the wheel's profile"
echo "package-test: 2 passed, 0 failed"
