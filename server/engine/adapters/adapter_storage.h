// Where a serving replica's adapter versions live, behind one interface with two implementations:
// AdapterStore (a local folder, the default) and storage::PgAdapterStore (PostgreSQL, shared by
// every replica). The serving layer and the AdapterRegistry only see this interface, so they do not
// know which one runs.
//
// The contract both keep: versions are immutable and never repeat for a name (even after remove()),
// so the pool key "tenant/name@version" always means one content; put() validates the file against
// the served base before anything is stored and makes it current only once it is durable; a put or
// remove that fails changes nothing; quotas are checked where the write happens.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "server/engine/adapters/adapter.h"
#include "server/engine/model/model_config.h"
#include "server/engine/util/engine_error.h"

namespace statetune::engine {

// No such tenant/adapter/version. Invalid names and rejected uploads throw std::invalid_argument
// (kInvalidArgument); I/O failures std::runtime_error (kInternal).
class AdapterNotFound : public EngineError {
 public:
  explicit AdapterNotFound(const std::string& message) : EngineError(ErrorKind::kNotFound, message) {}
};

// A put that would take the tenant past one of its AdapterQuota limits. Nothing was stored.
class AdapterQuotaExceeded : public EngineError {
 public:
  explicit AdapterQuotaExceeded(const std::string& message) : EngineError(ErrorKind::kResourceExhausted, message) {}
};

// The storage cannot be reached right now (a shared database is down or restarting); the caller may
// retry. Nothing was changed, or (for a commit whose outcome is unknown) the message says so.
class AdapterStorageUnavailable : public EngineError {
 public:
  explicit AdapterStorageUnavailable(const std::string& message) : EngineError(ErrorKind::kUnavailable, message) {}
};

// What one tenant may keep in the store. Checked before anything is written, counting puts still in
// flight, so concurrent uploads cannot overshoot together.
struct AdapterQuota {
  int64_t tenant_bytes = int64_t{1} << 30;  // version files of all the tenant's adapters
  int64_t tenant_adapters = 256;            // adapters with at least one version
  int64_t versions_per_adapter = 64;        // versions kept of one adapter, the current one included
  // At versions_per_adapter: false refuses the put; true stores it and deletes the oldest versions
  // that are not current (their bytes count as freed for the tenant_bytes check).
  bool prune_old_versions = false;
};

// What a tenant holds at the moment of a put, as the quota check needs it.
struct AdapterQuotaUsage {
  int64_t adapters = 0;     // adapters of the tenant with a version (or a put in flight)
  int64_t bytes = 0;        // all their versions' bytes (and puts in flight)
  bool exists = false;      // the adapter being put already has a version (or a put in flight)
  int64_t current = 0;      // its current version (0: none)
  int64_t in_flight = 0;    // its puts still writing (they count as kept versions)
  std::map<int64_t, int64_t> versions;  // its stored versions: number -> bytes
};

// Checks one more version of `bytes` for tenant/name against `quota`; returns the versions to delete
// (oldest non-current first) when prune_old_versions makes room. Throws AdapterQuotaExceeded.
std::vector<int64_t> check_adapter_quota(const AdapterQuota& quota, const std::string& tenant,
                                         const std::string& name, const AdapterQuotaUsage& usage,
                                         int64_t bytes);

// The largest adapter file a store can accept for `base` (every method in fp32 plus header room), so
// a receiver can refuse a bigger upload before it has read it.
int64_t max_adapter_file_bytes(const ModelFingerprint& base);

// Validates uploaded file bytes against `base` in memory (size, format, shapes, finite values, same
// base). Throws std::invalid_argument "adapter upload tenant/name rejected: ..." + `suffix`.
Adapter parse_adapter_upload(const ModelFingerprint& base, const std::string& tenant, const std::string& name,
                             std::string_view file_bytes, const std::string& suffix = "");

// "12" -> 12; anything but a positive decimal without leading zeros -> 0.
int64_t parse_adapter_version(const std::string& s);
// The same for a version a caller asked for: throws std::invalid_argument instead of returning 0.
int64_t parse_requested_version(const std::string& version);

struct StoredAdapterInfo {
  std::string tenant, name, version;
  std::filesystem::path path;  // the local file (empty when the bytes live in a database)
  std::string sha256;          // of the file bytes (empty where the store does not keep it)
  int64_t size_bytes = 0;
  int64_t created_unix = 0;
  std::vector<std::string> methods;
  nlohmann::json extra_metadata = nlohmann::json::object();
  bool current = false;
};

// What a shared storage's replica sees (all zero for the local store), for metrics.
struct AdapterStorageStats {
  int64_t adapters_known = 0;        // adapters with a current version in this replica's map
  int64_t resyncs = 0;               // full re-reads after a (re)connect of the change listener
  int64_t unavailable_errors = 0;    // calls that failed because the database was unreachable
  int64_t connections = 0;           // open request connections
  bool listening = false;            // the change listener is connected
  int64_t connections_in_use = 0, connections_idle = 0;  // of `connections`
  int64_t statement_errors = 0;      // calls that failed on a statement (not on reaching the database)
};

class AdapterStorage {
 public:
  virtual ~AdapterStorage() = default;

  virtual const ModelFingerprint& base() const = 0;
  int64_t max_file_bytes() const { return max_adapter_file_bytes(base()); }

  // Validates `file_bytes` against the base in memory, then stores them as the next version and makes
  // it current. Returns the new version; `parsed` (optional) receives the validated adapter, named and
  // versioned. Throws std::invalid_argument (rejected file), AdapterQuotaExceeded,
  // AdapterStorageUnavailable or std::runtime_error; in every case nothing of the attempt is kept.
  virtual std::string put(const std::string& tenant, const std::string& name, const std::string& file_bytes,
                          Adapter* parsed = nullptr) = 0;
  // The current version (no `version`) or a given one; nullopt when absent.
  virtual std::optional<StoredAdapterInfo> get(const std::string& tenant, const std::string& name,
                                               const std::optional<std::string>& version = std::nullopt) const = 0;
  // The current version of every adapter of `tenant`, by name.
  virtual std::vector<StoredAdapterInfo> list(const std::string& tenant) const = 0;
  // Every stored version of one adapter, oldest first.
  virtual std::vector<StoredAdapterInfo> versions(const std::string& tenant, const std::string& name) const = 0;
  // Deletes every version of the adapter; the name can be reused and continues the version count.
  // Returns false if it had no versions.
  virtual bool remove(const std::string& tenant, const std::string& name) = 0;
  // Reads one version (validated, compatible with the base). Throws AdapterNotFound.
  virtual Adapter load(const std::string& tenant, const std::string& name, const std::string& version) const = 0;
  virtual std::vector<std::string> tenants() const = 0;

  // Called when the storage learns that someone else (another replica) changed tenant/name; `stale`
  // are the versions this replica may still hold that are no longer current or no longer exist. A
  // store only this process writes never calls it.
  using ChangeListener = std::function<void(const std::string& tenant, const std::string& name,
                                            const std::vector<std::string>& stale)>;
  virtual void set_change_listener(ChangeListener listener) { (void)listener; }
  // Called with the notify lag of every change the storage hears from the database: seconds from the
  // writer's NOTIFY (the last statement before its commit) to this replica having applied it.
  using LagObserver = std::function<void(double seconds)>;
  virtual void set_notify_lag_observer(LagObserver observer) { (void)observer; }
  virtual AdapterStorageStats stats() const { return {}; }
};

}  // namespace statetune::engine
