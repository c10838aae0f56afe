// The shared mode's job queue (shared/docs/scale-out.md, "Training workers"): many statetune-train
// workers over one database, each job held by one worker at a time under a lease.
//
// A worker claims a queued job, or a running one whose lease expired (its worker died), which
// increments the job's lease epoch; it renews the lease while it trains. Every write for the job
// (JobStore::update_job, and everything below) is conditional on the epoch it was claimed under:
// after the lease expired and another worker claimed the job, a write of the old worker changes
// nothing and throws LeaseLost, so a worker that lost its lease can never publish or overwrite.
// Checkpoints live in the database, so whichever worker claims the job next resumes from the last.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>

#include "server/training/job_store.h"

namespace statetune::training {

struct ClaimedJob {
  JobRecord job;  // state running, lease_epoch the new lease's
  bool resumed = false;           // it was running under an expired lease
  bool cancel_requested = false;  // cancelled from some replica while its worker was gone
};

struct LeaseRenewal {
  bool held = false;              // false: lost (expired and claimed again, or the job ended)
  bool cancel_requested = false;  // a replica asked for the job to be cancelled
};

class JobLeases {
 public:
  virtual ~JobLeases() = default;

  // The oldest queued job, or a running one whose lease expired, now leased to `worker` for
  // `lease`; nothing when there is none. Concurrent claimers never get the same job.
  virtual std::optional<ClaimedJob> claim(const std::string& worker, std::chrono::milliseconds lease) = 0;
  // Extends the lease of `job` (claimed under job.lease_epoch) to `lease` from now.
  virtual LeaseRenewal renew(const JobRecord& job, std::chrono::milliseconds lease) = 0;
  // Cancels job `id` from any replica: a queued one at once, a running one by asking its worker
  // (which reads the request when it renews). False when the job had already finished.
  virtual bool request_cancel(const std::string& id) = 0;

  // Replaces the job's stored checkpoint with the files in `dir`.
  virtual void save_checkpoint(const JobRecord& job, const std::filesystem::path& dir) = 0;
  // Empties `dir` and writes the job's stored checkpoint into it; false when there is none (a stored
  // file whose name is not a plain file name is skipped with a log line).
  virtual bool restore_checkpoint(const JobRecord& job, const std::filesystem::path& dir) = 0;
  // Keeps the trained adapter file with the job (also when publishing it fails).
  virtual void save_output(const JobRecord& job, const std::string& adapter_bytes) = 0;
  // In ONE transaction: stores `adapter_bytes` as a new version of job.tenant/`adapter_name`
  // (validated against the served base model, within the tenant's adapter quotas), makes it current,
  // announces it to every serving replica (NOTIFY) and marks the job succeeded with that version in
  // job.adapter_version. Exactly once: a second call for the job throws LeaseLost. Throws
  // std::invalid_argument (a bad adapter), engine::AdapterQuotaExceeded, or
  // engine::AdapterStorageUnavailable (the database is unreachable: retry) and then changes nothing.
  virtual std::string publish(JobRecord& job, const std::string& adapter_name, const std::string& adapter_bytes) = 0;
};

}  // namespace statetune::training
