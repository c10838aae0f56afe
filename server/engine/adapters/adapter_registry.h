// The one place that ties the adapter storage (where versions live: a local folder or PostgreSQL,
// adapter_storage.h) to the device slot pool (adapter_pool.h): upload (validate, store, make current,
// pre-warm), delete, resolve tenant/name[@version] -> version -> pool key + loader, and the hot-swap
// sequence. The serving handlers call this, never the storage or the pool for these steps.
//
// Hot swap: a new version gets a new pool key, so running requests keep the slot of the version they
// started with; the previous version's key is invalidated so its slot is freed once its last lease
// ends, and the new version is copied into a slot right away (pre-warm) so the first request naming it
// does not parse the file on the engine thread. Changes another replica made (heard through the
// storage's change listener) invalidate the stale keys the same way.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "server/engine/adapters/adapter_pool.h"
#include "server/engine/adapters/adapter_storage.h"

namespace statetune::engine {

struct AdapterUpload {
  std::string version;  // the version this upload created (not whichever a concurrent one made current)
  bool warmed = false;  // copied into a pool slot already
  double store_ms = 0, warm_ms = 0;
};

struct ResolvedAdapter {
  std::string version;
  std::string pool_key;        // "tenant/name@version"
  AdapterPool::Loader loader;  // reads the version from the storage on a pool miss
};

class AdapterRegistry {
 public:
  // Both must outlive the registry. Subscribes to the storage's change listener.
  AdapterRegistry(AdapterStorage& storage, AdapterPool& pool);
  ~AdapterRegistry();
  AdapterRegistry(const AdapterRegistry&) = delete;
  AdapterRegistry& operator=(const AdapterRegistry&) = delete;

  AdapterStorage& storage() { return storage_; }
  const AdapterStorage& storage() const { return storage_; }

  // Stores validated file bytes as the next version of tenant/name, makes it current and pre-warms
  // it. Throws what AdapterStorage::put throws; nothing changes then.
  AdapterUpload upload(const std::string& tenant, const std::string& name, const std::string& file_bytes);
  // Deletes every version; returns how many there were. Throws AdapterNotFound when there were none.
  size_t remove(const std::string& tenant, const std::string& name);
  // The version a new request on tenant/name (current, or the one named) uses; nullopt when absent.
  std::optional<ResolvedAdapter> resolve(const std::string& tenant, const std::string& name,
                                         const std::optional<std::string>& version = std::nullopt) const;

 private:
  void invalidate(const std::string& tenant, const std::string& name, const std::vector<std::string>& versions);

  AdapterStorage& storage_;
  AdapterPool& pool_;
};

}  // namespace statetune::engine
