// The per-tenant adapter quota flags. statetune-serve checks them on every upload; in the shared mode
// statetune-train stores trained adapters through the same database transaction, so it takes the
// same flags (set them to the same values on both).
#pragma once

#include <stdexcept>

#include "server/common/config.h"
#include "server/engine/adapters/adapter_storage.h"

namespace statetune::common {

inline void add_adapter_quota_flags(FlagSet& flags) {
  flags.add("tenant-adapter-bytes", "1GiB", "most adapter bytes (every version) one tenant may store");
  flags.add("tenant-adapters", "256", "most adapters one tenant may store");
  flags.add("adapter-versions", "64", "most versions kept per adapter (the current one included)");
  flags.add_bool("prune-adapter-versions", false,
                 "at --adapter-versions, delete the oldest non-current version instead of refusing the upload");
}

inline engine::AdapterQuota adapter_quota_from_flags(const FlagSet& flags) {
  engine::AdapterQuota q;
  q.tenant_bytes = flags.bytes("tenant-adapter-bytes");
  q.tenant_adapters = flags.integer("tenant-adapters");
  q.versions_per_adapter = flags.integer("adapter-versions");
  q.prune_old_versions = flags.boolean("prune-adapter-versions");
  if (q.tenant_bytes < 1 || q.tenant_adapters < 1 || q.versions_per_adapter < 1) {
    throw std::invalid_argument("--tenant-adapter-bytes, --tenant-adapters and --adapter-versions must be >= 1");
  }
  return q;
}

}  // namespace statetune::common
