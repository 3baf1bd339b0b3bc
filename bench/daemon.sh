#!/usr/bin/env bash
# The daemon's own cost (issue 8): on a host with both CPUs busy, `sprofd daemon` at its
# defaults (-F 19 per CPU, 10 s windows, DWARF unwinding, Python frames) over a steady minute:
# its CPU (utime + stime from /proc/PID/stat), RSS, bytes stored per
# hour per busy CPU, and the latency of a query and of a scrape; beside `perf record -a -g
# -F 19` run the same way. Writes bench/out/daemon/daemon.md for docs/benchmarks.md.
#
#   bash bench/daemon.sh             # RUNS=3, 60 s each
#   QUICK=1 bash bench/daemon.sh     # one 15 s run
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
OUT=$HERE/out/daemon
SPROFD=${SPROFD:-$ROOT/target/release/sprofd}
PERF=${PERF:-perf}
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then RUNS=1 SECS=15; else RUNS=${RUNS:-3} SECS=${SECS:-60}; fi
WARMUP=10

log() { printf '[daemon %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'daemon bench: %s\n' "$*" >&2; exit 1; }
[[ -x $SPROFD ]] || die "$SPROFD missing: run 'make build' first"
command -v curl >/dev/null || die "curl missing"
mkdir -p "$OUT"
cc -O2 -g -fomit-frame-pointer -DSPROF_OMIT_FP -I"$ROOT/tests/fixtures" -o "$OUT/cratio" "$ROOT/tests/fixtures/cratio.c"
cc -O2 -o "$OUT/cputime" "$HERE/cputime.c"
RES=$OUT/results.tsv
printf 'tool\trun\tcpu_s\tcpu_pct\trss_kib\thwm_kib\tbytes_per_hour_per_cpu\tquery_s\tscrape_extra_s\n' >"$RES"

# CPU nanoseconds of a process, exited threads included (utime + stime of /proc/PID/stat, in
# USER_HZ ticks of 10 ms: per-thread schedstat would miss the HTTP pool's threads that exited).
cpu_ns() { sed 's/.*) //' /proc/"$1"/stat | awk '{printf "%d", ($12 + $13) * 10000000}'; }
status_kib() { awk -v k="$2:" '$1 == k {print $2}' /proc/"$1"/status; }

start_load() {
	LOAD=()
	for _ in 1 2; do
		"$OUT/cratio" 0 >/dev/null &
		LOAD+=($!)
	done
}
stop_load() { kill "${LOAD[@]}" 2>/dev/null || true; wait "${LOAD[@]}" 2>/dev/null || true; }

median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) {print "NA"} else if (NR % 2) {print a[(NR + 1) / 2]} else {print (a[NR / 2] + a[NR / 2 + 1]) / 2}}'; }

run_sprofd() {
	local run=$1 data=$OUT/data-$1
	rm -rf "$data"
	"$SPROFD" daemon --listen 127.0.0.1:0 --data-dir "$data" 2>"$OUT/sprofd-$run.log" &
	local pid=$! addr=""
	for _ in $(seq 100); do
		addr=$(grep -o 'serving http://[^/]*' "$OUT/sprofd-$run.log" | sed 's|serving http://||' || true)
		[[ -n $addr ]] && break
		sleep 0.1
	done
	[[ -n $addr ]] || die "daemon did not start: $(cat "$OUT/sprofd-$run.log")"
	sleep "$WARMUP"
	local t0 c0 c1 t0s
	t0s=$(date +%s)
	c0=$(cpu_ns "$pid")
	sleep "$SECS"
	c1=$(cpu_ns "$pid")
	local rss hwm
	rss=$(status_kib "$pid" VmRSS)
	hwm=$(status_kib "$pid" VmHWM)
	# Windows that started inside the measured minute.
	local bytes
	bytes=$(find "$data/windows" -name '*.pb.gz' -printf '%f %s\n' | awk -v t="$((t0s * 1000))" '{split($1, p, "-"); if (p[1] >= t) s += $2} END {printf "%d", s}')
	local q=() s=()
	for _ in 1 2 3 4 5; do
		q+=("$(curl -s -o /dev/null -w '%{time_total}' "http://$addr/api/v1/profile?from=-1m&format=svg")")
		s+=("$(curl -s -o /dev/null -w '%{time_total}' "http://$addr/debug/pprof/profile?seconds=1")")
	done
	kill -TERM "$pid"
	wait "$pid" || true
	local cpu_s pct bph qm sm
	cpu_s=$(awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.4f", (b - a) / 1e9}')
	pct=$(awk -v c="$cpu_s" -v s="$SECS" 'BEGIN {printf "%.4f", 100 * c / s}')
	bph=$(awk -v b="$bytes" -v s="$SECS" 'BEGIN {printf "%d", b * 3600 / s / 2}')
	qm=$(printf '%s\n' "${q[@]}" | median)
	sm=$(printf '%s\n' "${s[@]}" | median | awk '{printf "%.3f", $1 - 1}')
	printf 'sprofd\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$cpu_s" "$pct" "$rss" "$hwm" "$bph" "$qm" "$sm" >>"$RES"
	log "sprofd run $run: $pct% of a core, RSS $rss KiB (peak $hwm), $bph bytes/hour/CPU, query ${qm}s, scrape +${sm}s"
}

run_perf() {
	local run=$1 total=$((WARMUP + SECS))
	rm -f "$OUT/perf.data"
	# perf's whole run (start, recording, and the build-id pass at the end) through cputime;
	# perf buffers its output, so its bytes are the final file's.
	"$OUT/cputime" "$OUT/perf-$run.time" "$PERF" record -a -g -F 19 -o "$OUT/perf.data" -- sleep "$total" 2>"$OUT/perf-$run.log" &
	local sh=$!
	sleep 2
	local pid
	pid=$(pgrep -n -x perf || true)
	[[ -n $pid ]] || die "perf did not start: $(cat "$OUT/perf-$run.log")"
	sleep $((total - 3))
	local rss hwm
	rss=$(status_kib "$pid" VmRSS)
	hwm=$(status_kib "$pid" VmHWM)
	wait "$sh" || true
	local cpu_s pct bph bytes
	read -r user sys _ <"$OUT/perf-$run.time"
	bytes=$(stat -c %s "$OUT/perf.data")
	cpu_s=$(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.4f", u + s}')
	pct=$(awk -v c="$cpu_s" -v s="$total" 'BEGIN {printf "%.4f", 100 * c / s}')
	bph=$(awk -v b="$bytes" -v s="$total" 'BEGIN {printf "%d", b * 3600 / s / 2}')
	printf 'perf\t%s\t%s\t%s\t%s\t%s\t%s\tNA\tNA\n' "$run" "$cpu_s" "$pct" "$rss" "$hwm" "$bph" >>"$RES"
	log "perf run $run: $pct% of a core, RSS $rss KiB (peak $hwm), $bph bytes/hour/CPU"
}

start_load
trap stop_load EXIT
for run in $(seq "$RUNS"); do
	run_sprofd "$run"
	if command -v "$PERF" >/dev/null; then run_perf "$run"; fi
done
stop_load
trap - EXIT

col() { awk -F'\t' -v t="$1" -v c="$2" 'NR > 1 && $1 == t {print $c}' "$RES" | median; }
{
	echo "## The daemon's own cost (bench/daemon.sh)"
	echo
	echo "Command: \`bash bench/daemon.sh\` (RUNS=$RUNS, $SECS s measured after ${WARMUP} s of warm-up), $(date -u +%Y-%m-%d), $(nproc) CPUs,"
	echo "both kept busy by two \`cratio 0\` processes (built without frame pointers). \`sprofd daemon\` at its"
	echo "defaults (-F 19 per CPU, 10 s windows, DWARF unwinding, Python frames, every window symbolized and"
	echo "written); \`perf record -a -g -F 19\` (frame-pointer callchains, nothing symbolized: \`perf report\`"
	echo "does that later). sprofd's CPU is its utime + stime over the measured stretch (\`/proc/PID/stat\`,"
	echo "10 ms ticks, exited threads included); perf's is its whole run (start, recording, the build-id pass at the end,"
	echo "from wait4) over the run's length, since perf buffers and writes its file in bursts. Bytes per hour per"
	echo "busy CPU: the windows sprofd wrote in the stretch; perf's final perf.data over the run. Medians over runs."
	echo
	echo "| | CPU (% of one core) | RSS (KiB) | peak RSS (KiB) | bytes/hour/CPU | query \`/api/v1/profile?from=-1m\` (s) | scrape \`seconds=1\` beyond 1 s (s) |"
	echo "|---|---|---|---|---|---|---|"
	for t in sprofd perf; do
		[[ $(awk -F'\t' -v t="$t" 'NR > 1 && $1 == t' "$RES" | wc -l) -gt 0 ]] || continue
		echo "| $t | $(col "$t" 4) | $(col "$t" 5) | $(col "$t" 6) | $(col "$t" 7) | $(col "$t" 8) | $(col "$t" 9) |"
	done
	echo
	sp=$(col sprofd 4)
	pf=$(col perf 4)
	if [[ $sp != NA && $pf != NA ]]; then
		echo "CPU ratio sprofd / perf: $(awk -v a="$sp" -v b="$pf" 'BEGIN {printf "%.2f", a / b}')x. Goal: daemon CPU <= 0.1 % of one core at defaults; RSS <= 50 MiB."
	fi
	echo
	echo "For context, published figures (not measured here): Parca Agent < 1 % CPU and < 200 MB;"
	echo "the OpenTelemetry eBPF profiler <= 1 % CPU and 250 MB."
	echo
	echo "Per run:"
	echo
	echo '```'
	cat "$RES"
	echo '```'
} >"$OUT/daemon.md"
log "wrote $OUT/daemon.md"
