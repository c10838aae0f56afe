#!/usr/bin/env bash
# Renders every deploy/ overlay with `kubectl kustomize` and validates each object against the
# Kubernetes API schemas, offline (tools/deploy-check/validate.mjs: bundled schemas + unknown fields).
# Then checks that the validator really rejects broken manifests (a misspelt field, a wrong type), so
# this test cannot pass by validating nothing, and that the serving pod's termination grace covers
# the preStop pause plus the server's drain.
# Usage: manifests_test.sh SOURCE_DIR
set -euo pipefail
SRC=$(cd "${1:?usage: manifests_test.sh SOURCE_DIR}" && pwd)
VALIDATOR=$SRC/tools/deploy-check/validate.mjs
for tool in kubectl node; do
  command -v $tool >/dev/null || { echo "FAIL: $tool not found (scripts/setup.sh installs it)"; exit 1; }
done
[[ -d $SRC/tools/deploy-check/node_modules ]] ||
  { echo "FAIL: tools/deploy-check/node_modules missing (scripts/setup.sh runs npm ci there)"; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

overlays=("$SRC"/deploy/overlays/*/)
((${#overlays[@]} >= 2)) || fail "expected the cpu and gpu overlays, found ${#overlays[@]}"
for dir in "${overlays[@]}"; do
  name=$(basename "$dir")
  # kustomize 5 warns about the v2-compatible field names on stderr (deploy/overlays/*); drop those.
  if ! kubectl kustomize "$dir" >"$TMP/$name.yaml" 2>"$TMP/$name.err"; then
    cat "$TMP/$name.err"; fail "kubectl kustomize deploy/overlays/$name"; continue
  fi
  grep -v "^# Warning: '.*' is deprecated" "$TMP/$name.err" || true
  node "$VALIDATOR" "$TMP/$name.yaml" || fail "deploy/overlays/$name does not validate"
  for kind in Deployment StatefulSet Service Secret ConfigMap HorizontalPodAutoscaler \
              PodDisruptionBudget ServiceMonitor PersistentVolumeClaim; do
    grep -q "^kind: $kind\$" "$TMP/$name.yaml" || fail "deploy/overlays/$name renders no $kind"
  done
done
grep -q "nvidia.com/gpu: 1" "$TMP/gpu.yaml" || fail "the gpu overlay requests no nvidia.com/gpu"
grep -q "nvidia.com/gpu" "$TMP/cpu.yaml" && fail "the cpu overlay requests a GPU"

# Negative checks: each broken copy must be rejected.
expect_rejected() {  # name, sed expression, what the validator must say
  sed "$2" "$TMP/cpu.yaml" >"$TMP/broken-$1.yaml"
  cmp -s "$TMP/cpu.yaml" "$TMP/broken-$1.yaml" && { fail "negative check $1: sed changed nothing"; return; }
  if node "$VALIDATOR" "$TMP/broken-$1.yaml" >"$TMP/broken-$1.out" 2>&1; then
    fail "the validator accepted a manifest with $1"
  elif ! grep -q "$3" "$TMP/broken-$1.out"; then
    cat "$TMP/broken-$1.out"; fail "negative check $1: rejected, but not for '$3'"
  else
    echo "rejected as expected ($1): $(grep "$3" "$TMP/broken-$1.out" | head -n1)"
  fi
}
expect_rejected "a misspelt field" '0,/readinessProbe:/s//readinesProbe:/' 'unknown field "readinesProbe"'
expect_rejected "a string replica count" '0,/replicas: 1/s//replicas: one/' '/spec/replicas type'
expect_rejected "a bad enum value" '0,/type: RollingUpdate/s//type: Sometimes/' 'strategy/type enum'
expect_rejected "a missing required field" '0,/^  template:$/s//  templat:/' 'missingProperty":"template"'

# The drain fits the grace period: grace >= preStop sleep + STATETUNE_DRAIN_SECONDS + 2 s shutdown.
VALIDATOR_DIR=$SRC/tools/deploy-check node --input-type=module - "$TMP/cpu.yaml" <<'JS' || fail "serving termination grace period"
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
const require = createRequire(process.env.VALIDATOR_DIR + "/");
const { parseAllDocuments } = require("yaml");
const docs = parseAllDocuments(readFileSync(process.argv[2], "utf8")).map((d) => d.toJS());
const dep = docs.find((d) => d.kind === "Deployment" && d.metadata.name === "statetune-serve");
const cm = docs.find((d) => d.kind === "ConfigMap" && d.metadata.name === "statetune-serve-config");
const pod = dep.spec.template.spec;
const sleep = Number(pod.containers[0].lifecycle.preStop.exec.command[1]);
const drain = Number(cm.data.STATETUNE_DRAIN_SECONDS);
const need = sleep + drain + 2;
console.log(`grace ${pod.terminationGracePeriodSeconds} s, preStop ${sleep} s + drain ${drain} s + 2 s = ${need} s`);
if (!(pod.terminationGracePeriodSeconds >= need)) process.exit(1);
JS

if ((failures)); then
  echo "$failures check(s) failed"; exit 1
fi
echo "manifests: all overlays render and validate"
