#!/usr/bin/env bash
# Trains one adapter per (task, method) on the default base (or $STATETUNE_MODEL) with the CLI and
# scores each, and the base model without an adapter, on the task's validation split; prints the
# markdown table that docs/benchmarks.md records ("Adapter methods on the default base").
#
# Usage: scripts/experiments/compare_methods.sh [OUT_DIR]      (default /tmp/statetune-methods)
# Environment (defaults in brackets):
#   TASKS [rte sst2 samsum dart]   METHODS [output_offset state_offset initial_state]
#   TRAIN_EXAMPLES [2000]  EPOCHS [2]  EVAL_EXAMPLES [200]  BATCH [8]  THREADS [nproc]
#   LR_<METHOD> (e.g. LR_STATE_OFFSET) to override a method's learning rate [the method doc's defaults]
#   STATETUNE_BUILD_DIR [build]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-/tmp/statetune-methods}
ENGINE=$ROOT/${STATETUNE_BUILD_DIR:-build}/server/engine/tools/statetune-engine
TASKS=${TASKS:-rte sst2 samsum dart}
METHODS=${METHODS:-output_offset state_offset initial_state}
TRAIN_EXAMPLES=${TRAIN_EXAMPLES:-2000}
EPOCHS=${EPOCHS:-2}
EVAL_EXAMPLES=${EVAL_EXAMPLES:-200}
BATCH=${BATCH:-8}
THREADS=${THREADS:-$(nproc)}
MODEL_ARGS=()
[[ -n ${STATETUNE_MODEL:-} ]] && MODEL_ARGS=(--model "$STATETUNE_MODEL")
mkdir -p "$OUT"

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
    --threads "$THREADS" --json "$OUT/$task.$name.eval.json" "${extra[@]}" > "$OUT/$task.$name.eval.txt"
}

for task in $TASKS; do
  [[ -f $OUT/$task.base.eval.json ]] || evaluate "$task" base
  for method in $METHODS; do
    adapter=$OUT/$task.$method.safetensors
    if [[ ! -f $adapter ]]; then
      lr_var=LR_${method^^}
      lr_args=()
      [[ -n ${!lr_var:-} ]] && lr_args=(--lr "${!lr_var}")
      "$ENGINE" train "${MODEL_ARGS[@]}" --dataset "$task" --methods "$method" "${lr_args[@]}" \
        --max-examples "$TRAIN_EXAMPLES" --epochs "$EPOCHS" --batch-size "$BATCH" --max-length 512 \
        --val-fraction 0.05 --max-val-examples 64 --eval-every 100 --seed 0 --log-every 50 \
        --threads "$THREADS" --out "$adapter" > "$OUT/$task.$method.train.txt"
    fi
    [[ -f $OUT/$task.$method.eval.json ]] || evaluate "$task" "$method" "$adapter"
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
  printf '| %s | %s | %.4f |' "$task" "$metric" "$(jq -r ".metrics.$metric" "$OUT/$task.base.eval.json")"
  secs=() tps=() params=()
  for m in $METHODS; do
    printf ' %.4f |' "$(jq -r ".metrics.$metric" "$OUT/$task.$m.eval.json")"
    done_line=$(grep -E '^(done|stopped) ' "$OUT/$task.$m.train.txt" | tail -n1)
    secs+=("$(sed -E 's/.* ([0-9.]+) s, .*/\1/' <<<"$done_line")")
    tps+=("$(sed -E 's/.* ([0-9.]+) tokens\/s.*/\1/' <<<"$done_line")")
    params+=("$(sed -nE 's/.*\(([0-9]+) trainable parameters\).*/\1/p' "$OUT/$task.$m.train.txt" | head -n1)")
  done
  (IFS=/; printf ' %s | %s | %s |\n' "${secs[*]}" "${tps[*]}" "${params[*]}")
done
