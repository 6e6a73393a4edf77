#!/usr/bin/env bash
# `quatrain eval`'s rate against its own InferenceStep on one H200 (issue 11's evaluation bar), on a seed-preset
# model trained here with the `seed` card's recipe for MINUTES (a well-trained model: the word search's
# neighbour lists vouch for rows close to their words). One device-tool call (kind nvidia-h200, carry
# [".whl", "build/engine"]) of about 6 minutes wall:
#   the CUDA tests of evaluation and the step engine -> gpu-tests.txt
#   benchmarks/gpu_seed_retrain.sh (MINUTES, no dropout) -> seed/ (recipe, log, test.json from `quatrain eval`)
#   benchmarks/eval_profile.py at batch 64 and 256 -> evalprof{64,256}.json
#   `quatrain eval --batch-size 64 --json` -> seed/test-b64.json
# Prepare here first:  .venv/bin/python benchmarks/engine_prepare.py export
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT}
PY=${PY:-python3}
MINUTES=${MINUTES:-2.5}
. "$(dirname "$0")/_device.sh"  # the clock (stamp) and the install
stamp "CUDA tests"
$PY -m pytest -q -p no:cacheprovider tests/core/test_evaluate.py tests/core/test_trainstep.py > "$OUT/gpu-tests.txt" 2>&1
tail -2 "$OUT/gpu-tests.txt"
mkdir -p "$OUT/seed"
OUT=$OUT/seed MINUTES=$MINUTES DROPOUT=0 SKIP_INSTALL=1 PY=$PY bash benchmarks/gpu_seed_retrain.sh
for B in 64 256; do
  stamp "eval profile, batch $B"
  $PY benchmarks/eval_profile.py "$OUT/seed/seed.safetensors" --batch-size "$B" > "$OUT/evalprof$B.json" 2> "$OUT/evalprof$B.stderr"
  $PY -c "import json, sys; r = json.load(open(sys.argv[1])); print({k: v for k, v in r.items() if 'ratio' in k or k.startswith(('eval_', 'word_full'))})" "$OUT/evalprof$B.json"
done
stamp "quatrain eval, batch 64"
$PY -m quatrain eval "$OUT/seed/seed.safetensors" --batch-size 64 --device cuda --json > "$OUT/seed/test-b64.json" 2> "$OUT/seed/eval-b64.stderr"
cat "$OUT/seed/eval-b64.stderr" | tail -3
stamp done
