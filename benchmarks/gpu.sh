#!/usr/bin/env bash
# The GPU benchmark as one prepared script (the device machine has torch, no Ray/W&B).
# Usage on a GPU machine:  OUT=/some/dir bash benchmarks/gpu.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$OUT/gpu.txt"
# ResNet-20 at the recipe's batch 128: tutorial loop vs trainer variants, then packing.
timeout 300 python3 -m ablate.bench --depths 20 --epochs 4 --images 25600 \
  --variants default,fp32,fp32cl,bf16cl,cudagraphs,fp32cl_cudagraphs --packing 1,2,4,8 --out "$OUT/bench.jsonl"
# ResNet-56: tutorial vs trainer, and packing.
timeout 200 python3 -m ablate.bench --depths 56 --epochs 3 --images 25600 \
  --variants default,fp32 --packing 1,4 --out "$OUT/bench.jsonl"
echo done
