#!/usr/bin/env bash
# triton-step's layer products by the Triton kernel against cuBLAS (issue 13), one device call (kind nvidia-h200)
# of about 8 minutes:
#   gpu-tests.txt     the CUDA tests of triton-step (the products against float64 among them) and the replay
#   products-ab.{txt,json}       benchmarks/products_ab.py, fp32: the products alone (cuBLAS, a block sweep) at 32-256
#                     rows, then the graphed seed step, none / triton-step by cuBLAS / by the kernel, b32 and b256
#   cuda-seed-fp32-b32.{json,md,log}  quatrain bench, fp32 b32: triton-step, deferred-kv (baseline, naive always in)
#   products-ab-bf16.{txt,json}  the A/B's steps under bf16 autocast, b32
#   profile-b32.txt   benchmarks/profile_gpu.py at batch 32: none and triton-step, kernel by kernel
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT}
PY=${PY:-python3}
export QUATRAIN_CACHE=${QUATRAIN_CACHE:-/tmp/quatrain-cache}
. "$(dirname "$0")/_device.sh"  # the clock (stamp) and the install
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
stamp "CUDA tests"
timeout 150 $PY -m pytest -q -p no:cacheprovider tests/plugins/test_triton_step.py tests/core/test_replay.py \
  > "$OUT/gpu-tests.txt" 2>&1
tail -3 "$OUT/gpu-tests.txt"
stamp "products A/B, fp32"
timeout 240 $PY benchmarks/products_ab.py --out "$OUT/products-ab.json" > "$OUT/products-ab.txt" 2>&1
grep -v "^   rows" "$OUT/products-ab.txt" | tail -12
stamp "bench fp32 b32"
timeout "${BENCH_LIMIT:-120}" $PY -m quatrain bench --preset seed --device cuda --iters 20 --dtype fp32 --batch-size 32 \
  --backends triton-step,deferred-kv --out "$OUT/cuda-seed-fp32-b32.json" --markdown "$OUT/cuda-seed-fp32-b32.md" \
  2> "$OUT/cuda-seed-fp32-b32.log"
grep -E "^- best|^- inference" "$OUT/cuda-seed-fp32-b32.md"
stamp "products A/B, bf16 autocast"
timeout 90 $PY benchmarks/products_ab.py --rows "" --batch-sizes 32 --precision bf16 \
  --out "$OUT/products-ab-bf16.json" > "$OUT/products-ab-bf16.txt" 2>&1
tail -3 "$OUT/products-ab-bf16.txt"
stamp "profile, batch 32"
timeout 100 $PY benchmarks/profile_gpu.py --preset seed --device cuda --batch-size 32 --variants none,triton-step \
  > "$OUT/profile-b32.txt" 2>&1
grep "##\|ms more than" "$OUT/profile-b32.txt"
stamp done
