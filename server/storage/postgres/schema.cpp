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
  };
  return migrations;
}

}  // namespace statetune::storage
