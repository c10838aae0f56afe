// Runs queued training jobs one at a time on a worker thread through the adapter trainer, recording
// state changes, per-step metrics and evaluations as job events, and publishing the trained
// adapter.
//
// Embedded mode (no JobLeases): one worker per store. Restart semantics: a job found `running` at start-up (the process died or was stopped mid-job) is
// put back in the queue with an event saying so, and when it runs again the trainer resumes from
// the job's last checkpoint (data-dir/checkpoints/<job id>); a checkpoint that cannot be read fails
// the job with that reason. A graceful stop (stop()) interrupts the running job at a step boundary
// after writing a checkpoint and leaves it `running`, so the next start resumes it the same way.
//
// Shared mode (JobLeases, job_leases.h): every replica's worker claims jobs from the one database,
// keeps the lease renewed on a heartbeat thread while it trains (reading cancel requests from any
// replica there), stores each checkpoint in the database and publishes through it in one
// transaction. A worker that loses its lease stops the job and writes nothing more; a graceful stop
// stores the checkpoint and gives the job back to the queue.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "server/training/job_leases.h"
#include "server/training/job_params.h"
#include "server/training/job_store.h"

namespace statetune::engine {
class MambaModel;
class Tokenizer;
}  // namespace statetune::engine
namespace statetune::engine::trainer {
struct TrainProgress;
struct TrainResult;
}  // namespace statetune::engine::trainer

namespace statetune::training {

// Wakes WatchJob streams when any job gets an event (they re-read the store).
class EventBus {
 public:
  void notify();
  // Waits until the version moves past `seen` or `timeout`; returns the current version.
  uint64_t wait(uint64_t seen, std::chrono::milliseconds timeout);
  uint64_t version();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t version_ = 0;
};

struct TrainingMetrics {
  explicit TrainingMetrics(prometheus::Registry& registry);
  prometheus::Family<prometheus::Gauge>& jobs;             // statetune_train_jobs{state}
  prometheus::Histogram& queue_wait;                       // statetune_train_queue_wait_seconds
  prometheus::Histogram& step_time;                        // statetune_train_step_seconds
  prometheus::Gauge& tokens_per_second;                    // statetune_train_tokens_per_second
  prometheus::Family<prometheus::Gauge>& validation_loss;  // statetune_train_validation_loss{job}
  prometheus::Counter& steps;                              // statetune_train_steps_total
  prometheus::Family<prometheus::Counter>&
      datasets;  // statetune_train_dataset_uploads_total{result}
  prometheus::Family<prometheus::Counter>& rpc_errors;  // statetune_train_rpc_errors_total{method,code}
  // Shared mode only (zero otherwise):
  prometheus::Counter& lease_renewals;  // statetune_train_lease_renewals_total
  prometheus::Counter& leases_lost;     // statetune_train_leases_lost_total
  prometheus::Counter& jobs_resumed;    // statetune_train_jobs_resumed_total
};

// Why publishing failed: `code` is the serving service's gRPC code name; `retryable` says whether
// trying again later can help (the service was down or busy) or not (it rejected the adapter).
// what() is for the log (it may name addresses); the tenant is told the code only.
class PublishError : public std::runtime_error {
 public:
  PublishError(const std::string& what, std::string code, bool retryable)
      : std::runtime_error(what), code(std::move(code)), retryable(retryable) {}
  std::string code;
  bool retryable;
};

// Publishes a trained adapter file for `tenant` as `name`; returns the version it got. Throws
// PublishError when publishing fails.
using PublishFn = std::function<std::string(const std::string& tenant, const std::string& name,
                                            const std::filesystem::path& file)>;

// A job's training and validation examples (defined in job_runner.cpp).
struct ExampleSplit;

struct RunnerOptions {
  std::filesystem::path data_dir;  // datasets/, checkpoints/, outputs/ live here
  int64_t checkpoint_every = 10;   // default steps between checkpoints
  int64_t log_every = 1;           // steps between step events
  // How long a finished job keeps trying to publish (backing off from 0.5 s up to 30 s between
  // tries) while the serving service is unavailable; the job stays running meanwhile.
  std::chrono::milliseconds publish_retry_for{std::chrono::minutes(10)};
  // Shared mode: this worker's name in the job table, and how long a claim holds without renewal
  // (renewed every third of it; a dead worker's job is resumed elsewhere about this long after).
  std::string worker_id;
  std::chrono::milliseconds lease{std::chrono::seconds(30)};
};

class JobRunner {
 public:
  // `leases`: the shared mode's queue (the store's other face), or nullptr for the embedded mode.
  JobRunner(JobStore& store, JobLeases* leases, EventBus& bus, const engine::MambaModel& model,
            const engine::Tokenizer& tokenizer, PublishFn publish, RunnerOptions options,
            TrainingMetrics* metrics);
  ~JobRunner();

  // Embedded: re-queues jobs left `running` by a previous process. Then starts the worker.
  void start();
  // Wakes the worker (a job was queued).
  void notify();
  // Cancels job `id`: a queued one at once, the running one before its next step (it becomes
  // cancelled when the trainer stops). Returns false when the job had already finished.
  bool cancel(const std::string& id);
  // Interrupts the running job (it stays `running`, resumable) and joins the worker.
  void stop();
  // Recomputes the jobs-by-state gauge.
  void refresh_state_gauge();

 private:
  void loop();
  // The next job to run (embedded: the oldest queued; shared: a claimed one), or nothing after
  // waiting a while. Sets running_id_ and the cancel flags under mu_.
  std::optional<JobRecord> next_job(std::unique_lock<std::mutex>& lock);
  void run(JobRecord job);
  // Where the steps of the running job were, for the step-time histogram and checkpoint events.
  struct ProgressMarks {
    std::chrono::steady_clock::time_point last_step_time = std::chrono::steady_clock::now();
    int64_t last_step = -1;
    double last_val_accuracy = 0;  // of the last validation
  };
  // A trainer step, validation or checkpoint -> the job's columns, its events and the metrics.
  void record_progress(JobRecord& job, const engine::trainer::TrainProgress& pr, const std::string& checkpoint_dir,
                       ProgressMarks& marks);
  void end_stopped_job(JobRecord& job, const std::string& checkpoint_dir);
  void publish_trained(JobRecord& job, const JobParams& p, engine::trainer::TrainResult& result,
                       const ExampleSplit& examples, const std::string& checkpoint_dir);
  // Shared mode: renews `job`'s lease until the job ends (heartbeat_stop_).
  void keep_lease(const JobRecord& job);
  void lose_lease(const JobRecord& job, const std::string& why);
  void set_state(JobRecord& job, JobState state, const std::string& message);
  void fail(JobRecord& job, const std::string& code, const std::string& message, int64_t line = 0);
  // Publishes `file` for the job, retrying while that can help and the time allows. Returns the
  // version, or "" with `error` set (a message fit for the tenant), or "" with `interrupted` set
  // when the service is stopping.
  std::string publish_with_retry(JobRecord& job, const std::function<std::string()>& attempt,
                                 std::string& error, bool& interrupted);
  // `message` without the service's own folders in it (tenants see job errors).
  std::string without_server_paths(std::string message) const;

  JobStore& store_;
  JobLeases* leases_;
  EventBus& bus_;
  const engine::MambaModel& model_;
  const engine::Tokenizer& tokenizer_;
  PublishFn publish_;
  RunnerOptions options_;
  TrainingMetrics* metrics_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool wake_ = false;
  std::string running_id_;
  std::atomic<bool> cancel_{false};
  std::atomic<bool> user_cancelled_{false};
  std::atomic<bool> lease_lost_{false};
  std::thread worker_;
  std::mutex heartbeat_mu_;
  std::condition_variable heartbeat_cv_;
  bool heartbeat_stop_ = false;
};

}  // namespace statetune::training
