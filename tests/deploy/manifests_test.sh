#!/usr/bin/env bash
# Renders every deploy/ overlay with `kubectl kustomize` and validates each object against the
# Kubernetes API schemas, offline (tools/deploy-check/validate.mjs: bundled schemas + unknown fields;
# schemas/ for the CRDs no package publishes), then what each overlay must mean (overlay_checks.mjs:
# selectors that select; for the shared mode replicas, PDBs, the database URL only from a Secret).
# Then checks that both really reject broken manifests (a misspelt field, a wrong type, a missing
# required field, a DSN in a ConfigMap, ...), so this test cannot pass by checking nothing, and that
# the serving pod's termination grace covers the preStop pause plus the server's drain. The optional deploy/gateway component (InferencePool and
# endpoint picker) is rendered on the cpu overlay and checked the same way, with its wiring.
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
# rendered file, name, sed expression, what the validator must say[, overlay: overlay_checks.mjs must
# refuse it as that overlay instead]
expect_rejected_in() {
  sed "$3" "$1" >"$TMP/broken-$2.yaml"
  cmp -s "$1" "$TMP/broken-$2.yaml" && { fail "negative check $2: sed changed nothing"; return; }
  local check=("$VALIDATOR")
  [[ -n ${5:-} ]] && check=("$CHECKS" "$5")
  if node "${check[0]}" "$TMP/broken-$2.yaml" "${check[@]:1}" >"$TMP/broken-$2.out" 2>&1; then
    fail "the validator accepted a manifest with $2"
  elif ! grep -q "$4" "$TMP/broken-$2.out"; then
    cat "$TMP/broken-$2.out"; fail "negative check $2: rejected, but not for '$4'"
  else
    echo "rejected as expected ($2): $(grep "$4" "$TMP/broken-$2.out" | head -n1)"
  fi
}
expect_rejected() { expect_rejected_in "$TMP/cpu.yaml" "$@"; }  # name, sed expression, what it must say
expect_rejected "a misspelt field" '0,/readinessProbe:/s//readinesProbe:/' 'unknown field "readinesProbe"'
expect_rejected "a string replica count" '0,/replicas: 1/s//replicas: one/' '/spec/replicas type'
expect_rejected "a bad enum value" '0,/type: RollingUpdate/s//type: Sometimes/' 'strategy/type enum'
expect_rejected "a missing required field" '0,/^  template:$/s//  templat:/' 'missingProperty":"template"'
# The CloudNativePG Cluster (no published schema: tools/deploy-check/schemas/Cluster.cnpg.v1.json).
CNPG=$TMP/shared-cnpg.yaml
expect_rejected_in "$CNPG" "a misspelt Cluster field" '/^kind: Cluster$/,$s/^    size: /    sise: /' \
  'must NOT have additional properties {"additionalProperty":"sise"}'
expect_rejected_in "$CNPG" "a Cluster without instances" '/^kind: Cluster$/,$s/^  instances: 3$/  replicas: 3/' \
  'must have required property .instances.'
expect_rejected_in "$CNPG" "a Cluster with 0 instances" '/^kind: Cluster$/,$s/^  instances: 3$/  instances: 0/' \
  '/spec/instances must be >= 1'
expect_rejected_in "$CNPG" "a bad Cluster enum value" \
  '/^kind: Cluster$/,$s/primaryUpdateMethod: switchover/primaryUpdateMethod: failover/' \
  '/spec/primaryUpdateMethod must be equal to one of the allowed values'
# What the shared overlays mean (overlay_checks.mjs).
expect_rejected_in "$TMP/shared.yaml" "one serving replica" 's/^  maxReplicas: 8$/  maxReplicas: 2/' \
  'must scale from >= 2 upwards' shared
expect_rejected_in "$TMP/shared.yaml" "a DSN in a ConfigMap" \
  's|^  STATETUNE_DATABASE_POOL_SIZE: "4"$|  STATETUNE_DATABASE: postgresql://u:pw@db/statetune|' \
  'the database URL and password belong in a Secret' shared
expect_rejected_in "$TMP/shared.yaml" "a Service that selects nothing" \
  '/^kind: Deployment$/,$s/^        app.kubernetes.io\/part-of: statetune$/        app.kubernetes.io\/part-of: other/' \
  'selects no pods' shared
expect_rejected_in "$CNPG" "the wrong Secret with CloudNativePG" 's/name: statetune-db-app$/name: statetune-database/' \
  'expected statetune-db-app' shared-cnpg

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

# The optional Gateway API Inference Extension component (deploy/gateway), added to the cpu overlay as
# docs/deploy.md shows. kustomize takes only relative paths to other kustomizations.
mkdir -p "$TMP/with-gateway"
cat >"$TMP/with-gateway/kustomization.yaml" <<EOF
resources:
  - $(realpath --relative-to="$TMP/with-gateway" "$SRC/deploy/overlays/cpu")
components:
  - $(realpath --relative-to="$TMP/with-gateway" "$SRC/deploy/gateway")
EOF
if kubectl kustomize "$TMP/with-gateway" >"$TMP/gateway.yaml" 2>"$TMP/gateway.err"; then
  node "$VALIDATOR" "$TMP/gateway.yaml" || fail "deploy/gateway on the cpu overlay does not validate"
  for kind in InferencePool Role RoleBinding ServiceAccount; do
    grep -q "^kind: $kind\$" "$TMP/gateway.yaml" || fail "deploy/gateway renders no $kind"
  done
  # The pool routes to the HTTP API port, which also serves /metrics (the EPP scrapes the port it
  # routes to), its selector finds the serving pods, and the EPP's flags name metrics that
  # statetune-serve's code exports.
  SRC_DIR=$SRC VALIDATOR_DIR=$SRC/tools/deploy-check node --input-type=module - "$TMP/gateway.yaml" <<'JS' ||
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { execFileSync } from "node:child_process";
const require = createRequire(process.env.VALIDATOR_DIR + "/");
const { parseAllDocuments } = require("yaml");
const docs = parseAllDocuments(readFileSync(process.argv[2], "utf8")).map((d) => d.toJS());
const pool = docs.find((d) => d.kind === "InferencePool");
const ref = pool.spec.endpointPickerRef;
const cm = docs.find((d) => d.kind === "ConfigMap" && d.metadata.name === "statetune-serve-config");
const serve = docs.find((d) => d.kind === "Deployment" && d.metadata.name === "statetune-serve");
const epp = docs.find((d) => d.kind === "Deployment" && d.metadata.name === ref.name);
const eppService = docs.find((d) => d.kind === "Service" && d.metadata.name === ref.name);
const problems = [];
const port = pool.spec.targetPorts[0].number;
if (cm.data.STATETUNE_HTTP_LISTEN !== `0.0.0.0:${port}`) problems.push(`STATETUNE_HTTP_LISTEN is not port ${port}`);
if (cm.data.STATETUNE_HTTP_METRICS !== "true") problems.push("STATETUNE_HTTP_METRICS is not on");
if (!serve.spec.template.spec.containers[0].ports.some((p) => p.containerPort === port)) {
  problems.push(`statetune-serve has no container port ${port}`);
}
for (const [k, v] of Object.entries(pool.spec.selector.matchLabels)) {
  if (serve.spec.template.metadata.labels[k] !== v) problems.push(`the pool's selector ${k}=${v} misses the serving pods`);
}
if (!epp || !eppService) problems.push(`no Deployment and Service ${ref.name} for the endpoint picker`);
else if (!eppService.spec.ports.some((p) => p.port === ref.port.number)) problems.push(`Service ${ref.name} lacks port ${ref.port.number}`);
const exported = execFileSync("grep", ["-rhoE", '"statetune_[a-z_]+"', `${process.env.SRC_DIR}/server/serving`]).toString();
const args = epp ? epp.spec.template.spec.containers[0].args : [];
for (const flag of ["total-queued-requests-metric", "total-running-requests-metric",
                    "kv-cache-usage-percentage-metric", "lora-info-metric"]) {
  const arg = args.find((a) => a.startsWith(`--${flag}=`));
  if (!arg) { problems.push(`the endpoint picker has no --${flag}`); continue; }
  const name = arg.slice(flag.length + 3);
  if (!exported.includes(`"${name}"`)) problems.push(`--${flag}=${name}: statetune-serve exports no such metric`);
}
for (const p of problems) console.error(p);
console.log(`gateway: pool -> port ${port}, endpoint picker flags name exported metrics`);
process.exit(problems.length ? 1 : 0);
JS
    fail "deploy/gateway wiring"
  expect_rejected_in "$TMP/gateway.yaml" "a misspelt InferencePool field" \
    '0,/targetPorts:/s//targetPort:/' 'InferencePool.*targetPort'
  expect_rejected_in "$TMP/gateway.yaml" "a bad InferencePool failure mode" \
    '0,/failureMode: FailClose/s//failureMode: Sometimes/' 'InferencePool.*failureMode'
  expect_rejected_in "$TMP/gateway.yaml" "an endpoint picker Service without a port" \
    '/^    port:$/,/number: 9002/d' 'InferencePool.*port'
else
  cat "$TMP/gateway.err"; fail "kubectl kustomize of the cpu overlay with deploy/gateway"
fi

if ((failures)); then
  echo "$failures check(s) failed"; exit 1
fi
echo "manifests: all overlays render and validate"
