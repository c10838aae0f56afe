#!/usr/bin/env bash
# Renders every deploy/ overlay with `kubectl kustomize` and validates each object against the
# Kubernetes API schemas, offline (tools/deploy-check/validate.mjs: bundled schemas + unknown fields;
# the CloudNativePG Cluster against tools/deploy-check/crd/), then what each overlay must mean
# (overlay_checks.mjs: selectors that select, and for the shared mode replicas, PDBs, the database
# URL only from a Secret). Then checks that both really reject broken manifests (a misspelt field, a
# wrong type, a missing required field, a DSN in a ConfigMap, ...), so this test cannot pass by
# checking nothing, and that the serving pod's termination grace covers the preStop pause plus the
# server's drain.
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

CHECKS=$SRC/tests/deploy/overlay_checks.mjs
export VALIDATOR_DIR=$SRC/tools/deploy-check
overlays=("$SRC"/deploy/overlays/*/)
((${#overlays[@]} >= 4)) || fail "expected the cpu, gpu, shared and shared-cnpg overlays, found ${#overlays[@]}"
for dir in "${overlays[@]}"; do
  name=$(basename "$dir")
  # kustomize 5 warns about the v2-compatible field names on stderr (deploy/overlays/*); drop those.
  if ! kubectl kustomize "$dir" >"$TMP/$name.yaml" 2>"$TMP/$name.err"; then
    cat "$TMP/$name.err"; fail "kubectl kustomize deploy/overlays/$name"; continue
  fi
  grep -v "^# Warning: '.*' is deprecated" "$TMP/$name.err" || true
  node "$VALIDATOR" "$TMP/$name.yaml" || fail "deploy/overlays/$name does not validate"
  node "$CHECKS" "$TMP/$name.yaml" "$name" || fail "deploy/overlays/$name fails its overlay checks"
  kinds=(Deployment Service Secret ConfigMap HorizontalPodAutoscaler PodDisruptionBudget ServiceMonitor)
  case $name in
    shared) ;;
    shared-cnpg) kinds+=(Cluster) ;;
    *) kinds+=(StatefulSet PersistentVolumeClaim) ;;
  esac
  for kind in "${kinds[@]}"; do
    grep -q "^kind: $kind\$" "$TMP/$name.yaml" || fail "deploy/overlays/$name renders no $kind"
  done
done
grep -q "nvidia.com/gpu: 1" "$TMP/gpu.yaml" || fail "the gpu overlay requests no nvidia.com/gpu"
grep -q "nvidia.com/gpu" "$TMP/cpu.yaml" && fail "the cpu overlay requests a GPU"

# Negative checks: each broken copy must be rejected.
expect_rejected() {  # name, sed expression, what the check must say[, overlay (cpu), checker (validator)]
  local from=$TMP/${4:-cpu}.yaml
  sed "$2" "$from" >"$TMP/broken-$1.yaml"
  cmp -s "$from" "$TMP/broken-$1.yaml" && { fail "negative check $1: sed changed nothing"; return; }
  if node ${5:-$VALIDATOR} "$TMP/broken-$1.yaml" "${4:-cpu}" >"$TMP/broken-$1.out" 2>&1; then
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
# The CloudNativePG Cluster (no published schema: tools/deploy-check/crd/cnpg-cluster.mjs).
expect_rejected "a misspelt Cluster field" '/^kind: Cluster$/,$s/^    size: /    sise: /' \
  'must NOT have additional properties {"additionalProperty":"sise"}' shared-cnpg
expect_rejected "a Cluster without instances" '/^kind: Cluster$/,$s/^  instances: 3$/  replicas: 3/' \
  'must have required property .instances.' shared-cnpg
expect_rejected "a Cluster with 0 instances" '/^kind: Cluster$/,$s/^  instances: 3$/  instances: 0/' \
  '/spec/instances must be >= 1' shared-cnpg
expect_rejected "a bad Cluster enum value" '/^kind: Cluster$/,$s/primaryUpdateMethod: switchover/primaryUpdateMethod: failover/' \
  '/spec/primaryUpdateMethod must be equal to one of the allowed values' shared-cnpg
# What the shared overlays mean (overlay_checks.mjs).
expect_rejected "one serving replica" 's/^  maxReplicas: 8$/  maxReplicas: 2/' 'must scale from >= 2 upwards' shared "$CHECKS"
expect_rejected "a DSN in a ConfigMap" 's|^  STATETUNE_DATABASE_POOL_SIZE: "4"$|  STATETUNE_DATABASE: postgresql://u:pw@db/statetune|' \
  'the database URL and password belong in a Secret' shared "$CHECKS"
expect_rejected "a Service that selects nothing" '/^kind: Deployment$/,$s/^        app.kubernetes.io\/part-of: statetune$/        app.kubernetes.io\/part-of: other/' \
  'selects no pods' shared "$CHECKS"
expect_rejected "the wrong Secret with CloudNativePG" 's/name: statetune-db-app$/name: statetune-database/' \
  'expected statetune-db-app' shared-cnpg "$CHECKS"

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
