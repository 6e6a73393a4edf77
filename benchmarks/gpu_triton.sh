#!/usr/bin/env bash
# triton-step on the H200 (issue 13), one device call (kind nvidia-h200, carry [".whl"]) of about 8 minutes:
#   gpu-tests.txt   the CUDA tests of triton-step, deferred-kv, the output and head folds, the step engine (tf32 too)
#   profile-b32.txt benchmarks/profile_gpu.py at batch 32: none, deferred-kv, triton-step (graphed time, kernels);
#                   PROFILE_BATCHES (default 32) and PROFILE_VARIANTS choose others
#   cuda-seed-*.{json,md}, in perf-runs.tar.gz: quatrain bench of every backend, fp32 b32 (and what STAGES adds)
#   order.txt       the graphed padded-batch train-step test after the tests that used to break it (gpu_order.sh)
#   norelease.txt   the failed-capture test and the order runs again with the engine's generator release
#                   (core/_graphs.py) switched off: what the release fixes
#   cuda-seed-autocast-bf16-b32: float32 weights under bf16 autocast (`--precision bf16`), what train runs
#   cuda-seed-tf32-b{32,256}: float32 with every matmul on TF32 tensor cores (`--precision tf32`)
#   nohold.txt      the dropped-engine capture test with the engine's cycle-collector hold (core/_graphs.py)
#                   switched off: what the hold fixes
#   integration-ab*.{txt,json}: benchmarks/integration_ab.py, triton-step's integration layer with the step
#                   against the form before it, batch 32 and 256 fp32 and batch 32 under bf16 autocast
#   linear-forms.{txt,json}: benchmarks/linear_forms.py, the step's small products and its LSTM step, form by form
#   cuda-seed-fp32-b32-{lt,nolt}: the baseline and triton-step at b32, as shipped and with DISABLE_ADDMM_CUDA_LT=1
#                   (PyTorch's addmm with a bias through cuBLAS instead of cuBLASLt), one after the other
#   replay-ab*.{txt,json}: benchmarks/replay_ab.py, the steps engine's replayed training decode (core/_replay.py)
#                   against autograd through every step, none and REPLAY_BACKENDS, b32 and b256 fp32, b32 bf16 autocast
#   rnn-chunks.txt  benchmarks/rnn_chunks.py: whether the RNN weights cuDNN reads are one chunk (no compaction)
#   rnn-backward.{txt,json}: benchmarks/rnn_backward.py, the decode's LSTM backward per step and over the sequence
#   kernel-ab.{txt,json}: benchmarks/kernel_ab.py, the attention kernels launch by launch (chunk, warps, K and V
#                   loaded together) at batch 32 and 256, then triton-step's whole step with the fastest
#   head-ab.{txt,json}: benchmarks/replay_ab.py --switch fold_head=false: the integration MLP's last layer and the
#                   output layer as one map (Decoder.fold) against two, none and REPLAY_BACKENDS, every mode,
#                   fp32 at HEAD_BATCHES (default 32,256)
# STAGES (default "tests profile b32"): any of tests, order, norelease, nohold, profile, kernels, ab, forms, rnn, replay, chunks, lt,
# head, b32, bf16, b256, autocast, tf32 (batch 32), tf32-b256. DEADLINE (s, default 560): a bench stage that would start later is skipped.
# TESTS, TESTS_LIMIT: the tests stage's test files and time limit.
# BENCH_BACKENDS: the b32, bf16, b256 and autocast benches' --backends (default: every backend).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT}
PY=${PY:-python3}
ITERS=${ITERS:-20}
STAGES=${STAGES:-tests profile b32}
RUNS=$OUT/perf-runs
mkdir -p "$RUNS"
export QUATRAIN_CACHE=${QUATRAIN_CACHE:-/tmp/quatrain-cache}
. "$(dirname "$0")/_device.sh"  # the clock (stamp) and the install
has() { case " $STAGES " in *" $1 "*) return 0 ;; esac; return 1; }
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
if has tests; then
  stamp "CUDA tests"
  # shellcheck disable=SC2086  # $TESTS is a list of test files
  timeout "${TESTS_LIMIT:-200}" $PY -m pytest -q -p no:cacheprovider ${TESTS:-tests/core/test_trainstep.py tests/core/test_deferred.py \
    tests/core/test_decode_rnn.py tests/core/test_replay.py tests/plugins/test_triton_step.py tests/plugins/test_deferred_kv.py \
    tests/plugins/test_output_fold.py tests/core/test_head_fold.py tests/core/test_precision.py \
    tests/plugins/test_triton_kernels.py} > "$OUT/gpu-tests.txt" 2>&1
  tail -3 "$OUT/gpu-tests.txt"
fi
if has order; then
  stamp "order: earlier tests, then the graphed padded-batch test"
  T=tests/core/test_trainstep.py::test_graphed_train_step_with_a_padded_last_batch_equals_the_eager_step
  for first in tests/plugins/test_deferred_kv.py tests/plugins/test_output_fold.py; do
    echo "## $first then $T" >> "$OUT/order.txt"
    timeout 150 $PY -m pytest -q -p no:cacheprovider "$first" "$T" >> "$OUT/order.txt" 2>&1
    tail -1 "$OUT/order.txt"
  done
fi
if has norelease; then
  stamp "the failed-capture test and the order runs without the generator release"
  T=tests/core/test_trainstep.py::test_graphed_train_step_with_a_padded_last_batch_equals_the_eager_step
  F=tests/core/test_trainstep.py::test_a_failed_capture_falls_back_to_eager_steps_that_still_draw_random_numbers
  for tests in "$F" "tests/plugins/test_deferred_kv.py $T" "tests/plugins/test_output_fold.py $T"; do
    echo "## without the release: $tests" >> "$OUT/norelease.txt"
    # shellcheck disable=SC2086  # $tests is a list of test ids
    timeout 150 $PY -c "import sys, pytest, quatrain._graphs as g; g._release_generator = lambda device: None; \
sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', *sys.argv[1:]]))" $tests >> "$OUT/norelease.txt" 2>&1
    tail -1 "$OUT/norelease.txt"
  done
fi
if has nohold; then
  stamp "the dropped-engine capture test without the collector hold"
  T=tests/core/test_trainstep.py::test_an_engine_dropped_before_a_capture_is_not_collected_in_the_middle_of_it
  timeout 100 $PY -c "import contextlib, sys, pytest, quatrain._graphs as g; g._collector_held = contextlib.nullcontext; \
sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', sys.argv[1]]))" "$T" > "$OUT/nohold.txt" 2>&1
  tail -1 "$OUT/nohold.txt"
fi
if has profile; then
  for b in ${PROFILE_BATCHES:-32}; do
    stamp "profile, batch $b"
    timeout 150 $PY benchmarks/profile_gpu.py --preset seed --device cuda --batch-size "$b" \
      --variants "${PROFILE_VARIANTS:-none,deferred-kv,triton-step}" > "$OUT/profile-b$b.txt" 2>&1
    grep "##\|ms more than" "$OUT/profile-b$b.txt"
  done
fi
if has kernels; then
  stamp "kernel launches A/B, then the whole step with the fastest"
  timeout "${KERNELS_LIMIT:-240}" $PY benchmarks/kernel_ab.py --batch-sizes 32,256 --out "$OUT/kernel-ab.json" \
    > "$OUT/kernel-ab.txt" 2>&1
  cat "$OUT/kernel-ab.txt"
fi
if has ab; then
  stamp "integration A/B, fp32"
  timeout 240 $PY benchmarks/integration_ab.py --device cuda --batch-sizes 32,256 --out "$OUT/integration-ab.json" \
    > "$OUT/integration-ab.txt" 2>&1
  cat "$OUT/integration-ab.txt"
  stamp "integration A/B, bf16 autocast"
  timeout 120 $PY benchmarks/integration_ab.py --device cuda --batch-sizes 32 --precision bf16 \
    --out "$OUT/integration-ab-bf16.json" > "$OUT/integration-ab-bf16.txt" 2>&1
  cat "$OUT/integration-ab-bf16.txt"
fi
if has forms; then
  stamp "linear forms"
  timeout 200 $PY benchmarks/linear_forms.py --out "$OUT/linear-forms.json" > "$OUT/linear-forms.txt" 2>&1
  cat "$OUT/linear-forms.txt"
fi
if has replay; then
  stamp "replay A/B, fp32"
  timeout 240 $PY benchmarks/replay_ab.py --device cuda --batch-sizes "${REPLAY_BATCHES:-32,256}" \
    --backends "${REPLAY_BACKENDS:-triton-step}" --iters "$ITERS" \
    --out "$OUT/replay-ab.json" > "$OUT/replay-ab.txt" 2>&1
  cat "$OUT/replay-ab.txt"
  stamp "replay A/B, bf16 autocast"
  timeout 120 $PY benchmarks/replay_ab.py --device cuda --batch-sizes 32 --precision bf16 --iters "$ITERS" \
    --backends "${REPLAY_BACKENDS:-triton-step}" --out "$OUT/replay-ab-bf16.json" > "$OUT/replay-ab-bf16.txt" 2>&1
  cat "$OUT/replay-ab-bf16.txt"
fi
if has head; then
  stamp "head fold A/B, fp32"
  timeout 240 $PY benchmarks/replay_ab.py --device cuda --batch-sizes "${HEAD_BATCHES:-32,256}" --switch fold_head=false \
    --modes train-seq,train-par,infer --backends "${REPLAY_BACKENDS:-triton-step}" --iters "$ITERS" \
    --out "$OUT/head-ab.json" > "$OUT/head-ab.txt" 2>&1
  cat "$OUT/head-ab.txt"
fi
if has chunks; then
  stamp "RNN weight chunks"
  timeout 120 $PY benchmarks/rnn_chunks.py > "$OUT/rnn-chunks.txt" 2>&1
  cat "$OUT/rnn-chunks.txt"
fi
if has rnn; then
  stamp "the decode's LSTM backward, step by step and over the sequence"
  timeout 200 $PY benchmarks/rnn_backward.py --out "$OUT/rnn-backward.json" > "$OUT/rnn-backward.txt" 2>&1
  cat "$OUT/rnn-backward.txt"
fi
bench() {  # bench NAME ARGS...
  local name=$1; shift
  if [ $(( $(date +%s) - start )) -gt "${DEADLINE:-560}" ]; then stamp "bench $name skipped: past DEADLINE"; return; fi
  stamp "bench $name"
  timeout "${BENCH_LIMIT:-200}" $PY -m quatrain bench --preset seed --device cuda --iters "$ITERS" "$@" \
    --out "$RUNS/$name.json" --markdown "$RUNS/$name.md" 2>"$RUNS/$name.log"
  echo "exit $?"; grep -E "^- best|^- inference" "$RUNS/$name.md" 2>/dev/null
}
has b32 && bench cuda-seed-fp32-b32 --dtype fp32 --batch-size 32 ${BENCH_BACKENDS:+--backends "$BENCH_BACKENDS"}
if has lt; then
  bench cuda-seed-fp32-b32-lt --dtype fp32 --batch-size 32 --backends triton-step
  DISABLE_ADDMM_CUDA_LT=1 bench cuda-seed-fp32-b32-nolt --dtype fp32 --batch-size 32 --backends triton-step
fi
has bf16 && bench cuda-seed-bf16-b32 --dtype bf16 --batch-size 32 ${BENCH_BACKENDS:+--backends "$BENCH_BACKENDS"}
has b256 && bench cuda-seed-fp32-b256 --dtype fp32 --batch-size 256 ${BENCH_BACKENDS:+--backends "$BENCH_BACKENDS"}
has autocast && bench cuda-seed-autocast-bf16-b32 --precision bf16 --batch-size 32 ${BENCH_BACKENDS:+--backends "$BENCH_BACKENDS"}
has tf32 && bench cuda-seed-tf32-b32 --precision tf32 --batch-size 32 ${BENCH_BACKENDS:+--backends "$BENCH_BACKENDS"}
has tf32-b256 && bench cuda-seed-tf32-b256 --precision tf32 --batch-size 256 ${BENCH_BACKENDS:+--backends "$BENCH_BACKENDS"}
tar czf "$OUT/perf-runs.tar.gz" -C "$OUT" perf-runs && rm -rf "$RUNS"
stamp done
