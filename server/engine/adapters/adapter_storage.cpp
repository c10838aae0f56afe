#include "server/engine/adapters/adapter_storage.h"

#include "server/engine/util/printable.h"

namespace statetune::engine {

namespace {
// Header room allowed beyond the tensors (metadata such as eval results is small; this is generous).
constexpr int64_t kMaxAdapterHeaderBytes = int64_t{16} << 20;
}  // namespace

int64_t parse_adapter_version(const std::string& s) {
  if (s.empty() || s.size() > 18 || s[0] == '0') return 0;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return 0;
    v = v * 10 + (c - '0');
  }
  return v;
}

int64_t parse_requested_version(const std::string& version) {
  const int64_t number = parse_adapter_version(version);
  if (number == 0) {
    throw std::invalid_argument("adapter version '" + printable_excerpt(version) +
                                "' is invalid: versions are positive integers (1, 2, ...)");
  }
  return number;
}

int64_t max_adapter_file_bytes(const ModelFingerprint& base) {
  // A valid file holds at most every method in fp32 plus its header.
  const int64_t all_methods_fp32 = static_cast<int64_t>(sizeof(float)) * base.n_layer * base.d_inner *
                                   (2 * base.d_state + 1);
  return all_methods_fp32 + kMaxAdapterHeaderBytes;
}

Adapter parse_adapter_upload(const ModelFingerprint& base, const std::string& tenant, const std::string& name,
                             std::string_view file_bytes, const std::string& suffix) {
  const auto rejected = [&](const std::string& why) {
    return std::invalid_argument("adapter upload " + tenant + "/" + name + " rejected: " + why + suffix);
  };
  // Refuse oversized uploads before parsing.
  const int64_t limit = max_adapter_file_bytes(base);
  if (static_cast<int64_t>(file_bytes.size()) > limit) {
    throw rejected(std::to_string(file_bytes.size()) + " bytes is larger than any adapter for this " +
                   "base model can be (" + std::to_string(limit) + " bytes)");
  }
  try {
    Adapter adapter = parse_adapter(file_bytes, "upload " + tenant + "/" + name);
    check_compatible(adapter, base);
    return adapter;
  } catch (const std::exception& e) {
    throw rejected(e.what());
  }
}

std::vector<int64_t> check_adapter_quota(const AdapterQuota& quota, const std::string& tenant,
                                         const std::string& name, const AdapterQuotaUsage& usage,
                                         int64_t bytes) {
  const auto over = [&](const std::string& why) {
    return AdapterQuotaExceeded("adapter upload " + tenant + "/" + name + " refused: " + why);
  };
  if (!usage.exists && usage.adapters >= quota.tenant_adapters) {
    throw over("tenant " + tenant + " has " + std::to_string(usage.adapters) + " adapters, its quota is " +
               std::to_string(quota.tenant_adapters) + "; delete one to make room");
  }
  std::vector<int64_t> prune;
  int64_t freed_bytes = 0;  // by pruning, once this version is stored
  const int64_t kept = static_cast<int64_t>(usage.versions.size()) + usage.in_flight;
  if (usage.exists && kept >= quota.versions_per_adapter) {
    if (!quota.prune_old_versions) {
      throw over("the adapter keeps " + std::to_string(kept) + " versions, the most allowed per adapter (" +
                 std::to_string(quota.versions_per_adapter) + "); delete the adapter to start over");
    }
    int64_t to_prune = kept + 1 - quota.versions_per_adapter;
    for (const auto& [number, size] : usage.versions) {
      if (to_prune == 0) break;
      if (number == usage.current) continue;
      freed_bytes += size;
      prune.push_back(number);
      --to_prune;
    }
    if (to_prune > 0) {
      throw over("the adapter keeps " + std::to_string(kept) + " versions being written or current, the " +
                 "most allowed per adapter (" + std::to_string(quota.versions_per_adapter) + ")");
    }
  }
  if (usage.bytes - freed_bytes + bytes > quota.tenant_bytes) {
    throw over("tenant " + tenant + "'s adapters would take " + std::to_string(usage.bytes - freed_bytes + bytes) +
               " bytes, its quota is " + std::to_string(quota.tenant_bytes) + "; delete adapters to make room");
  }
  return prune;
}

}  // namespace statetune::engine
