#!/usr/bin/env bash
# Which CUDA tests, run first in the same process, make the graphed padded-batch train-step test fail
# (issue 13's note; one device call of about 90 s, kind nvidia-h200, carry [".whl"]). Output on stdout.
set -u
PY=python3
. benchmarks/_device.sh
T=tests/core/test_trainstep.py::test_graphed_train_step_with_a_padded_last_batch_equals_the_eager_step
stamp "deferred-kv then trainstep"
timeout 120 $PY -m pytest -q -p no:cacheprovider tests/plugins/test_deferred_kv.py "$T" 2>&1 | tail -3
stamp "triton-step (cuda) then trainstep"
timeout 120 $PY -m pytest -q -p no:cacheprovider "tests/plugins/test_triton_step.py::test_kernels_conform_on_cuda" "$T" 2>&1 | tail -3
stamp "output fold then trainstep"
timeout 100 $PY -m pytest -q -p no:cacheprovider tests/plugins/test_output_fold.py "$T" 2>&1 | tail -3
stamp done
