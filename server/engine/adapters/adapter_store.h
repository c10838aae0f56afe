// The on-disk adapter store (the default AdapterStorage, see adapter_storage.h): every tenant's adapters, versioned, for one base model.
//
// Layout (one folder per tenant, one per adapter):
//   <root>/<tenant>/<name>/<version>.safetensors   immutable once written; versions are 1, 2, 3, ...
//   <root>/<tenant>/<name>/index.json              {"current": "3" | null, "next_version": 4}
//   <root>/.quarantine/<tenant>/<name>/<file>      stored files that failed to load at start-up
// Every write is crash-safe: a file is written to a temporary name, fsynced, renamed into place and
// the folder fsynced, and index.json (the pointer to the current version) is replaced the same way
// only after the new version file validated against the base model. So a bad or interrupted upload
// leaves the previous version current. A write that fails (a full disk) leaves memory and disk as
// they were: its temporary and version files and any folder it created are removed again. Versions
// never repeat for a name, even after remove(), so a cache key "tenant/name@version" always means one
// content.
//
// Start-up never dies on a bad file: a version file or index that cannot be parsed is moved to the
// quarantine folder with a log line, leftovers of interrupted writes (temporary files, folders that
// never got a version) are removed, and everything else loads.
//
// Thread-safe: metadata lives in memory behind one mutex; file reads and the validation of uploads
// run outside it.
#pragma once

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "server/engine/adapters/adapter.h"
#include "server/engine/adapters/adapter_storage.h"
#include "server/engine/model/model_config.h"

namespace statetune::engine {

// A file the store found on disk but could not use (corrupt, for another base, unreadable index).
struct AdapterStoreProblem {
  std::filesystem::path path;
  std::string message;
};

class AdapterStore : public AdapterStorage {
 public:
  // Creates `root` if needed and loads every tenant's adapters from it, validating each version file
  // against `base`. Files that fail are logged and listed in problems(), never fatal; those that do
  // not parse are quarantined, valid ones for another base model stay where they are.
  AdapterStore(std::filesystem::path root, ModelFingerprint base, AdapterQuota quota = {});

  // Tenant and adapter names: [A-Za-z0-9._-]{1,64}, not starting with '.' (so no "." / ".." and no
  // hidden files). Throws std::invalid_argument naming `what` and the rule.
  static void validate_name(const std::string& what, const std::string& value);
  // The pool key for one stored version: "tenant/name@version".
  static std::string pool_key(const std::string& tenant, const std::string& name,
                              const std::string& version);

  // Stores an uploaded adapter file as the next version and makes it current, after validating it
  // (format, shapes, finite values, same base model) in memory, before anything touches the disk.
  // The version is durable when this returns (file fsynced, renamed, folder fsynced, index replaced
  // the same way). Returns the new version; `parsed` (optional) receives the validated adapter, named
  // and versioned like load() would return it, so the caller can use it without reading the file
  // back. On a rejected file throws std::invalid_argument, over a quota AdapterQuotaExceeded, on an
  // I/O failure std::runtime_error; in every case the previous version stays current and nothing of
  // the attempt is left in memory or on disk.
  std::string put(const std::string& tenant, const std::string& name, const std::string& file_bytes,
                  Adapter* parsed = nullptr) override;
  // Same for an in-memory adapter (e.g. the trainer's result); its name/version are set to the stored
  // ones. disk_dtype: at::kFloat or at::kBFloat16.
  std::string put(const std::string& tenant, const std::string& name, const Adapter& adapter,
                  at::ScalarType disk_dtype = at::kFloat);

  // The current version (no `version`) or a given one; nullopt when absent.
  std::optional<StoredAdapterInfo> get(const std::string& tenant, const std::string& name,
                                       const std::optional<std::string>& version = std::nullopt) const override;
  // The current version of every adapter of `tenant`, by name.
  std::vector<StoredAdapterInfo> list(const std::string& tenant) const override;
  // Every stored version of one adapter, oldest first.
  std::vector<StoredAdapterInfo> versions(const std::string& tenant, const std::string& name) const override;
  // Deletes every version of the adapter; the name can be reused and continues the version count.
  // Returns false if it had no versions. Works on a full disk (files are deleted before the index is
  // rewritten). Throws std::runtime_error when a file cannot be deleted; memory then still matches
  // the disk (nothing changed if the current version's file could not be deleted).
  bool remove(const std::string& tenant, const std::string& name) override;
  // Reads one version from disk (validated, compatible with the base). Throws AdapterNotFound.
  Adapter load(const std::string& tenant, const std::string& name, const std::string& version) const override;

  // Bytes of all version files of `tenant` (for quotas).
  int64_t tenant_bytes(const std::string& tenant) const;
  std::vector<std::string> tenants() const override;
  std::vector<AdapterStoreProblem> problems() const;
  const std::filesystem::path& root() const { return root_; }
  const ModelFingerprint& base() const override { return base_; }
  const AdapterQuota& quota() const { return quota_; }

 private:
  struct Version {
    std::filesystem::path path;
    int64_t size_bytes = 0;
    int64_t created_unix = 0;
    std::vector<std::string> methods;
    nlohmann::json extra_metadata;
  };
  struct Entry {
    int64_t current = 0;       // 0 = none
    int64_t next_version = 1;  // reserved numbers never come back
    std::map<int64_t, Version> versions;
    // Puts that reserved a number and are writing their file: they count against the quotas.
    int64_t pending = 0;
    int64_t pending_bytes = 0;
    // The versions' size_bytes summed, so that a quota check walks adapters, not every version.
    int64_t stored_bytes = 0;

    void add(int64_t number, Version v) {
      stored_bytes += v.size_bytes;
      versions[number] = std::move(v);
    }
    std::map<int64_t, Version>::iterator erase(std::map<int64_t, Version>::iterator it) {
      stored_bytes -= it->second.size_bytes;
      return versions.erase(it);
    }
  };

  void reload();
  void reload_adapter(const std::string& tenant, const std::string& name,
                      const std::filesystem::path& dir);
  std::filesystem::path adapter_dir(const std::string& tenant, const std::string& name) const;
  // Checks the quotas for one more version of `bytes`, creates the folders and reserves a number.
  int64_t reserve_version(const std::string& tenant, const std::string& name, int64_t bytes);
  // Makes a written version file known: index first, then memory; prunes old versions if asked to.
  void commit_version(const std::string& tenant, const std::string& name, int64_t number, Version v);
  // Undoes a reservation whose write failed: deletes its file and the folders it created.
  void abandon_version(const std::string& tenant, const std::string& name, int64_t number,
                       int64_t bytes, const std::filesystem::path& file, const std::string& why);
  void prune_locked(const std::string& tenant, const std::string& name, Entry& entry);
  void drop_if_unused_locked(const std::string& tenant, const std::string& name);
  void write_index(const std::string& tenant, const std::string& name, int64_t current,
                   int64_t next_version);
  StoredAdapterInfo info_locked(const std::string& tenant, const std::string& name,
                                const Entry& entry, int64_t number) const;
  void report(const std::filesystem::path& path, const std::string& message);
  // Moves a stored file that failed to load under <root>/.quarantine and reports it.
  void quarantine(const std::string& tenant, const std::string& name, const std::filesystem::path& file,
                  const std::string& message);

  std::filesystem::path root_;
  ModelFingerprint base_;
  AdapterQuota quota_;
  mutable std::mutex mu_;
  std::map<std::string, std::map<std::string, Entry>> tenants_;
  std::vector<AdapterStoreProblem> problems_;
};

}  // namespace statetune::engine
