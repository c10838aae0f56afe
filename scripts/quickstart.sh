#!/usr/bin/env bash
# The README's first command: on a fresh Debian 12 machine, install and build everything, then run the
# main job end to end on the default model:
#   1. start statetune-serve (and statetune-train when it is built) on loopback ports,
#   2. turn a real data set from ../shared/datasets (GLUE RTE) into prompt/completion JSONL,
#   3. train a state_offset adapter on it (through the training service when built, else offline),
#   4. upload it to the serving service and stream a generation with and without it, then ask for the
#      same through the OpenAI-compatible HTTP API (curl /v1/completions with model = the adapter).
# Everything it writes goes under data/quickstart/ (removed at the start of each run).
#
# Usage: scripts/quickstart.sh [--skip-setup]
# Environment: STATETUNE_QUICKSTART_STEPS (training steps, default 40), STATETUNE_MODEL (a model folder
# to use instead of the default), STATETUNE_JOBS (build parallelism).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${STATETUNE_BUILD_DIR:-build}
SHARED=${STATETUNE_SHARED_DIR:-$ROOT/../shared}

if [[ "${1:-}" != --skip-setup ]]; then
  scripts/setup.sh "$BUILD"
fi
ENGINE=$BUILD/server/engine/tools/statetune-engine
SERVE=$BUILD/server/serving/statetune-serve
TRAIN=$BUILD/server/training/statetune-train
CLI=$BUILD/client/statetune
for bin in "$ENGINE" "$SERVE" "$CLI"; do
  [[ -x $bin ]] || { echo "quickstart: $bin was not built" >&2; exit 1; }
done

WORK=$ROOT/data/quickstart
rm -rf "$WORK"; mkdir -p "$WORK"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# --- the base model ------------------------------------------------------------------------------
# The shipped default model, models/default (scripts/pretrain/ made it), unless STATETUNE_MODEL names
# another folder. A checkout without it (e.g. one that dropped the weights) falls back to a small
# randomly initialised model of the same architecture: its text is gibberish, but every step runs.
MODEL=${STATETUNE_MODEL:-}
if [[ -z $MODEL && -f $ROOT/models/default/config.json ]]; then MODEL=$ROOT/models/default; fi
if [[ -z $MODEL ]]; then
  step "models/default is missing: writing a random-weight Mamba (d_model 256, 4 layers)"
  MODEL=$WORK/model
  "$ENGINE" init-model --out "$MODEL" --d-model 256 --n-layer 4 --seed 1 \
    --tokenizer "$SHARED/models/gpt-neox-20b-tokenizer.json"
fi

# --- tenants and keys ----------------------------------------------------------------------------
KEY=quickstart-demo-key
ADMIN_KEY=quickstart-admin-key
cat >"$WORK/tenants.json" <<EOF
{"admin_key_sha256": "$("$CLI" hash-key "$ADMIN_KEY")",
 "tenants": [{"name": "demo", "api_keys_sha256": ["$("$CLI" hash-key "$KEY")"]}]}
EOF
export STATETUNE_API_KEY=$KEY

wait_ready() {  # file pid name
  for _ in $(seq 1 600); do
    [[ -s $1 ]] && return 0
    kill -0 "$2" 2>/dev/null || { echo "quickstart: $3 exited; its log:" >&2; cat "$WORK/$3.log" >&2; exit 1; }
    sleep 0.2
  done
  echo "quickstart: $3 did not become ready" >&2; exit 1
}
port_of() { sed -E 's/.*"port": *([0-9]+).*/\1/' "$1"; }

# --- 1. start the services -----------------------------------------------------------------------
step "starting statetune-serve"
"$SERVE" --model "$MODEL" --adapters-dir "$WORK/adapters" --tenants-file "$WORK/tenants.json" \
  --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --ready-file "$WORK/serve.ready" \
  >"$WORK/statetune-serve.log" 2>&1 &
PIDS+=($!)
wait_ready "$WORK/serve.ready" "${PIDS[-1]}" statetune-serve
export STATETUNE_ADDR=127.0.0.1:$(port_of "$WORK/serve.ready")
HTTP_URL=http://127.0.0.1:$(jq -r .http_port "$WORK/serve.ready")/v1
echo "statetune-serve listening on $STATETUNE_ADDR, HTTP (OpenAI-compatible) on $HTTP_URL (log: $WORK/statetune-serve.log)"
wait_serving() {  # the service answers NOT_SERVING while it loads the model
  for _ in $(seq 1 600); do
    "$CLI" health "$@" >/dev/null 2>&1 && { "$CLI" health "$@"; return 0; }
    sleep 0.2
  done
  echo "quickstart: the service never reported SERVING" >&2; exit 1
}
wait_serving

# --- 2. a real data set as JSONL -----------------------------------------------------------------
step "converting GLUE RTE (train, first 64 examples) to prompt/completion JSONL"
"$ENGINE" convert-dataset --dataset rte --split train --max-examples 64 --out "$WORK/rte.jsonl"
head -n1 "$WORK/rte.jsonl" | jq .

# --- 3. train an adapter -------------------------------------------------------------------------
STEPS=${STATETUNE_QUICKSTART_STEPS:-40}
if [[ -x $TRAIN ]]; then
  step "starting statetune-train (it publishes finished adapters to statetune-serve)"
  "$TRAIN" --model "$MODEL" --data-dir "$WORK/train" --tenants-file "$WORK/tenants.json" \
    --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --ready-file "$WORK/train.ready" \
    --serving-addr "$STATETUNE_ADDR" --serving-admin-key "$ADMIN_KEY" \
    >"$WORK/statetune-train.log" 2>&1 &
  PIDS+=($!)
  wait_ready "$WORK/train.ready" "${PIDS[-1]}" statetune-train
  export STATETUNE_TRAIN_ADDR=127.0.0.1:$(port_of "$WORK/train.ready")
  echo "statetune-train listening on $STATETUNE_TRAIN_ADDR (log: $WORK/statetune-train.log)"
  wait_serving --addr "$STATETUNE_TRAIN_ADDR"
  step "uploading the data set and training a state_offset adapter ($STEPS steps) as a job"
  DATASET=$("$CLI" datasets upload --train-addr "$STATETUNE_TRAIN_ADDR" --name rte --file "$WORK/rte.jsonl")
  echo "$DATASET"
  "$CLI" jobs create --train-addr "$STATETUNE_TRAIN_ADDR" --dataset "${DATASET%% *}" \
    --adapter rte-demo --methods state_offset --lr 2e-3 --max-steps "$STEPS" --max-length 256 --watch
else
  step "training a state_offset adapter offline (statetune-engine train, $STEPS steps)"
  "$ENGINE" train --model "$MODEL" --data "$WORK/rte.jsonl" --methods state_offset \
    --max-steps "$STEPS" --batch-size 4 --max-length 256 --lr 2e-3 --log-every 10 \
    --out "$WORK/rte-demo.safetensors" --name rte-demo
  step "uploading the adapter to statetune-serve"
  "$CLI" adapters upload --name rte-demo --file "$WORK/rte-demo.safetensors"
fi
"$CLI" adapters list

# --- 4. generate with and without it -------------------------------------------------------------
"$ENGINE" convert-dataset --dataset rte --split validation --max-examples 1 --out "$WORK/rte-val.jsonl"
PROMPT="$(jq -r .prompt "$WORK/rte-val.jsonl")
###
"
printf '%s' "$PROMPT"; echo "(expected: $(jq -r .completion "$WORK/rte-val.jsonl"))"
# Greedy, then sampled with one fixed seed: with the same seed and prompt, any difference between the
# two runs is the adapter's (a random-weight base often answers every greedy step with the same token).
for mode in "--temperature 0" "--temperature 1 --top-k 50 --seed 7"; do
  step "base model (no adapter), $mode"
  "$CLI" generate --prompt "$PROMPT" --max-tokens 12 $mode
  step "with adapter rte-demo, $mode"
  "$CLI" generate --prompt "$PROMPT" --max-tokens 12 $mode --adapter rte-demo
done
step "the same greedy request through the OpenAI-compatible HTTP API (model = the adapter's name)"
echo "curl $HTTP_URL/completions -H 'Authorization: Bearer \$KEY' -d '{\"model\": \"rte-demo\", ...}'"
curl -sS "$HTTP_URL/completions" -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
  -d "$(jq -n --arg prompt "$PROMPT" '{model: "rte-demo", prompt: $prompt, max_tokens: 12, temperature: 0}')" | jq .
step "done: services stop now; logs and files are in $WORK"
