// The CloudNativePG `Cluster` (postgresql.cnpg.io/v1) as far as deploy/ uses it: no npm package ships
// its schema, so this is a hand-kept subset of the CRD's openAPIV3Schema (checked against CloudNativePG 1.28's
// config/crd/bases/postgresql.cnpg.io_clusters.yaml; same names, types, enums and required fields),
// compiled with ajv. Stricter than the CRD in one way: every object lists its fields and rejects any
// other (additionalProperties: false), so a misspelt or unknown field fails here, where the API server
// would drop it silently. A field deploy/ starts using must be added here first (copy it from the CRD).
import Ajv from "ajv";

const str = { type: "string" };
const bool = { type: "boolean" };
const strMap = { type: "object", additionalProperties: str };
const obj = (properties, required = []) => ({ type: "object", properties, required, additionalProperties: false });
const quantity = { anyOf: [{ type: "integer" }, { type: "string" }] };
const storage = obj({ size: str, storageClass: str, resizeInUseVolumes: bool });

const schema = obj(
  {
    apiVersion: { const: "postgresql.cnpg.io/v1" },
    kind: { const: "Cluster" },
    metadata: obj(
      {
        // A DNS-1123 label: the operator names Services (<name>-rw) and Secrets (<name>-app) after it.
        name: { type: "string", pattern: "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", maxLength: 50 },
        namespace: str,
        labels: strMap,
        annotations: strMap,
      },
      ["name"],
    ),
    spec: obj(
      {
        description: str,
        instances: { type: "integer", minimum: 1 },
        imageName: str,
        primaryUpdateStrategy: { type: "string", enum: ["unsupervised", "supervised"] },
        primaryUpdateMethod: { type: "string", enum: ["switchover", "restart"] },
        enablePDB: bool,
        logLevel: { type: "string", enum: ["error", "warning", "info", "debug", "trace"] },
        storage,
        walStorage: storage,
        bootstrap: obj({
          initdb: obj({
            database: str,
            owner: str,
            secret: obj({ name: str }, ["name"]),
            encoding: str,
            dataChecksums: bool,
          }),
        }),
        postgresql: obj({
          parameters: strMap,
          pg_hba: { type: "array", items: str },
        }),
        resources: obj({ requests: { type: "object", additionalProperties: quantity },
                         limits: { type: "object", additionalProperties: quantity } }),
        affinity: obj({
          enablePodAntiAffinity: bool,
          topologyKey: str,
          podAntiAffinityType: str,
        }),
        monitoring: obj({ enablePodMonitor: bool }),
      },
      ["instances"],
    ),
  },
  ["apiVersion", "kind", "metadata", "spec"],
);

export const validate = new Ajv({ allErrors: true, strict: true }).compile(schema);
