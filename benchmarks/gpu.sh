#!/usr/bin/env bash
# The H200 benchmark, as run through the device tool: install quatrain against the machine's own torch,
# run the CUDA tests of the train step, the seed-preset bench in fp32 and bf16, and a profile.
# Everything lands in $OUT. Local dry run on CPU:  OUT=/tmp/out PRESET=tiny DEVICE=cpu ITERS=3 benchmarks/gpu.sh
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT}
PY=${PY:-python3}
PRESET=${PRESET:-seed}
DEVICE=${DEVICE:-cuda}
ITERS=${ITERS:-30}
BACKENDS=${BACKENDS:-}
DTYPES=${DTYPES:-fp32 bf16}
export QUATRAIN_CACHE=$OUT/cache
. "$(dirname "$0")/_device.sh"  # the clock (stamp) and the install
stamp versions
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,utilization.gpu --format=csv 2>/dev/null
$PY -c "import torch, quatrain; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
$PY -m quatrain backends --device "$DEVICE" 2>&1 | tee "$OUT/backends.txt"

if [ "$DEVICE" = cuda ] && [ -z "${SKIP_TESTS:-}" ]; then
  stamp gpu tests
  timeout 90 $PY -m pytest -q -p no:cacheprovider tests/core/test_trainstep.py 2>&1 | tail -8 | tee "$OUT/gpu-tests.txt"
fi

bench() {  # bench NAME TIMEOUT ARGS...
  local name=$1 limit=$2; shift 2
  stamp "bench $name"
  timeout "$limit" $PY -m quatrain bench --preset "$PRESET" --device "$DEVICE" --iters "$ITERS" \
    ${BACKENDS:+--backends "$BACKENDS"} "$@" \
    --out "$OUT/$name.json" --markdown "$OUT/$name.md" 2>"$OUT/$name.log"
  echo "exit $?"; tail -2 "$OUT/$name.log"; cat "$OUT/$name.md" 2>/dev/null | tail -12
}
for dtype in $DTYPES; do
  limit=${BENCH_TIMEOUT:-200}; [ "$dtype" = fp32 ] && limit=${FP32_TIMEOUT:-$limit}
  bench "$DEVICE-$PRESET-$dtype" "$limit" --dtype "$dtype"
done

if [ -n "${PROFILE_DTYPE:-}" ]; then
  stamp profile
  timeout "${PROFILE_TIMEOUT:-50}" $PY benchmarks/profile_gpu.py --preset "$PRESET" --device "$DEVICE" --dtype "$PROFILE_DTYPE" \
    --variants none,cached-decoder > "$OUT/profile-$PROFILE_DTYPE.txt" 2>&1
  echo "exit $?"; grep -E "^## |launches" "$OUT/profile-$PROFILE_DTYPE.txt"
fi

if [ "$DEVICE" = cuda ] && [ -n "${TF32:-}" ]; then  # float32 with TF32 matmuls, in whatever time is left
  left=$(( ${BUDGET_S:-585} - ($(date +%s) - start) ))
  [ "$left" -gt 60 ] && BACKENDS=${TF32_BACKENDS:-$BACKENDS} bench "$DEVICE-$PRESET-fp32-tf32" "$left" --dtype fp32 --precision tf32
fi
stamp done
