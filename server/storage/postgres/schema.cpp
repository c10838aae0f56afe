#include "server/storage/postgres/schema.h"

namespace statetune::storage {

const std::vector<Migration>& statetune_migrations() {
  static const std::vector<Migration> migrations = {
      {1, "adapters",
       // One row per tenant/name ever used: the current pointer, the next version number (versions
       // never repeat, even after a delete) and a change counter that orders what replicas hear.
       "CREATE TABLE adapters ("
       "  tenant text NOT NULL,"
       "  name text NOT NULL,"
       "  current_version bigint,"
       "  next_version bigint NOT NULL DEFAULT 1,"
       "  change_seq bigint NOT NULL DEFAULT 0,"
       "  PRIMARY KEY (tenant, name));"
       // Immutable versions with their bytes (a few MiB at most: max_adapter_file_bytes).
       "CREATE TABLE adapter_versions ("
       "  tenant text NOT NULL,"
       "  name text NOT NULL,"
       "  version bigint NOT NULL,"
       "  sha256 text NOT NULL,"
       "  size_bytes bigint NOT NULL,"
       "  created_unix bigint NOT NULL,"
       "  methods text NOT NULL,"
       "  metadata text NOT NULL,"
       "  bytes bytea NOT NULL,"
       "  stored_at timestamptz NOT NULL DEFAULT now(),"
       "  PRIMARY KEY (tenant, name, version),"
       "  FOREIGN KEY (tenant, name) REFERENCES adapters (tenant, name));"
       // float tensors do not compress: skip TOAST's compression attempt.
       "ALTER TABLE adapter_versions ALTER COLUMN bytes SET STORAGE EXTERNAL;"},
      {2, "training jobs",
       // statetune-train's state in the shared mode (pg_job_store.h): data sets with their content
       // and validation summary, jobs with their lease (epoch, owner, expiry: the database's clock),
       // events, the last checkpoint's files and the trained adapter of every job.
       "CREATE TABLE train_datasets ("
       "  id text PRIMARY KEY,"
       "  tenant text NOT NULL,"
       "  name text NOT NULL,"
       "  sha256 text NOT NULL,"
       "  size_bytes bigint NOT NULL,"
       "  examples bigint NOT NULL,"
       "  max_example_tokens bigint NOT NULL,"
       "  created_unix bigint NOT NULL,"
       "  content bytea NOT NULL);"
       "CREATE INDEX train_datasets_tenant ON train_datasets (tenant);"
       "CREATE TABLE train_jobs ("
       "  id text PRIMARY KEY,"
       "  tenant text NOT NULL,"
       "  state integer NOT NULL,"
       "  spec text NOT NULL,"
       "  created_ms bigint NOT NULL,"
       "  started_ms bigint NOT NULL DEFAULT 0,"
       "  finished_ms bigint NOT NULL DEFAULT 0,"
       "  step bigint NOT NULL DEFAULT 0,"
       "  total_steps bigint NOT NULL DEFAULT 0,"
       "  train_loss double precision NOT NULL DEFAULT 0,"
       "  val_loss double precision NOT NULL DEFAULT 0,"
       "  error_code text NOT NULL DEFAULT '',"
       "  error_message text NOT NULL DEFAULT '',"
       "  error_line bigint NOT NULL DEFAULT 0,"
       "  adapter_name text NOT NULL DEFAULT '',"
       "  adapter_version text NOT NULL DEFAULT '',"
       "  eval text NOT NULL DEFAULT '{}',"
       "  resumes bigint NOT NULL DEFAULT 0,"
       "  lease_epoch bigint NOT NULL DEFAULT 0,"
       "  lease_owner text NOT NULL DEFAULT '',"
       "  lease_expires timestamptz,"
       "  cancel_requested boolean NOT NULL DEFAULT false);"
       "CREATE INDEX train_jobs_tenant ON train_jobs (tenant);"
       "CREATE INDEX train_jobs_queue ON train_jobs (state, created_ms, id);"
       "CREATE TABLE train_events ("
       "  job_id text NOT NULL REFERENCES train_jobs (id),"
       "  seq bigint NOT NULL,"
       "  time_ms bigint NOT NULL,"
       "  state integer NOT NULL,"
       "  type text NOT NULL,"
       "  payload text NOT NULL,"
       "  PRIMARY KEY (job_id, seq));"
       "CREATE TABLE train_checkpoint_files ("
       "  job_id text NOT NULL REFERENCES train_jobs (id),"
       "  name text NOT NULL,"
       "  bytes bytea NOT NULL,"
       "  PRIMARY KEY (job_id, name));"
       "ALTER TABLE train_checkpoint_files ALTER COLUMN bytes SET STORAGE EXTERNAL;"
       "CREATE TABLE train_outputs ("
       "  job_id text PRIMARY KEY REFERENCES train_jobs (id),"
       "  sha256 text NOT NULL,"
       "  bytes bytea NOT NULL);"
       "ALTER TABLE train_outputs ALTER COLUMN bytes SET STORAGE EXTERNAL;"},
  };
  return migrations;
}

}  // namespace statetune::storage
