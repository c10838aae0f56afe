// Durable state of statetune-train in one SQLite database (WAL, synchronous=FULL so a committed
// transaction survives a crash): data set metadata, jobs and each job's event history. Schema
// changes go through numbered migrations (PRAGMA user_version). Thread-safe: one connection behind
// a mutex (the service's write rate is a few rows per training step).
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "server/engine/util/bounded_json.h"

namespace statetune::training {

// Job requests and what the store reads back (specs, metrics, event payloads): far below the
// limits, which only stop a corrupt or hostile document from costing memory or the stack.
inline const engine::JsonLimits kJobJsonLimits{size_t{1} << 20, 32};

struct DatasetRecord {
  std::string id, tenant, name, path, sha256;
  int64_t size_bytes = 0, examples = 0, max_example_tokens = 0, created_unix = 0;
};

// Job states as stored (the proto's names without the prefix).
enum class JobState {
  kValidating = 1,
  kQueued = 2,
  kRunning = 3,
  kSucceeded = 4,
  kFailed = 5,
  kCancelled = 6
};
const char* state_name(JobState s);
bool is_terminal(JobState s);

struct JobRecord {
  std::string id, tenant;
  JobState state = JobState::kQueued;
  nlohmann::json spec =
      nlohmann::json::object();  // the CreateJobRequest as JSON (proto field names)
  int64_t created_ms = 0, started_ms = 0, finished_ms = 0;
  int64_t step = 0, total_steps = 0, resumes = 0;
  double train_loss = 0, val_loss = 0;
  std::string error_code, error_message;
  int64_t error_line = 0;
  std::string adapter_name, adapter_version;
  nlohmann::json eval = nlohmann::json::object();  // metric name -> value
};

struct EventRecord {
  std::string job_id;
  int64_t seq = 0, time_ms = 0;
  JobState state = JobState::kQueued;
  std::string type;  // "state" | "step" | "eval" | "checkpoint" | "error"
  nlohmann::json payload = nlohmann::json::object();
};

class JobStore {
 public:
  // Told about a stored row that cannot be read (e.g. its JSON is corrupt); the listing skips it.
  using BadRecordFn = std::function<void(const std::string& table, const std::string& id,
                                         const std::string& error)>;
  // Opens (creating) the database and runs pending migrations. Throws std::runtime_error on
  // failure. A write that fails throws StorageError (full() when the disk or file-size limit ran
  // out) and changes nothing.
  explicit JobStore(const std::filesystem::path& db_path, BadRecordFn on_bad_record = {});
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  int schema_version();

  void insert_dataset(const DatasetRecord& d);
  std::optional<DatasetRecord> dataset(const std::string& tenant, const std::string& id);
  std::vector<DatasetRecord> datasets(const std::string& tenant);
  bool delete_dataset(const std::string& tenant, const std::string& id);
  int64_t tenant_dataset_bytes(const std::string& tenant);

  // Inserts the job and its first event ("state") in one transaction.
  void insert_job(const JobRecord& job, const std::string& message);
  std::optional<JobRecord> job(const std::string& id);
  std::vector<JobRecord> jobs(const std::string& tenant);  // newest first
  std::vector<JobRecord> jobs_in_state(JobState state);    // oldest first (queue order)
  int64_t count_jobs(const std::string& tenant, const std::vector<JobState>& states);
  std::vector<std::pair<JobState, int64_t>> count_by_state();
  bool dataset_in_use(const std::string& tenant, const std::string& dataset_id);

  // Writes the job's mutable columns and appends an event in one transaction; returns the event's
  // seq.
  int64_t update_job(const JobRecord& job, const std::string& event_type,
                     const nlohmann::json& payload);
  // Appends an event only (per-step metrics), with the job's progress columns.
  int64_t append_progress(const JobRecord& job, const std::string& event_type,
                          const nlohmann::json& payload);
  std::vector<EventRecord> events(const std::string& job_id, int64_t after_seq);

 private:
  void exec(const std::string& sql);
  void migrate();
  int64_t append_event_locked(const JobRecord& job, const std::string& type,
                              const nlohmann::json& payload);
  void write_job_locked(const JobRecord& job);

  void rollback_locked();
  void report_bad_record(const std::string& table, const std::string& id, const std::string& error);

  std::mutex mu_;
  sqlite3* db_ = nullptr;
  BadRecordFn on_bad_record_;
  std::set<std::string> reported_bad_;
  std::filesystem::path path_;
};

int64_t now_ms();

}  // namespace statetune::training
