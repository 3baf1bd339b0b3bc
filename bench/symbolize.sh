#!/usr/bin/env bash
# Symbolization speed (issue 10): how long naming a profile's unique addresses takes on a large
# binary with deep inlining, for sprofd, perf report (addr2line) and samply (presymbolication).
# Writes bench/out/symbolize/symbolize.md, which bench/run.sh puts into docs/benchmarks.md.
#
#   bash bench/symbolize.sh            # RUNS=5
#   QUICK=1 bash bench/symbolize.sh    # smoke run: RUNS=1, smaller program
#
# Environment: RUNS (default 5), FUNCS (functions in the generated program, default 6000),
# SAMPLY_PARANOID (1: lower perf_event_paranoid to 1 for samply record, restored after),
# ROUNDS (its work, default 600: ~4 s here), HZ (default 999), SPROFD, PERF, SAMPLY.
#
# The target is bench/gen_big.py's generated C++ program (g++ -O2 -g, frame pointers). Each
# profiler records its own run of it at HZ; every tool is then timed from a fresh process
# (the files are in the page cache: the first, untimed run of each reads them), RUNS times,
# and the medians are reported:
#   sprofd  the `symbolize` example of sprof-engine on the `sprofd record --save-events`
#           recording: symbolize_ms is SymbolService::new + symbolize of the whole profile
#           (ELF parse, DWARF context, inline expansion, demangling); total_ms adds the replay
#           and unwinding of every sample.
#   perf    `perf report --stdio` wall time with and without srcline sort keys (perf gets
#           source lines and inline frames from addr2line).
#   samply  `samply import perf.data --save-only` wall time with and without
#           --unstable-presymbolicate, on the perf run's perf.data; and samply's own recording.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
OUT=$HERE/out/symbolize
SPROFD=${SPROFD:-$ROOT/target/release/sprofd}
PERF=${PERF:-perf}
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then RUNS=1 FUNCS=${FUNCS:-1200} ROUNDS=${ROUNDS:-300}; else RUNS=${RUNS:-5} FUNCS=${FUNCS:-6000} ROUNDS=${ROUNDS:-600}; fi
HZ=${HZ:-999}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
unset DEBUGINFOD_URLS

log() { printf '[symbench %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'symbench: %s\n' "$*" >&2; exit 1; }

[[ -x $SPROFD ]] || die "$SPROFD missing: run 'make build' first"
command -v "$PERF" >/dev/null || die "perf not found"
command -v g++ >/dev/null || die "g++ not found"
mkdir -p "$OUT"
FAILS=$OUT/failures.txt
: >"$FAILS"

# ---------------------------------------------------------------- tools
log "building the symbolize example (sprof-engine)"
(cd "$ROOT" && nice -n 10 cargo build -q --release -p sprof-engine --example symbolize)
SYMEX=$OUT/symbolize.bin
cp "$ROOT/target/release/examples/symbolize" "$SYMEX"
cp "$SPROFD" "$OUT/sprofd.bin"
SPROFD=$OUT/sprofd.bin

SAMPLY=${SAMPLY:-$(command -v samply || echo "$HOME/.cargo/bin/samply")}
# `make bench` installs samply first (tests/deps.sh, group bench).
[[ -x $SAMPLY ]] || echo "samply missing (bash tests/deps.sh bench installs it)" >>"$FAILS"
HAVE_SAMPLY=0
[[ -x $SAMPLY ]] && HAVE_SAMPLY=1

# ---------------------------------------------------------------- the target
SRC=$OUT/big-src-$FUNCS
BIG=$OUT/big-$FUNCS
if [[ ! -x $BIG || $HERE/gen_big.py -nt $BIG ]]; then
	log "generating and compiling $FUNCS functions (g++ -O2 -g)"
	rm -rf "$SRC"
	python3 "$HERE/gen_big.py" "$SRC" --funcs "$FUNCS"
	objs=()
	for f in "$SRC"/*.cpp; do
		nice -n 10 g++ -O2 -g -fno-omit-frame-pointer -c -o "${f%.cpp}.o" "$f"
		objs+=("${f%.cpp}.o")
	done
	g++ -o "$BIG.tmp" "${objs[@]}"
	mv "$BIG.tmp" "$BIG"
fi
BIG_MB=$(du -m "$BIG" | cut -f1)
BIG_FUNCS=$(nm "$BIG" | grep -c ' [Tt] ')
BIG_INL=$(readelf --debug-dump=info "$BIG" 2>/dev/null | grep -c DW_TAG_inlined_subroutine || true)

# ---------------------------------------------------------------- timing helpers
now() { echo "$EPOCHREALTIME"; }
ms_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", (b - a) * 1000 }'; }
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "NA"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
range() { sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) printf "%s-%s", lo, hi; else print "n/a" }'; }
RES=$OUT/results.tsv
: >"$RES"
# timed NAME CMD...: one untimed warm-up run, then RUNS timed runs (wall ms, fresh process each)
timed() {
	local name=$1 r t0
	shift
	"$@" >/dev/null 2>"$OUT/$name.err" || { echo "$name: $* exited $?" >>"$FAILS"; return 0; }
	for ((r = 1; r <= RUNS; r++)); do
		t0=$(now)
		if "$@" >/dev/null 2>>"$OUT/$name.err"; then
			printf '%s\t%s\t%s\n' "$name" "$r" "$(ms_since "$t0")" >>"$RES"
		else
			echo "$name run $r: $* failed" >>"$FAILS"
		fi
	done
	log "$name: median $(col "$name" | median) ms"
}
col() { awk -F'\t' -v n="$1" '$1 == n { print $3 }' "$RES"; }

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$EPOCHREALTIME

# ---------------------------------------------------------------- recordings
log "sprofd record -F $HZ --save-events (the target runs ~$ROUNDS rounds)"
"$SPROFD" record -F "$HZ" -q -v --save-events "$OUT/sprofd.events" -o "$OUT/sprofd.folded" -- "$BIG" "$ROUNDS" \
	>"$OUT/sprofd-record.out" 2>"$OUT/sprofd-record.err" || echo "sprofd record exited $?" >>"$FAILS"
BIG_ELAPSED=$(awk '/^elapsed/{print $2}' "$OUT/sprofd-record.out")
REC_SYM=$(sed -n 's/.*symbolization \([0-9.]*\) s.*/\1/p' "$OUT/sprofd-record.err" | tail -1)

log "perf record -g -F $HZ"
"$PERF" record -q -g -F "$HZ" -o "$OUT/perf.data" -- "$BIG" "$ROUNDS" >/dev/null 2>"$OUT/perf-record.err" ||
	echo "perf record exited $?" >>"$FAILS"
PERF_SAMPLES=$("$PERF" report -i "$OUT/perf.data" --stdio --header-only 2>/dev/null | awk '/sample_freq|nr_samples/' | head -1 || true)
# Unique addresses in perf's profile: sample IPs and every callchain entry.
PERF_UNIQUE=$("$PERF" script -i "$OUT/perf.data" -F ip 2>/dev/null | awk '{ print $1 }' | sort -u | wc -l)
PERF_NSAMPLES=$("$PERF" script -i "$OUT/perf.data" -F period 2>/dev/null | wc -l)

# ---------------------------------------------------------------- sprofd
timed sprofd "$SYMEX" "$OUT/sprofd.events"
# The example's own split, from RUNS more runs.
: >"$OUT/sprofd-split.tsv"
for ((r = 1; r <= RUNS; r++)); do
	"$SYMEX" "$OUT/sprofd.events" "$OUT/sprofd-replay.folded" >"$OUT/sprofd-split.out"
	awk '{ printf "%s\t%s\n", $1, $2 }' "$OUT/sprofd-split.out" >>"$OUT/sprofd-split.tsv"
done
split() { awk -F'\t' -v k="$1" '$1 == k { print $2 }' "$OUT/sprofd-split.tsv"; }
SP_SYM=$(split symbolize_ms | median)
SP_SYM_RANGE=$(split symbolize_ms | range)
SP_TOTAL=$(split total_ms | median)
SP_UNIQUE=$(split module_frames | median)
SP_SAMPLES=$(split samples | median)
SP_DISPLAY=$(split display_frames | median)
SP_MODULES=$(split modules | median)
SP_NAMED=$(split named | median)

# ---------------------------------------------------------------- perf report
PR=("$PERF" report -i "$OUT/perf.data" --stdio --no-children)
timed perf-sym "${PR[@]}" -g none --sort sym
timed perf-srcline "${PR[@]}" -g none --sort sym,srcline
timed perf-chain-srcline "${PR[@]}" -g caller,0,callee,address --sort sym,srcline
timed perf-inline "${PR[@]}" -g caller,0,callee,address --sort sym,srcline --inline

# ---------------------------------------------------------------- samply
# samply 0.13.1's `import` takes --unstable-presymbolicate but writes no .syms.json (only its
# recorders call the presymbolicator), so its presymbolication is timed on its own recording:
# the sidecar is written right after the profile, and the gap between the two files' mtimes is
# the presymbolication (symbols, inline frames and lines of every address the profile uses).
# On a VM without a PMU and with perf_event_paranoid 2, samply record exits before trying
# cpu-clock (see the note in the report); SAMPLY_PARANOID=1 lowers the sysctl to 1 for the
# samply runs only and restores it afterwards.
SAMPLY_VER=n/a
SAMPLY_REC="not run"
PARANOID=$(cat /proc/sys/kernel/perf_event_paranoid)
PARANOID_NOTE=""
restore_paranoid() { [[ -n $PARANOID_NOTE ]] && echo "$PARANOID" >/proc/sys/kernel/perf_event_paranoid || true; }
trap restore_paranoid EXIT
mtime() { stat -c %.6Y "$1"; }
if ((HAVE_SAMPLY)); then
	SAMPLY_VER=$("$SAMPLY" --version | awk '{print $2}')
	timed samply-import "$SAMPLY" import --save-only -o "$OUT/samply-import.json" "$OUT/perf.data"
	rm -f "$OUT"/samply-import-presym*
	timed samply-import-presym "$SAMPLY" import --save-only --unstable-presymbolicate -o "$OUT/samply-import-presym.json" "$OUT/perf.data"
	SIDECAR_IMPORT=no
	[[ -e $OUT/samply-import-presym.syms.json ]] && SIDECAR_IMPORT=yes
	if ((PARANOID > 1)) && [[ ${SAMPLY_PARANOID:-0} == 1 ]]; then
		echo 1 >/proc/sys/kernel/perf_event_paranoid
		PARANOID_NOTE="perf_event_paranoid lowered from $PARANOID to 1 for the samply record runs (SAMPLY_PARANOID=1), restored after"
	fi
	: >"$OUT/samply-times.tsv"
	for ((r = 0; r <= RUNS; r++)); do
		rm -f "$OUT"/samply-record.*
		if "$SAMPLY" record --save-only --unstable-presymbolicate -r "$HZ" -o "$OUT/samply-record.json" -- "$BIG" "$ROUNDS" \
			>"$OUT/samply-record.out" 2>"$OUT/samply-record.err" && [[ -s $OUT/samply-record.syms.json ]]; then
			# presymbolication: sidecar mtime - profile mtime; after exit: sidecar - workload's last output
			((r == 0)) || printf '%s\t%s\n' \
				"$(awk -v a="$(mtime "$OUT/samply-record.json")" -v b="$(mtime "$OUT/samply-record.syms.json")" 'BEGIN { printf "%.1f", (b - a) * 1000 }')" \
				"$(awk -v a="$(mtime "$OUT/samply-record.out")" -v b="$(mtime "$OUT/samply-record.syms.json")" 'BEGIN { printf "%.1f", (b - a) * 1000 }')" \
				>>"$OUT/samply-times.tsv"
			SAMPLY_REC=ran
		else
			SAMPLY_REC="failed: $(tr '\n' ' ' <"$OUT/samply-record.err" | head -c 300)"
			break
		fi
	done
	restore_paranoid
	PRESYM=$(cut -f1 "$OUT/samply-times.tsv" | median)
	AFTER_EXIT=$(cut -f2 "$OUT/samply-times.tsv" | median)
	PRESYM_RANGE=$(cut -f1 "$OUT/samply-times.tsv" | range)
	SAMPLY_SYMS=$(python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(sum(len(m["symbol_table"]) for m in d["data"]), sum(len(s.get("frames") or []) for m in d["data"] for s in m["symbol_table"]), sum(len(m["known_addresses"]) for m in d["data"]))' "$OUT/samply-record.syms.json" 2>/dev/null || echo "? ? ?")
	read -r SYMS_ENTRIES SYMS_FRAMES SYMS_ADDRS <<<"$SAMPLY_SYMS"
fi

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
T_END=$EPOCHREALTIME

# ---------------------------------------------------------------- report
fmt() { awk -v v="$1" -v f="$2" 'BEGIN { if (v == "NA" || v == "") print "n/a"; else printf f, v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "NA" || b == "NA" || a == "" || b == "" || b == 0) print "n/a"; else printf "%.1fx", a / b }'; }
cell() { printf '%s ms [%s]' "$(fmt "$(col "$1" | median)" %.0f)" "$(col "$1" | range)"; }
{
	echo "## Symbolization speed (issue 10)"
	echo
	echo "Command: \`bash bench/symbolize.sh\` (RUNS=$RUNS QUICK=$QUICK SAMPLY_PARANOID=${SAMPLY_PARANOID:-0}), run by \`make bench\`. Target:"
	echo "\`bench/gen_big.py --funcs $FUNCS\` compiled with \`g++ -O2 -g -fno-omit-frame-pointer\`: ${BIG_MB} MB,"
	echo "$BIG_FUNCS function symbols, $BIG_INL \`DW_TAG_inlined_subroutine\` entries; \`big $ROUNDS\` runs ${BIG_ELAPSED:-?} s."
	echo "Each profiler records its own run at $HZ Hz; every figure below is the wall time of a fresh"
	echo "process (median [min-max] of $RUNS, after one untimed run so the files are in the page cache)."
	echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?);"
	echo "load average (1, 5, 15 min) at start $LOAD_START, at end $LOAD_END; $(awk -v a="$T_START" -v b="$T_END" 'BEGIN { printf "%.0f", (b - a) / 60 }') min."
	echo "sprofd resolves the modules of a profile side by side (one thread per module, up to 4), so its"
	echo "figure depends on a second CPU being free; perf report hands source-line lookups to one addr2line"
	echo "child process, and samply's presymbolication resolves one library after another."
	echo
	echo "| tool | what is timed | time | vs sprofd symbolize |"
	echo "|---|---|---|---|"
	echo "| sprofd | symbolize only: \`SymbolService::new\` + \`symbolize\` of $(fmt "$SP_UNIQUE" %.0f) unique frames in $(fmt "$SP_MODULES" %.0f) modules ($(fmt "$SP_DISPLAY" %.0f) display frames with inlines) | $(fmt "$SP_SYM" %.0f) ms [$SP_SYM_RANGE] | 1.0x |"
	echo "| sprofd | whole example process: read recording, unwind $(fmt "$SP_SAMPLES" %.0f) samples, symbolize | $(cell sprofd) | $(ratio "$(col sprofd | median)" "$SP_SYM") |"
	echo "| perf $("$PERF" --version | awk '{print $3}') | \`perf report --stdio --no-children -g none --sort sym\` (no source lines) | $(cell perf-sym) | $(ratio "$(col perf-sym | median)" "$SP_SYM") |"
	echo "| perf | \`... -g none --sort sym,srcline\` (addr2line for every sample IP) | $(cell perf-srcline) | $(ratio "$(col perf-srcline | median)" "$SP_SYM") |"
	echo "| perf | \`... -g caller,0,callee,address --sort sym,srcline\` (every callchain entry printed, with its source line) | $(cell perf-chain-srcline) | $(ratio "$(col perf-chain-srcline | median)" "$SP_SYM") |"
	echo "| perf | same plus \`--inline\` | $(cell perf-inline) | $(ratio "$(col perf-inline | median)" "$SP_SYM") |"
	if ((HAVE_SAMPLY)); then
		echo "| samply $SAMPLY_VER | \`samply import --save-only perf.data\` (the perf run's file; no symbols) | $(cell samply-import) | $(ratio "$(col samply-import | median)" "$SP_SYM") |"
		echo "| samply | same plus \`--unstable-presymbolicate\` (sidecar written: $SIDECAR_IMPORT) | $(cell samply-import-presym) | $(ratio "$(col samply-import-presym | median)" "$SP_SYM") |"
		if [[ $SAMPLY_REC == ran ]]; then
			echo "| samply | \`samply record --save-only --unstable-presymbolicate -r $HZ\`: presymbolication of $SYMS_ADDRS addresses (mtime of .syms.json - mtime of the profile) | $(fmt "$PRESYM" %.0f) ms [$PRESYM_RANGE] | $(ratio "$PRESYM" "$SP_SYM") |"
			echo "| samply | same run: from the target's exit (its last output) to the .syms.json | $(fmt "$AFTER_EXIT" %.0f) ms | $(ratio "$AFTER_EXIT" "$SP_SYM") |"
		else
			echo "| samply | \`samply record\`: $SAMPLY_REC | n/a | n/a |"
		fi
	else
		echo "| samply | not installed (cargo install samply failed) | n/a | n/a |"
	fi
	echo
	echo "Profiles: sprofd $(fmt "$SP_SAMPLES" %.0f) samples, $(fmt "$SP_UNIQUE" %.0f) unique (module, address) frames, $(fmt "$SP_NAMED" %.0f) named;"
	echo "perf $PERF_NSAMPLES samples, $PERF_UNIQUE unique addresses (sample IPs and callchain entries, \`perf script -F ip\`)."
	echo "perf $("$PERF" --version | awk '{print $3}') here is built without libbfd (\`perf version --build-options\`): for srcline and"
	echo "\`--inline\` it runs \`$(command -v addr2line)\` ($(addr2line --version | head -1 | awk '{print $NF}'), GNU binutils) as a child process."
	if [[ $SAMPLY_REC == ran ]]; then
		echo "samply looks up every address its profile uses ($SYMS_ADDRS) but its sidecar keeps one entry per function"
		echo "($SYMS_ENTRIES, with $SYMS_FRAMES frames: the inline chain of the first address seen in each); sprofd keeps the"
		echo "inline chain and line of every address."
	fi
	echo "\`sprofd record -v\` on the recording run itself reported symbolization ${REC_SYM:-?} s (the same work inside the"
	echo "live session). samply $SAMPLY_VER's \`import\` accepts \`--unstable-presymbolicate\` but writes no sidecar: only its"
	echo "recorders presymbolicate, hence the timing from \`samply record\`. That needs perf_event_paranoid <= 1 on a VM"
	echo "without a PMU: samply opens hardware cycles first, the kernel answers ENOENT, samply reads the failed"
	echo "syscall's -1 as errno 1 (EPERM), takes it for a permission problem and exits while paranoid is 2 instead of"
	echo "falling back to cpu-clock. ${PARANOID_NOTE:-perf_event_paranoid was $PARANOID}."
	echo
	s=$SP_SYM
	echo "Goal (issue 10): symbolizing the profile's unique addresses well under a second: sprofd $(fmt "$s" %.0f) ms:" \
		"$(awk -v v="$s" 'BEGIN { print (v != "NA" && v < 500) ? "met" : "**missed**" }')"
	if [[ -s $FAILS ]]; then echo; echo '```'; cat "$FAILS"; echo '```'; fi
	echo
} >"$OUT/symbolize.md"
log "wrote $OUT/symbolize.md"
cat "$OUT/symbolize.md"
