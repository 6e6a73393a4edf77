#!/usr/bin/env bash
# Where the H200's step time goes at batch 32 and 256 (issue 13's profile), beside the CUDA tests of evaluation,
# the step engine, the output fold, deferred-kv and the conformance kit; one device-tool call (kind nvidia-h200, carry [".whl"]) of ~4 minutes:
#   gpu-tests.txt, profile-b32.txt, profile-b256.txt (benchmarks/profile_gpu.py: none, cached-decoder, deferred-kv)
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT}
PY=${PY:-python3}
. "$(dirname "$0")/_device.sh"  # the clock (stamp) and the install
stamp "CUDA tests"
$PY -m pytest -q -p no:cacheprovider tests/core/test_evaluate.py tests/core/test_trainstep.py \
  tests/plugins/test_output_fold.py tests/plugins/test_deferred_kv.py tests/plugins/test_conformance.py > "$OUT/gpu-tests.txt" 2>&1
tail -2 "$OUT/gpu-tests.txt"
for B in 32 256; do
  stamp "profile, batch $B"
  $PY benchmarks/profile_gpu.py --preset seed --device cuda --batch-size "$B" \
    --variants none,cached-decoder,deferred-kv > "$OUT/profile-b$B.txt" 2>&1
  grep "##" "$OUT/profile-b$B.txt"
done
stamp done
