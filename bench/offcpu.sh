#!/usr/bin/env bash
# Off-CPU and wall-clock mode cost (issue 9): target slowdown of a pipe ping-pong that switches
# tens of thousands of times a second, under sprofd --mode off-cpu / wall at default settings,
# beside perf record -e sched:sched_switch -g and, for the Python ping-pong, austin (whose
# default mode is wall-clock time). Writes bench/out/offcpu/offcpu.md for docs/benchmarks.md.
#
#   bash bench/offcpu.sh            # RUNS=5
#   QUICK=1 bash bench/offcpu.sh    # smoke run
#
# Both ping-pong threads are pinned to CPU 0 (taskset), so the bare runs are stable (two CPUs
# give 0.5-4 s for the same work depending on placement); profilers run unpinned.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
OUT=$HERE/out/offcpu
SPROFD=${SPROFD:-$ROOT/target/release/sprofd}
PERF=${PERF:-perf}
PY=${PY:-$(python3 -c 'import sys; print(sys.executable)')}
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then RUNS=1 C_ROUNDS=60000 PY_ROUNDS=40000; else RUNS=${RUNS:-5} C_ROUNDS=200000 PY_ROUNDS=150000; fi

log() { printf '[offcpu %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'offcpu: %s\n' "$*" >&2; exit 1; }
[[ -x $SPROFD ]] || die "$SPROFD missing: run 'make build' first"
command -v taskset >/dev/null || die "taskset missing (util-linux)"
mkdir -p "$OUT/runs"
cc -O2 -o "$OUT/cputime" "$HERE/cputime.c"
cc -O2 -g -fno-omit-frame-pointer -pthread -I"$ROOT/tests/fixtures" -o "$OUT/pingpong" "$ROOT/tests/fixtures/pingpong.c"
cp "$SPROFD" "$OUT/sprofd.bin"
SPROFD=$OUT/sprofd.bin
RES=$OUT/results.tsv
: >"$RES"
FAILS=$OUT/failures.txt
: >"$FAILS"
HAVE_PERF=0
[[ $("$PERF" list 2>/dev/null | grep -c "sched:sched_switch") -gt 0 ]] && HAVE_PERF=1
HAVE_AUSTIN=0
command -v austin >/dev/null && HAVE_AUSTIN=1

wl_start() {
	case $1 in
	c) taskset -c 0 "$OUT/pingpong" "$C_ROUNDS" >"$OUT/wl.stdout" & ;;
	py) taskset -c 0 "$PY" "$HERE/pyping.py" "$PY_ROUNDS" >"$OUT/wl.stdout" & ;;
	esac
	WPID=$!
}

wl_wait() {
	local rc=0
	wait "$WPID" || rc=$?
	WALL=NA
	if ((rc == 0)); then WALL=$(awk '/^elapsed/{print $2}' "$OUT/wl.stdout"); else echo "workload $1 exited $rc" >>"$FAILS"; fi
}

prof_start() {
	local cfg=$1 tag=$2
	case $cfg in
	sprofd-off-cpu | sprofd-wall)
		"$OUT/cputime" "$tag.time" "$SPROFD" attach "$WPID" --mode "${cfg#sprofd-}" -d 3600 -q \
			-o "$tag.folded" -o "$tag.txt" 2>"$tag.err" &
		;;
	perf-sched)
		"$OUT/cputime" "$tag.time" "$PERF" record -e sched:sched_switch -g -p "$WPID" -o "$tag.data" -q \
			2>"$tag.err" &
		;;
	austin)
		"$OUT/cputime" "$tag.time" austin -p "$WPID" -o "$tag.austin" >"$tag.err" 2>&1 &
		;;
	esac
	PPID_=$!
}

prof_finish() {
	local cfg=$1 tag=$2 rc=0
	wait "$PPID_" || rc=$?
	P_CPU=NA P_NOTE=
	if ((rc != 0)); then
		{ echo "$cfg exited $rc:"; sed 's/^/    /' "$tag.err"; } >>"$FAILS"
		return
	fi
	P_CPU=$(awk '{ print $1 + $2 }' "$tag.time")
	[[ $cfg == sprofd-* ]] && P_NOTE=$(grep -o 'thinned to 1 in up to [0-9]* switches' "$tag.txt" | head -1 || true)
	rm -f "$tag.data"
}

pair() {
	local wl=$1 cfg=$2 r=$3 bare tag=$OUT/runs/$1.$2.$3
	wl_start "$wl"; wl_wait "$wl"; bare=$WALL
	wl_start "$wl"; sleep 0.05; prof_start "$cfg" "$tag"; wl_wait "$wl"; prof_finish "$cfg" "$tag"
	local ratio
	ratio=$(awk -v a="$bare" -v b="$WALL" 'BEGIN{ if (a == "NA" || b == "NA") print "NA"; else printf "%.4f", b / a }')
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$wl" "$cfg" "$r" "$bare" "$WALL" "$ratio" "$P_CPU" "$P_NOTE" >>"$RES"
	log "$(printf '%-3s %-15s round %d/%d: bare %ss profiled %ss ratio %s cpu %ss %s' "$wl" "$cfg" "$r" "$RUNS" "$bare" "$WALL" "$ratio" "$P_CPU" "$P_NOTE")"
}

C_CFGS=(sprofd-off-cpu sprofd-wall)
PY_CFGS=(sprofd-off-cpu sprofd-wall)
((HAVE_PERF)) && C_CFGS+=(perf-sched) && PY_CFGS+=(perf-sched)
((HAVE_AUSTIN)) && PY_CFGS+=(austin)
T_START=$EPOCHREALTIME
for ((r = 1; r <= RUNS; r++)); do
	for cfg in "${C_CFGS[@]}"; do pair c "$cfg" "$r"; done
	for cfg in "${PY_CFGS[@]}"; do pair py "$cfg" "$r"; done
done
T_END=$EPOCHREALTIME

col() { awk -F'\t' -v w="$1" -v c="$2" -v f="$3" '$1 == w && $2 == c && $f != "NA" { print $f }' "$RES"; }
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "NA"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
range() { sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) printf "%.3f-%.3f", lo, hi; else print "n/a" }'; }
fmt() { awk -v v="$1" -v f="$2" 'BEGIN { if (v == "NA" || v == "") print "n/a"; else printf f, v }'; }
{
	echo "## Off-CPU and wall-clock modes (issue 9): a context-switch storm"
	echo
	echo "Command: \`bash bench/offcpu.sh\` (RUNS=$RUNS QUICK=$QUICK), run by \`make bench\`;"
	echo "$(awk -v a="$T_START" -v b="$T_END" 'BEGIN { printf "%.0f", (b - a) / 60 }') min. Workloads, both threads pinned to CPU 0: \`tests/fixtures/pingpong.c\`"
	echo "($C_ROUNDS pipe round trips between two threads) and \`bench/pyping.py\` ($PY_ROUNDS round trips"
	echo "between two Python threads, CPython $("$PY" -c 'import sys; print(sys.version.split()[0])')). Profilers attach by PID 50 ms after start (the"
	echo "workloads wait 0.3 s before their timed part) at their defaults: \`sprofd attach --mode off-cpu|wall\`,"
	echo "\`perf record -e sched:sched_switch -g\`, \`austin\` (wall-clock by default). Slowdown: median of"
	echo "profiled/bare wall over $RUNS pairs; profiler CPU: user+sys of the profiler process, median."
	echo
	echo "| workload | profiler | slowdown | profiler CPU s | sprofd thinning |"
	echo "|---|---|---|---|---|"
	for wl in c py; do
		cfgs=("${C_CFGS[@]}"); [[ $wl == py ]] && cfgs=("${PY_CFGS[@]}")
		for cfg in "${cfgs[@]}"; do
			note=$(awk -F'\t' -v w="$wl" -v c="$cfg" '$1 == w && $2 == c && $8 != "" { n = $8 } END { print n }' "$RES")
			printf '| %s | %s | %sx [%s] | %s | %s |\n' "$wl" "$cfg" "$(fmt "$(col "$wl" "$cfg" 6 | median)" %.3f)" \
				"$(col "$wl" "$cfg" 6 | range)" "$(fmt "$(col "$wl" "$cfg" 7 | median)" %.3f)" "${note:--}"
		done
	done
	echo
	s=$(col c sprofd-off-cpu 6 | median)
	echo "Goal (issue 9): ping-pong slowdown <= 1.05x at default settings: sprofd off-cpu $(fmt "$s" %.3f)x:" \
		"$(awk -v v="$s" 'BEGIN { print (v != "NA" && v <= 1.05) ? "met" : "**missed**" }')"
	if [[ -s $FAILS ]]; then echo; echo '```'; cat "$FAILS"; echo '```'; fi
	echo
} >"$OUT/offcpu.md"
log "wrote $OUT/offcpu.md"
