#!/usr/bin/env bash
# Trains one adapter per (task, method) on the default base (or $STATETUNE_MODEL) with the CLI and
# scores each, and the base model without an adapter, on the task's validation split; prints the
# markdown table that docs/benchmarks.md records ("Adapter methods on the default base").
#
# Usage: scripts/experiments/compare_methods.sh [OUT_DIR]      (default /tmp/statetune-methods)
# Environment (defaults in brackets):
#   TASKS [rte sst2 samsum dart]   METHODS [output_offset state_offset initial_state]
#   TRAIN_EXAMPLES [2000]  EPOCHS [2]  BATCH [8]  THREADS [nproc]
#   EVAL_EXAMPLES [200]: the first N examples of the validation split are scored; 0 = the whole split
#     (docs/benchmarks.md's "all 818 examples" row of SAMSum)
#   SEED [0]: the training seed (data shuffle and which training examples are held out for
#     validation); docs/benchmarks.md's "seed 1" column is SEED=1 in its own OUT_DIR
#   LR_<METHOD> (e.g. LR_STATE_OFFSET) to override a method's learning rate [the method doc's defaults]
#   STATETUNE_BUILD_DIR [build]
# Everything it ran stays in OUT_DIR: per (task, method) the training output (.train.txt), the adapter,
# the evaluation's output and JSON (.evalN.txt, .evalN.json for EVAL_EXAMPLES=N: every metric and
# prediction), and
# provenance.txt (the commit, the binary and these settings), i.e. the raw data behind the table.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-/tmp/statetune-methods}
ENGINE=$ROOT/${STATETUNE_BUILD_DIR:-build}/server/engine/tools/statetune-engine
TASKS=${TASKS:-rte sst2 samsum dart}
METHODS=${METHODS:-output_offset state_offset initial_state}
TRAIN_EXAMPLES=${TRAIN_EXAMPLES:-2000}
EPOCHS=${EPOCHS:-2}
EVAL_EXAMPLES=${EVAL_EXAMPLES:-200}
SEED=${SEED:-0}
EVAL_TAG=eval$EVAL_EXAMPLES  # evaluations of other sizes of one adapter sit side by side
BATCH=${BATCH:-8}
THREADS=${THREADS:-$(nproc)}
MODEL_ARGS=()
[[ -n ${STATETUNE_MODEL:-} ]] && MODEL_ARGS=(--model "$STATETUNE_MODEL")
mkdir -p "$OUT"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "engine: $ENGINE"
  echo "model: ${STATETUNE_MODEL:-models/default}"
  echo "TASKS=$TASKS METHODS=$METHODS TRAIN_EXAMPLES=$TRAIN_EXAMPLES EPOCHS=$EPOCHS EVAL_EXAMPLES=$EVAL_EXAMPLES"
  echo "BATCH=$BATCH THREADS=$THREADS SEED=$SEED LR_OUTPUT_OFFSET=${LR_OUTPUT_OFFSET:-} LR_STATE_OFFSET=${LR_STATE_OFFSET:-} LR_INITIAL_STATE=${LR_INITIAL_STATE:-}"
} >> "$OUT/provenance.txt"

# The metric the table shows per task (eval prints every metric; this picks the headline one).
headline() {
  case $1 in
    rte|sst2) echo accuracy ;;
    samsum) echo rougeL ;;
    dart) echo bleu ;;
    *) echo accuracy ;;
  esac
}

evaluate() {  # task, name, [adapter]
  local task=$1 name=$2 adapter=${3:-}
  local extra=()
  [[ -n $adapter ]] && extra=(--adapter "$adapter")
  "$ENGINE" eval "${MODEL_ARGS[@]}" --dataset "$task" --split validation --max-examples "$EVAL_EXAMPLES" \
    --threads "$THREADS" --json "$OUT/$task.$name.$EVAL_TAG.json" "${extra[@]}" > "$OUT/$task.$name.$EVAL_TAG.txt"
}

for task in $TASKS; do
  [[ -f $OUT/$task.base.$EVAL_TAG.json ]] || evaluate "$task" base
  for method in $METHODS; do
    adapter=$OUT/$task.$method.safetensors
    if [[ ! -f $adapter ]]; then
      lr_var=LR_${method^^}
      lr_args=()
      [[ -n ${!lr_var:-} ]] && lr_args=(--lr "${!lr_var}")
      "$ENGINE" train "${MODEL_ARGS[@]}" --dataset "$task" --methods "$method" "${lr_args[@]}" \
        --max-examples "$TRAIN_EXAMPLES" --epochs "$EPOCHS" --batch-size "$BATCH" --max-length 512 \
        --val-fraction 0.05 --max-val-examples 64 --eval-every 100 --seed "$SEED" --log-every 50 \
        --threads "$THREADS" --out "$adapter" > "$OUT/$task.$method.train.txt"
    fi
    [[ -f $OUT/$task.$method.$EVAL_TAG.json ]] || evaluate "$task" "$method" "$adapter"
  done
done

# The table: metric per method, then training seconds, tokens/s and trainable parameters.
printf '| task | metric | base |'
for m in $METHODS; do printf ' %s |' "$m"; done
printf ' training s (%s) | tokens/s (%s) | trainable parameters (%s) |\n' "${METHODS// /, }" "${METHODS// /, }" "${METHODS// /, }"
printf '|---|---|---|'
for m in $METHODS; do printf -- '---|'; done
printf -- '---|---|---|\n'
for task in $TASKS; do
  metric=$(headline "$task")
  printf '| %s | %s | %.4f |' "$task" "$metric" "$(jq -r ".metrics.$metric" "$OUT/$task.base.$EVAL_TAG.json")"
  secs=() tps=() params=()
  for m in $METHODS; do
    printf ' %.4f |' "$(jq -r ".metrics.$metric" "$OUT/$task.$m.$EVAL_TAG.json")"
    done_line=$(grep -E '^(done|stopped) ' "$OUT/$task.$m.train.txt" | tail -n1)
    secs+=("$(sed -E 's/.* ([0-9.]+) s, .*/\1/' <<<"$done_line")")
    tps+=("$(sed -E 's/.* ([0-9.]+) tokens\/s.*/\1/' <<<"$done_line")")
    params+=("$(sed -nE 's/.*\(([0-9]+) trainable parameters\).*/\1/p' "$OUT/$task.$m.train.txt" | head -n1)")
  done
  (IFS=/; printf ' %s | %s | %s |\n' "${secs[*]}" "${tps[*]}" "${params[*]}")
done
