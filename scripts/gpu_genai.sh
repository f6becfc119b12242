#!/usr/bin/env bash
# The GPU rows of the lean-graphs issue in one device call: SmolLM2 as ONNX Runtime GenAI's builder writes it for
# CUDA (fp16, GroupQueryAttention), compiled by painters to three plans and run on onnxruntime's CUDA EP with the
# cache updated in place and CUDA graphs: correctness against the fp32 reference, then the latency table.
#
# The GPU machine has neither the model source nor a package registry, so everything travels from here, staged
# as pieces of one bundle (at most 64 MiB a call):
#   painters export smollm2-135m --form genai --precision fp16 --target cuda -o /tmp/stage/cuda16/model.onnx
#   python scripts/gpu_genai.py reference /tmp/stage/cuda16 ref.npz   (logits may be stored as float16)
#   /tmp/stage/site: onnxruntime-gpu 1.31.1 and onnx-ir 1.1.0 unzipped (their wheels, for Python 3.12)
#   (cd /tmp/stage && tar cf - site cuda16 | xz -T2 -7) | split -b 56M - piece.   (one folder .gpu/pN per piece)
# then one call per piece, each `mkdir -p /tmp/bundle && cp .gpu/pN/* /tmp/bundle/` with carry [".gpu/pN"] (ref.npz
# rides with one of them),
# back to back (the machine keeps /tmp for 30 s after a call), the last one ending with this script.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}
BUNDLE=${BUNDLE:-/tmp/bundle}
mkdir -p "$OUT" /tmp/x
if [ ! -d /tmp/x/cuda16 ]; then
  cat "$BUNDLE"/piece.* | python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), \
sys.stdout.buffer, 1 << 22)" | tar x -C /tmp/x
fi
export PYTHONPATH=/tmp/x/site:$PWD PAINTERS_CACHE=/tmp/painters-cache PYTHONUNBUFFERED=1
PY=${PY:-python3}
M=/tmp/x/cuda16/model.onnx
SCORES=docs/results/smollm2-135m/analysis/importance.json

$PY -c "import torch, onnxruntime as o; print(torch.cuda.get_device_name(), 'onnxruntime', o.__version__, \
o.get_available_providers())" | tee "$OUT/device.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee -a "$OUT/device.txt" || true

# correctness: prefill vs the fp32 reference, static in-place decoding with CUDA graphs vs the growing cache
$PY scripts/gpu_genai.py check /tmp/x/cuda16 "${REF:-$BUNDLE/ref.npz}" "$OUT" 2>&1 | tee "$OUT/check.txt" \
  || echo "gpu_genai.py check FAILED (see above); timing anyway" | tee -a "$OUT/check.txt"

# latency: decode ms/token and prefill of the three plans, interleaved rounds
$PY -m painters bench latency $M --backend onnxruntime-cuda --plans baseline,skip_4_26,drop_attn_k8 \
  --scores $SCORES --batch 1,8 --prompt 128,512 --gen 64 --warmup 2 --iters 10 --json "$OUT/latency.json" 2>&1 \
  | grep -v "round" | tee "$OUT/latency.md"
