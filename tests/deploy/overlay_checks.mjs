// What a rendered deploy/ overlay must mean beyond schema validity (tests/deploy/manifests_test.sh).
// Usage: node overlay_checks.mjs RENDERED.yaml OVERLAY_NAME   exit 1 with one line per problem.
//
// Every overlay: each Service, PodDisruptionBudget and HPA points at pods/workloads that exist (a
// label a patch forgot leaves a Service with no endpoints, which no schema can see).
// Shared-mode overlays (name starts with "shared"): >= 2 serving replicas with an HPA allowed above
// 1, >= 2 training replicas as a Deployment, PDBs for both, no pod-local volume claims, the database
// URL only from a Secret (never a ConfigMap) and its password as a Secret-backed file, a headless
// Service for round_robin clients; with a CloudNativePG Cluster, both read the operator's Secret.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(`${process.env.VALIDATOR_DIR}/`);
const { parseAllDocuments } = require("yaml");
const [file, overlay] = process.argv.slice(2);
const docs = parseAllDocuments(readFileSync(file, "utf8")).map((d) => d.toJS()).filter((d) => d);
const problems = [];
const check = (ok, what) => { if (!ok) problems.push(what); };
const find = (kind, name) => docs.find((d) => d.kind === kind && d.metadata?.name === name);
const workloads = docs.filter((d) => ["Deployment", "StatefulSet"].includes(d.kind));
const matches = (selector, labels) => Object.entries(selector ?? {}).every(([k, v]) => labels?.[k] === v);
const podsFor = (selector) => workloads.filter((w) => matches(selector, w.spec.template.metadata.labels));

for (const s of docs.filter((d) => d.kind === "Service")) {
  check(podsFor(s.spec.selector).length > 0, `Service ${s.metadata.name} selects no pods`);
}
for (const p of docs.filter((d) => d.kind === "PodDisruptionBudget")) {
  check(podsFor(p.spec.selector.matchLabels).length > 0, `PodDisruptionBudget ${p.metadata.name} covers no pods`);
}
for (const h of docs.filter((d) => d.kind === "HorizontalPodAutoscaler")) {
  check(find(h.spec.scaleTargetRef.kind, h.spec.scaleTargetRef.name), `HPA ${h.metadata.name}: no such target`);
}

if (overlay.startsWith("shared")) {
  const serve = find("Deployment", "statetune-serve");
  const train = find("Deployment", "statetune-train");
  const hpa = find("HorizontalPodAutoscaler", "statetune-serve");
  check(serve && serve.spec.replicas >= 2, "statetune-serve: fewer than 2 replicas");
  check(hpa && hpa.spec.minReplicas >= 2 && hpa.spec.maxReplicas > hpa.spec.minReplicas,
        "HPA statetune-serve: must scale from >= 2 upwards");
  check(train && train.spec.replicas >= 2, "statetune-train: not a Deployment with >= 2 replicas");
  check(!find("StatefulSet", "statetune-train"), "the training StatefulSet is still there");
  check(!docs.some((d) => d.kind === "PersistentVolumeClaim"), "a PersistentVolumeClaim: pods must share no volume");
  for (const w of [serve, train]) {
    if (!w) continue;
    check(podsFor(find("PodDisruptionBudget", w.metadata.name)?.spec.selector.matchLabels).includes(w),
          `no PodDisruptionBudget covers ${w.metadata.name}`);
    const pod = w.spec.template.spec;
    const c = pod.containers[0];
    check(!(pod.volumes ?? []).some((v) => v.persistentVolumeClaim), `${w.metadata.name} mounts a volume claim`);
    const url = (c.env ?? []).find((e) => e.name === "STATETUNE_DATABASE");
    check(url?.valueFrom?.secretKeyRef, `${w.metadata.name}: STATETUNE_DATABASE not from a Secret`);
    const cms = (c.envFrom ?? []).map((e) => find("ConfigMap", e.configMapRef?.name)).filter((m) => m);
    const pwFile = cms.map((m) => m.data.STATETUNE_DATABASE_PASSWORD_FILE).find((p) => p);
    const mount = c.volumeMounts.find((m) => pwFile?.startsWith(`${m.mountPath}/`));
    const volume = pod.volumes.find((v) => v.name === mount?.name);
    check(volume?.secret, `${w.metadata.name}: the database password file is not mounted from a Secret`);
    const secretName = url?.valueFrom?.secretKeyRef?.name;
    check(volume?.secret?.secretName === secretName,
          `${w.metadata.name}: URL and password come from different Secrets (${secretName}, ${volume?.secret?.secretName})`);
    const cluster = docs.find((d) => d.kind === "Cluster");
    const expected = cluster ? `${cluster.metadata.name}-app` : "statetune-database";
    check(secretName === expected, `${w.metadata.name}: reads Secret ${secretName}, expected ${expected}`);
    check(cluster || find("Secret", expected), `Secret ${expected} is not rendered`);
  }
  for (const m of docs.filter((d) => d.kind === "ConfigMap")) {
    for (const [k, v] of Object.entries(m.data ?? {})) {
      const secret = /postgres(ql)?:\/\/|password=/i.test(String(v)) ||
                     (/DATABASE/.test(k) && !/_(PASSWORD_FILE|POOL_SIZE|START_SECONDS)$/.test(k));
      check(!secret, `ConfigMap ${m.metadata.name} holds ${k}: the database URL and password belong in a Secret`);
    }
  }
  const headless = docs.find((d) => d.kind === "Service" && d.spec.clusterIP === "None" &&
                                    podsFor(d.spec.selector).includes(serve));
  check(headless, "no headless Service for the serving pods (dns:/// round_robin clients)");
}

for (const p of problems) console.error(`${overlay}: ${p}`);
console.log(`${overlay}: ${problems.length ? `${problems.length} problem(s)` : "overlay checks pass"}`);
process.exit(problems.length ? 1 : 0);
