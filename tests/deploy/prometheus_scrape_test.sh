#!/usr/bin/env bash
# Real scrape test: starts statetune-serve and statetune-train on loopback (random-weight model, port
# 0), a real Prometheus scraping both every second with deploy/prometheus/scrape.yml, sends traffic
# through the statetune client, then asks Prometheus' HTTP API (/api/v1/query) for the series the
# deployment's dashboards and alerts rely on (docs/operations.md) and checks their values.
# Usage: prometheus_scrape_test.sh SOURCE_DIR SERVE_BIN TRAIN_BIN CLIENT_BIN ENGINE_BIN TOKENIZER
set -euo pipefail
SRC=$1 SERVE=$2 TRAIN=$3 CLIENT=$4 ENGINE=$5 TOKENIZER=$6
for tool in prometheus curl jq node; do
  command -v $tool >/dev/null || { echo "FAIL: $tool not found (scripts/setup.sh installs it)"; exit 1; }
done
source "$SRC/tests/support/service_harness.sh"
ADMIN_KEY=admin-key-for-test ACME_KEY=acme-key-for-test
tiny_model_and_tenants acme=$ACME_KEY

"$SERVE" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --model "$TMP/model" \
  --tenants-file "$TMP/tenants.json" --adapters-dir "$TMP/adapters" --threads 1 \
  --ready-file "$TMP/serve.ready" >"$TMP/serve.log" 2>&1 &
PIDS+=($!)
wait_for_file "$TMP/serve.ready" statetune-serve "${PIDS[-1]}"
SERVE_PORT=$(jq -r .port "$TMP/serve.ready") SERVE_METRICS=$(jq -r .metrics_port "$TMP/serve.ready")

"$TRAIN" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --model "$TMP/model" \
  --tenants-file "$TMP/tenants.json" --data-dir "$TMP/train" --threads 1 \
  --serving-addr 127.0.0.1:$SERVE_PORT --serving-admin-key $ADMIN_KEY \
  --ready-file "$TMP/train.ready" >"$TMP/train.log" 2>&1 &
PIDS+=($!)
wait_for_file "$TMP/train.ready" statetune-train "${PIDS[-1]}"
TRAIN_PORT=$(jq -r .port "$TMP/train.ready") TRAIN_METRICS=$(jq -r .metrics_port "$TMP/train.ready")

# statetune-serve listens before its model is loaded; gRPC health says when it serves.
for _ in $(seq 1 300); do
  "$CLIENT" health --addr 127.0.0.1:$SERVE_PORT --timeout 2 >/dev/null 2>&1 && break
  sleep 0.1
done
"$CLIENT" health --addr 127.0.0.1:$SERVE_PORT --timeout 2 >/dev/null || die "statetune-serve never became SERVING"
"$CLIENT" health --addr 127.0.0.1:$TRAIN_PORT --timeout 2 >/dev/null || die "statetune-train is not SERVING"

# Prometheus with the deployment's scrape config, targets filled in, scraping every second. Its port
# is picked free by node (port 0 is not reported back by Prometheus).
PROM_PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
sed -e "s/@SERVE_TARGET@/127.0.0.1:$SERVE_METRICS/" -e "s/@TRAIN_TARGET@/127.0.0.1:$TRAIN_METRICS/" \
    -e "s/@SCRAPE_INTERVAL@/1s/" "$SRC/deploy/prometheus/scrape.yml" >"$TMP/prometheus.yml"
grep -q @ "$TMP/prometheus.yml" && die "a placeholder of deploy/prometheus/scrape.yml was left unfilled"
prometheus --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/tsdb" \
  --web.listen-address=127.0.0.1:$PROM_PORT >"$TMP/prometheus.log" 2>&1 &
PIDS+=($!)
PROM=http://127.0.0.1:$PROM_PORT
for _ in $(seq 1 200); do
  curl -sf "$PROM/-/ready" >/dev/null 2>&1 && break
  kill -0 "${PIDS[-1]}" 2>/dev/null || die "prometheus exited"
  sleep 0.1
done
curl -sf "$PROM/-/ready" >/dev/null || die "prometheus not ready within 20 s"

# Traffic: N greedy generations of exactly 4 tokens for tenant acme, one for an unknown adapter
# (NOT_FOUND), and one rejected data set upload to statetune-train (too few examples).
N=5
for i in $(seq 1 $N); do
  "$CLIENT" generate --addr 127.0.0.1:$SERVE_PORT --api-key $ACME_KEY --prompt "hello $i" \
    --max-tokens 4 --temperature 0 --no-eos >>"$TMP/client.log" 2>&1 || die "generate $i failed"
done
if "$CLIENT" generate --addr 127.0.0.1:$SERVE_PORT --api-key $ACME_KEY --prompt hi --adapter nope \
     --max-tokens 1 >>"$TMP/client.log" 2>&1; then die "generate with an unknown adapter succeeded"; fi
echo '{"prompt": "a", "completion": "b"}' >"$TMP/tiny.jsonl"
if "$CLIENT" datasets upload --train-addr 127.0.0.1:$TRAIN_PORT --api-key $ACME_KEY --name tiny \
     --file "$TMP/tiny.jsonl" >>"$TMP/client.log" 2>&1; then die "a 1-example data set was accepted"; fi

query() {  # PromQL -> the first sample's value, or "" when the result is empty
  curl -sf --get "$PROM/api/v1/query" --data-urlencode "query=$1" | jq -r '.data.result[0].value[1] // ""'
}
# The expected values, as PromQL expressions that return a sample only when they hold.
CHECKS=(
  'up{job="statetune-serve"} == 1'
  'up{job="statetune-train"} == 1'
  'statetune_up{job="statetune-serve"} == 1'
  "sum(statetune_requests_total{job=\"statetune-serve\",tenant=\"acme\",status=\"ok\"}) >= $N"
  'sum(statetune_requests_total{job="statetune-serve",tenant="acme",status="not_found"}) >= 1'
  "sum(statetune_generated_tokens_total{tenant=\"acme\"}) >= $((N * 4))"
  "sum(statetune_time_to_first_token_seconds_count{tenant=\"acme\"}) >= $N"
  "sum(statetune_request_duration_seconds_count{tenant=\"acme\"}) >= $N"
  'sum(statetune_batch_size_count) >= 1'
  'statetune_adapter_slots >= 1'
  'sum(statetune_train_dataset_uploads_total{job="statetune-train",result="invalid"}) >= 1'
)
# Scrapes run every second; give the last traffic a few scrapes to arrive.
pending=("${CHECKS[@]}")
for _ in $(seq 1 30); do
  still=()
  for q in "${pending[@]}"; do [[ -n $(query "$q") ]] || still+=("$q"); done
  pending=("${still[@]}")
  ((${#pending[@]} == 0)) && break
  sleep 0.5
done
if ((${#pending[@]})); then
  for q in "${pending[@]}"; do
    base=${q%% [<>=]=*}
    echo "FAIL: $q   (Prometheus has: $(query "$base"))"
  done
  die "${#pending[@]} of ${#CHECKS[@]} checks did not hold"
fi
for q in "${CHECKS[@]}"; do echo "ok: $q"; done
echo "prometheus scrape: ${#CHECKS[@]} checks passed"
