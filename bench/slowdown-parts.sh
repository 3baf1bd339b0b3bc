#!/usr/bin/env bash
# Where sprofd's slowdown of a Python 3.15 target goes: bench/pywork.py `pure` in the sid root,
# bare and under `sprofd attach -F 999` with one part of the work taken away at a time (a
# smaller stack copy, frame-pointer unwinding, no Python reads). Prints the median elapsed time
# of RUNS runs each (min-max in brackets). Diagnostic, not part of `make bench`.
#
#   bash bench/slowdown-parts.sh      # RUNS=5, needs /srv/sid (tests/deps.sh) and root
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SPROFD=${SPROFD:-$(dirname "$HERE")/target/release/sprofd}
RUNS=${RUNS:-5}
ROOT=/srv/sid
mkdir -p "$ROOT/tmp/sprofd-bench"
cp "$HERE/pywork.py" "$ROOT/tmp/sprofd-bench/pywork.py"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
elapsed() { awk '/^elapsed/{print $2}' "$out/wl"; }
for variant in bare default "--stack-size 2048" "--unwind fp" "--python-view native"; do
	times=()
	for ((i = 0; i < RUNS; i++)); do
		chroot "$ROOT" python3.15 /tmp/sprofd-bench/pywork.py pure 1.0 >"$out/wl" &
		w=$!
		if [[ $variant != bare ]]; then
			opts=()
			[[ $variant == default ]] || read -r -a opts <<<"$variant"
			"$SPROFD" attach "$w" -F 999 -d 3600 -q "${opts[@]}" -o "$out/p.folded" 2>/dev/null &
		fi
		wait
		times+=("$(elapsed)")
	done
	printf '%-22s %s\n' "$variant" "$(printf '%s\n' "${times[@]}" | sort -g |
		awk '{ a[NR] = $1 } END { printf "%s [%s-%s]", a[int((NR + 1) / 2)], a[1], a[NR] }')"
done
