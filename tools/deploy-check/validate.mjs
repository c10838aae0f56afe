// Validates rendered Kubernetes manifests (multi-document YAML, e.g. `kubectl kustomize` output)
// against the Kubernetes API schemas bundled in the kubernetes-models npm packages, offline.
//
// Usage: node validate.mjs FILE.yaml     exit 0 when every object is valid, 1 otherwise (each problem
//                                        printed as "<kind>/<name>: <path> <message>")
//
// Objects of the kinds no npm package publishes a schema for (the Gateway API Inference Extension's
// InferencePool, CloudNativePG's Cluster) are checked against a schema in schemas/, written from the
// API's documentation or CRD.
//
// Two checks per object:
//  1. the package's compiled JSON-schema validator: types, enums, required fields, formats;
//  2. unknown fields. The bundled schemas do not set additionalProperties: false (the API server
//     drops or rejects unknown fields itself), so a misspelt field ("readinesProbe") would pass (1).
//     The compiled validator reads every property its schema declares (`data.<name>`) and enumerates
//     the keys of free-form maps (labels, annotations); so each object is wrapped in a Proxy that
//     records those reads, and a key that the validator neither read nor enumerated is unknown.
import { readFileSync } from "node:fs";
import Ajv from "ajv";
import { parseAllDocuments } from "yaml";

// apiVersion/kind -> the module exporting that object's compiled validator. Only the kinds deploy/
// uses; an object of any other kind fails, so adding one means adding it here.
const SCHEMAS = {
  "v1/ConfigMap": "kubernetes-models/_schemas/IoK8sApiCoreV1ConfigMap.mjs",
  "v1/Secret": "kubernetes-models/_schemas/IoK8sApiCoreV1Secret.mjs",
  "v1/Service": "kubernetes-models/_schemas/IoK8sApiCoreV1Service.mjs",
  "v1/PersistentVolumeClaim": "kubernetes-models/_schemas/IoK8sApiCoreV1PersistentVolumeClaim.mjs",
  "v1/ServiceAccount": "kubernetes-models/_schemas/IoK8sApiCoreV1ServiceAccount.mjs",
  "apps/v1/Deployment": "kubernetes-models/_schemas/IoK8sApiAppsV1Deployment.mjs",
  "apps/v1/StatefulSet": "kubernetes-models/_schemas/IoK8sApiAppsV1StatefulSet.mjs",
  "autoscaling/v2/HorizontalPodAutoscaler":
    "kubernetes-models/_schemas/IoK8sApiAutoscalingV2HorizontalPodAutoscaler.mjs",
  "policy/v1/PodDisruptionBudget": "kubernetes-models/_schemas/IoK8sApiPolicyV1PodDisruptionBudget.mjs",
  "monitoring.coreos.com/v1/ServiceMonitor":
    "@kubernetes-models/prometheus-operator/_schemas/MonitoringCoreosComV1ServiceMonitor.mjs",
  "rbac.authorization.k8s.io/v1/Role": "kubernetes-models/_schemas/IoK8sApiRbacV1Role.mjs",
  "rbac.authorization.k8s.io/v1/RoleBinding": "kubernetes-models/_schemas/IoK8sApiRbacV1RoleBinding.mjs",
  "inference.networking.k8s.io/v1/InferencePool": "schemas/InferencePool.v1.json",
  "postgresql.cnpg.io/v1/Cluster": "schemas/Cluster.cnpg.v1.json",
};

// A JSON schema of schemas/ compiled with Ajv: the same validate(data) / validate.errors interface.
function localValidator(file) {
  const schema = JSON.parse(readFileSync(new URL(`./${file}`, import.meta.url), "utf8"));
  return new Ajv({ allErrors: true, strict: false }).compile(schema);
}

// Wraps every plain object under `value` in a recording Proxy. Returns the wrapped value and the list
// of {object, path, read:Set, enumerated:bool} records to check afterwards.
function track(value, path, records) {
  if (Array.isArray(value)) {
    return value.map((v, i) => track(v, `${path}/${i}`, records));
  }
  if (value === null || typeof value !== "object") return value;
  const rec = { object: value, path, read: new Set(), enumerated: false };
  records.push(rec);
  const wrapped = {};
  for (const [k, v] of Object.entries(value)) wrapped[k] = track(v, `${path}/${k}`, records);
  return new Proxy(wrapped, {
    get(target, key, receiver) {
      if (typeof key === "string") rec.read.add(key);
      return Reflect.get(target, key, receiver);
    },
    has(target, key) {
      if (typeof key === "string") rec.read.add(key);
      return Reflect.has(target, key);
    },
    ownKeys(target) {
      rec.enumerated = true;
      return Reflect.ownKeys(target);
    },
  });
}

async function validateObject(obj) {
  const key = `${obj.apiVersion}/${obj.kind}`;
  const module = SCHEMAS[key];
  if (!module) return [`no schema for ${key} (add it to tools/deploy-check/validate.mjs)`];
  // By file path: the packages' "exports" maps do not list their _schemas/ folders.
  const validate = module.startsWith("schemas/")
    ? localValidator(module)
    : (await import(new URL(`./node_modules/${module}`, import.meta.url))).validate;
  const records = [];
  const data = track(obj, "", records);
  const problems = [];
  if (!validate(data)) {
    for (const e of validate.errors) {
      problems.push(`${e.instancePath || "/"} ${e.message ?? e.keyword} ${JSON.stringify(e.params)}`);
    }
  }
  const unknown = [];  // paths of unknown fields; what lies under them is not reported again
  for (const r of records) {
    if (r.enumerated || unknown.some((u) => r.path === u || r.path.startsWith(`${u}/`))) continue;
    for (const k of Object.keys(r.object)) {
      if (r.read.has(k)) continue;
      unknown.push(`${r.path}/${k}`);
      problems.push(`${r.path || "/"}: unknown field "${k}"`);
    }
  }
  return problems;
}

async function main() {
  const file = process.argv[2];
  if (!file) {
    console.error("usage: node validate.mjs FILE.yaml");
    process.exit(2);
  }
  const docs = parseAllDocuments(readFileSync(file, "utf8"));
  let objects = 0;
  let failed = 0;
  for (const doc of docs) {
    if (doc.errors.length) {
      console.error(`${file}: YAML error: ${doc.errors[0].message}`);
      failed++;
      continue;
    }
    const obj = doc.toJS();
    if (obj === null) continue;
    objects++;
    const name = `${obj.kind}/${obj.metadata?.name ?? "?"}`;
    for (const p of await validateObject(obj)) {
      console.error(`${name}: ${p}`);
      failed++;
    }
  }
  if (objects === 0) {
    console.error(`${file}: no objects`);
    process.exit(1);
  }
  console.log(`${file}: ${objects} objects, ${failed} problems`);
  process.exit(failed ? 1 : 0);
}

main();
