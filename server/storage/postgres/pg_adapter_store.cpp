#include "server/storage/postgres/pg_adapter_store.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <set>

#include "server/engine/adapters/adapter_store.h"
#include "server/engine/util/durable_file.h"
#include "server/engine/util/bounded_json.h"
#include "server/engine/util/sha256.h"
#include "server/storage/postgres/schema.h"

namespace statetune::storage {
namespace fs = std::filesystem;
using engine::AdapterStore;
using engine::StoredAdapterInfo;

namespace {

// Stored metadata is what put() wrote from a validated adapter; still bounded, as any stored input.
constexpr engine::JsonLimits kMetadataLimits{size_t{4} << 20, 32};

// Collects notifications while await_notification() runs; they are handled after it returns, since
// a query from inside libpqxx's callback is not allowed.
class AdapterChanges : public pqxx::notification_receiver {
 public:
  AdapterChanges(pqxx::connection& c, std::vector<std::string>& out)
      : pqxx::notification_receiver(c, kAdapterChannel), out_(out) {}
  void operator()(const std::string& payload, int) override { out_.push_back(payload); }

 private:
  std::vector<std::string>& out_;
};

// Takes the tenant's write lock for this transaction: quotas are per tenant, so every write of one
// tenant (on any replica) happens one at a time.
void lock_tenant(pqxx::work& w, const std::string& tenant) {
  w.exec_params("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "statetune.adapters/" + tenant);
}

}  // namespace

int64_t insert_adapter_version(pqxx::work& w, const engine::AdapterQuota& quota, const std::string& tenant,
                               const std::string& name, const std::string& file_bytes, const std::string& sha256,
                               const engine::Adapter& adapter) {
  const int64_t bytes = static_cast<int64_t>(file_bytes.size());
  lock_tenant(w, tenant);
  w.exec_params("INSERT INTO adapters (tenant, name) VALUES ($1, $2) ON CONFLICT DO NOTHING", tenant, name);
  const auto row = w.exec_params(
      "SELECT current_version, next_version FROM adapters WHERE tenant = $1 AND name = $2 FOR UPDATE", tenant,
      name)[0];
  engine::AdapterQuotaUsage usage;
  usage.current = row[0].is_null() ? 0 : row[0].as<int64_t>();
  const int64_t number = row[1].as<int64_t>();
  usage.adapters =
      w.exec_params("SELECT count(*) FROM adapters WHERE tenant = $1 AND current_version IS NOT NULL", tenant)[0][0]
          .as<int64_t>();
  usage.bytes = w.exec_params("SELECT coalesce(sum(size_bytes), 0) FROM adapter_versions WHERE tenant = $1",
                              tenant)[0][0]
                    .as<int64_t>();
  for (const auto& v : w.exec_params(
           "SELECT version, size_bytes FROM adapter_versions WHERE tenant = $1 AND name = $2", tenant, name)) {
    usage.versions[v[0].as<int64_t>()] = v[1].as<int64_t>();
  }
  usage.exists = !usage.versions.empty();
  // Throws AdapterQuotaExceeded; the transaction then rolls back and nothing is stored.
  const auto prune = engine::check_adapter_quota(quota, tenant, name, usage, bytes);
  w.exec_params(
      "INSERT INTO adapter_versions (tenant, name, version, sha256, size_bytes, created_unix, methods, metadata,"
      " bytes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
      tenant, name, number, sha256, bytes, adapter.created_unix, engine::join_methods(adapter.methods),
      adapter.extra_metadata.dump(), pqxx::binarystring(file_bytes.data(), file_bytes.size()));
  for (int64_t old : prune) {
    w.exec_params("DELETE FROM adapter_versions WHERE tenant = $1 AND name = $2 AND version = $3", tenant, name,
                  old);
  }
  w.exec_params(
      "UPDATE adapters SET current_version = $3::bigint, next_version = $3::bigint + 1, change_seq = change_seq + 1"
      " WHERE tenant = $1 AND name = $2",
      tenant, name, number);
  w.exec_params(kNotifyAdapterChangeSql, kAdapterChannel, tenant, name);
  return number;
}

PgAdapterStore::PgAdapterStore(std::shared_ptr<Database> db, engine::ModelFingerprint base, PgAdapterStoreOptions options)
    : db_(std::move(db)), base_(std::move(base)), options_(std::move(options)) {
  if (!options_.cache_dir.empty()) fs::create_directories(options_.cache_dir);
  run("reading the adapters", [&](pqxx::connection& c) {
    const uint64_t began = applies();
    apply_all(read_entries(c, nullptr, nullptr), began);
  });
  if (options_.follow_changes) listener_thread_ = std::thread([this] { listen_loop(); });
}

PgAdapterStore::~PgAdapterStore() {
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (listener_thread_.joinable()) listener_thread_.join();
}

void PgAdapterStore::run(const char* what, const std::function<void(pqxx::connection&)>& fn) const {
  try {
    db_->with_connection(fn);
  } catch (const DatabaseUnavailable&) {
    ++unavailable_errors_;
    throw engine::AdapterStorageUnavailable(std::string(what) + ": the adapter database is unavailable; retry");
  } catch (const pqxx::failure& e) {
    // A statement failed (not the connection): a bug or a schema mismatch, for the log only.
    ++statement_errors_;
    throw std::runtime_error(std::string(what) + ": " + safe_message(e));
  }
}

PgAdapterStore::Entries PgAdapterStore::read_entries(pqxx::connection& c, const std::string* tenant,
                                                     const std::string* name) const {
  pqxx::read_transaction tx(c);
  const std::string sql =
      "SELECT a.tenant, a.name, a.current_version, a.change_seq, v.version, v.sha256, v.size_bytes,"
      " v.created_unix, v.methods, v.metadata"
      " FROM adapters a LEFT JOIN adapter_versions v ON v.tenant = a.tenant AND v.name = a.name" +
      std::string(tenant != nullptr ? " WHERE a.tenant = $1 AND a.name = $2" : "");
  const pqxx::result rows = tenant != nullptr ? tx.exec_params(sql, *tenant, *name) : tx.exec(sql);
  Entries out;
  for (const auto& row : rows) {
    const std::string t = row[0].as<std::string>(), n = row[1].as<std::string>();
    Entry& e = out[t][n];
    e.current = row[2].is_null() ? 0 : row[2].as<int64_t>();
    e.seq = row[3].as<int64_t>();
    if (row[4].is_null()) continue;
    StoredAdapterInfo info;
    info.tenant = t;
    info.name = n;
    const int64_t number = row[4].as<int64_t>();
    info.version = std::to_string(number);
    info.sha256 = row[5].as<std::string>();
    info.size_bytes = row[6].as<int64_t>();
    info.created_unix = row[7].as<int64_t>();
    info.current = number == e.current;
    try {
      info.methods = engine::parse_methods(row[8].as<std::string>());
      info.extra_metadata = engine::parse_bounded_json(row[9].as<std::string>(), kMetadataLimits, "stored metadata");
    } catch (const std::exception& ex) {
      // Listed all the same; load() validates the bytes themselves.
      spdlog::warn("adapter database: {}/{} version {} has unreadable metadata: {}", t, n, number, ex.what());
    }
    e.versions[number] = std::move(info);
  }
  return out;
}

void PgAdapterStore::apply(const std::string& tenant, const std::string& name, Entry fresh, bool external) const {
  std::vector<std::string> stale;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Entry& mine = entries_[tenant][name];
    if (fresh.seq < mine.seq) return;  // an older read than what the map already reflects
    for (const auto& [number, info] : mine.versions) {
      const bool gone = fresh.versions.count(number) == 0;
      const bool demoted = number == mine.current && number != fresh.current;
      if (gone || demoted) stale.push_back(info.version);
    }
    mine = std::move(fresh);
    mine.written_at = ++applies_;
  }
  if (!external || stale.empty()) return;
  std::lock_guard<std::mutex> lock(listener_mu_);
  if (listener_) listener_(tenant, name, stale);
}

uint64_t PgAdapterStore::applies() const {
  std::lock_guard<std::mutex> lock(mu_);
  return applies_;
}

void PgAdapterStore::apply_all(Entries fresh, uint64_t read_began) const {
  // Adapters rows are never deleted, so one missing from a full read was not in the database at all
  // (a database restored from an older backup): forget it -- unless this replica wrote its entry
  // after the read began (its own put committed meanwhile; the snapshot is older, not the entry).
  std::vector<std::pair<std::string, std::string>> unknown;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [t, names] : entries_) {
      for (const auto& [n, e] : names) {
        const auto ft = fresh.find(t);
        const bool missing = ft == fresh.end() || ft->second.count(n) == 0;
        if (missing && e.written_at <= read_began) unknown.emplace_back(t, n);
      }
    }
  }
  for (auto& [t, names] : fresh) {
    for (auto& [n, e] : names) apply(t, n, std::move(e), /*external=*/true);
  }
  for (const auto& [t, n] : unknown) {
    // As if the database had never had it: a later first put there (change_seq 1) applies again.
    Entry gone;
    gone.seq = 0;
    std::vector<std::string> stale;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (entries_[t][n].written_at > read_began) continue;  // written since the check above
      for (const auto& [number, info] : entries_[t][n].versions) stale.push_back(info.version);
      gone.written_at = ++applies_;
      entries_[t][n] = std::move(gone);
    }
    std::lock_guard<std::mutex> lock(listener_mu_);
    if (listener_ && !stale.empty()) listener_(t, n, stale);
  }
}

void PgAdapterStore::observe_notify_lag(const std::vector<int64_t>& sent_unix_us) const {
  if (sent_unix_us.empty()) return;
  const int64_t now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  std::lock_guard<std::mutex> lock(listener_mu_);
  if (!lag_observer_) return;
  // Clocks of two machines: a small negative difference is skew, not time travel.
  for (int64_t sent : sent_unix_us) lag_observer_(static_cast<double>(std::max<int64_t>(0, now_us - sent)) / 1e6);
}

fs::path PgAdapterStore::cache_path(const std::string& sha256) const {
  return options_.cache_dir / (sha256 + ".safetensors");
}

std::string PgAdapterStore::put(const std::string& tenant, const std::string& name, const std::string& file_bytes,
                                engine::Adapter* parsed) {
  engine::validate_name("tenant", tenant);
  engine::validate_name("adapter", name);
  const auto before = get(tenant, name);
  engine::Adapter adapter = engine::parse_adapter_upload(
      base_, tenant, name, file_bytes, before ? " (version " + before->version + " stays current)" : std::string());
  const std::string sha256 = engine::Sha256::hex(file_bytes);
  const int64_t bytes = static_cast<int64_t>(file_bytes.size());
  int64_t number = 0;
  Entries fresh;
  run("storing the adapter", [&](pqxx::connection& c) {
    pqxx::work w(c);
    number = insert_adapter_version(w, options_.quota, tenant, name, file_bytes, sha256, adapter);
    w.commit();
  });
  // Read back outside the write transaction: the commit is what counts, a failed read is healed by
  // the notification this replica hears like every other.
  try {
    run("reading the adapter back", [&](pqxx::connection& c) { fresh = read_entries(c, &tenant, &name); });
    apply(tenant, name, std::move(fresh[tenant][name]), /*external=*/false);
  } catch (const std::exception& e) {
    spdlog::warn("adapter database: {}/{} version {} stored; reading it back failed: {}", tenant, name, number,
                 e.what());
  }
  if (!options_.cache_dir.empty()) {
    try {
      engine::write_file_durably(cache_path(sha256), file_bytes);
    } catch (const std::exception& e) {
      spdlog::warn("adapter cache: cannot write {}: {}", cache_path(sha256).string(), e.what());
    }
  }
  spdlog::info("adapter database: {}/{} version {} stored ({} bytes, sha256 {})", tenant, name, number, bytes,
               sha256);
  adapter.name = name;
  adapter.version = std::to_string(number);
  if (parsed != nullptr) *parsed = std::move(adapter);
  return std::to_string(number);
}

std::optional<StoredAdapterInfo> PgAdapterStore::get(const std::string& tenant, const std::string& name,
                                                     const std::optional<std::string>& version) const {
  engine::validate_name("tenant", tenant);
  engine::validate_name("adapter", name);
  const int64_t wanted = version ? engine::parse_requested_version(*version) : 0;
  const auto find = [&]() -> std::optional<StoredAdapterInfo> {
    std::lock_guard<std::mutex> lock(mu_);
    auto t = entries_.find(tenant);
    if (t == entries_.end()) return std::nullopt;
    auto a = t->second.find(name);
    if (a == t->second.end()) return std::nullopt;
    const int64_t number = version ? wanted : a->second.current;
    auto v = a->second.versions.find(number);
    if (number == 0 || v == a->second.versions.end()) return std::nullopt;
    return v->second;
  };
  if (auto found = find(); found || !version) return found;
  // A version this replica has not heard of yet (its notification may still be on the way): ask.
  Entries fresh;
  run("looking the adapter version up", [&](pqxx::connection& c) { fresh = read_entries(c, &tenant, &name); });
  if (fresh.count(tenant) && fresh[tenant].count(name)) {
    apply(tenant, name, std::move(fresh[tenant][name]), /*external=*/true);
  }
  return find();
}

std::vector<StoredAdapterInfo> PgAdapterStore::list(const std::string& tenant) const {
  engine::validate_name("tenant", tenant);
  std::vector<StoredAdapterInfo> out;
  std::lock_guard<std::mutex> lock(mu_);
  auto t = entries_.find(tenant);
  if (t == entries_.end()) return out;
  for (const auto& [name, e] : t->second) {
    if (auto v = e.versions.find(e.current); e.current != 0 && v != e.versions.end()) out.push_back(v->second);
  }
  return out;
}

std::vector<StoredAdapterInfo> PgAdapterStore::versions(const std::string& tenant, const std::string& name) const {
  engine::validate_name("tenant", tenant);
  engine::validate_name("adapter", name);
  std::vector<StoredAdapterInfo> out;
  std::lock_guard<std::mutex> lock(mu_);
  auto t = entries_.find(tenant);
  if (t == entries_.end()) return out;
  auto a = t->second.find(name);
  if (a == t->second.end()) return out;
  for (const auto& [number, info] : a->second.versions) out.push_back(info);
  return out;
}

bool PgAdapterStore::remove(const std::string& tenant, const std::string& name) {
  engine::validate_name("tenant", tenant);
  engine::validate_name("adapter", name);
  bool removed = false;
  run("deleting the adapter", [&](pqxx::connection& c) {
    pqxx::work w(c);
    lock_tenant(w, tenant);
    const auto deleted = w.exec_params(
        "DELETE FROM adapter_versions WHERE tenant = $1 AND name = $2 RETURNING version", tenant, name);
    removed = !deleted.empty();
    if (!removed) return;  // rolls back: nothing to announce
    w.exec_params(
        "UPDATE adapters SET current_version = NULL, change_seq = change_seq + 1 WHERE tenant = $1 AND name = $2",
        tenant, name);
    w.exec_params(kNotifyAdapterChangeSql, kAdapterChannel, tenant, name);
    w.commit();
  });
  if (removed) {
    // What the database now holds for the name: no versions. The sequence is read back by the
    // notification; until then this replica's own entry is emptied at once.
    std::lock_guard<std::mutex> lock(mu_);
    auto& e = entries_[tenant][name];
    e.versions.clear();
    e.current = 0;
    e.written_at = ++applies_;
    spdlog::info("adapter database: {}/{} deleted", tenant, name);
  }
  return removed;
}

engine::Adapter PgAdapterStore::load(const std::string& tenant, const std::string& name,
                                     const std::string& version) const {
  const auto info = get(tenant, name, version);
  if (!info) {
    throw engine::AdapterNotFound("adapter " + tenant + "/" + name + " version " + version + " does not exist");
  }
  const size_t limit = static_cast<size_t>(max_file_bytes());
  std::string bytes;
  const fs::path cached = options_.cache_dir.empty() ? fs::path() : cache_path(info->sha256);
  if (!cached.empty() && fs::exists(cached)) {
    try {
      bytes = engine::read_file(cached, limit);
    } catch (const std::exception& e) {
      spdlog::warn("adapter cache: cannot read {}: {}", cached.string(), e.what());
    }
    if (!bytes.empty() && engine::Sha256::hex(bytes) != info->sha256) {
      spdlog::warn("adapter cache: {} does not match its sha256; reading the database", cached.string());
      bytes.clear();
    }
  }
  if (bytes.empty()) {
    run("reading the adapter", [&](pqxx::connection& c) {
      pqxx::read_transaction tx(c);
      const auto rows = tx.exec_params(
          "SELECT bytes FROM adapter_versions WHERE tenant = $1 AND name = $2 AND version = $3", tenant, name,
          engine::parse_requested_version(version));
      if (rows.empty()) return;
      bytes = pqxx::binarystring(rows[0][0]).str();
    });
    if (bytes.empty()) {
      throw engine::AdapterNotFound("adapter " + tenant + "/" + name + " version " + version + " was deleted");
    }
    if (engine::Sha256::hex(bytes) != info->sha256) {
      throw std::runtime_error("adapter " + tenant + "/" + name + " version " + version +
                               ": the stored bytes do not match their sha256");
    }
    if (!cached.empty()) {
      try {
        engine::write_file_durably(cached, bytes);
      } catch (const std::exception& e) {
        spdlog::warn("adapter cache: cannot write {}: {}", cached.string(), e.what());
      }
    }
  }
  engine::Adapter adapter = engine::parse_adapter(bytes, "adapter " + tenant + "/" + name + " version " + version);
  engine::check_compatible(adapter, base_);
  adapter.name = name;
  adapter.version = info->version;
  return adapter;
}

std::vector<std::string> PgAdapterStore::tenants() const {
  std::vector<std::string> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [t, names] : entries_) {
    for (const auto& [n, e] : names) {
      if (e.current != 0) {
        out.push_back(t);
        break;
      }
    }
  }
  return out;
}

engine::AdapterStorageStats PgAdapterStore::stats() const {
  engine::AdapterStorageStats s;
  s.resyncs = resyncs_.load();
  s.unavailable_errors = unavailable_errors_.load();
  s.connections = db_->open_connections();
  const auto use = db_->pool_use();
  s.connections_in_use = use.in_use;
  s.connections_idle = use.idle;
  s.statement_errors = statement_errors_.load();
  s.listening = listening_.load();
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [t, names] : entries_) {
    for (const auto& [n, e] : names) s.adapters_known += e.current != 0 ? 1 : 0;
  }
  return s;
}

void PgAdapterStore::set_change_listener(ChangeListener listener) {
  std::lock_guard<std::mutex> lock(listener_mu_);
  listener_ = std::move(listener);
}

void PgAdapterStore::set_notify_lag_observer(LagObserver observer) {
  std::lock_guard<std::mutex> lock(listener_mu_);
  lag_observer_ = std::move(observer);
}

void PgAdapterStore::listen_loop() {
  auto backoff = db_->options().min_backoff;
  while (true) {
    {
      std::lock_guard<std::mutex> lock(stop_mu_);
      if (stopping_) return;
    }
    try {
      auto c = db_->connect();
      std::vector<std::string> payloads;
      AdapterChanges receiver(*c, payloads);  // LISTEN
      // Listening first, then the full read: a change committed in between is both read and heard.
      const uint64_t began = applies();
      apply_all(read_entries(*c, nullptr, nullptr), began);
      ++resyncs_;
      listening_ = true;
      backoff = db_->options().min_backoff;
      spdlog::info("adapter database: listening on {} ({} resyncs)", db_->describe(), resyncs_.load());
      auto last_ping = std::chrono::steady_clock::now();
      while (true) {
        {
          std::lock_guard<std::mutex> lock(stop_mu_);
          if (stopping_) return;
        }
        c->await_notification(0, 200000);
        std::set<std::pair<std::string, std::string>> changed;
        std::vector<int64_t> sent_unix_us;  // of the notifications that carry it
        for (const auto& p : payloads) {
          try {
            const auto j = engine::parse_bounded_json(p, engine::JsonLimits{4096, 2}, "adapter notification");
            changed.emplace(j.at("tenant").get<std::string>(), j.at("name").get<std::string>());
            if (const auto sent = j.find("sent_unix_us"); sent != j.end() && sent->is_number_integer()) {
              sent_unix_us.push_back(sent->get<int64_t>());
            }
          } catch (const std::exception& e) {
            spdlog::warn("adapter database: ignoring a notification that is not ours: {}", e.what());
          }
        }
        payloads.clear();
        for (const auto& [t, n] : changed) {
          Entries fresh = read_entries(*c, &t, &n);
          if (fresh.count(t) && fresh[t].count(n)) apply(t, n, std::move(fresh[t][n]), /*external=*/true);
        }
        observe_notify_lag(sent_unix_us);
        // A broken connection does not always wake await_notification; a query notices it.
        const auto now = std::chrono::steady_clock::now();
        if (now - last_ping > std::chrono::seconds(1)) {
          pqxx::nontransaction(*c).exec("SELECT 1");
          last_ping = now;
        }
      }
    } catch (const std::exception& e) {
      const bool was_listening = listening_.exchange(false);
      if (was_listening || backoff == db_->options().min_backoff) {
        spdlog::warn("adapter database: lost {} ({}); reconnecting", db_->describe(), safe_message(e));
      }
    }
    std::unique_lock<std::mutex> lock(stop_mu_);
    stop_cv_.wait_for(lock, backoff, [&] { return stopping_; });
    backoff = std::min(db_->options().max_backoff, backoff * 2);
  }
}

}  // namespace statetune::storage
