#!/usr/bin/env bash
# Held-out quality of the small preset at 1, 2, 4 and 8 attention heads, one recipe (benchmarks/heads.md):
# 10 epochs, no time limit (the epochs are the recipe, whatever the machine's load), naive backend, seed 0.
# Run from the repository root: results/training/cpu-small-heads/run.sh [OUTDIR]
set -euo pipefail
export OMP_NUM_THREADS=1
out=${1:-out/heads}
here=results/training/cpu-small-heads
retry() { for i in 1 2 3 4 5; do "$@" && return 0; echo "failed (try $i): $*" >&2; sleep 60; done; return 1; }
train_one() {  # heads
  rm -f "$out/h$1.safetensors" "$out/h$1.state.safetensors" "$out/h$1.log.jsonl"
  .venv/bin/quatrain train --config "$out/h$1.json" --backend naive --epochs 10 --lr 3e-3 --lr-decay 0.97 \
    --patience 0 --teacher-forcing 1.0 --seed 0 --device cpu --out "$out/h$1.safetensors"
}
eval_one() { .venv/bin/quatrain eval "$out/h$1.safetensors" --backend naive --json --device cpu > "$out/h$1.eval.json"; }
mkdir -p "$out"
for h in 1 2 4 8; do
  echo "{\"preset\": \"small\", \"num_heads\": $h}" > "$out/h$h.json"
  start=$(date +%s)
  if ! grep -q "epoch 10 of 10, stopped: epochs" "$out/h$h.train.txt" 2>/dev/null; then
    retry train_one "$h" > "$out/h$h.train.txt" 2>&1
  fi
  mid=$(date +%s)
  retry eval_one "$h"
  echo "heads $h train_s $((mid - start)) eval_s $(($(date +%s) - mid))" >> "$out/times.txt"
  cp "$out/h$h.log.jsonl" "$out/h$h.eval.json" "$here/"
done
cp "$out/times.txt" "$here/"
