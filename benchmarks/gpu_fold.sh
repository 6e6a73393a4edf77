#!/usr/bin/env bash
# triton-step's folded no-gradient step (issue 13), one device call (kind nvidia-h200) of about 3 minutes:
#   gpu-tests.txt     the CUDA tests of triton-step (the conformance kit on CUDA runs the folded step in float32)
#   fold-ab.{txt,json} benchmarks/fold_values_ab.py: the graphed seed step, none / triton-step with the
#                     context half by cuBLAS / as shipped / always folded, b32 and b256, inference and train tf 0.9
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT}
PY=${PY:-python3}
export QUATRAIN_CACHE=${QUATRAIN_CACHE:-/tmp/quatrain-cache}
. "$(dirname "$0")/_device.sh"  # the clock (stamp) and the install
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
stamp "CUDA tests"
timeout 90 $PY -m pytest -q -p no:cacheprovider tests/plugins/test_triton_step.py > "$OUT/gpu-tests.txt" 2>&1
tail -3 "$OUT/gpu-tests.txt"
stamp "fold A/B"
timeout 200 $PY benchmarks/fold_values_ab.py --out "$OUT/fold-ab.json" > "$OUT/fold-ab.txt" 2>&1
cat "$OUT/fold-ab.txt"
stamp done
