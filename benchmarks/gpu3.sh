#!/usr/bin/env bash
# Third GPU pass (issue 13): fused trials against packed processes, with and without CUDA graphs.
# One script, <= 8 minutes on one GPU; JSON lines to $OUT/bench3.jsonl.  Run it from the repo root:
#   OUT=bench-out bash benchmarks/gpu3.sh
# The device machine has torch but maybe not pydantic (ablate's config library): carry wheels in
# .wheels/ (pip download pydantic --only-binary=:all: -d .wheels, for the machine's Python).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
python3 -c "import pydantic" 2>/dev/null || pip install -q --no-index --find-links .wheels pydantic
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1 | tee "$OUT/gpu.txt"
# IMAGES/EPOCHS only to smoke-test the script on a CPU (IMAGES=256 EPOCHS=2).
B="python3 -m ablate.bench --epochs ${EPOCHS:-3} --images ${IMAGES:-25600} --out $OUT/bench3.jsonl"
# 1. The probe: ResNet-20, fused K members (CUDA graphs = the default on CUDA; eager) vs packed processes.
timeout 150 $B --depths 20 --variants default --fused 1,2,4,8,16 --fused-variants default
timeout 90 $B --depths 20 --skip-tutorial --variants "" --fused 4,8,16 --fused-variants eager
# 2. 8 packed trials with CUDA graphs (never measured) and 4 for the side-by-side ratio.
timeout 100 $B --depths 20 --skip-tutorial --variants "" --packing 4,8 --pack-variant default
# 3. ResNet-56: fused and packed.
timeout 110 $B --depths 56 --skip-tutorial --variants default --fused 4,8 --fused-variants default --packing 4
echo done
