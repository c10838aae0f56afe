#include "server/engine/adapters/adapter_store.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <system_error>
#include <utility>

#include "server/engine/adapters/durable_file.h"
#include "server/engine/util/bounded_json.h"
#include "server/engine/util/printable.h"

namespace statetune::engine {
namespace fs = std::filesystem;

namespace {

constexpr const char* kIndexFile = "index.json";
constexpr const char* kVersionSuffix = ".safetensors";
// Staged uploads and atomic-write leftovers; a crash can leave them behind, restart removes them.
constexpr const char* kStagedSuffix = ".upload";
constexpr const char* kTmpSuffix = ".tmp";
// Not a valid tenant name (names cannot start with '.'), so it never collides with a tenant.
constexpr const char* kQuarantineDir = ".quarantine";
// index.json is two fields; anything larger or nested is not one the store wrote.
constexpr JsonLimits kIndexLimits{4096, 2};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_valid_name(const std::string& value) {
  if (value.empty() || value.size() > 64 || value[0] == '.') return false;
  return std::all_of(value.begin(), value.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

// A folder's entries, read before any of them is moved or deleted.
std::vector<fs::directory_entry> entries_of(const fs::path& dir) {
  return {fs::directory_iterator(dir), fs::directory_iterator()};
}

// Removes `dir` if it is empty; false (and no error) otherwise.
bool remove_if_empty(const fs::path& dir) {
  std::error_code ec;
  return fs::remove(dir, ec) && !ec;
}

}  // namespace

AdapterStore::AdapterStore(fs::path root, ModelFingerprint base, AdapterQuota quota)
    : root_(std::move(root)), base_(std::move(base)), quota_(quota) {
  fs::create_directories(root_);
  reload();
}

void AdapterStore::validate_name(const std::string& what, const std::string& value) {
  if (!is_valid_name(value)) {
    throw std::invalid_argument(what + " name '" + printable_excerpt(value) +
                                "' is invalid: use 1-64 characters from A-Z a-z 0-9 . _ - and do "
                                "not start with '.'");
  }
}

std::string AdapterStore::pool_key(const std::string& tenant, const std::string& name,
                                   const std::string& version) {
  return tenant + "/" + name + "@" + version;
}

fs::path AdapterStore::adapter_dir(const std::string& tenant, const std::string& name) const {
  return root_ / tenant / name;
}

void AdapterStore::report(const fs::path& path, const std::string& message) {
  // Loader errors already start with the file's path; do not print it twice.
  const bool names_path = message.rfind(path.string(), 0) == 0;
  spdlog::error("adapter store: skipping {}", names_path ? message : path.string() + ": " + message);
  problems_.push_back({path, message});
}

void AdapterStore::quarantine(const std::string& tenant, const std::string& name, const fs::path& file,
                              const std::string& message) {
  const fs::path dir = root_ / kQuarantineDir / tenant / name;
  fs::path target = dir / file.filename();
  std::error_code ec;
  fs::create_directories(dir, ec);
  for (int i = 1; !ec && fs::exists(target); ++i) {
    target = dir / (file.filename().string() + "." + std::to_string(i));
  }
  if (!ec) fs::rename(file, target, ec);
  report(file, message + (ec ? " (could not be quarantined: " + ec.message() + ")"
                             : " (quarantined as " + target.string() + ")"));
}

// ---------------------------------------------------------------------------------------------
// Restart: rebuild the in-memory index from the folders.

void AdapterStore::reload() {
  std::lock_guard<std::mutex> lock(mu_);
  tenants_.clear();
  problems_.clear();
  for (const auto& tenant_dir : entries_of(root_)) {
    const std::string tenant = tenant_dir.path().filename().string();
    if (tenant == kQuarantineDir) continue;
    if (!tenant_dir.is_directory() || !is_valid_name(tenant)) {
      report(tenant_dir.path(), "not a tenant folder (invalid name or not a folder)");
      continue;
    }
    try {
      for (const auto& adapter_entry : entries_of(tenant_dir.path())) {
        const std::string name = adapter_entry.path().filename().string();
        if (!adapter_entry.is_directory() || !is_valid_name(name)) {
          report(adapter_entry.path(), "not an adapter folder (invalid name or not a folder)");
          continue;
        }
        try {
          reload_adapter(tenant, name, adapter_entry.path());
        } catch (const std::exception& e) {
          report(adapter_entry.path(), std::string("cannot read the adapter folder: ") + e.what());
        }
      }
    } catch (const std::exception& e) {
      report(tenant_dir.path(), std::string("cannot read the tenant folder: ") + e.what());
    }
    // A tenant whose uploads all failed before a fix of that, or before a crash, left a bare folder.
    if (tenants_.count(tenant) == 0) remove_if_empty(tenant_dir.path());
  }
  int64_t count = 0;
  for (const auto& [tenant, adapters] : tenants_) {
    for (const auto& [name, entry] : adapters) count += entry.current > 0 ? 1 : 0;
  }
  spdlog::info("adapter store {}: {} tenants, {} adapters, {} problems", root_.string(),
               tenants_.size(), count, problems_.size());
}

void AdapterStore::reload_adapter(const std::string& tenant, const std::string& name,
                                  const fs::path& dir) {
  Entry entry;
  int64_t indexed_current = 0;
  bool index_ok = false;
  bool quarantined = false;
  const fs::path index_path = dir / kIndexFile;
  if (fs::exists(index_path)) {
    try {
      const auto j = parse_bounded_json(read_file(index_path, kIndexLimits.max_bytes), kIndexLimits,
                                        "the index");
      if (!j.is_object()) throw std::runtime_error("the index is not a JSON object");
      if (j.contains("current") && !j.at("current").is_null()) {
        indexed_current = parse_adapter_version(j.at("current").get<std::string>());
        if (indexed_current == 0) throw std::runtime_error("'current' is not a version number");
      }
      entry.next_version = std::max<int64_t>(1, j.value("next_version", int64_t{1}));
      index_ok = true;
    } catch (const std::exception& e) {
      quarantine(tenant, name, index_path,
                 std::string("unreadable index, using the newest valid version: ") + e.what());
      quarantined = true;
    }
  }

  bool has_other_files = false;
  for (const auto& file : entries_of(dir)) {
    const std::string filename = file.path().filename().string();
    if (filename == kIndexFile) continue;
    if (ends_with(filename, kStagedSuffix) || ends_with(filename, kTmpSuffix)) {
      std::error_code ec;
      fs::remove(file.path(), ec);  // an upload or write interrupted by a crash; never current
      continue;
    }
    const int64_t number =
        ends_with(filename, kVersionSuffix)
            ? parse_adapter_version(filename.substr(0, filename.size() - std::string(kVersionSuffix).size()))
            : 0;
    if (number == 0) {
      report(file.path(), "unexpected file in an adapter folder (want <version>.safetensors)");
      has_other_files = true;
      continue;
    }
    entry.next_version = std::max(entry.next_version, number + 1);
    Adapter adapter;
    try {
      adapter = parse_adapter(read_file(file.path(), static_cast<size_t>(max_file_bytes())),
                              file.path().string());
    } catch (const std::exception& e) {
      quarantine(tenant, name, file.path(), e.what());
      quarantined = true;
      continue;
    }
    try {
      // A valid file for another base model stays in place: restarting with that model finds it.
      check_compatible(adapter, base_);
    } catch (const std::exception& e) {
      report(file.path(), e.what());
      continue;
    }
    Version v;
    v.path = file.path();
    v.size_bytes = static_cast<int64_t>(fs::file_size(file.path()));
    v.created_unix = adapter.created_unix;
    v.methods = adapter.methods;
    v.extra_metadata = adapter.extra_metadata;
    entry.add(number, std::move(v));
  }

  if (index_ok) {
    entry.next_version = std::max(entry.next_version, indexed_current + 1);
    if (indexed_current > 0) {
      if (entry.versions.count(indexed_current) > 0) {
        entry.current = indexed_current;
      } else {
        // Serving an older version in its place would silently change results; leave it unset so
        // the tenant sees the adapter as missing and re-uploads.
        report(dir, "current version " + std::to_string(indexed_current) +
                        " is missing or invalid; the adapter has no current version");
      }
    }
  } else if (!entry.versions.empty()) {
    entry.current = entry.versions.rbegin()->first;
  }
  if (!index_ok && !quarantined && entry.next_version == 1 && !has_other_files) {
    // No index and no version file ever: a folder whose first upload failed. Not an adapter.
    remove_if_empty(dir);
    return;
  }
  if (quarantined) {
    // Record what this start decided, so the next one agrees and quarantined numbers stay reserved.
    try {
      write_index(tenant, name, entry.current, entry.next_version);
    } catch (const std::exception& e) {
      spdlog::error("adapter store: cannot rewrite the index of {}/{}: {}", tenant, name, e.what());
    }
  }
  tenants_[tenant][name] = std::move(entry);
}

// ---------------------------------------------------------------------------------------------
// Writes.

void AdapterStore::write_index(const std::string& tenant, const std::string& name, int64_t current,
                               int64_t next_version) {
  nlohmann::json j;
  j["current"] = current > 0 ? nlohmann::json(std::to_string(current)) : nlohmann::json();
  j["next_version"] = next_version;
  replace_file_atomically(adapter_dir(tenant, name) / kIndexFile, j.dump(2) + "\n");
}

int64_t AdapterStore::reserve_version(const std::string& tenant, const std::string& name, int64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  AdapterQuotaUsage usage;
  if (auto t = tenants_.find(tenant); t != tenants_.end()) {
    for (const auto& [other, entry] : t->second) {
      const bool in_use = !entry.versions.empty() || entry.pending > 0;
      usage.adapters += in_use ? 1 : 0;
      usage.bytes += entry.stored_bytes + entry.pending_bytes;
      if (other != name || !in_use) continue;
      usage.exists = true;
      usage.current = entry.current;
      usage.in_flight = entry.pending;
      for (const auto& [number, v] : entry.versions) usage.versions[number] = v.size_bytes;
    }
  }
  // The versions to prune are chosen again at commit (prune_locked), when the new one is current.
  check_adapter_quota(quota_, tenant, name, usage, bytes);

  const fs::path dir = adapter_dir(tenant, name);
  // Only a folder created here needs its parent fsynced; an upload to an existing adapter pays for
  // no folder fsync before its own file is written.
  if (!fs::exists(dir)) {
    const bool new_tenant = !fs::exists(dir.parent_path());
    try {
      fs::create_directories(dir);
      if (new_tenant) fsync_directory(root_);
      fsync_directory(dir.parent_path());
    } catch (const std::exception&) {
      remove_if_empty(dir);
      if (new_tenant) remove_if_empty(dir.parent_path());
      throw;
    }
  }
  Entry& entry = tenants_[tenant][name];
  ++entry.pending;
  entry.pending_bytes += bytes;
  return entry.next_version++;
}

void AdapterStore::commit_version(const std::string& tenant, const std::string& name, int64_t number,
                                  Version v) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry& entry = tenants_.at(tenant).at(name);
  // Two uploads can race: the higher number wins whatever order they finish in.
  const int64_t current = std::max(number, entry.current);
  // The index first: if it cannot be written (a full disk) memory stays as it was.
  write_index(tenant, name, current, entry.next_version);
  --entry.pending;
  entry.pending_bytes -= v.size_bytes;
  entry.add(number, std::move(v));
  entry.current = current;
  if (quota_.prune_old_versions) prune_locked(tenant, name, entry);
}

void AdapterStore::prune_locked(const std::string& tenant, const std::string& name, Entry& entry) {
  // Versions still being written count: they will be kept when they finish.
  auto kept = [&] { return static_cast<int64_t>(entry.versions.size()) + entry.pending; };
  for (auto it = entry.versions.begin(); it != entry.versions.end() && kept() > quota_.versions_per_adapter;) {
    if (it->first == entry.current) {
      ++it;
      continue;
    }
    std::error_code ec;
    fs::remove(it->second.path, ec);
    if (ec) {
      // Kept in memory as it is on disk; the next put tries again.
      spdlog::error("adapter store: cannot prune {}/{} version {}: {}", tenant, name, it->first, ec.message());
      ++it;
      continue;
    }
    spdlog::info("adapter store: {}/{} version {} pruned (over {} versions)", tenant, name, it->first,
                 quota_.versions_per_adapter);
    it = entry.erase(it);
  }
}

void AdapterStore::abandon_version(const std::string& tenant, const std::string& name, int64_t number,
                                   int64_t bytes, const fs::path& file, const std::string& why) {
  std::error_code ec;
  fs::remove(file, ec);  // absent when the write failed before the rename
  if (ec) spdlog::error("adapter store: cannot delete the failed upload {}: {}", file.string(), ec.message());
  std::lock_guard<std::mutex> lock(mu_);
  Entry& entry = tenants_.at(tenant).at(name);
  --entry.pending;
  entry.pending_bytes -= bytes;
  // The number named no content anywhere, so unless a later put reserved one since, it is given
  // back: memory is then exactly as before the attempt.
  if (entry.next_version == number + 1) entry.next_version = number;
  spdlog::warn("adapter store: {}/{} version {} not stored: {}", tenant, name, number, why);
  drop_if_unused_locked(tenant, name);
}

void AdapterStore::drop_if_unused_locked(const std::string& tenant, const std::string& name) {
  auto t = tenants_.find(tenant);
  auto a = t->second.find(name);
  if (!a->second.versions.empty() || a->second.pending > 0) return;
  // An empty folder means no index either: nothing to remember (not even a version count).
  if (!remove_if_empty(adapter_dir(tenant, name))) return;
  t->second.erase(a);
  if (t->second.empty()) {
    remove_if_empty(root_ / tenant);
    tenants_.erase(t);
  }
}

std::string AdapterStore::put(const std::string& tenant, const std::string& name,
                              const std::string& file_bytes, Adapter* parsed) {
  validate_name("tenant", tenant);
  validate_name("adapter", name);
  const auto t0 = std::chrono::steady_clock::now();
  // Validate in memory first: a rejected upload never touches the disk, and the file is parsed
  // once (the caller gets the result instead of reading the file back).
  int64_t current = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto t = tenants_.find(tenant); t != tenants_.end()) {
      if (auto a = t->second.find(name); a != t->second.end()) current = a->second.current;
    }
  }
  Adapter adapter = parse_adapter_upload(
      base_, tenant, name, file_bytes,
      current > 0 ? " (version " + std::to_string(current) + " stays current)" : std::string());
  const auto t1 = std::chrono::steady_clock::now();

  // Durable before it becomes current: the file written to a temporary name and fsynced, renamed
  // into place and the folder fsynced, then the index replaced the same way. A crash at any point
  // leaves the previous version current (restart deletes a leftover temporary file); a failure
  // undoes everything.
  const int64_t bytes = static_cast<int64_t>(file_bytes.size());
  const int64_t number = reserve_version(tenant, name, bytes);
  const std::string version = std::to_string(number);
  const fs::path final_path = adapter_dir(tenant, name) / (version + kVersionSuffix);
  Version v;
  v.path = final_path;
  v.size_bytes = bytes;
  v.created_unix = adapter.created_unix;
  v.methods = adapter.methods;
  v.extra_metadata = adapter.extra_metadata;
  try {
    replace_file_atomically(final_path, file_bytes);
    commit_version(tenant, name, number, std::move(v));
  } catch (const std::exception& e) {
    abandon_version(tenant, name, number, bytes, final_path, e.what());
    throw;
  }
  const auto t2 = std::chrono::steady_clock::now();
  spdlog::info("adapter store: {}/{} version {} stored ({} bytes, methods {}; validate {:.1f} ms, "
               "write+fsync+rename+index {:.1f} ms)",
               tenant, name, version, file_bytes.size(), join_methods(adapter.methods),
               std::chrono::duration<double, std::milli>(t1 - t0).count(),
               std::chrono::duration<double, std::milli>(t2 - t1).count());
  if (parsed != nullptr) {
    adapter.name = name;
    adapter.version = version;
    *parsed = std::move(adapter);
  }
  return version;
}

std::string AdapterStore::put(const std::string& tenant, const std::string& name,
                              const Adapter& adapter, at::ScalarType disk_dtype) {
  std::string bytes;
  try {
    Adapter named = adapter;  // shallow: tensors are shared, only the metadata strings change
    named.name = name;
    bytes = encode_adapter(named, disk_dtype);
  } catch (const std::runtime_error& e) {
    throw std::invalid_argument("adapter " + tenant + "/" + name + " not stored: " + e.what());
  }
  // The file's metadata `version` stays empty: the store's version is the file name (load() sets it).
  return put(tenant, name, bytes);
}

bool AdapterStore::remove(const std::string& tenant, const std::string& name) {
  validate_name("tenant", tenant);
  validate_name("adapter", name);
  std::lock_guard<std::mutex> lock(mu_);
  auto t = tenants_.find(tenant);
  if (t == tenants_.end()) return false;
  auto a = t->second.find(name);
  if (a == t->second.end() || a->second.versions.empty()) return false;
  Entry& entry = a->second;
  // Files before the index: deleting frees space, so a tenant can delete on a full disk, where even
  // a small index cannot be written. The current version goes first: once its file is gone a crash
  // cannot resurrect the adapter (a restart finds the index's current version missing and serves
  // none). If it cannot be deleted, nothing has changed.
  if (entry.current > 0) {
    std::error_code ec;
    fs::remove(entry.versions.at(entry.current).path, ec);
    if (ec) {
      throw std::runtime_error("adapter " + tenant + "/" + name + " not deleted: its current version " +
                               "cannot be deleted: " + ec.message());
    }
    entry.erase(entry.versions.find(entry.current));
    entry.current = 0;
  }
  std::string failure;
  int64_t failed = 0;
  for (auto it = entry.versions.begin(); it != entry.versions.end();) {
    std::error_code ec;
    fs::remove(it->second.path, ec);
    if (ec) {
      // Kept in memory as it is on disk (a version without a current one); a later remove retries.
      spdlog::error("adapter store: cannot delete {}: {}", it->second.path.string(), ec.message());
      failure = ec.message();
      ++failed;
      ++it;
    } else {
      it = entry.erase(it);
    }
  }
  try {
    // Keeps next_version, so the name's versions never repeat.
    write_index(tenant, name, 0, entry.next_version);
    fsync_directory(adapter_dir(tenant, name));
  } catch (const std::exception& e) {
    // The old index names a current version whose file is gone: a restart serves none, as now.
    spdlog::error("adapter store: {}/{} deleted, but its index was not updated: {}", tenant, name, e.what());
  }
  if (failed > 0) {
    throw std::runtime_error("adapter " + tenant + "/" + name + " has no current version any more, but " +
                             std::to_string(failed) + " older versions could not be deleted: " + failure);
  }
  spdlog::info("adapter store: {}/{} removed (next version {})", tenant, name, entry.next_version);
  return true;
}

// ---------------------------------------------------------------------------------------------
// Reads.

StoredAdapterInfo AdapterStore::info_locked(const std::string& tenant, const std::string& name,
                                            const Entry& entry, int64_t number) const {
  const Version& v = entry.versions.at(number);
  StoredAdapterInfo info;
  info.tenant = tenant;
  info.name = name;
  info.version = std::to_string(number);
  info.path = v.path;
  info.size_bytes = v.size_bytes;
  info.created_unix = v.created_unix;
  info.methods = v.methods;
  info.extra_metadata = v.extra_metadata;
  info.current = number == entry.current;
  return info;
}

std::optional<StoredAdapterInfo> AdapterStore::get(const std::string& tenant, const std::string& name,
                                                   const std::optional<std::string>& version) const {
  validate_name("tenant", tenant);
  validate_name("adapter", name);
  int64_t number = version ? parse_requested_version(*version) : 0;
  std::lock_guard<std::mutex> lock(mu_);
  auto t = tenants_.find(tenant);
  if (t == tenants_.end()) return std::nullopt;
  auto a = t->second.find(name);
  if (a == t->second.end()) return std::nullopt;
  if (!version) number = a->second.current;
  if (number == 0 || a->second.versions.count(number) == 0) return std::nullopt;
  return info_locked(tenant, name, a->second, number);
}

std::vector<StoredAdapterInfo> AdapterStore::list(const std::string& tenant) const {
  validate_name("tenant", tenant);
  std::vector<StoredAdapterInfo> out;
  std::lock_guard<std::mutex> lock(mu_);
  auto t = tenants_.find(tenant);
  if (t == tenants_.end()) return out;
  for (const auto& [name, entry] : t->second) {
    if (entry.current > 0) out.push_back(info_locked(tenant, name, entry, entry.current));
  }
  return out;
}

std::vector<StoredAdapterInfo> AdapterStore::versions(const std::string& tenant,
                                                      const std::string& name) const {
  validate_name("tenant", tenant);
  validate_name("adapter", name);
  std::vector<StoredAdapterInfo> out;
  std::lock_guard<std::mutex> lock(mu_);
  auto t = tenants_.find(tenant);
  if (t == tenants_.end()) return out;
  auto a = t->second.find(name);
  if (a == t->second.end()) return out;
  for (const auto& [number, v] : a->second.versions) {
    out.push_back(info_locked(tenant, name, a->second, number));
  }
  return out;
}

Adapter AdapterStore::load(const std::string& tenant, const std::string& name,
                           const std::string& version) const {
  const auto info = get(tenant, name, version);
  if (!info) {
    throw AdapterNotFound("adapter " + tenant + "/" + name + " version " + version +
                          " does not exist");
  }
  // The file is immutable once committed; reading it outside the lock is safe. A concurrent
  // remove() makes this fail with "cannot open", which is the truth at that moment.
  Adapter adapter = load_adapter(info->path);
  check_compatible(adapter, base_);
  adapter.name = name;
  adapter.version = info->version;
  return adapter;
}

int64_t AdapterStore::tenant_bytes(const std::string& tenant) const {
  validate_name("tenant", tenant);
  std::lock_guard<std::mutex> lock(mu_);
  int64_t bytes = 0;
  auto t = tenants_.find(tenant);
  if (t == tenants_.end()) return 0;
  for (const auto& [name, entry] : t->second) {
    bytes += entry.stored_bytes;
  }
  return bytes;
}

std::vector<std::string> AdapterStore::tenants() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [tenant, adapters] : tenants_) out.push_back(tenant);
  return out;
}

std::vector<AdapterStoreProblem> AdapterStore::problems() const {
  std::lock_guard<std::mutex> lock(mu_);
  return problems_;
}

}  // namespace statetune::engine
