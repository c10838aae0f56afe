# Sourced by the shell tests that start the real services (tests/deploy/prometheus_scrape_test.sh,
# tests/http/openai_api_test.sh): a scratch folder $TMP, the started processes in PIDS (stopped and
# $TMP removed on exit), die (prints every *.log's tail), wait_for_file, and tiny_model_and_tenants.
# Needs ENGINE, CLIENT and TOKENIZER set.
[[ -f $TOKENIZER ]] || { echo "FAIL: no tokenizer at $TOKENIZER (../shared/models)"; exit 1; }
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
die() {
  echo "FAIL: $*"
  for log in "$TMP"/*.log; do echo "--- $(basename "$log") (last lines)"; tail -n 15 "$log"; done
  exit 1
}
wait_for_file() {  # path, what, pid
  for _ in $(seq 1 300); do
    [[ -s $1 ]] && return 0
    kill -0 "$3" 2>/dev/null || die "$2 exited before it was ready"
    sleep 0.1
  done
  die "$2 was not ready within 30 s"
}
# A tiny random-weight model in $TMP/model and $TMP/tenants.json with the admin key ADMIN_KEY and
# tenants given as name=key arguments (keys are stored as SHA-256 hashes).
tiny_model_and_tenants() {
  "$ENGINE" init-model --out "$TMP/model" --d-model 64 --n-layer 2 --tokenizer "$TOKENIZER" >"$TMP/init.log" 2>&1 ||
    die "statetune-engine init-model"
  local tenants="" sep=""
  for t in "$@"; do
    tenants+="$sep{\"name\": \"${t%%=*}\", \"api_keys_sha256\": [\"$("$CLIENT" hash-key "${t#*=}")\"]}"
    sep=", "
  done
  echo "{\"admin_key_sha256\": \"$("$CLIENT" hash-key "$ADMIN_KEY")\", \"tenants\": [$tenants]}" >"$TMP/tenants.json"
}
