// statetune-train's store in the shared mode (shared/docs/scale-out.md, "Training workers"): data
// sets, jobs, events, checkpoints and trained outputs in PostgreSQL (schema.cpp, migration 2), so
// that every statetune-train replica answers for every job and any worker may run any job.
//
// Data set content lives in the database; each replica keeps a local copy (under datasets_dir,
// checked against the sha256 before use). Jobs are claimed with SELECT ... FOR UPDATE SKIP LOCKED
// under a lease timed by the database's clock, and every write for a job is fenced by its lease
// epoch (training::JobLeases). Each new event is announced with NOTIFY on kJobChannel in the
// transaction that stores it; a LISTEN thread wakes this replica's WatchJob streams.
#pragma once

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "server/engine/adapters/adapter_storage.h"
#include "server/storage/postgres/database.h"
#include "server/training/job_leases.h"
#include "server/training/job_store.h"

namespace statetune::storage {

struct PgJobStoreOptions {
  std::filesystem::path datasets_dir;  // local copies: <dir>/<tenant>/<id>.jsonl (created if missing)
  engine::ModelFingerprint base;       // a published adapter is validated against the served model
  engine::AdapterQuota quota;          // and stored within the serving replicas' adapter quotas
  bool follow_events = true;           // run the LISTEN thread (off: a test's silent replica)
  // Per-tenant limits checked in the transaction that adds, under a per-tenant lock, so replicas
  // cannot overshoot together (0: no check). Past one: EngineError(kResourceExhausted), nothing stored.
  int64_t tenant_storage_bytes = 0;  // --tenant-storage-bytes: data set bytes
  int64_t max_active_jobs = 0;       // --max-active-jobs: validating + queued + running jobs
};

class PgJobStore final : public training::JobStore, public training::JobLeases {
 public:
  // The database must be migrated. Connects lazily; a call while it is unreachable throws an
  // engine::EngineError of kind kUnavailable (UNAVAILABLE to the client) and changes nothing.
  PgJobStore(std::shared_ptr<Database> db, PgJobStoreOptions options, BadRecordFn on_bad_record = {});
  ~PgJobStore() override;
  PgJobStore(const PgJobStore&) = delete;
  PgJobStore& operator=(const PgJobStore&) = delete;

  // Called from the LISTEN thread when any replica stored an event, and after every (re)connect
  // (events may have been missed meanwhile).
  void set_event_listener(std::function<void()> fn);

  void insert_dataset(const training::DatasetRecord& d, const std::string& content) override;
  std::optional<training::DatasetRecord> dataset(const std::string& tenant, const std::string& id) override;
  std::vector<training::DatasetRecord> datasets(const std::string& tenant) override;
  bool delete_dataset(const std::string& tenant, const std::string& id) override;
  int64_t tenant_dataset_bytes(const std::string& tenant) override;
  std::filesystem::path dataset_file(const training::DatasetRecord& d) override;

  void insert_job(const training::JobRecord& job, const std::string& message) override;
  std::optional<training::JobRecord> job(const std::string& id) override;
  std::vector<training::JobRecord> jobs(const std::string& tenant) override;
  std::vector<training::JobRecord> jobs_in_state(training::JobState state) override;
  int64_t count_jobs(const std::string& tenant, const std::vector<training::JobState>& states) override;
  std::vector<std::pair<training::JobState, int64_t>> count_by_state() override;
  bool dataset_in_use(const std::string& tenant, const std::string& dataset_id) override;
  int64_t update_job(const training::JobRecord& job, const std::string& event_type,
                     const nlohmann::json& payload) override;
  std::vector<training::EventRecord> events(const std::string& job_id, int64_t after_seq) override;

  std::optional<training::ClaimedJob> claim(const std::string& worker, std::chrono::milliseconds lease) override;
  training::LeaseRenewal renew(const training::JobRecord& job, std::chrono::milliseconds lease) override;
  bool request_cancel(const std::string& id) override;
  void save_checkpoint(const training::JobRecord& job, const std::filesystem::path& dir) override;
  bool restore_checkpoint(const training::JobRecord& job, const std::filesystem::path& dir) override;
  void save_output(const training::JobRecord& job, const std::string& adapter_bytes) override;
  std::string publish(training::JobRecord& job, const std::string& adapter_name,
                      const std::string& adapter_bytes) override;

 private:
  // Runs `fn` on a pooled connection; "database unreachable" becomes EngineError(kUnavailable).
  void run(const char* what, const std::function<void(pqxx::connection&)>& fn) const;
  std::vector<training::JobRecord> read_jobs(const pqxx::result& rows);
  training::DatasetRecord read_dataset(const pqxx::row& row) const;
  void report_bad_record(const std::string& table, const std::string& id, const std::string& error);
  void listen_loop();

  std::shared_ptr<Database> db_;
  PgJobStoreOptions options_;
  BadRecordFn on_bad_record_;
  std::mutex bad_mu_;
  std::set<std::string> reported_bad_;

  std::mutex listener_mu_;
  std::function<void()> listener_;
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread listener_thread_;
};

}  // namespace statetune::storage
