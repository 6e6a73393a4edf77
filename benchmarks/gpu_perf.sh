#!/usr/bin/env bash
# Issue 13's GPU figures in one device call (about 8 minutes): `quatrain bench` on the seed preset in fp32 at
# batch 32 and 256, bf16 at batch 32, and fp32 batch 32 at 1, 2, 4 and 8 heads. Every run's JSON and markdown
# go into one archive, $OUT/perf-runs.tar.gz, with a summary of the ratios in $OUT/perf-summary.md (the device
# tool brings back at most 8 files). Each run gets a time limit, cut to what is left of BUDGET_S.
# On the device (the lead):  run  command="OUT=$OUT benchmarks/gpu_perf.sh"  (kind nvidia-h200)
# Local dry run on CPU:      OUT=/tmp/gp PRESET=tiny DEVICE=cpu ITERS=2 SKIP_INSTALL=1 benchmarks/gpu_perf.sh
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT}
PY=${PY:-python3}
PRESET=${PRESET:-seed}
DEVICE=${DEVICE:-cuda}
ITERS=${ITERS:-30}
HEADS_ITERS=${HEADS_ITERS:-20}
HEADS=${HEADS-1 2 4 8}  # HEADS="" runs none
HEADS_BACKENDS=${HEADS_BACKENDS:-naive,cached-decoder,deferred-kv}
BUDGET_S=${BUDGET_S:-480}
RUNS=$OUT/perf-runs
mkdir -p "$RUNS"
export QUATRAIN_CACHE=${QUATRAIN_CACHE:-/tmp/quatrain-cache}  # not under $OUT: only 8 files come back
. "$(dirname "$0")/_device.sh"  # the clock (stamp) and the install
stamp versions
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,utilization.gpu --format=csv 2>/dev/null
$PY -c "import torch, quatrain; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
$PY -m quatrain backends --device "$DEVICE" > "$RUNS/backends.txt" 2>&1

bench() {  # bench NAME LIMIT ARGS...: one quatrain bench run, cut to the budget left
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET_S - ($(date +%s) - start) - 15 ))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 20 ]; then stamp "skip $name: budget spent"; echo "$name: skipped, budget spent" >> "$RUNS/skipped.txt"; return; fi
  stamp "bench $name (limit $limit s)"
  timeout "$limit" $PY -m quatrain bench --preset "$PRESET" --device "$DEVICE" "$@" \
    --out "$RUNS/$name.json" --markdown "$RUNS/$name.md" 2>"$RUNS/$name.log"
  echo "exit $?"; grep -E "^- best" "$RUNS/$name.md" 2>/dev/null
}
bench "$DEVICE-$PRESET-fp32-b32" 200 --dtype fp32 --batch-size 32 --iters "$ITERS"
bench "$DEVICE-$PRESET-bf16-b32" 110 --dtype bf16 --batch-size 32 --iters "$ITERS"
bench "$DEVICE-$PRESET-fp32-b256" 130 --dtype fp32 --batch-size 256 --iters "$ITERS"
for h in $HEADS; do
  bench "$DEVICE-$PRESET-fp32-b32-heads$h" 45 --dtype fp32 --batch-size 32 --iters "$HEADS_ITERS" --heads "$h" \
    --backends "$HEADS_BACKENDS"
done

stamp summary
$PY - "$RUNS" > "$OUT/perf-summary.md" <<'EOF'
"""Ratios to the baseline from every run's JSON; attention's own time per heads count."""
import json, sys
from pathlib import Path

runs = sorted(Path(sys.argv[1]).glob("*.json"))
print("# gpu_perf.sh summary\n")
print("| run | mode | baseline ms | best backend | best ms | x baseline |")
print("|---|---|---|---|---|---|")
heads = []
for path in runs:
    report = json.loads(path.read_text())
    by_name = {v["name"]: v for v in report["variants"]}
    for mode, entry in report["summary"].items():
        if isinstance(entry, dict):
            base = by_name["none"]["modes"][mode]["median_ms"]
            print(f"| {path.stem} | {mode} | {base:.2f} | {entry['best']} | {entry['median_ms']:.2f} | {entry['x_baseline']:.2f} |")
    if "-heads" in path.stem:
        heads.append(report)
if heads:
    print("\n## Attention time by heads (best backend minus the no-attention baseline, ms)\n")
    print("| heads | train tf 0.9 | train tf 1.0 | inference |")
    print("|---|---|---|---|")
    for report in sorted(heads, key=lambda r: r["setup"]["config"]["num_heads"]):
        by_name = {v["name"]: v for v in report["variants"]}
        cells = []
        for mode in ("train-seq", "train-par", "infer"):
            entry = report["summary"].get(mode)
            if not isinstance(entry, dict):
                cells.append("-")
                continue
            base = by_name["none"]["modes"][mode]["median_ms"]
            cells.append(f"{entry['median_ms'] - base:.2f} ({entry['best']})")
        print(f"| {report['setup']['config']['num_heads']} | " + " | ".join(cells) + " |")
first = json.loads(runs[0].read_text()) if runs else None
if first:
    print(f"\n{first['machine']['hardware']['device_name']}, torch {first['versions']['torch']}, {first['date']}")
EOF
cat "$OUT/perf-summary.md"
tar czf "$OUT/perf-runs.tar.gz" -C "$OUT" perf-runs && rm -rf "$RUNS"
stamp done
