#!/usr/bin/env bash
# Python profiling benchmark (issue 7): target slowdown, profiler CPU per sample, read skew and
# merge consistency of sprofd against py-spy (default and --native) and austin, side by side in
# one run. Writes bench/out/python.md, which bench/run.sh puts into docs/benchmarks.md.
#
#   bash bench/python.sh             # RUNS=5
#   QUICK=1 bash bench/python.sh     # smoke run
#   SID=1 bash bench/python.sh       # CPython 3.15 in the sid root: sprofd against Tachyon
#                                    # (python3.15 -m profiling.sampling), bench/out/python/python315.md
#
# Needs: py-spy and austin (pip install py-spy austin-dist==3.7.0), a CPython 3.11+ (PY,
# default the python3 on PATH); with SID=1 the /srv/sid root (tests/deps.sh), whose /proc is
# mounted for the run (Tachyon reads the target's maps there) and unmounted after.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
OUT=$HERE/out/python
SPROFD=${SPROFD:-$ROOT/target/release/sprofd}
# The interpreter itself, not a launcher script (pyenv's shim is bash until it execs Python).
PY=${PY:-$(python3 -c 'import sys; print(sys.executable)')}
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then RUNS=1 SCALE=0.3; else RUNS=${RUNS:-5} SCALE=1.0; fi
HZ_LIST=(99 999)
SID=${SID:-0}
SID_ROOT=/srv/sid
if [[ $SID == 1 ]]; then
	# The interpreter runs chrooted; the script is copied into the root.
	PY_CMD=(chroot "$SID_ROOT" python3.15)
	SCRIPT=/tmp/sprofd-bench/pywork.py
	REPORT=python315.md
	DEFAULT_CFGS="sprofd tachyon" DEFAULT_WLS="pure"
else
	PY_CMD=("$PY")
	SCRIPT=$HERE/pywork.py
	REPORT=python.md
	DEFAULT_CFGS="sprofd py-spy py-spy-native austin" DEFAULT_WLS="pure alt"
fi
read -r -a CFGS <<<"${CFGS:-$DEFAULT_CFGS}"
read -r -a WLS <<<"${WLS:-$DEFAULT_WLS}"

log() { printf '[pybench %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'pybench: %s\n' "$*" >&2; exit 1; }

[[ -x $SPROFD ]] || die "$SPROFD missing: run 'make build' first"
if [[ " ${CFGS[*]} " == *" py-spy"* ]]; then
	command -v py-spy >/dev/null || die "py-spy not found (pip install py-spy)"
fi
if [[ " ${CFGS[*]} " == *" austin "* ]]; then
	command -v austin >/dev/null || die "austin not found (pip install austin-dist==3.7.0)"
fi
if [[ $SID == 1 ]]; then
	[[ -x $SID_ROOT/usr/bin/python3.15 ]] || die "$SID_ROOT missing: run 'bash tests/deps.sh bench'"
	mkdir -p "$SID_ROOT/tmp/sprofd-bench"
	cp "$HERE/pywork.py" "$SID_ROOT$SCRIPT"
	if ! mountpoint -q "$SID_ROOT/proc"; then
		mount -t proc proc "$SID_ROOT/proc"
		trap 'umount "$SID_ROOT/proc"' EXIT
	fi
fi
mkdir -p "$OUT/runs"
cc -O2 -o "$OUT/cputime" "$HERE/cputime.c"
cp "$SPROFD" "$OUT/sprofd.bin"
SPROFD=$OUT/sprofd.bin
RES=$OUT/results.tsv
: >"$RES"
FAILS=$OUT/failures.txt
: >"$FAILS"
PYVER=$("${PY_CMD[@]}" -c 'import sys; print(sys.version.split()[0])')
PYSPY_VER=$(py-spy --version 2>/dev/null | awk '{print $2}')
AUSTIN_VER=$(austin --version 2>&1 | awk '{print $2; exit}')

wl_start() {
	"${PY_CMD[@]}" "$SCRIPT" "$1" "$SCALE" >"$OUT/wl.stdout" &
	WPID=$!
}

wl_wait() {
	local rc=0
	wait "$WPID" || rc=$?
	if ((rc != 0)); then
		echo "workload $1 exited with status $rc" >>"$FAILS"
		WALL=NA
		return
	fi
	WALL=$(awk '/^elapsed/{print $2}' "$OUT/wl.stdout")
}

# prof_start CFG HZ TAG: attaches profiler CFG to $WPID in the background
prof_start() {
	local cfg=$1 hz=$2 tag=$3
	rm -f "$tag".*
	case $cfg in
	sprofd)
		"$OUT/cputime" "$tag.time" "$SPROFD" attach "$WPID" -F "$hz" -d 3600 -q -v \
			-o "$tag.folded" 2>"$tag.err" &
		;;
	py-spy)
		"$OUT/cputime" "$tag.time" py-spy record -p "$WPID" -r "$hz" -f raw -o "$tag.folded" \
			>"$tag.err" 2>&1 &
		;;
	py-spy-native)
		"$OUT/cputime" "$tag.time" py-spy record --native -p "$WPID" -r "$hz" -f raw \
			-o "$tag.folded" >"$tag.err" 2>&1 &
		;;
	austin)
		"$OUT/cputime" "$tag.time" austin -i "$((1000000 / hz))" -p "$WPID" -o "$tag.austin" \
			>"$tag.err" 2>&1 &
		;;
	tachyon)
		# CPython 3.15's sampling profiler, from inside the root (its output lands there).
		rm -f "$SID_ROOT/tmp/sprofd-bench/tachyon.folded"
		"$OUT/cputime" "$tag.time" chroot "$SID_ROOT" python3.15 -m profiling.sampling attach \
			-r "$hz" --mode cpu --collapsed -o /tmp/sprofd-bench/tachyon.folded "$WPID" \
			>"$tag.err" 2>&1 &
		;;
	esac
	PPID_=$!
}

# samples written by a run
samples_of() {
	local cfg=$1 tag=$2
	case $cfg in
	austin) awk '/^P[0-9]/ { n++ } END { print n + 0 }' "$tag.austin" 2>/dev/null || echo 0 ;;
	*) awk '{ n += $NF } END { print n + 0 }' "$tag.folded" 2>/dev/null || echo 0 ;;
	esac
}

prof_finish() {
	local cfg=$1 tag=$2 rc=0
	wait "$PPID_" || rc=$?
	P_CPU=NA P_N=0 P_SKEW50=NA P_SKEW99=NA P_MISMATCH=NA
	if ((rc != 0)); then
		{ echo "$cfg exited with status $rc:"; sed 's/^/    /' "$tag.err"; } >>"$FAILS"
		return
	fi
	if [[ $cfg == tachyon ]]; then
		mv "$SID_ROOT/tmp/sprofd-bench/tachyon.folded" "$tag.folded" 2>/dev/null || true
	fi
	P_CPU=$(awk '{ print $1 + $2 }' "$tag.time")
	P_N=$(samples_of "$cfg" "$tag")
	if [[ $cfg == sprofd ]]; then
		read -r P_SKEW50 P_SKEW99 < <(sed -n 's/.*read skew after the sample median \([0-9.]*\) µs, p99 \([0-9.]*\) µs.*/\1 \2/p' "$tag.err")
		P_MISMATCH=$(sed -n 's/.* samples (\([0-9.]*\)%) mismatched.*/\1/p' "$tag.err")
		P_SKEW50=${P_SKEW50:-NA} P_SKEW99=${P_SKEW99:-NA} P_MISMATCH=${P_MISMATCH:-NA}
	fi
}

# results.tsv: wl cfg hz round bare prof ratio cpu_s samples skew50_us skew99_us mismatch_pct
pair() {
	local wl=$1 cfg=$2 hz=$3 r=$4 bare
	wl_start "$wl"
	wl_wait "$wl"
	bare=$WALL
	local tag=$OUT/runs/$wl.$cfg.$hz.$r
	wl_start "$wl"
	prof_start "$cfg" "$hz" "$tag"
	wl_wait "$wl"
	prof_finish "$cfg" "$tag"
	local ratio
	ratio=$(awk -v a="$bare" -v b="$WALL" 'BEGIN{ if (a == "NA" || b == "NA") print "NA"; else printf "%.4f", b / a }')
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$wl" "$cfg" "$hz" "$r" "$bare" "$WALL" \
		"$ratio" "$P_CPU" "$P_N" "$P_SKEW50" "$P_SKEW99" "$P_MISMATCH" >>"$RES"
	log "$(printf '%-4s %-13s %4s Hz round %d/%d: ratio %s, %s samples, cpu %s s, skew %s/%s µs, mismatch %s%%' \
		"$wl" "$cfg" "$hz" "$r" "$RUNS" "$ratio" "$P_N" "$P_CPU" "$P_SKEW50" "$P_SKEW99" "$P_MISMATCH")"
}

T_START=$EPOCHREALTIME
log "python $PYVER (${PY_CMD[*]}), profilers: ${CFGS[*]}, RUNS=$RUNS"
for wl in "${WLS[@]}"; do wl_start "$wl"; wl_wait "$wl"; done # warm-up
for ((r = 1; r <= RUNS; r++)); do
	for wl in "${WLS[@]}"; do
		for hz in "${HZ_LIST[@]}"; do
			for cfg in "${CFGS[@]}"; do
				pair "$wl" "$cfg" "$hz" "$r"
			done
		done
	done
done
T_END=$EPOCHREALTIME

# ---------------------------------------------------------------- report
col() { # col WL CFG HZ FIELD -> values
	awk -F'\t' -v w="$1" -v c="$2" -v h="$3" -v f="$4" '$1 == w && $2 == c && $3 == h && $f != "NA" { print $f }' "$RES"
}
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "NA"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
range() { sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) printf "%.3f-%.3f", lo, hi; else print "n/a" }'; }
per_sample() { # median over runs of cpu/samples, µs
	awk -F'\t' -v w="$1" -v c="$2" -v h="$3" '$1 == w && $2 == c && $3 == h && $8 != "NA" && $9 > 0 { printf "%.2f\n", $8 / $9 * 1e6 }' "$RES" | median
}
fmt() { awk -v v="$1" -v f="$2" 'BEGIN { if (v == "NA" || v == "") print "n/a"; else printf f, v }'; }
# marginal WL CFG: (median CPU at 999 Hz - at 99 Hz) / (median samples at 999 - at 99), µs:
# the cost of one more sample, without start-up and end-of-run work
marginal() {
	local c1 c2 n1 n2
	c1=$(col "$1" "$2" 99 8 | median) c2=$(col "$1" "$2" 999 8 | median)
	n1=$(col "$1" "$2" 99 9 | median) n2=$(col "$1" "$2" 999 9 | median)
	awk -v a="$c1" -v b="$c2" -v m="$n1" -v n="$n2" 'BEGIN { if (a == "NA" || b == "NA" || n <= m) print "NA"; else printf "%.1f", (b - a) / (n - m) * 1e6 }'
}

header() {
	if [[ $SID == 1 ]]; then
		echo "## Python 3.15 (issue 17): sprofd against Tachyon"
		echo
		echo "Command: \`SID=1 bash bench/python.sh\` (RUNS=$RUNS QUICK=$QUICK), run by \`make bench\`; CPython $PYVER"
		echo "(Debian unstable's \`python3.15\` in the \`$SID_ROOT\` root), Tachyon (\`python3.15 -m profiling.sampling attach"
		echo "-r HZ --mode cpu --collapsed\`, run in the root), $(awk -v a="$T_START" -v b="$T_END" 'BEGIN { printf "%.0f", (b - a) / 60 }') min."
	else
		echo "## Python (issue 7): sprofd against py-spy and austin"
		echo
		echo "Command: \`bash bench/python.sh\` (RUNS=$RUNS QUICK=$QUICK), run by \`make bench\`; CPython $PYVER"
		echo "(\`$PY\`), py-spy $PYSPY_VER, austin $AUSTIN_VER, $(awk -v a="$T_START" -v b="$T_END" 'BEGIN { printf "%.0f", (b - a) / 60 }') min."
	fi
	echo
	echo "Workloads (\`bench/pywork.py\`, fixed work, own clock): \`pure\` = pure-Python call chains"
	echo "(~1.7 s bare); \`alt\` = Python work and \`zlib.compress\` alternating every ~2 ms (~2 s bare)."
	echo "Each profiler attaches by PID (sprofd \`attach -F HZ -v\`, py-spy \`record -r HZ\` which pauses the"
	echo "target per sample, py-spy \`--native\`, austin \`-i 1e6/HZ µs\`, Tachyon \`attach -r HZ\`) and stops when"
	echo "the target exits. Slowdown: median over $RUNS pairs of profiled/bare wall (min-max in brackets). CPU"
	echo "per sample: profiler user+sys (wait4) over samples written, start-up and output included. Skew: how"
	echo "long after the sample sprofd read the Python frames (CLOCK_MONOTONIC, median over runs of each"
	echo "run's median/p99). Mismatch: samples whose native eval frames and Python frames disagreed."
}

goals() {
	local s999 cps mm
	s999=$(col pure sprofd 999 7 | median)
	if [[ $SID == 1 ]]; then
		local t999 sps tps
		t999=$(col pure tachyon 999 7 | median)
		sps=$(per_sample pure sprofd 999) tps=$(per_sample pure tachyon 999)
		echo "Goals (issue 17), medians of this run:"
		echo
		echo "- slowdown at 999 Hz (pure) <= Tachyon's and <= 1.02x: sprofd $(fmt "$s999" %.3f)x vs Tachyon $(fmt "$t999" %.3f)x:" \
			"$(awk -v v="$s999" -v t="$t999" 'BEGIN { print (v != "NA" && t != "NA" && v <= 1.02 && v <= t) ? "met" : "**missed**" }')"
		echo "- CPU per sample at 999 Hz (pure) <= Tachyon's: sprofd $(fmt "$sps" %.1f) µs vs Tachyon $(fmt "$tps" %.1f) µs:" \
			"$(awk -v v="$sps" -v t="$tps" 'BEGIN { print (v != "NA" && t != "NA" && v <= t) ? "met" : "**missed**" }')"
		return
	fi
	local p999
	p999=$(col pure py-spy 999 7 | median)
	cps=$(marginal alt sprofd)
	mm=$(col alt sprofd 999 12 | median)
	echo "Goals (issue 7), medians of this run:"
	echo
	echo "- slowdown at 999 Hz <= 1.02x (pure): sprofd $(fmt "$s999" %.3f)x vs py-spy $(fmt "$p999" %.3f)x:" \
		"$(awk -v v="$s999" 'BEGIN { print (v != "NA" && v <= 1.02) ? "met" : "**missed**" }')"
	echo "- sprofd marginal CPU per sample <= 40 µs (alt): $(fmt "$cps" %.1f) µs:" \
		"$(awk -v v="$cps" 'BEGIN { print (v != "NA" && v <= 40) ? "met" : "**missed**" }')"
	echo "- >= 99 % of samples consistent (alt, 999 Hz): mismatch $(fmt "$mm" %.2f) %:" \
		"$(awk -v v="$mm" 'BEGIN { print (v != "NA" && v <= 1) ? "met" : "**missed**" }')"
}

{
	header
	echo
	echo "| workload | Hz | profiler | slowdown | CPU/sample µs (total) | samples | skew median / p99 µs | mismatch % |"
	echo "|---|---|---|---|---|---|---|---|"
	for wl in "${WLS[@]}"; do
		for hz in "${HZ_LIST[@]}"; do
			for cfg in "${CFGS[@]}"; do
				printf '| %s | %s | %s | %sx [%s] | %s | %s | %s / %s | %s |\n' "$wl" "$hz" "$cfg" \
					"$(fmt "$(col "$wl" "$cfg" "$hz" 7 | median)" %.3f)" "$(col "$wl" "$cfg" "$hz" 7 | range)" \
					"$(fmt "$(per_sample "$wl" "$cfg" "$hz")" %.1f)" \
					"$(fmt "$(col "$wl" "$cfg" "$hz" 9 | median)" %.0f)" \
					"$(fmt "$(col "$wl" "$cfg" "$hz" 10 | median)" %.1f)" \
					"$(fmt "$(col "$wl" "$cfg" "$hz" 11 | median)" %.1f)" \
					"$(fmt "$(col "$wl" "$cfg" "$hz" 12 | median)" %.2f)"
			done
		done
	done
	echo
	echo "Marginal CPU per sample (µs; (CPU at 999 Hz - CPU at 99 Hz) / (samples at 999 - at 99), medians):"
	echo
	printf '| workload |'
	printf ' %s |' "${CFGS[@]}"
	printf '\n|---|'
	printf -- '---|%.0s' "${CFGS[@]}"
	echo
	for wl in "${WLS[@]}"; do
		printf '| %s |' "$wl"
		for cfg in "${CFGS[@]}"; do printf ' %s |' "$(fmt "$(marginal "$wl" "$cfg")" %s)"; done
		echo
	done
	echo
	goals
	if [[ -s $FAILS ]]; then
		echo
		echo "Failed runs (excluded from the cells):"
		echo
		echo '```'
		cat "$FAILS"
		echo '```'
	fi
	echo
} >"$OUT/$REPORT"
log "wrote $OUT/$REPORT"
