// Durable state of statetune-train: data sets, jobs and each job's event history, behind one
// interface (JobStore) with two implementations chosen at start-up: SqliteJobStore here (the
// embedded mode, one worker) and storage::PgJobStore (the shared mode, --database, many workers;
// server/storage/postgres/pg_job_store.h). The RPC handlers and the runner do not know which runs.
//
// SqliteJobStore: one SQLite database (WAL, synchronous=FULL so a committed transaction survives a
// crash), data set files on local disk; schema changes through numbered migrations (PRAGMA
// user_version). Thread-safe: one connection behind a mutex (a few rows per training step).
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
  // Shared mode: the lease this copy of the job was claimed under. Every write of the job is
  // conditional on it still being the job's current epoch (fencing); 0 in the embedded mode.
  int64_t lease_epoch = 0;
};

// A write for a job whose lease this worker no longer holds (it expired and another worker claimed
// the job): nothing was written, and the worker must stop the job without writing more.
class LeaseLost : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
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
  virtual ~JobStore() = default;

  // A write that fails throws (engine::StorageError for a full disk, the implementation's
  // "unavailable" error for an unreachable database) and changes nothing.
  // `content`: the validated file; the record's `path` is where this process keeps a copy.
  virtual void insert_dataset(const DatasetRecord& d, const std::string& content) = 0;
  virtual std::optional<DatasetRecord> dataset(const std::string& tenant, const std::string& id) = 0;
  virtual std::vector<DatasetRecord> datasets(const std::string& tenant) = 0;
  virtual bool delete_dataset(const std::string& tenant, const std::string& id) = 0;
  virtual int64_t tenant_dataset_bytes(const std::string& tenant) = 0;
  // A local file holding the data set's content (the shared mode fetches it into d.path first).
  virtual std::filesystem::path dataset_file(const DatasetRecord& d) { return d.path; }

  // Inserts the job and its first event ("state") in one transaction.
  virtual void insert_job(const JobRecord& job, const std::string& message) = 0;
  virtual std::optional<JobRecord> job(const std::string& id) = 0;
  virtual std::vector<JobRecord> jobs(const std::string& tenant) = 0;  // newest first
  virtual std::vector<JobRecord> jobs_in_state(JobState state) = 0;    // oldest first (queue order)
  virtual int64_t count_jobs(const std::string& tenant, const std::vector<JobState>& states) = 0;
  virtual std::vector<std::pair<JobState, int64_t>> count_by_state() = 0;
  virtual bool dataset_in_use(const std::string& tenant, const std::string& dataset_id) = 0;

  // Writes the job's mutable columns and appends an event in one transaction; returns the event's
  // seq. Fenced by job.lease_epoch in the shared mode (LeaseLost).
  virtual int64_t update_job(const JobRecord& job, const std::string& event_type,
                             const nlohmann::json& payload) = 0;
  // Appends an event only (per-step metrics), with the job's progress columns.
  int64_t append_progress(const JobRecord& job, const std::string& event_type,
                          const nlohmann::json& payload) {
    return update_job(job, event_type, payload);
  }
  virtual std::vector<EventRecord> events(const std::string& job_id, int64_t after_seq) = 0;
};

class SqliteJobStore final : public JobStore {
 public:
  // Opens (creating) the database and runs pending migrations. Throws std::runtime_error on
  // failure. A write that fails throws StorageError (full() when the disk or file-size limit ran
  // out) and changes nothing.
  explicit SqliteJobStore(const std::filesystem::path& db_path, BadRecordFn on_bad_record = {});
  ~SqliteJobStore() override;
  SqliteJobStore(const SqliteJobStore&) = delete;
  SqliteJobStore& operator=(const SqliteJobStore&) = delete;

  int schema_version();

  // The file at d.path is the caller's to write (it is the data set's only copy).
  void insert_dataset(const DatasetRecord& d, const std::string& content) override;
  std::optional<DatasetRecord> dataset(const std::string& tenant, const std::string& id) override;
  std::vector<DatasetRecord> datasets(const std::string& tenant) override;
  bool delete_dataset(const std::string& tenant, const std::string& id) override;
  int64_t tenant_dataset_bytes(const std::string& tenant) override;

  void insert_job(const JobRecord& job, const std::string& message) override;
  std::optional<JobRecord> job(const std::string& id) override;
  std::vector<JobRecord> jobs(const std::string& tenant) override;
  std::vector<JobRecord> jobs_in_state(JobState state) override;
  int64_t count_jobs(const std::string& tenant, const std::vector<JobState>& states) override;
  std::vector<std::pair<JobState, int64_t>> count_by_state() override;
  bool dataset_in_use(const std::string& tenant, const std::string& dataset_id) override;
  int64_t update_job(const JobRecord& job, const std::string& event_type,
                     const nlohmann::json& payload) override;
  std::vector<EventRecord> events(const std::string& job_id, int64_t after_seq) override;

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

// Whether the job spec uses data set `dataset_id` (as training or validation data).
bool spec_uses_dataset(const nlohmann::json& spec, const std::string& dataset_id);

int64_t now_ms();

}  // namespace statetune::training
