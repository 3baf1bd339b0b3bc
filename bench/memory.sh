#!/usr/bin/env bash
# Memory mode cost (issue 19): how much slower the 400 MiB writer (tests/fixtures/memgrow.c,
# and workload.py memory for Python) grows under `sprofd record --mode memory` at defaults,
# beside `perf record -e page-faults --call-graph dwarf` (same sampling: one sample per 64
# faults), and, for Python, `memray run` and `mprof run` (memory_profiler). The time is the
# growth's own (`grow_secs`, printed by the workload), so start-up and the profilers' own
# writing at the end are not counted. Writes bench/out/memory/memory.md for
# docs/benchmarks.md.
#
#   bash bench/memory.sh            # RUNS=7
#   QUICK=1 bash bench/memory.sh    # smoke run
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
OUT=$HERE/out/memory
SPROFD=${SPROFD:-$ROOT/target/release/sprofd}
PY=${PY:-$(python3 -c 'import sys; print(sys.executable)')}
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then RUNS=1; else RUNS=${RUNS:-7}; fi

log() { printf '[memory %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'memory: %s\n' "$*" >&2; exit 1; }
[[ -x $SPROFD ]] || die "$SPROFD missing: run 'make build' first"
mkdir -p "$OUT/runs"
cc -O2 -g -fomit-frame-pointer -DSPROF_OMIT_FP -I"$ROOT/tests/fixtures" -o "$OUT/memgrow" "$ROOT/tests/fixtures/memgrow.c"
WL_PY=$ROOT/tests/fixtures/python/workload.py
RES=$OUT/results.tsv
: >"$RES"

# run CONFIG LANG: one run; appends "config lang grow_secs samples" to $RES.
run() {
	local cfg=$1 lang=$2 wl out=$OUT/runs/$1-$2.out samples=NA
	case $lang in
	c) wl=("$OUT/memgrow" 0 grow) ;;
	py) wl=("$PY" "$WL_PY" memory 0) ;;
	esac
	case $cfg in
	bare) "${wl[@]}" >"$out" ;;
	sprofd) "$SPROFD" record --mode memory -q -o "$OUT/runs/s.folded" -- "${wl[@]}" >"$out" 2>"$out.err"
		samples=$(grep -o '[0-9]* samples in' "$out.err" | awk '{print $1}') ;;
	perf) perf record -q -e page-faults -c 64 --call-graph dwarf -o "$OUT/runs/perf.data" -- "${wl[@]}" >"$out" 2>/dev/null
		samples=$(perf script -i "$OUT/runs/perf.data" -F period 2>/dev/null | grep -c . || true) ;;
	memray) rm -f "$OUT/runs/m.bin"; memray run -q -o "$OUT/runs/m.bin" "$WL_PY" memory 0 >"$out" 2>/dev/null ;;
	mprof) (cd "$OUT/runs" && mprof run -T 0.05 -o m.dat "$PY" "$WL_PY" memory 0 >"$out" 2>/dev/null) ;;
	esac
	printf '%s\t%s\t%s\t%s\n' "$cfg" "$lang" "$(awk '/^grow_secs/{print $2}' "$out")" "$samples" >>"$RES"
}

for i in $(seq "$RUNS"); do
	log "round $i/$RUNS"
	for cfg in bare sprofd perf; do run "$cfg" c; done
	for cfg in bare sprofd perf; do run "$cfg" py; done
	command -v memray >/dev/null && run memray py
	command -v mprof >/dev/null && run mprof py
done

python3 - "$RES" "$OUT/memory.md" "$RUNS" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
runs = sys.argv[3]
by = {}
for cfg, lang, secs, samples in rows:
    if secs:
        by.setdefault((cfg, lang), []).append((float(secs), samples))
out = ["| workload | profiler | growth time, median (range) | slowdown | samples | cost per sample |", "|---|---|---|---|---|---|"]
for lang, name in (("c", "memgrow.c (400 MiB, memset)"), ("py", "workload.py memory (400 MiB, bytes * n)")):
    bare = by.get(("bare", lang))
    if not bare:
        continue
    b = statistics.median(s for s, _ in bare)
    for cfg in ("bare", "sprofd", "perf", "memray", "mprof"):
        v = by.get((cfg, lang))
        if not v:
            continue
        secs = [s for s, _ in v]
        m = statistics.median(secs)
        n = [int(x) for _, x in v if x not in ("NA", "")]
        ns = statistics.median(n) if n else None
        per = f"{(m - b) / ns * 1e6:.1f} µs" if ns and cfg != "bare" else ""
        label = {"bare": "none", "sprofd": "sprofd record --mode memory", "perf": "perf record -e page-faults -c 64 --call-graph dwarf", "memray": "memray run", "mprof": "mprof run -T 0.05"}[cfg]
        out.append(f"| {name} | {label} | {m*1000:.0f} ms ({min(secs)*1000:.0f}-{max(secs)*1000:.0f}) | {m/b:.2f}x | {int(ns) if ns else ''} | {per} |")
open(sys.argv[2], "w").write(f"Runs per configuration: {runs}.\n\n" + "\n".join(out) + "\n")
print("\n".join(out))
EOF
log "wrote $OUT/memory.md"
