#!/usr/bin/env bash
# The main job on the embedded default model (SmolLM2-135M): export it, compile a layer plan,
# and compare the deployed graphs' latency and accuracy side by side. Run through `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-out/smollm2}
PLAN=${PLAN:-parallel_11_19}
LIMIT=${LIMIT:-100}

[ -f "$OUT/model.onnx" ] || "$BIN/painters" export smollm2-135m -o "$OUT/model.onnx"
"$BIN/painters-compile" --plan "$PLAN" "$OUT/model.onnx"
"$BIN/painters" inspect "$OUT/model.$PLAN.onnx"

echo "== latency (onnxruntime, CPU) beside the papers' eager Hugging Face path (hf/ rows), interleaved in one run;"
echo "   ratios are to our baseline measured in the same rounds"
"$BIN/painters" bench latency "$OUT/model.onnx" --plans "baseline,skip_13_17,$PLAN" --anchor smollm2-135m \
  --prompt 128 --gen 32 --iters 3

echo "== accuracy (first $LIMIT items) on the deployed graphs"
for model in "$OUT/model.onnx" "$OUT/model.$PLAN.onnx"; do
  "$BIN/painters" bench accuracy "$model" --tasks arc_easy,lambada --limit "$LIMIT"
done
