#!/usr/bin/env bash
# sprofd benchmark: target slowdown, profiler CPU per sample, stack completeness and
# time-to-output, measured side by side with perf in one run. Writes docs/benchmarks.md.
#
#   make bench                      # RUNS=5
#   RUNS=7 bash bench/run.sh
#   QUICK=1 bash bench/run.sh       # smoke run: RUNS=1, shorter workloads
#
# Environment:
#   RUNS       pairs per measurement (default 5; QUICK=1 forces 1)
#   QUICK      1 = fast smoke run
#   LOAD_WAIT  seconds to wait for the 1-min load average to drop below LOAD_MAX before
#              starting (default 600; 0 with QUICK=1)
#   LOAD_MAX   default 1.0
#   SPROFD     sprofd binary (default target/release/sprofd)
#   PERF       perf binary (default perf)
#
# Method: every slowdown figure is the median over RUNS of (profiled wall / bare wall), where
# each profiled run comes right after its own bare run (alternating pairs), and wall is the
# workload's own clock (cratio prints it; the Debian tools are timed by this script from
# fork to reap). Profilers attach by PID right after the workload has exec'd and stop when it
# exits. Profiler CPU is the user+sys time of the whole profiler process (bench/cputime.c, wait4),
# start-up and end-of-run work included, divided by the samples it wrote.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
OUT=$HERE/out
DOC=$ROOT/docs/benchmarks.md
SPROFD=${SPROFD:-$ROOT/target/release/sprofd}
PERF=${PERF:-perf}
QUICK=${QUICK:-0}
LOAD_MAX=${LOAD_MAX:-1.0}

if [[ $QUICK == 1 ]]; then
	RUNS=1
	LOAD_WAIT=${LOAD_WAIT:-0}
	SCALE=0.3          # cratio work multiplier (1.0 = ~1.8 s on the reference VM)
	DATA_LINES=150000  # gzip input (~6.6 MB)
	XZ_BYTES=800000    # xz input
	SQL_ROWS=1000000
else
	RUNS=${RUNS:-5}
	LOAD_WAIT=${LOAD_WAIT:-600}
	SCALE=1.0
	DATA_LINES=680000  # gzip input (~30 MB)
	XZ_BYTES=3000000   # xz -9 does ~1.5 MB/s here: 3 MB keeps it near 2 s
	SQL_ROWS=3000000
fi
HZ_LIST=(99 999)
STACK_SIZES=(8192 16384 32768 65528)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- prerequisites
[[ -x $SPROFD ]] || die "$SPROFD missing: run 'make build' first"
command -v "$PERF" >/dev/null || die "perf not found"
command -v cc >/dev/null || die "cc not found"
command -v xz >/dev/null || die "xz not found"
command -v gzip >/dev/null || die "gzip not found"
HAVE_SQLITE=0
command -v sqlite3 >/dev/null && HAVE_SQLITE=1
HAVE_INFERNO=0
command -v inferno-collapse-perf >/dev/null && command -v inferno-flamegraph >/dev/null && HAVE_INFERNO=1

mkdir -p "$OUT" "$OUT/runs"
# Snapshot the binary: the tree may be rebuilt while the benchmark runs.
SPROFD_BUILT=$(date -u -r "$SPROFD" '+%Y-%m-%d %H:%M:%S UTC')
cp "$SPROFD" "$OUT/sprofd.bin"
SPROFD_SHA=$(sha256sum "$OUT/sprofd.bin" | cut -c1-12)
SPROFD=$OUT/sprofd.bin
RES=$OUT/results.tsv
: >"$RES"
FAILS=$OUT/failures.txt
: >"$FAILS"

# ---------------------------------------------------------------- load
load1() { cut -d' ' -f1 /proc/loadavg; }
waited=0
while awk -v l="$(load1)" -v m="$LOAD_MAX" 'BEGIN{exit !(l >= m)}' && ((waited < LOAD_WAIT)); do
	log "load average $(load1) >= $LOAD_MAX, waiting (${waited}s of ${LOAD_WAIT}s)"
	sleep 20
	waited=$((waited + 20))
done
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "starting: load average $LOAD_START, RUNS=$RUNS QUICK=$QUICK"
T_START=$EPOCHREALTIME

# ---------------------------------------------------------------- build workloads and inputs
log "compiling cratio"
cc -O2 -g -fno-omit-frame-pointer -pthread -o "$OUT/cratio-fp" "$HERE/cratio.c"
cc -O2 -g -fomit-frame-pointer -pthread -o "$OUT/cratio-nofp" "$HERE/cratio.c"
cc -O2 -o "$OUT/cputime" "$HERE/cputime.c"

DATA=$OUT/data-$DATA_LINES.txt
if [[ ! -s $DATA ]]; then
	log "generating $DATA"
	# numbered, templated lines (compressible) next to base64 of random bytes (not)
	paste -d' ' \
		<(seq 1 "$DATA_LINES" | awk '{printf "%08d row-%d status=%s\n", $1, $1 % 977, ($1 % 7 ? "ok" : "retry")}') \
		<(head -c $((DATA_LINES * 12)) /dev/urandom | base64 -w 16) >"$DATA.tmp"
	mv "$DATA.tmp" "$DATA"
fi
XZIN=$OUT/xzin-$XZ_BYTES.txt
[[ -s $XZIN ]] || head -c "$XZ_BYTES" "$DATA" >"$XZIN"
SQL="WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < $SQL_ROWS) SELECT sum(x) FROM c;"

# ---------------------------------------------------------------- workloads
# wl_cmd NAME: sets CMD (argv), COMM (name after exec) and OWNCLOCK (1 = prints "elapsed S")
wl_cmd() {
	case $1 in
	cratio-fp) CMD=("$OUT/cratio-fp" 1 "$SCALE") COMM=cratio-fp OWNCLOCK=1 ;;
	cratio-fp-4t) CMD=("$OUT/cratio-fp" 4 "$SCALE") COMM=cratio-fp OWNCLOCK=1 ;;
	cratio-nofp) CMD=("$OUT/cratio-nofp" 1 "$SCALE") COMM=cratio-nofp OWNCLOCK=1 ;;
	xz) CMD=(xz -9 -T1 -c "$XZIN") COMM=xz OWNCLOCK=0 ;;
	gzip) CMD=(gzip -9 -c "$DATA") COMM=gzip OWNCLOCK=0 ;;
	sqlite3) CMD=(sqlite3 :memory: "$SQL") COMM=sqlite3 OWNCLOCK=0 ;;
	*) die "unknown workload $1" ;;
	esac
}

# wl_start NAME: launches the workload in the background; sets WPID and T0. Returns once the
# child has exec'd the workload (its comm changed), so profilers see the right maps.
wl_start() {
	wl_cmd "$1"
	T0=$EPOCHREALTIME
	"${CMD[@]}" >"$OUT/wl.stdout" &
	WPID=$!
	local c
	while read -r c <"/proc/$WPID/comm" 2>/dev/null; do
		[[ $c == "$COMM" ]] && break
	done
}

# wl_wait: waits for the workload; sets WALL (seconds, the workload's own clock if it has one)
wl_wait() {
	local rc=0
	wait "$WPID" || rc=$?
	local t1=$EPOCHREALTIME
	if ((rc != 0)); then
		echo "workload ${CMD[*]} exited with status $rc" >>"$FAILS"
		WALL=NA
		return
	fi
	if [[ $OWNCLOCK == 1 ]]; then
		WALL=$(awk '/^elapsed/{print $2}' "$OUT/wl.stdout")
	else
		WALL=$(awk -v a="$T0" -v b="$t1" 'BEGIN{printf "%.6f", b - a}')
	fi
}

# ---------------------------------------------------------------- profilers
# prof_start CFG HZ TAG: attaches profiler CFG to $WPID in the background; sets PPID_
#   CFG: sprofd-auto | sprofd-fp | sprofd-dwarf | sprofd-auto-ss<N> | perf-g | perf-dwarf
prof_start() {
	local cfg=$1 hz=$2 tag=$3
	rm -f "$tag".*
	case $cfg in
	sprofd-*)
		local mode=${cfg#sprofd-} extra=()
		if [[ $mode == *-ss* ]]; then
			extra=(--stack-size "${mode#*-ss}")
			mode=${mode%%-ss*}
		fi
		"$OUT/cputime" "$tag.time" \
			"$SPROFD" attach "$WPID" -F "$hz" -d 3600 -q --unwind "$mode" "${extra[@]}" \
			-o "$tag.folded" 2>"$tag.err" &
		;;
	perf-g)
		"$OUT/cputime" "$tag.time" \
			"$PERF" record -g -F "$hz" -p "$WPID" -o "$tag.data" -q 2>"$tag.err" &
		;;
	perf-dwarf)
		"$OUT/cputime" "$tag.time" \
			"$PERF" record --call-graph dwarf -F "$hz" -p "$WPID" -o "$tag.data" -q 2>"$tag.err" &
		;;
	*) die "unknown profiler $cfg" ;;
	esac
	PPID_=$!
}

# A sample is complete when its stack reaches the program's entry: main, or where main is
# stripped (the Debian tools) glibc's __libc_start_call_main / __libc_start_main(_impl) or _start.
ROOTS='^(main|__libc_start_call_main|__libc_start_main|__libc_start_main_impl|__libc_start_main_alias_2|_start)$'

# analyse_folded FILE -> "samples complete_share main_share hot_share"
analyse_folded() {
	awk -v roots="$ROOTS" '
	{
		n = $NF; line = $0; sub(/ [0-9]+$/, "", line)
		k = split(line, f, ";"); tot += n; c = 0; m = 0; h = 0
		for (i = 2; i <= k; i++) {       # f[1] is the thread/process name
			s = f[i]; sub(/_\[[a-z]\]$/, "", s)
			if (s ~ roots) c = 1
			if (s == "main") m = 1
			if (s == "a3_hot") h = 1
		}
		C += c * n; M += m * n; H += h * n
	}
	END {
		if (tot == 0) print 0, "NA", "NA", "NA"
		else printf "%d %.4f %.4f %.4f\n", tot, C / tot, M / tot, H / tot
	}' "$1"
}

# analyse_perf FILE.data -> same fields, from perf script's per-sample call chains
analyse_perf() {
	"$PERF" script -i "$1" -F ip,sym 2>/dev/null | awk -v roots="$ROOTS" '
	BEGIN { RS = ""; FS = "\n" }
	{
		tot++; c = 0; m = 0; h = 0
		for (i = 1; i <= NF; i++) {
			s = $i; sub(/^[ \t]*[0-9a-f]+ /, "", s); sub(/ \(inlined\)$/, "", s)
			if (s ~ roots) c = 1
			if (s == "main") m = 1
			if (s == "a3_hot") h = 1
		}
		C += c; M += m; H += h
	}
	END {
		if (tot == 0) print 0, "NA", "NA", "NA"
		else printf "%d %.4f %.4f %.4f\n", tot, C / tot, M / tot, H / tot
	}'
}

# prof_finish CFG TAG: waits for the profiler; sets P_U P_S (CPU seconds), P_RSS (KiB), P_N
# (samples), P_C (complete share), P_M (share reaching main), P_H (share under a3_hot)
prof_finish() {
	local cfg=$1 tag=$2 rc=0
	wait "$PPID_" || rc=$?
	P_U=NA P_S=NA P_RSS=NA P_N=0 P_C=NA P_M=NA P_H=NA
	if ((rc != 0)); then
		{
			echo "$cfg on ${CMD[*]} exited with status $rc; stderr:"
			sed 's/^/    /' "$tag.err"
		} >>"$FAILS"
		return
	fi
	read -r P_U P_S P_RSS <"$tag.time"
	case $cfg in
	sprofd-*) read -r P_N P_C P_M P_H < <(analyse_folded "$tag.folded") ;;
	perf-*)
		read -r P_N P_C P_M P_H < <(analyse_perf "$tag.data")
		rm -f "$tag.data" "$tag.data.old" # perf dwarf writes ~8 MB/s
		;;
	esac
}

# results.tsv columns
# 1 kind 2 workload 3 profiler 4 hz 5 round 6 bare_s 7 prof_s 8 ratio 9 user_s 10 sys_s
# 11 rss_kib 12 samples 13 complete 14 main 15 hot
record() { printf '%s\n' "$(IFS=$'\t'; echo "$*")" >>"$RES"; }

# pair KIND WL CFG HZ ROUND: one bare run then one profiled run
pair() {
	local kind=$1 wl=$2 cfg=$3 hz=$4 r=$5 bare prof
	wl_start "$wl"
	wl_wait
	bare=$WALL
	local tag=$OUT/runs/$wl.$cfg.$hz.$r
	wl_start "$wl"
	prof_start "$cfg" "$hz" "$tag"
	wl_wait
	prof=$WALL
	local ratio
	prof_finish "$cfg" "$tag"
	ratio=$(awk -v a="$bare" -v b="$prof" 'BEGIN{ if (a == "NA" || b == "NA") print "NA"; else printf "%.4f", b / a }')
	record "$kind" "$wl" "$cfg" "$hz" "$r" "$bare" "$prof" "$ratio" "$P_U" "$P_S" "$P_RSS" "$P_N" "$P_C" "$P_M" "$P_H"
	log "$(printf '%-7s %-12s %-14s %4s Hz round %d/%d: bare %6.3fs profiled %6.3fs ratio %s, %s samples, complete %s' \
		"$kind" "$wl" "$cfg" "$hz" "$r" "$RUNS" "${bare/NA/0}" "${prof/NA/0}" "$ratio" "$P_N" "$P_C")"
}

# single KIND WL CFG HZ ROUND: profiled run only (stack-size sweep)
single() {
	local kind=$1 wl=$2 cfg=$3 hz=$4 r=$5
	local tag=$OUT/runs/$wl.$cfg.$hz.$r
	wl_start "$wl"
	prof_start "$cfg" "$hz" "$tag"
	wl_wait
	prof_finish "$cfg" "$tag"
	record "$kind" "$wl" "$cfg" "$hz" "$r" NA "$WALL" NA "$P_U" "$P_S" "$P_RSS" "$P_N" "$P_C" "$P_M" "$P_H"
	log "$(printf '%-7s %-12s %-22s round %d/%d: %s samples, complete %s, cpu %s+%s s' \
		"$kind" "$wl" "$cfg" "$r" "$RUNS" "$P_N" "$P_C" "$P_U" "$P_S")"
}

# ---------------------------------------------------------------- run
ISSUE3_WLS=(cratio-nofp xz gzip)
SWEEP_WLS=(xz)
if ((HAVE_SQLITE)); then
	ISSUE3_WLS+=(sqlite3)
	SWEEP_WLS+=(sqlite3)
fi
ISSUE2_WLS=(cratio-fp cratio-fp-4t)
ISSUE2_CFGS=(sprofd-fp sprofd-auto perf-g)
ISSUE3_CFGS=(sprofd-auto sprofd-dwarf sprofd-fp perf-dwarf)

log "warm-up (one bare run of each workload, not counted)"
for wl in "${ISSUE2_WLS[@]}" "${ISSUE3_WLS[@]}"; do
	wl_start "$wl"
	wl_wait
	log "  $wl: ${WALL}s"
done

for ((r = 1; r <= RUNS; r++)); do
	log "=== round $r/$RUNS: slowdown, FP build (issue 2)"
	for wl in "${ISSUE2_WLS[@]}"; do
		for hz in "${HZ_LIST[@]}"; do
			for cfg in "${ISSUE2_CFGS[@]}"; do
				pair issue2 "$wl" "$cfg" "$hz" "$r"
			done
		done
	done
	log "=== round $r/$RUNS: slowdown and completeness, no frame pointers (issue 3)"
	for wl in "${ISSUE3_WLS[@]}"; do
		for cfg in "${ISSUE3_CFGS[@]}"; do
			pair issue3 "$wl" "$cfg" 999 "$r"
		done
	done
	log "=== round $r/$RUNS: 99 Hz runs for the per-sample marginal cost"
	for wl in "${ISSUE3_WLS[@]}"; do
		for cfg in sprofd-fp sprofd-auto; do
			single lowhz "$wl" "$cfg" 99 "$r"
		done
	done
	log "=== round $r/$RUNS: --stack-size sweep"
	for wl in "${SWEEP_WLS[@]}"; do
		for ss in "${STACK_SIZES[@]}"; do
			single sweep "$wl" "sprofd-auto-ss$ss" 999 "$r"
		done
	done
done

# Time from the end of the requested duration to the output file, on a long-running target.
STOP=$OUT/stop.tsv
: >"$STOP"
stop_test() {
	local name=$1
	shift
	"$@" >/dev/null &
	local lpid=$! c
	while read -r c <"/proc/$lpid/comm" 2>/dev/null; do [[ $c == "$COMM" ]] && break; done
	sleep 0.5
	local r t0 t1 rc tag=$OUT/runs/stop.$name
	for ((r = 1; r <= RUNS; r++)); do
		rm -f "$tag".*
		t0=$EPOCHREALTIME rc=0
		"$SPROFD" attach "$lpid" -F 999 -d 1 -q -o "$tag.svg" 2>"$tag.err" || rc=$?
		t1=$EPOCHREALTIME
		if ((rc != 0)) || [[ ! -s $tag.svg ]]; then
			{ echo "sprofd attach -d 1 -o x.svg on $name: status $rc"; sed 's/^/    /' "$tag.err"; } >>"$FAILS"
		else
			printf '%s\tsprofd\t%s\n' "$name" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.4f", b - a - 1}')" >>"$STOP"
		fi
		t0=$EPOCHREALTIME rc=0
		"$PERF" record -g -F 999 -p "$lpid" -o "$tag.data" -q -- sleep 1 2>"$tag.perr" || rc=$?
		t1=$EPOCHREALTIME
		if ((rc != 0)); then
			{ echo "perf record -p on $name: status $rc"; sed 's/^/    /' "$tag.perr"; } >>"$FAILS"
		else
			printf '%s\tperf-record\t%s\n' "$name" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.4f", b - a - 1}')" >>"$STOP"
			if ((HAVE_INFERNO)); then
				t0=$EPOCHREALTIME
				"$PERF" script -i "$tag.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph >"$tag.perf.svg"
				t1=$EPOCHREALTIME
				printf '%s\tperf-script-inferno\t%s\n' "$name" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.4f", b - a}')" >>"$STOP"
			fi
		fi
		log "stop-to-output $name round $r/$RUNS: $(grep -P "^$name\t" "$STOP" | tail -n 2 | cut -f2,3 | tr '\t\n' '= ')"
	done
	kill "$lpid" 2>/dev/null || true
	wait "$lpid" 2>/dev/null || true
}
log "=== time from stop to output"
COMM=cratio-fp
stop_test cratio-fp "$OUT/cratio-fp" 1 1000
COMM=xz
stop_test xz xz -9 -T1 -c "$DATA" "$DATA" "$DATA"

T_END=$EPOCHREALTIME
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- statistics
# vals KIND WL CFG HZ COL -> the numeric values of column COL (NA dropped)
vals() {
	awk -F'\t' -v k="$1" -v w="$2" -v c="$3" -v h="$4" -v col="$5" \
		'$1 == k && $2 == w && $3 == c && $4 == h && $col != "NA" && $col != "" { print $col }' "$RES"
}
# per-run CPU per sample in µs
cpu_vals() {
	awk -F'\t' -v k="$1" -v w="$2" -v c="$3" -v h="$4" \
		'$1 == k && $2 == w && $3 == c && $4 == h && $9 != "NA" && $12 > 0 { printf "%.3f\n", ($9 + $10) * 1e6 / $12 }' "$RES"
}
# per-run CPU seconds (user+sys)
cpus_vals() {
	awk -F'\t' -v k="$1" -v w="$2" -v c="$3" -v h="$4" \
		'$1 == k && $2 == w && $3 == c && $4 == h && $9 != "NA" { printf "%.6f\n", $9 + $10 }' "$RES"
}
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "NA"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
minmax() { sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) print lo, hi; else print "NA NA" }'; }
fmt() { awk -v v="$1" -v f="$2" 'BEGIN { if (v == "NA" || v == "") print "n/a"; else printf f, v }'; }

# marginal K999 K99 WL CFG: µs of CPU per extra sample between the 99 Hz and 999 Hz runs
# ((median CPU at 999 - median CPU at 99) / (median samples at 999 - median samples at 99)),
# which removes the fixed start-up and end-of-run cost
marginal() {
	local c9 c1 n9 n1
	c9=$(cpus_vals "$1" "$3" "$4" 999 | median)
	c1=$(cpus_vals "$2" "$3" "$4" 99 | median)
	n9=$(vals "$1" "$3" "$4" 999 12 | median)
	n1=$(vals "$2" "$3" "$4" 99 12 | median)
	awk -v a="$c9" -v b="$c1" -v x="$n9" -v y="$n1" 'BEGIN {
		if (a == "NA" || b == "NA" || x == "NA" || y == "NA" || x - y <= 0) print "NA"
		else printf "%.3f", (a - b) * 1e6 / (x - y) }'
}
fixed_cost() { # FIXED K999 K99 WL CFG: CPU seconds extrapolated to zero samples, in ms
	local c9 n9 m
	c9=$(cpus_vals "$1" "$3" "$4" 999 | median)
	n9=$(vals "$1" "$3" "$4" 999 12 | median)
	m=$(marginal "$@")
	awk -v a="$c9" -v n="$n9" -v m="$m" 'BEGIN { if (a == "NA" || m == "NA") print "NA"; else printf "%.1f", (a - n * m / 1e6) * 1e3 }'
}
# confounded WL: the fp runs' fixed cost is under half of auto's, i.e. their leaf-only stacks never
# made sprofd load the symbols auto mode loads (glibc's debug info), so auto - fp is not unwinding alone
confounded() {
	awk -v f="$(fixed_cost issue3 lowhz "$1" sprofd-fp)" -v a="$(fixed_cost issue3 lowhz "$1" sprofd-auto)" \
		'BEGIN { exit !(f != "NA" && a != "NA" && f < a / 2) }'
}
diffv() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "NA" || b == "NA") print "NA"; else printf "%.3f", a - b }'; }

# ratio cell: "1.012x (0.998-1.020)"
ratio_cell() {
	local m lo hi
	m=$(vals "$@" 8 | median)
	read -r lo hi < <(vals "$@" 8 | minmax)
	if [[ $m == NA ]]; then echo "n/a"; return; fi
	if ((RUNS > 1)); then
		printf '%sx (%s-%s)' "$(fmt "$m" %.3f)" "$(fmt "$lo" %.3f)" "$(fmt "$hi" %.3f)"
	else
		printf '%sx' "$(fmt "$m" %.3f)"
	fi
}
med_of() { vals "$@" | median; }
cpu_med() { cpu_vals "$@" | median; }
# lt A B: A <= B (numbers), false when either is NA
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "NA" && b != "NA" && a + 0 <= b + 0) }'; }
# le3 A B: A <= B after rounding both to the 3 decimals shown in the tables
le3() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "NA" && b != "NA" && sprintf("%.3f", a) + 0 <= sprintf("%.3f", b) + 0) }'; }
yn() { if "$@"; then echo met; else echo "**missed**"; fi; }

# ---------------------------------------------------------------- docs/benchmarks.md
if [[ -n ${MAKELEVEL:-} ]]; then
	CMDLINE="make bench (runs bash bench/run.sh), with RUNS=$RUNS QUICK=$QUICK"
else
	CMDLINE="RUNS=$RUNS QUICK=$QUICK bash bench/run.sh"
fi
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$ROOT" status --porcelain -- . ':!bench' ':!docs/benchmarks.md' 2>/dev/null | wc -l)
MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
ELAPSED=$(awk -v a="$T_START" -v b="$T_END" 'BEGIN { printf "%.0f", (b - a) / 60 }')

TMPDOC=$DOC.tmp
mkdir -p "$(dirname "$DOC")"
{
	echo "# Benchmarks"
	echo
	echo "Generated by \`bench/run.sh\`; do not edit by hand, re-run it."
	echo
	echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "- Command: \`$CMDLINE\`$([[ $QUICK == 1 ]] && echo ' (**smoke run: one pair per cell, shortened workloads; figures are not meaningful**)')"
	echo "- Machine: $(nproc) CPUs, $MODEL, kernel $(uname -r), $("$PERF" --version), $(cc --version | head -n1)"
	echo "- sprofd: commit $COMMIT$( ((DIRTY > 0)) && echo " (plus $DIRTY uncommitted change(s) outside bench/)"), \`$("$SPROFD" --version)\`, binary built $SPROFD_BUILT, sha256 $SPROFD_SHA…"
	echo "- Load average (1, 5, 15 min) at start: $LOAD_START; at end: $LOAD_END. Duration: ${ELAPSED} min."
	echo "  The machine's 2 CPUs may be shared with other jobs; ratios come from adjacent pairs to cancel slow drift, not bursts."
	echo "- kernel.perf_event_max_sample_rate: $(cat /proc/sys/kernel/perf_event_max_sample_rate), kernel.perf_event_paranoid: $(cat /proc/sys/kernel/perf_event_paranoid), event: cpu-clock (software)"
	echo
	echo "## Method"
	echo
	echo "Each slowdown cell is the median over $RUNS pairs of profiled wall / bare wall, the profiled run"
	echo "right after its own bare run; the range in brackets is min-max over the pairs. Wall time is the"
	echo "workload's own: cratio prints its elapsed time (CLOCK_MONOTONIC around the work), the Debian tools"
	echo "are timed by the script from fork to reap. The profiler attaches by PID as soon as the workload has"
	echo "exec'd (\`sprofd attach PID -F HZ -d 3600 -q -o run.folded --unwind MODE\`,"
	echo "\`perf record -g|--call-graph dwarf -F HZ -p PID -o run.data -q\`) and stops when it exits."
	echo "Profiler CPU per sample is the profiler process's user+sys time (wait4 rusage via bench/cputime.c; start-up and"
	echo "end-of-run work included: symbolization and writing the output for sprofd, the build-id pass for"
	echo "perf record) divided by the samples written (sum of the .folded counts; records in \`perf script\`)."
	echo "perf's figure excludes \`perf script\` (its unwinding and symbolization for dwarf happen there)."
	echo
	echo "Workloads:"
	echo
	echo "- \`cratio\` (bench/cratio.c): fixed work, 75 % under \`main > a1 > a2 > a3_hot > work\` and 25 % under"
	echo "  \`main > b1 > b2 > b3_cold > work\`; gcc -O2 -g, with (\`cratio-fp\`) and without (\`cratio-nofp\`)"
	echo "  frame pointers; \`cratio-fp-4t\` runs the same work on each of 4 threads (2 CPUs). Scale $SCALE."
	echo "- \`xz -9 -T1 -c\` of $(numfmt --to=iec "$XZ_BYTES")B and \`gzip -9 -c\` of $(numfmt --to=iec "$(stat -c %s "$DATA")")B of generated text"
	echo "  (numbered template lines next to base64 of random bytes), output to /dev/null. xz gets a prefix"
	echo "  of the gzip input: xz -9 compresses ~1.5 MB/s here, so the whole file would take ~20 s per run."
	if ((HAVE_SQLITE)); then
		echo "- \`sqlite3 :memory:\` running a recursive CTE that sums $SQL_ROWS rows."
	else
		echo "- sqlite3: not installed, skipped."
	fi
	echo "- Debian's xz, gzip and sqlite3 are built without frame pointers and stripped (\`main\` has no"
	echo "  symbol); their completeness counts glibc's \`__libc_start_call_main\`/\`__libc_start_main_impl\` or \`_start\`."
	echo
	echo "## Goals and results in this run"
	echo
	# issue 2
	local_issue2=()
	for wl in "${ISSUE2_WLS[@]}"; do
		for hz in "${HZ_LIST[@]}"; do
			for mode in fp auto; do
				s=$(med_of issue2 "$wl" "sprofd-$mode" "$hz" 8)
				p=$(med_of issue2 "$wl" perf-g "$hz" 8)
				v=$(yn le3 "$s" "$p")
				extra=""
				if [[ $hz == 99 ]]; then extra="; <= 1.010x at 99 Hz: $(yn le3 "$s" 1.010)"; fi
				local_issue2+=("$wl, $hz Hz, sprofd --unwind $mode $(fmt "$s" %.3f)x vs perf -g $(fmt "$p" %.3f)x: no worse than perf: $v$extra")
			done
		done
	done
	echo "Issue 2 goal: sprofd's target slowdown no worse than \`perf record -g\` at each frequency, and at most"
	echo "1 % (1.010x) at 99 Hz, on the frame-pointer build. Medians of this run:"
	echo
	for l in "${local_issue2[@]}"; do echo "- $l"; done
	echo
	echo "Issue 3 goal: on binaries without frame pointers, \`sprofd --unwind auto\` reaches the program entry in"
	echo "at least as many samples as \`perf --call-graph dwarf\`, its unwind cost is at most 10 µs per sample"
	echo "(median) and its slowdown is no worse than perf dwarf's. sprofd has no separate unwind timer, so the"
	echo "unwind verdict uses the marginal CPU per sample of auto mode (section 3): all of sprofd's per-sample"
	echo "work, unwinding included, so an upper bound on the unwind cost. The auto - fp difference is shown"
	echo "next to it as the closer estimate where fp is a fair baseline (section 3 says where it is not):"
	echo
	for wl in "${ISSUE3_WLS[@]}"; do
		sa=$(med_of issue3 "$wl" sprofd-auto 999 13)
		pd=$(med_of issue3 "$wl" perf-dwarf 999 13)
		ra=$(med_of issue3 "$wl" sprofd-auto 999 8)
		rp=$(med_of issue3 "$wl" perf-dwarf 999 8)
		ma=$(marginal issue3 lowhz "$wl" sprofd-auto)
		un=$(diffv "$ma" "$(marginal issue3 lowhz "$wl" sprofd-fp)")
		echo "- $wl: completeness $(fmt "$sa" %.3f) vs perf dwarf $(fmt "$pd" %.3f): $(yn le "$pd" "$sa"); per-sample CPU $(fmt "$ma" %.1f) µs (auto - fp: $(fmt "$un" %+.1f)$(confounded "$wl" && echo ', not comparable')): $(yn le "$ma" 10); slowdown $(fmt "$ra" %.3f)x vs perf dwarf $(fmt "$rp" %.3f)x: $(yn le3 "$ra" "$rp")"
	done
	echo
	echo "Differences of about 1 % between slowdown medians are within this machine's run-to-run noise"
	echo "(see the min-max ranges); \"met\"/\"missed\" above is the plain comparison of medians at the precision"
	echo "shown (3 decimals for slowdowns), so a 0.001 difference counts even when it is noise."
	echo
	echo "## 1. Target slowdown, frame-pointer build (issue 2)"
	echo
	echo "| workload | Hz | bare wall (median) | sprofd --unwind fp | sprofd --unwind auto | perf record -g |"
	echo "|---|---|---|---|---|---|"
	for wl in "${ISSUE2_WLS[@]}"; do
		for hz in "${HZ_LIST[@]}"; do
			b=$(awk -F'\t' -v w="$wl" -v h="$hz" '$1 == "issue2" && $2 == w && $4 == h && $6 != "NA" { print $6 }' "$RES" | median)
			echo "| $wl | $hz | $(fmt "$b" %.3f) s | $(ratio_cell issue2 "$wl" sprofd-fp "$hz") | $(ratio_cell issue2 "$wl" sprofd-auto "$hz") | $(ratio_cell issue2 "$wl" perf-g "$hz") |"
		done
	done
	echo
	echo "## 2. Target slowdown at 999 Hz, no frame pointers (issue 3)"
	echo
	echo "| workload | bare wall (median) | sprofd --unwind auto | sprofd --unwind dwarf | sprofd --unwind fp | perf --call-graph dwarf |"
	echo "|---|---|---|---|---|---|"
	for wl in "${ISSUE3_WLS[@]}"; do
		b=$(awk -F'\t' -v w="$wl" '$1 == "issue3" && $2 == w && $6 != "NA" { print $6 }' "$RES" | median)
		echo "| $wl | $(fmt "$b" %.3f) s | $(ratio_cell issue3 "$wl" sprofd-auto 999) | $(ratio_cell issue3 "$wl" sprofd-dwarf 999) | $(ratio_cell issue3 "$wl" sprofd-fp 999) | $(ratio_cell issue3 "$wl" perf-dwarf 999) |"
	done
	echo
	echo "## 3. Profiler CPU per sample and peak RSS"
	echo
	echo "Median µs of profiler CPU (user+sys) per sample written / median peak RSS / median samples per run."
	echo
	echo "| workload | Hz | sprofd fp | sprofd auto | sprofd dwarf | perf -g | perf dwarf |"
	echo "|---|---|---|---|---|---|---|"
	cell() {
		local n
		n=$(med_of "$@" 12)
		if [[ $n == NA ]]; then echo "";  return; fi
		printf '%s µs / %s MiB / %s' "$(fmt "$(cpu_med "$@")" %.1f)" \
			"$(fmt "$(med_of "$@" 11)" %.0f | awk '{ printf "%.1f", $1 / 1024 }')" "$(fmt "$n" %.0f)"
	}
	for wl in "${ISSUE2_WLS[@]}"; do
		for hz in "${HZ_LIST[@]}"; do
			echo "| $wl | $hz | $(cell issue2 "$wl" sprofd-fp "$hz") | $(cell issue2 "$wl" sprofd-auto "$hz") | | $(cell issue2 "$wl" perf-g "$hz") | |"
		done
	done
	for wl in "${ISSUE3_WLS[@]}"; do
		echo "| $wl | 999 | $(cell issue3 "$wl" sprofd-fp 999) | $(cell issue3 "$wl" sprofd-auto 999) | $(cell issue3 "$wl" sprofd-dwarf 999) | | $(cell issue3 "$wl" perf-dwarf 999) |"
	done
	echo
	echo "Whole-process figures include fixed costs (reading maps, loading symbols and unwind tables,"
	echo "writing the output) that are spread over the samples. The marginal cost separates them: µs of"
	echo "CPU per extra sample between a 99 Hz and a 999 Hz run of the same workload, (CPU@999 - CPU@99) /"
	echo "(samples@999 - samples@99) over medians; the fixed part is the CPU extrapolated to zero samples."
	echo "For the issue-3 workloads the 99 Hz runs are profiled-only runs made for this purpose. Caveat:"
	echo "sprofd loads a module's symbols (and, in auto mode, its unwind tables) when a sample first needs"
	echo "them, so a 999 Hz run can touch modules a 99 Hz run never does (e.g. libc's debug info); that"
	echo "lands in the marginal figure. Negative or very large values mean the noise exceeds the signal."
	echo
	echo "| workload | profiler | marginal µs/sample | fixed cost |"
	echo "|---|---|---|---|"
	for wl in "${ISSUE2_WLS[@]}"; do
		for cfg in sprofd-fp sprofd-auto perf-g; do
			echo "| $wl | $cfg | $(fmt "$(marginal issue2 issue2 "$wl" "$cfg")" %.1f) | $(fmt "$(fixed_cost issue2 issue2 "$wl" "$cfg")" %.0f) ms |"
		done
	done
	for wl in "${ISSUE3_WLS[@]}"; do
		for cfg in sprofd-fp sprofd-auto; do
			echo "| $wl | $cfg | $(fmt "$(marginal issue3 lowhz "$wl" "$cfg")" %.1f) | $(fmt "$(fixed_cost issue3 lowhz "$wl" "$cfg")" %.0f) ms |"
		done
	done
	echo
	echo "Unwind cost estimate, µs of CPU per sample: the fp mode takes the kernel's frame-pointer call chain"
	echo "and copies no stack; auto also has the kernel copy --stack-size bytes of user stack (16 KiB by"
	echo "default; the copy is charged to the target, not to sprofd) and walks it with DWARF CFI. So auto"
	echo "minus fp approximates sprofd's unwind work plus extra symbolization of the deeper stacks it finds."
	echo
	echo "Rows marked * are not comparable: there the fp runs' stacks stop at the leaf (no frame pointers),"
	echo "so sprofd never loads the symbols of the outer modules (glibc's detached debug info is installed"
	echo "here) and the fp runs skip ~75 ms of fixed work and part of the per-sample symbolization that"
	echo "auto does; the difference is then not the unwind cost."
	echo
	echo "| workload | marginal fp | marginal auto | auto - fp (marginal) | whole-process fp | whole-process auto | auto - fp (whole) | whole-process dwarf |"
	echo "|---|---|---|---|---|---|---|---|"
	for wl in "${ISSUE3_WLS[@]}"; do
		mf=$(marginal issue3 lowhz "$wl" sprofd-fp)
		ma=$(marginal issue3 lowhz "$wl" sprofd-auto)
		cf=$(cpu_med issue3 "$wl" sprofd-fp 999)
		ca=$(cpu_med issue3 "$wl" sprofd-auto 999)
		cd_=$(cpu_med issue3 "$wl" sprofd-dwarf 999)
		star=""
		confounded "$wl" && star=" *"
		echo "| $wl$star | $(fmt "$mf" %.1f) | $(fmt "$ma" %.1f) | $(fmt "$(diffv "$ma" "$mf")" %+.1f) | $(fmt "$cf" %.1f) | $(fmt "$ca" %.1f) | $(fmt "$(diffv "$ca" "$cf")" %+.1f) | $(fmt "$cd_" %.1f) |"
	done
	echo
	echo "## 4. Stack completeness at 999 Hz (issue 3)"
	echo
	echo "Share of samples whose stack reaches the program entry (median over runs). For cratio that is"
	echo "\`main\`; for the stripped Debian tools it is glibc's start-up frames. For cratio-nofp the last"
	echo "column gives the share of samples under \`a3_hot\` (truth 0.75) for the sprofd auto / perf dwarf runs."
	echo
	echo "| workload | sprofd auto | sprofd dwarf | sprofd fp | perf --call-graph dwarf (8 KiB copy) | a3_hot share |"
	echo "|---|---|---|---|---|---|"
	for wl in "${ISSUE3_WLS[@]}"; do
		hot=""
		if [[ $wl == cratio* ]]; then
			hot="$(fmt "$(med_of issue3 "$wl" sprofd-auto 999 15)" %.3f) / $(fmt "$(med_of issue3 "$wl" perf-dwarf 999 15)" %.3f)"
		fi
		echo "| $wl | $(fmt "$(med_of issue3 "$wl" sprofd-auto 999 13)" %.3f) | $(fmt "$(med_of issue3 "$wl" sprofd-dwarf 999 13)" %.3f) | $(fmt "$(med_of issue3 "$wl" sprofd-fp 999 13)" %.3f) | $(fmt "$(med_of issue3 "$wl" perf-dwarf 999 13)" %.3f) | $hot |"
	done
	echo
	echo "## 5. --stack-size sweep (sprofd --unwind auto, 999 Hz)"
	echo
	echo "Profiled runs only (no bare pair); medians over $RUNS runs. The default is 16384."
	echo
	echo "| workload | --stack-size | completeness | µs/sample | peak RSS | samples |"
	echo "|---|---|---|---|---|---|"
	for wl in "${SWEEP_WLS[@]}"; do
		for ss in "${STACK_SIZES[@]}"; do
			c=sprofd-auto-ss$ss
			echo "| $wl | $ss | $(fmt "$(med_of sweep "$wl" "$c" 999 13)" %.3f) | $(fmt "$(cpu_med sweep "$wl" "$c" 999)" %.1f) | $(fmt "$(med_of sweep "$wl" "$c" 999 11)" %.0f | awk '{ printf "%.1f MiB", $1 / 1024 }') | $(fmt "$(med_of sweep "$wl" "$c" 999 12)" %.0f) |"
		done
	done
	echo
	echo "## 6. Time from the end of the duration to the output"
	echo
	echo "On a long-running target (cratio-fp for 1 thread; xz -9 on the gzip input), $RUNS times each:"
	echo "\`sprofd attach PID -F 999 -d 1 -q -o x.svg\` (wall time of the sprofd process minus 1 s: attach,"
	echo "stop, symbolize, write the SVG) and \`perf record -g -F 999 -p PID -o x.data -q -- sleep 1\`"
	echo "(wall time minus 1 s; perf record writes perf.data only, no flame graph)."
	echo
	echo "| target | sprofd to SVG (median, min-max) | perf record past its duration (median, min-max) | perf script + inferno |"
	echo "|---|---|---|---|"
	for name in cratio-fp xz; do
		sv() { awk -F'\t' -v n="$name" -v p="$1" '$1 == n && $2 == p { print $3 }' "$STOP"; }
		sc() {
			local m lo hi
			m=$(sv "$1" | median)
			[[ $m == NA ]] && { echo "n/a"; return; }
			read -r lo hi < <(sv "$1" | minmax)
			printf '%s s (%s-%s)' "$(fmt "$m" %.2f)" "$(fmt "$lo" %.2f)" "$(fmt "$hi" %.2f)"
		}
		inf="not installed, skipped"
		((HAVE_INFERNO)) && inf=$(sc perf-script-inferno)
		echo "| $name | $(sc sprofd) | $(sc perf-record) | $inf |"
	done
	echo
	echo "## Failures"
	echo
	if [[ -s $FAILS ]]; then
		echo "Runs that failed (their cells exclude them):"
		echo
		echo '```'
		cat "$FAILS"
		echo '```'
	else
		echo "None: every workload and profiler run exited with status 0."
	fi
	echo
	# Sections measured by bench/python.sh, bench/offcpu.sh, bench/daemon.sh, bench/busy.sh and bench/symbolize.sh
	# (make bench runs them first).
	for part in "$OUT/python/python.md" "$OUT/python/python315.md" "$OUT/offcpu/offcpu.md" "$OUT/daemon/daemon.md" "$OUT/busy/busy.md" "$OUT/symbolize/symbolize.md"; do
		if [[ -s $part ]]; then
			cat "$part"
			echo
		fi
	done
	echo "## Reference, measured elsewhere"
	echo
	echo "\`/work/shared/anchors/peers.md\` (a similar 2-vCPU VM, not this run) reports at 999 Hz perf -g"
	echo "1.014x / perf dwarf 1.018x on cratio without FP, 1.037x / 1.039x on xz -9, 1.020x / 1.020x on"
	echo "gzip -9, 1.018x / 1.036x on sqlite3; perf dwarf completeness 1.0 (xz), 0.999 (gzip), 0.0"
	echo "(sqlite3, 8 KiB copy too small); perf -g 105-186 µs of CPU per sample, samply 68-128. Those are"
	echo "context only: the comparisons above use the perf runs of this run."
	echo
	echo "Raw per-run data: \`bench/out/results.tsv\` and \`bench/out/stop.tsv\` (not committed)."
} >"$TMPDOC"
mv "$TMPDOC" "$DOC"
log "wrote $DOC"
if [[ -s $FAILS ]]; then
	log "failures:"
	cat "$FAILS"
fi
