#!/usr/bin/env bash
# The OpenAI-compatible HTTP API end to end: starts statetune-serve and statetune-train on loopback
# (tiny random-weight model, port 0, --http-listen), then
#   1. the official `openai` npm SDK (tools/openai-check, pinned by its lock file) uploads a chat-format
#      file, creates a fine-tuning job and polls it to `succeeded`, then lists models and runs
#      completions and chat completions with model = fine_tuned_model, streaming and not;
#   2. curl checks the SSE framing and the error bodies of hostile requests (status, OpenAI's shape),
#      a client that disconnects mid-stream (its request is cancelled in the scheduler), and that the
#      server still serves afterwards.
# Usage: openai_api_test.sh SOURCE_DIR SERVE_BIN TRAIN_BIN CLIENT_BIN ENGINE_BIN TOKENIZER
set -euo pipefail
SRC=$1 SERVE=$2 TRAIN=$3 CLIENT=$4 ENGINE=$5 TOKENIZER=$6
for tool in curl jq node; do
  command -v $tool >/dev/null || { echo "FAIL: $tool not found (scripts/setup.sh installs it)"; exit 1; }
done
[[ -d $SRC/tools/openai-check/node_modules/openai ]] ||
  { echo "FAIL: the openai SDK is not installed (scripts/setup.sh: npm ci --prefix tools/openai-check)"; exit 1; }
source "$SRC/tests/support/service_harness.sh"
ADMIN_KEY=admin-key-for-test ACME_KEY=acme-key-for-test OTHER_KEY=other-key-for-test
tiny_model_and_tenants acme=$ACME_KEY other=$OTHER_KEY

"$SERVE" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --http-metrics --model "$TMP/model" \
  --model-id tiny-base --tenants-file "$TMP/tenants.json" --adapters-dir "$TMP/adapters" --threads 1 \
  --max-request-bytes 64KiB --max-new-tokens 100000 --drain-seconds 1 \
  --ready-file "$TMP/serve.ready" >"$TMP/serve.log" 2>&1 &
PIDS+=($!)
wait_for_file "$TMP/serve.ready" statetune-serve "${PIDS[-1]}"
SERVE_PORT=$(jq -r .port "$TMP/serve.ready") SERVE_METRICS=$(jq -r .metrics_port "$TMP/serve.ready")
SERVE_HTTP=$(jq -r .http_port "$TMP/serve.ready")
[[ $SERVE_HTTP =~ ^[0-9]+$ && $SERVE_HTTP != 0 ]] || die "statetune-serve's ready file has no http_port"

"$TRAIN" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --model "$TMP/model" \
  --model-id tiny-base --tenants-file "$TMP/tenants.json" --data-dir "$TMP/train" --threads 1 \
  --serving-addr 127.0.0.1:$SERVE_PORT --serving-admin-key $ADMIN_KEY \
  --min-examples 4 --max-example-tokens 64 --checkpoint-every 2 --max-dataset-bytes 64KiB \
  --ready-file "$TMP/train.ready" >"$TMP/train.log" 2>&1 &
PIDS+=($!)
wait_for_file "$TMP/train.ready" statetune-train "${PIDS[-1]}"
TRAIN_HTTP=$(jq -r .http_port "$TMP/train.ready") TRAIN_METRICS=$(jq -r .metrics_port "$TMP/train.ready")

# statetune-serve listens before its model is loaded; gRPC health says when it serves.
for _ in $(seq 1 300); do
  "$CLIENT" health --addr 127.0.0.1:$SERVE_PORT --timeout 2 >/dev/null 2>&1 && break
  sleep 0.1
done
"$CLIENT" health --addr 127.0.0.1:$SERVE_PORT --timeout 2 >/dev/null || die "statetune-serve never became SERVING"

export TRAIN_URL=http://127.0.0.1:$TRAIN_HTTP/v1 SERVE_URL=http://127.0.0.1:$SERVE_HTTP/v1
export API_KEY=$ACME_KEY OTHER_KEY BASE_MODEL=tiny-base TENANT=acme
CHECK="$SRC/tools/openai-check/openai_api_check.mjs"

# --- 1. the official SDK ----------------------------------------------------------------------------
node "$CHECK" train >"$TMP/sdk-train.out" 2>"$TMP/sdk-train.log" || die "SDK fine-tuning: $(cat "$TMP/sdk-train.log")"
export MODEL=$(jq -r .fine_tuned_model "$TMP/sdk-train.out")
echo "fine_tuned_model: $MODEL"
node "$CHECK" serve >"$TMP/sdk-serve.out" 2>"$TMP/sdk-serve.log" || die "SDK serving: $(cat "$TMP/sdk-serve.log")"
echo "SDK: $(cat "$TMP/sdk-serve.out")"

# --- 2. curl: SSE framing, error bodies, hostile requests -------------------------------------------
AUTH=(-H "Authorization: Bearer $ACME_KEY")
KEY=$ACME_KEY  # post()'s key; `KEY=... expect_error ...` sends another
post() {  # url-path body [extra curl args]: prints the status, the body goes to $TMP/body
  local path=$1 body=$2; shift 2
  curl -s -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' "$@" \
    --data-binary "$body" "http://127.0.0.1:$SERVE_HTTP$path"
}
expect_error() {  # status path body what [extra curl args]
  local want=$1 path=$2 body=$3 what=$4; shift 4
  local got
  got=$(post "$path" "$body" "$@") || die "$what: curl failed"
  [[ $got == "$want" ]] || die "$what: HTTP $got, expected $want: $(head -c 300 "$TMP/body")"
  jq -e '(.error | type == "object") and (.error.message | type == "string") and (.error.type | type == "string")
         and (.error | has("param")) and (.error | has("code"))' "$TMP/body" >/dev/null ||
    die "$what: not OpenAI's error shape: $(head -c 300 "$TMP/body")"
  (( $(stat -c %s "$TMP/body") < 4096 )) || die "$what: the error body is $(stat -c %s "$TMP/body") bytes"
}

# SSE: every event is one `data: ` line then a blank line; JSON chunks, then `data: [DONE]` last.
curl -s -N -D "$TMP/sse.headers" "${AUTH[@]}" -H 'Content-Type: application/json' \
  -d "{\"model\": \"$MODEL\", \"prompt\": \"hello\", \"max_tokens\": 4, \"temperature\": 0, \"stream\": true,
       \"stream_options\": {\"include_usage\": true}}" "http://127.0.0.1:$SERVE_HTTP/v1/completions" >"$TMP/sse"
grep -qi '^content-type: text/event-stream' "$TMP/sse.headers" || die "SSE: no text/event-stream content type"
awk 'NR % 2 == 1 && !/^data: / {exit 1} NR % 2 == 0 && $0 != "" {exit 1}' "$TMP/sse" || die "SSE framing: $(cat "$TMP/sse")"
[[ $(grep -c '^data: ' "$TMP/sse") -ge 3 ]] || die "SSE: too few events: $(cat "$TMP/sse")"
[[ $(grep '^data: ' "$TMP/sse" | tail -n 1) == "data: [DONE]" ]] || die "SSE: [DONE] is not last"
grep '^data: ' "$TMP/sse" | sed '$d' | sed 's/^data: //' | jq -e '.object == "text_completion"' >/dev/null ||
  die "SSE: a chunk is not a text_completion"
grep '^data: ' "$TMP/sse" | sed '$d' | tail -n 1 | sed 's/^data: //' |
  jq -e '.usage.completion_tokens == 4 and .choices == []' >/dev/null || die "SSE: no usage chunk last"

C=/v1/completions
expect_error 400 $C '{"model": "'$MODEL'", "prompt": "x",' "malformed JSON"
expect_error 400 $C '[1, 2]' "a body that is not an object"
expect_error 400 $C '{"model": "'$MODEL'", "prompt": "x", "temperature": NaN}' "temperature NaN (not JSON)"
expect_error 400 $C '{"model": "'$MODEL'", "prompt": "x", "temperature": 1e999}' "temperature 1e999"
expect_error 400 $C '{"model": "'$MODEL'", "prompt": "x", "temperature": "hot"}' "temperature of the wrong type"
expect_error 400 $C '{"model": "'$MODEL'", "prompt": "x", "max_tokens": "5"}' "max_tokens of the wrong type"
expect_error 400 $C '{"model": "'$MODEL'", "prompt": "x", "max_tokens": 1.5}' "max_tokens 1.5"
expect_error 400 $C '{"model": "'$MODEL'", "prompt": "x", "max_tokens": -3}' "max_tokens -3"
expect_error 400 $C '{"model": "'$MODEL'", "prompt": "x", "top_p": 1.5}' "top_p 1.5"
expect_error 400 $C '{"model": "'$MODEL'", "prompt": "x", "temperature": -0.5}' "temperature -0.5"
expect_error 400 $C '{"model": "'$MODEL'", "prompt": 7}' "prompt of the wrong type"
expect_error 400 $C '{"model": "'$MODEL'", "prompt": ["a", "b"], "n": 9}' "18 choices (at most 16)"
expect_error 400 $C '{"model": "'$MODEL'", "prompt": "a", "n": 0}' "n 0"
expect_error 400 $C '{"model": "'$MODEL'", "prompt": ["a", 7]}' "a list of prompts with a number in it"
expect_error 400 $C "$(printf '{"model": "%s", "prompt": [%s"a"]}' "$MODEL" "$(printf '"p",%.0s' $(seq 1 16))")" "17 prompts"
expect_error 400 $C '{"model": "'$MODEL'", "prompt": [5, -1]}' "a negative token id"
expect_error 400 $C '{"model": "'$MODEL'", "prompt": [5, 99999999]}' "a token id outside the vocabulary"
expect_error 400 $C '{"model": "'$MODEL'", "prompt": []}' "an empty prompt"
expect_error 400 $C '{"model": "'$MODEL'", "prompt": "x", "frobnicate": 1}' "an unknown field"
expect_error 400 $C '{"model": "'$MODEL'", "prompt": "x", "max_tokens": 200000}' "max_tokens above --max-new-tokens"
expect_error 400 $C "$(printf '{"model": "%s", "prompt": "x", "stop": [%s"."]}' "$MODEL" "$(printf '"s",%.0s' $(seq 1 20))")" \
  "too many stop strings"
expect_error 400 $C "$(printf '%*s' 2000 '' | tr ' ' '[')" "deeply nested JSON"
expect_error 400 /v1/chat/completions '{"model": "'$MODEL'", "messages": []}' "empty messages"
expect_error 400 /v1/chat/completions '{"model": "'$MODEL'", "messages": [{"role": "wizard", "content": "x"}]}' "unknown role"
expect_error 404 $C '{"model": "no-such-adapter", "prompt": "x"}' "an unknown model"
expect_error 404 $C '{"model": "'$MODEL'@999", "prompt": "x"}' "an unknown version"
KEY=$OTHER_KEY expect_error 404 $C '{"model": "'$MODEL'", "prompt": "x"}' "another tenant's adapter"
KEY=$OTHER_KEY expect_error 404 $C '{"model": "'$MODEL'@1", "prompt": "x"}' "another tenant's adapter version"
KEY=nope expect_error 401 $C '{"model": "'$MODEL'", "prompt": "x"}' "a wrong key"
KEY=$ADMIN_KEY expect_error 403 $C '{"model": "'$MODEL'", "prompt": "x"}' "the admin key"
expect_error 415 $C '{"model": "'$MODEL'", "prompt": "x"}' "a compressed body" -H 'Content-Encoding: gzip'
head -c $((2 << 20)) /dev/zero | tr '\0' 'a' >"$TMP/huge"
expect_error 413 $C "@$TMP/huge" "a 2 MiB body (limit 64 KiB)"
expect_error 411 $C "@$TMP/huge" "a 2 MiB chunked body (no length: refused)" -H 'Transfer-Encoding: chunked'
# A declared 100 GB body is refused at once, not read and discarded until the read timeout.
expect_error 413 $C 'x' "a 100 GB Content-Length" -H 'Content-Length: 100000000000' --max-time 5
expect_error 404 /v1/nowhere '{}' "an unknown route"
status=$(curl -s -o "$TMP/body" -w '%{http_code}' "http://127.0.0.1:$SERVE_HTTP/v1/models")
[[ $status == 401 ]] || die "no key: HTTP $status"

# Mixed traffic, then a disconnect mid-stream: an HTTP stream of 90,000 tokens on the fine-tuned adapter
# runs while a gRPC Generate on the base model is served -- both in the same decode steps (the batch-size
# histogram sees steps of 2 rows) -- then the HTTP client goes away: its request must be cancelled in
# the scheduler (its row freed) instead of running to the end.
metric() {  # exact series name with labels [metrics port] -> value (0 when absent)
  curl -sf "http://127.0.0.1:${2:-$SERVE_METRICS}/metrics" | awk -v s="$1 " 'index($0, s) == 1 {print $NF; found=1} END {if (!found) print 0}'
}
multi_row_steps() { echo $(( $(metric statetune_batch_size_count) - $(metric 'statetune_batch_size_bucket{le="1"}') )); }
cancelled_before=$(metric 'statetune_requests_total{api="http",status="cancelled",tenant="acme"}')
multi_before=$(multi_row_steps)
curl -s -N "${AUTH[@]}" -H 'Content-Type: application/json' \
  -d "{\"model\": \"$MODEL\", \"prompt\": \"hello\", \"max_tokens\": 90000, \"ignore_eos\": true, \"stream\": true}" \
  "http://127.0.0.1:$SERVE_HTTP/v1/completions" >"$TMP/long.sse" &
LONG=$!
PIDS+=($LONG)
for _ in $(seq 1 200); do grep -q '^data: ' "$TMP/long.sse" && break; sleep 0.05; done
grep -q '^data: ' "$TMP/long.sse" || die "the long stream sent nothing"
"$CLIENT" generate --addr 127.0.0.1:$SERVE_PORT --api-key $ACME_KEY --prompt "hello" --max-tokens 64 \
  --temperature 0 --no-eos >"$TMP/grpc.log" 2>&1 || die "a gRPC Generate beside the HTTP stream failed"
single=$(metric 'statetune_batch_size_bucket{le="1"}')
(( single > 0 )) || die "no single-row decode steps counted: is the batch-size histogram there?"
echo "decode steps with more than one row: $multi_before before, $(multi_row_steps) after (single-row: $single)"
(( $(multi_row_steps) > multi_before )) ||
  die "the gRPC and HTTP requests never shared a decode step (running now: $(metric statetune_requests_running); the HTTP stream: $(tail -c 300 "$TMP/long.sse"))"
# --http-metrics: the endpoint picker of the Gateway API Inference Extension scrapes the port it routes
# to; there the stream's adapter shows as running (statetune_lora_requests_info, docs/operations.md).
# statetune-train runs without the flag: no /metrics on its API port.
lora_info() { curl -sf "http://127.0.0.1:$SERVE_HTTP/metrics" | grep '^statetune_lora_requests_info{' || true; }
for _ in $(seq 1 100); do [[ $(lora_info) == *"running_lora_adapters=\"$MODEL\""* ]] && break; sleep 0.1; done
[[ $(lora_info) == *"running_lora_adapters=\"$MODEL\""* ]] ||
  die "the HTTP port's /metrics does not show $MODEL running: $(lora_info)"
[[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$TRAIN_HTTP/metrics") == 404 ]] ||
  die "statetune-train serves /metrics on its API port without --http-metrics"
kill $LONG 2>/dev/null || true
wait $LONG 2>/dev/null || true
for _ in $(seq 1 200); do
  [[ $(metric statetune_requests_running) == 0 &&
     $(metric 'statetune_requests_total{api="http",status="cancelled",tenant="acme"}') != "$cancelled_before" ]] && break
  sleep 0.1
done
[[ $(metric statetune_requests_running) == 0 ]] || die "the dropped stream still runs"
[[ $(metric 'statetune_requests_total{api="http",status="cancelled",tenant="acme"}') != "$cancelled_before" ]] ||
  die "the dropped stream was not counted as cancelled"
# The same with three choices: dropping the stream frees all three rows.
curl -s -N "${AUTH[@]}" -H 'Content-Type: application/json' \
  -d "{\"model\": \"$MODEL\", \"prompt\": \"hello\", \"n\": 3, \"max_tokens\": 90000, \"ignore_eos\": true, \"stream\": true}" \
  "http://127.0.0.1:$SERVE_HTTP/v1/completions" >"$TMP/multi.sse" &
LONG=$!
PIDS+=($LONG)
for _ in $(seq 1 100); do [[ $(metric statetune_requests_running) == 3 ]] && break; sleep 0.1; done
[[ $(metric statetune_requests_running) == 3 ]] || die "three choices are not three running rows: $(metric statetune_requests_running)"
kill $LONG 2>/dev/null || true
wait $LONG 2>/dev/null || true
for _ in $(seq 1 200); do [[ $(metric statetune_requests_running) == 0 ]] && break; sleep 0.1; done
[[ $(metric statetune_requests_running) == 0 ]] || die "a dropped stream of three choices still runs"

# Token-id prompts (as OpenAI allows) and the ignore_eos extension: exactly max_tokens tokens.
got=$(post $C '{"model": "'$MODEL'", "prompt": [510, 3158, 8516], "max_tokens": 6, "ignore_eos": true, "temperature": 0}')
[[ $got == 200 ]] && jq -e '.usage.prompt_tokens == 3 and .usage.completion_tokens == 6' "$TMP/body" >/dev/null ||
  die "a token-id prompt: HTTP $got $(cat "$TMP/body")"

# Invalid UTF-8 inside JSON: 400 in OpenAI's shape, and the error body itself is clean UTF-8.
expect_utf8_error() {  # path body what
  expect_error 400 "$1" "$2" "$3"
  iconv -f UTF-8 -t UTF-8 "$TMP/body" >/dev/null 2>&1 || die "$3: the error body is not valid UTF-8"
}
expect_utf8_error $C "$(printf '{"model": "%s", "prompt": "a\xffb"}' "$MODEL")" "a raw 0xFF byte in a string"
expect_utf8_error $C "$(printf '{"model": "%s", "prompt": "\xc0\xaf"}' "$MODEL")" "an overlong UTF-8 encoding"
expect_utf8_error $C "$(printf '{"model": "%s", "prompt": "\xe2\x82"}' "$MODEL")" "a truncated UTF-8 sequence"
expect_utf8_error $C '{"model": "'$MODEL'", "prompt": "\ud800"}' "a lone surrogate escape"
expect_utf8_error $C "$(printf '{"model": "%s", "prompt": "x", "\xff\xfe": 1}' "$MODEL")" "invalid UTF-8 in a field name"
expect_utf8_error /v1/chat/completions \
  "$(printf '{"model": "%s", "messages": [{"role": "user", "content": "\xfe"}]}' "$MODEL")" "invalid UTF-8 in a message"

# Still serving after all of the above.
got=$(post $C '{"model": "'$MODEL'", "prompt": "still there?", "max_tokens": 3, "temperature": 0}')
[[ $got == 200 ]] || die "after the hostile requests: HTTP $got $(cat "$TMP/body")"
jq -e '.choices[0].finish_reason == "length" and .usage.completion_tokens == 3' "$TMP/body" >/dev/null ||
  die "after the hostile requests: $(cat "$TMP/body")"

# Training routes' hostile cases.
tpost() { curl -s -o "$TMP/body" -w '%{http_code}' "${AUTH[@]}" "$@"; }
got=$(tpost -F purpose=assistants -F "file=@$TMP/huge;filename=x.jsonl" "http://127.0.0.1:$TRAIN_HTTP/v1/files")
[[ $got == 413 ]] || die "a 2 MiB upload (limit 64 KiB): HTTP $got"
got=$(tpost -H 'Transfer-Encoding: chunked' -F purpose=fine-tune -F "file=@$TMP/huge;filename=x.jsonl" \
  "http://127.0.0.1:$TRAIN_HTTP/v1/files")
[[ $got == 411 ]] || die "a chunked 2 MiB upload: HTTP $got"
printf '{"prompt": "a", "completion": "b"}\n' >"$TMP/one.jsonl"
got=$(tpost -F purpose=assistants -F "file=@$TMP/one.jsonl" "http://127.0.0.1:$TRAIN_HTTP/v1/files")
[[ $got == 400 ]] && jq -e '.error.param == "purpose"' "$TMP/body" >/dev/null || die "purpose=assistants: HTTP $got"
got=$(tpost -H 'Content-Type: application/json' -d '{"model": "tiny-base", "training_file": "x", "epochs": 3}' \
  "http://127.0.0.1:$TRAIN_HTTP/v1/fine_tuning/jobs")
[[ $got == 400 ]] || die "a job with an unknown field: HTTP $got"
got=$(tpost -H 'Content-Type: application/json' -d '{"model": "gpt-4o", "training_file": "x"}' \
  "http://127.0.0.1:$TRAIN_HTTP/v1/fine_tuning/jobs")
[[ $got == 404 ]] || die "a job on an unknown model: HTTP $got"
got=$(tpost "http://127.0.0.1:$TRAIN_HTTP/v1/fine_tuning/jobs?limit=0")
[[ $got == 400 ]] || die "limit=0: HTTP $got"
# Invalid UTF-8 in a job request and in a data-set line: 400, the line named.
got=$(tpost -H 'Content-Type: application/json' --data-binary "$(printf '{"model": "tiny-base", "training_file": "\xff"}')" \
  "http://127.0.0.1:$TRAIN_HTTP/v1/fine_tuning/jobs")
[[ $got == 400 ]] && iconv -f UTF-8 -t UTF-8 "$TMP/body" >/dev/null 2>&1 ||
  die "invalid UTF-8 in a job request: HTTP $got $(head -c 300 "$TMP/body")"
printf '{"prompt": "a", "completion": "b"}\n{"prompt": "\xff", "completion": "b"}\n' >"$TMP/bad-utf8.jsonl"
got=$(tpost -F purpose=fine-tune -F "file=@$TMP/bad-utf8.jsonl" "http://127.0.0.1:$TRAIN_HTTP/v1/files")
[[ $got == 400 ]] && jq -e '.error.message | test("line 2")' "$TMP/body" >/dev/null ||
  die "invalid UTF-8 in a data-set line: HTTP $got $(head -c 300 "$TMP/body")"

# A full disk during an HTTP upload: a second statetune-train under a real file-size limit
# (RLIMIT_FSIZE, as tests/training/training_hardening_test.cpp does over gRPC). The upload that does
# not fit gets 507 in OpenAI's shape naming no path, leaves no file (temporary or final) and no listing,
# and the service goes on serving: a small upload after it is stored and listed.
FULL=$TMP/full-data
prlimit --fsize=$((256 << 10)) "$TRAIN" --listen 127.0.0.1:0 --metrics-listen off --http-listen 127.0.0.1:0 \
  --model "$TMP/model" --model-id tiny-base --tenants-file "$TMP/tenants.json" --data-dir "$FULL" --threads 1 \
  --serving-addr 127.0.0.1:$SERVE_PORT --serving-admin-key $ADMIN_KEY --min-examples 1 --max-dataset-bytes 2MiB \
  --ready-file "$TMP/full.ready" >"$TMP/train-full.log" 2>&1 &
PIDS+=($!)
wait_for_file "$TMP/full.ready" "statetune-train (file-size limit)" "${PIDS[-1]}"
FULL_URL=http://127.0.0.1:$(jq -r .http_port "$TMP/full.ready")/v1/files
for i in $(seq 1 5000); do printf '{"prompt": "example number %d", "completion": " and its answer"}\n' "$i"; done >"$TMP/big.jsonl"
(( $(stat -c %s "$TMP/big.jsonl") > (256 << 10) )) || die "the big data set is smaller than the limit"
got=$(tpost -F purpose=fine-tune -F "file=@$TMP/big.jsonl" "$FULL_URL")
[[ $got == 507 ]] || die "an upload past a full disk: HTTP $got $(head -c 300 "$TMP/body")"
jq -e '(.error.message | type == "string") and (.error.type == "server_error")' "$TMP/body" >/dev/null ||
  die "the full-disk error is not in OpenAI's shape: $(head -c 300 "$TMP/body")"
grep -q '/' <(jq -r .error.message "$TMP/body") && die "the full-disk error names a path: $(jq -r .error.message "$TMP/body")"
[[ -z $(find "$FULL" \( -name '*.tmp' -o -name '*.jsonl' \) -print) ]] ||
  die "the failed upload left files: $(find "$FULL" \( -name '*.tmp' -o -name '*.jsonl' \) -print)"
got=$(tpost "$FULL_URL")
[[ $got == 200 ]] && jq -e '.data == []' "$TMP/body" >/dev/null || die "the failed upload is listed: $(cat "$TMP/body")"
got=$(tpost -F purpose=fine-tune -F "file=@$TMP/one.jsonl" "$FULL_URL")
[[ $got == 200 ]] || die "an upload that fits, after the full disk: HTTP $got $(head -c 300 "$TMP/body")"
got=$(tpost "$FULL_URL")
[[ $got == 200 ]] && jq -e '.data | length == 1' "$TMP/body" >/dev/null || die "after the full disk: $(cat "$TMP/body")"
# Failed HTTP calls are counted with the gRPC ones, by route and code.
[[ $(metric 'statetune_train_rpc_errors_total{code="INVALID_ARGUMENT",method="POST /v1/files"}' $TRAIN_METRICS) -ge 2 ]] ||
  die "failed uploads were not counted: $(curl -s "http://127.0.0.1:$TRAIN_METRICS/metrics" | grep rpc_errors)"
[[ $(metric 'statetune_requests_total{api="http",status="not_found",tenant="other"}') -ge 2 ]] ||
  die "another tenant's 404s were not counted"
echo "PASS"
