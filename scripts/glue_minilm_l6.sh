#!/usr/bin/env bash
# The Painters GLUE protocol on all-MiniLM-L6-v2, on CPU: fine-tune the whole pretrained encoder plus a task head
# on each task's full train split (SST-2: its first $SST2_LIMIT examples), export the fine-tuned checkpoint, compile
# the middle-layer plans on that graph, score every graph on the full dev split, and merge the results into
# docs/results/glue-minilm-l6.json, from which `painters bench glue-table --page` writes docs/results/glue-minilm-l6.md.
# Resumable: a checkpoint, graph or result that exists is kept, so rerunning after an interruption continues.
# Run through `make glue` (or `PAINTERS="python -m painters" bash scripts/glue_minilm_l6.sh`); checkpoints and
# graphs stay in $OUT. The wall time of each fine-tuning run is recorded in its finetune.json and on the page.
set -euo pipefail
cd "$(dirname "$0")/.."
PAINTERS=${PAINTERS:-.venv/bin/python -m painters}
OUT=${OUT:-out/glue-minilm-l6}
SEEDS=${SEEDS:-0 1}
TASKS=${TASKS:-cola mrpc stsb sst2 rte wnli}
# MiniLM has 6 blocks: the paper keeps the first and last, so the middle is blocks 1..4 (1_5); skip_2_4 is the
# middle two. repeat_1_5 runs block 3 four times (the paper's "middle repeat").
PLANS=${PLANS:-baseline skip_2_4 skip_1_5 repeat_1_5 reverse_1_5 parallel_1_5 parallel_1_5_x2}
EPOCHS=${EPOCHS:-3}
LR=${LR:-5e-5}
BATCH=${BATCH:-32}
MAX_LEN=${MAX_LEN:-128}
SST2_LIMIT=${SST2_LIMIT:-4000}
THREADS=${THREADS:-2}
RESULTS=${RESULTS:-docs/results/glue-minilm-l6.json}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # threads sleep rather than spin on a shared machine

for seed in $SEEDS; do
  for task in $TASKS; do
    dir="$OUT/s$seed/$task"
    limit=()
    [ "$task" = sst2 ] && limit=(--limit "$SST2_LIMIT")
    if [ ! -f "$dir/ckpt/finetune.json" ]; then
      echo "== $(date -u +%T) finetune $task seed $seed"
      $PAINTERS -v finetune glue minilm-l6 --task "$task" -o "$dir/ckpt" --epochs "$EPOCHS" --lr "$LR" \
        --batch-size "$BATCH" --max-length "$MAX_LEN" --seed "$seed" --group-by-length --threads "$THREADS" \
        "${limit[@]}"
    fi
    [ -f "$dir/graph/model.onnx" ] || $PAINTERS export "$dir/ckpt" -o "$dir/graph/model.onnx"
    for plan in $PLANS; do
      result="$OUT/results/$task-s$seed-$plan.json"
      [ -f "$result" ] && continue
      graph="$dir/graph/model.onnx"
      if [ "$plan" != baseline ]; then
        graph="$dir/graph/model.$plan.onnx"
        [ -f "$graph" ] || $PAINTERS compile --plan "$plan" "$dir/graph/model.onnx"
      fi
      $PAINTERS bench glue "$graph" --task "$task" --threads "$THREADS" --json "$result"
    done
  done
done

# One file for the repository: every result, with the fine-tuning records (seed, recipe, wall time) beside them.
$PAINTERS bench glue-table --json -o "$RESULTS" "$OUT"/s*/*/ckpt/finetune.json "$OUT"/results/*.json
$PAINTERS bench glue-table --page -o "${RESULTS%.json}.md" "$RESULTS"
