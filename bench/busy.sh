#!/usr/bin/env bash
# The daemon on a busy host (issue 15): `sprofd daemon` at its defaults while a cold
# `cargo build --release` of this project runs for SECS seconds next to a Python loop and a C
# loop; then `perf record -a -g -F 19` the same way (another cold build). Reports each
# profiler's CPU, sprofd's peak RSS (anon and file), lost and dropped samples, the share of
# truncated stacks per process name, and the bytes stored. Writes bench/out/busy/busy.md for
# docs/benchmarks.md.
#
#   bash bench/busy.sh            # SECS=150
#   SECS=60 bash bench/busy.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
OUT=$HERE/out/busy
SPROFD=${SPROFD:-$ROOT/target/release/sprofd}
SECS=${SECS:-150}
log() { printf '[busy %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'busy bench: %s\n' "$*" >&2; exit 1; }
[[ -x $SPROFD ]] || die "$SPROFD missing: run 'make build' first"
command -v perf >/dev/null || die "perf missing (bash tests/deps.sh bench installs it)"
rm -rf "$OUT" && mkdir -p "$OUT"
cc -O2 -g -o "$OUT/cloop" "$ROOT/tests/fixtures/spin.c"
git clone -q "$ROOT" "$OUT/src"

cpu_ticks() { sed 's/.*) //' /proc/"$1"/stat | awk '{print $12 + $13}'; }
status_kib() { awk -v k="$2:" '$1 == k {print $2}' /proc/"$1"/status; }
metric() { curl -s "http://$ADDR/metrics" | awk -v k="$1" '$1 == k {print $2}'; }

# The host's work: a cold release build (its own target dir, so every crate compiles), a
# Python loop and a C loop, for SECS seconds.
start_work() {
	rm -rf "$OUT/target"
	(cd "$OUT/src" && CARGO_TARGET_DIR=$OUT/target timeout "$SECS" cargo build --release -q >/dev/null 2>&1 || true) &
	BUILD=$!
	python3 "$HERE/pywork.py" pure 1000 >/dev/null 2>&1 &
	PY=$!
	"$OUT/cloop" "$SECS" >/dev/null &
	CLOOP=$!
}
stop_work() {
	wait "$BUILD" || true
	kill "$PY" "$CLOOP" 2>/dev/null || true
	wait "$PY" "$CLOOP" 2>/dev/null || true
}

log "sprofd daemon at defaults, ${SECS} s of a cold cargo build + python + C loop"
"$SPROFD" daemon --listen 127.0.0.1:0 --data-dir "$OUT/data" 2>"$OUT/daemon.log" &
D=$!
for _ in $(seq 100); do
	ADDR=$(sed -n 's|.*serving http://\([^/]*\)/.*|\1|p' "$OUT/daemon.log")
	[[ -n $ADDR ]] && break
	sleep 0.1
done
[[ -n $ADDR ]] || die "daemon did not start: $(cat "$OUT/daemon.log")"
sleep 2
c0=$(cpu_ticks "$D")
start_work
stop_work
sleep 11 # the last window is written
c1=$(cpu_ticks "$D")
hwm=$(status_kib "$D" VmHWM)
anon=$(status_kib "$D" RssAnon)
file=$(status_kib "$D" RssFile)
lost=$(metric sprofd_lost_samples_total)
dropped=$(metric sprofd_dropped_samples_total)
samples=$(metric sprofd_samples_total)
stored=$(metric sprofd_stored_bytes)
# Where the daemon's CPU went, by phase (its own thread CPU clocks), and its total.
curl -s "http://$ADDR/metrics" |
	sed -n 's/^sprofd_phase_cpu_seconds_total{phase="\([a-z]*\)"} \(.*\)/\1\t\2/p' >"$OUT/phases.tsv"
own_cpu=$(metric sprofd_process_cpu_seconds_total)
unwind_s=$(metric sprofd_unwind_seconds_sum)
curl -s "http://$ADDR/api/v1/profile?from=-$((SECS + 30))s&format=folded" >"$OUT/busy.folded"
kill -TERM "$D"
wait "$D" || true
sprofd_cpu=$(awk -v t=$((c1 - c0)) -v s="$SECS" 'BEGIN {printf "%.2f", t / 100 / (s + 11) * 100}')
# Truncated share per process name, for the names with most samples.
awk '{n = $NF; split($0, f, ";"); c = f[1]; tot[c] += n; if ($0 ~ /\[truncated\]/) tr[c] += n}
	END {for (c in tot) if (tot[c] >= 20) printf "%s\t%d\t%.1f\n", c, tot[c], 100 * tr[c] / tot[c]}' \
	"$OUT/busy.folded" | sort -t$'\t' -k2,2nr | head -8 >"$OUT/truncated.tsv"

log "perf record -a -g -F 19, the same work"
start_work
perf record -a -g -F 19 -o "$OUT/perf.data" -- sleep "$SECS" >/dev/null 2>"$OUT/perf.log" &
P=$!
sleep 0.5
p0=$(cpu_ticks "$P" 2>/dev/null || echo 0)
p1=$p0
while kill -0 "$P" 2>/dev/null; do
	p1=$(cpu_ticks "$P" 2>/dev/null || echo "$p1")
	sleep 1
done
stop_work
perf_cpu=$(awk -v t=$((p1 - p0)) -v s="$SECS" 'BEGIN {printf "%.2f", t / 100 / s * 100}')
perf_bytes=$(stat -c %s "$OUT/perf.data")

{
	echo "## The daemon on a busy host (bench/busy.sh, $(date -u +%Y-%m-%d), commit $(git -C "$ROOT" rev-parse --short HEAD))"
	echo
	echo "A cold \`cargo build --release\` of this project for $SECS s, a Python loop and a C loop, on"
	echo "$(nproc) CPUs; the daemon at its defaults (19 Hz, 10 s windows, DWARF, Python frames), then"
	echo "\`perf record -a -g -F 19\` over the same work. CPU is of one core over the run."
	echo
	echo "| | sprofd daemon | perf record -a -g -F 19 |"
	echo "|---|---|---|"
	echo "| CPU (% of one core) | $sprofd_cpu | $perf_cpu |"
	echo "| peak RSS (VmHWM) | $((hwm / 1024)) MiB | - |"
	echo "| RSS at the end: anon / file | $((anon / 1024)) / $((file / 1024)) MiB | - |"
	echo "| samples / lost / dropped | $samples / $lost / $dropped | - |"
	echo "| bytes stored | $stored | $perf_bytes (perf.data, unsymbolized) |"
	echo
	echo "Truncated stacks by process name (the most sampled):"
	echo
	echo "| process | samples | truncated % |"
	echo "|---|---|---|"
	awk -F'\t' '{printf "| %s | %s | %s |\n", $1, $2, $3}' "$OUT/truncated.tsv"
	echo
	echo "Where sprofd's CPU went (\`sprofd_phase_cpu_seconds_total\`, each phase timed by its"
	echo "thread's CPU clock; the rest is the HTTP thread, the memory reader and start-up):"
	echo
	echo "| phase | CPU s | % of the daemon's $own_cpu s | per sample (µs) |"
	echo "|---|---|---|---|"
	awk -F'\t' -v total="$own_cpu" -v n="$samples" '
		{printf "| %s | %.3f | %.0f | %.0f |\n", $1, $2, 100 * $2 / total, 1e6 * $2 / n; sum += $2}
		END {printf "| rest | %.3f | %.0f | %.0f |\n", total - sum, 100 * (total - sum) / total, 1e6 * (total - sum) / n}' \
		<(sort -t$'\t' -k2,2gr "$OUT/phases.tsv")
	echo
	echo "Of the events phase, walking the stacks took $unwind_s s (\`sprofd_unwind_seconds_sum\`);"
	echo "the rest is Python reads and reading /proc and modules for processes seen for the first time."
} >"$OUT/busy.md"
cat "$OUT/busy.md"
