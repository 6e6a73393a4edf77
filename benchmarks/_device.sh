# Sourced by the device scripts (benchmarks/gpu.sh, gpu_perf.sh, gpu_engine.sh, gpu_seed_retrain.sh, ddp_gpu.sh)
# after they set PY: a clock for their stage lines, and quatrain installed (editable, no dependencies) against
# the device's own torch, with any wheels carried in .whl/ installed first. SKIP_INSTALL=1 skips the install
# (local dry runs on CPU).
start=$(date +%s)
stamp() { echo "=== $(( $(date +%s) - start )) s: $*"; }

if [ -z "${SKIP_INSTALL:-}" ]; then
  stamp install
  if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
  fi
  $PY -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>&1 | tail -3
fi
