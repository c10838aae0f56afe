#include "server/engine/adapters/adapter_registry.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "server/engine/adapters/adapter_store.h"

namespace statetune::engine {

namespace {
double ms_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}
}  // namespace

AdapterRegistry::AdapterRegistry(AdapterStorage& storage, AdapterPool& pool) : storage_(storage), pool_(pool) {
  storage_.set_change_listener(
      [this](const std::string& tenant, const std::string& name, const std::vector<std::string>& stale) {
        invalidate(tenant, name, stale);
      });
}

AdapterRegistry::~AdapterRegistry() { storage_.set_change_listener(nullptr); }

void AdapterRegistry::invalidate(const std::string& tenant, const std::string& name,
                                 const std::vector<std::string>& versions) {
  for (const auto& v : versions) pool_.invalidate(AdapterStore::pool_key(tenant, name, v));
}

AdapterUpload AdapterRegistry::upload(const std::string& tenant, const std::string& name,
                                      const std::string& file_bytes) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto previous = storage_.get(tenant, name);
  Adapter adapter;
  AdapterUpload out;
  out.version = storage_.put(tenant, name, file_bytes, &adapter);
  const auto stored = std::chrono::steady_clock::now();
  // New requests resolve the new key; the old version's slot is freed once its last lease ends.
  if (previous && previous->version != out.version) invalidate(tenant, name, {previous->version});
  // Skipped when every slot is pinned by running requests (the first request then loads it).
  try {
    out.warmed = pool_.preload(AdapterStore::pool_key(tenant, name, out.version), adapter);
  } catch (const std::exception& e) {
    // Stored and current all the same; the first request loads it from the storage and reports why.
    spdlog::warn("adapter registry: pre-warming {}/{} version {} failed: {}", tenant, name, out.version, e.what());
  }
  out.store_ms = ms_between(t0, stored);
  out.warm_ms = ms_between(stored, std::chrono::steady_clock::now());
  return out;
}

size_t AdapterRegistry::remove(const std::string& tenant, const std::string& name) {
  const auto versions = storage_.versions(tenant, name);  // validates the name
  if (versions.empty() || !storage_.remove(tenant, name)) {
    throw AdapterNotFound("adapter '" + name + "' not found");
  }
  std::vector<std::string> numbers;
  for (const auto& v : versions) numbers.push_back(v.version);
  invalidate(tenant, name, numbers);
  return versions.size();
}

std::optional<ResolvedAdapter> AdapterRegistry::resolve(const std::string& tenant, const std::string& name,
                                                        const std::optional<std::string>& version) const {
  const auto info = storage_.get(tenant, name, version);
  if (!info) return std::nullopt;
  ResolvedAdapter r;
  r.version = info->version;
  r.pool_key = AdapterStore::pool_key(tenant, name, info->version);
  const AdapterStorage* storage = &storage_;
  r.loader = [storage, tenant, name, v = info->version] { return storage->load(tenant, name, v); };
  return r;
}

}  // namespace statetune::engine
