#!/usr/bin/env bash
# Second GPU pass: the new defaults (fp32, channels_last, CUDA graphs) alone and packed.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
timeout 170 python3 -m ablate.bench --depths 20 --epochs 4 --images 25600 --variants default --packing 4,8 --out "$OUT/bench2.jsonl"
timeout 140 python3 -m ablate.bench --depths 56 --epochs 3 --images 25600 --variants default --packing 4 --out "$OUT/bench2.jsonl"
echo done
