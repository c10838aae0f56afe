// The shared-mode AdapterStorage (shared/docs/scale-out.md): every replica's adapters in one
// PostgreSQL database, each replica a cache.
//
// In the database: adapters (tenant, name, current_version, next_version, change_seq) and immutable
// adapter_versions with their bytes (schema.cpp). put() is one transaction (quota check, version row
// with the bytes, current pointer) followed on commit by a NOTIFY on kAdapterChannel; remove() the
// same. A per-tenant advisory transaction lock serializes a tenant's writes across replicas, so quotas
// hold and concurrent uploads of one name get distinct versions.
//
// In this replica: a map tenant/name -> versions (metadata, no bytes) + current, read in full at
// construction, kept current by a LISTEN thread, and read in full again after every (re)connect of
// that thread so nothing missed while disconnected stays stale. Each adapter's change_seq orders what
// is applied, so an older read never overwrites a newer one. A request resolves through the map, so
// generation keeps working on known adapters while the database is down; an explicit version the map
// does not know is looked up in the database before the answer is "not found". Bytes are cached on
// local disk by sha256 (written on upload and on the first load) and verified on every read.
#pragma once

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "server/engine/adapters/adapter_storage.h"
#include "server/storage/postgres/database.h"

namespace statetune::storage {

struct PgAdapterStoreOptions {
  std::filesystem::path cache_dir;  // local copies of version bytes, by sha256 (created if missing)
  engine::AdapterQuota quota;
  // Run the LISTEN thread. Off only where a test needs a replica that hears nothing.
  bool follow_changes = true;
};

// The write half of an upload, inside the caller's transaction `w` (which commits): takes the
// tenant's write lock, checks the quotas (engine::AdapterQuotaExceeded), inserts `file_bytes` (already
// validated into `adapter`, sha256 `sha256`) as the next version of tenant/name, makes it current
// and queues the NOTIFY every replica hears on commit. Returns the version number. PgAdapterStore::put
// and the training workers' publish (PgJobStore) both store adapters through this.
int64_t insert_adapter_version(pqxx::work& w, const engine::AdapterQuota& quota, const std::string& tenant,
                               const std::string& name, const std::string& file_bytes, const std::string& sha256,
                               const engine::Adapter& adapter);

class PgAdapterStore : public engine::AdapterStorage {
 public:
  // Reads every adapter's metadata (the database must be migrated) and starts listening. Throws
  // DatabaseUnavailable when the database cannot be reached.
  PgAdapterStore(std::shared_ptr<Database> db, engine::ModelFingerprint base, PgAdapterStoreOptions options);
  ~PgAdapterStore() override;

  const engine::ModelFingerprint& base() const override { return base_; }
  std::string put(const std::string& tenant, const std::string& name, const std::string& file_bytes,
                  engine::Adapter* parsed = nullptr) override;
  std::optional<engine::StoredAdapterInfo> get(const std::string& tenant, const std::string& name,
                                               const std::optional<std::string>& version = std::nullopt) const override;
  std::vector<engine::StoredAdapterInfo> list(const std::string& tenant) const override;
  std::vector<engine::StoredAdapterInfo> versions(const std::string& tenant, const std::string& name) const override;
  bool remove(const std::string& tenant, const std::string& name) override;
  engine::Adapter load(const std::string& tenant, const std::string& name, const std::string& version) const override;
  std::vector<std::string> tenants() const override;
  void set_change_listener(ChangeListener listener) override;
  void set_notify_lag_observer(LagObserver observer) override;
  engine::AdapterStorageStats stats() const override;

  // Full reads done by the LISTEN thread (one per (re)connect) and whether it is connected now.
  int64_t resyncs() const { return resyncs_.load(); }
  bool listening() const { return listening_.load(); }

 private:
  struct Entry {
    int64_t seq = -1;     // the database's change_seq this entry reflects
    int64_t current = 0;  // 0: none (deleted, or never had a version)
    std::map<int64_t, engine::StoredAdapterInfo> versions;
    uint64_t written_at = 0;  // applies_ when this entry was last written (see apply_all)
  };
  using Entries = std::map<std::string, std::map<std::string, Entry>>;

  // Reads adapters (one tenant/name, or all) with their versions' metadata.
  Entries read_entries(pqxx::connection& c, const std::string* tenant, const std::string* name) const;
  // Replaces tenant/name's entry unless the map already reflects a newer change; `external` changes
  // (heard from the database, not made here) are reported to the change listener.
  void apply(const std::string& tenant, const std::string& name, Entry fresh, bool external) const;
  // Applies a full read. An adapter missing from it is forgotten, unless its entry was written after
  // the read began (`read_began`: applies_ then): a put of this replica that committed while the read
  // ran is newer than the read, not gone.
  void apply_all(Entries fresh, uint64_t read_began) const;
  uint64_t applies() const;
  // Runs `fn` on a pooled connection, mapping "database unreachable" to AdapterStorageUnavailable.
  void run(const char* what, const std::function<void(pqxx::connection&)>& fn) const;
  void listen_loop();
  // Reports to the lag observer how long ago each applied notification was sent.
  void observe_notify_lag(const std::vector<int64_t>& sent_unix_us) const;
  std::filesystem::path cache_path(const std::string& sha256) const;

  std::shared_ptr<Database> db_;
  engine::ModelFingerprint base_;
  PgAdapterStoreOptions options_;
  mutable std::mutex mu_;
  mutable Entries entries_;
  mutable uint64_t applies_ = 0;  // entry writes so far (guarded by mu_)
  mutable std::mutex listener_mu_;
  ChangeListener listener_;
  LagObserver lag_observer_;  // guarded by listener_mu_

  std::atomic<int64_t> resyncs_{0};
  mutable std::atomic<int64_t> unavailable_errors_{0};
  mutable std::atomic<int64_t> statement_errors_{0};
  std::atomic<bool> listening_{false};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread listener_thread_;
};

}  // namespace statetune::storage
