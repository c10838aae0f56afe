// What statetune-train does for a request, whichever front end it came through: the gRPC Training
// service (service.cpp) and the OpenAI-style HTTP routes (http_routes.cpp) both call these, so limits,
// validation, quotas and storage behave the same on both. A refusal is std::invalid_argument (the
// caller's input) or a TrainingError of a kind each front end maps to its own status.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>

#include "server/engine/util/engine_error.h"
#include "server/training/job_runner.h"
#include "server/training/job_store.h"
#include "server/training/service.h"

namespace statetune::engine {
class Tokenizer;
}

namespace statetune::training {

// An engine::EngineError, so gRPC maps it through the services' one table (common::to_grpc_status)
// and the HTTP routes by its kind().
class TrainingError : public engine::EngineError {
 public:
  using Kind = engine::ErrorKind;
  using engine::EngineError::EngineError;
};

class TrainingCore {
 public:
  TrainingCore(const TrainServiceOptions& options, JobStore& store, JobRunner& runner, EventBus& bus,
               TrainingMetrics& metrics, const engine::Tokenizer& tokenizer);

  // Refuses an upload before its bytes are received: a bad name (std::invalid_argument), `total_bytes`
  // above --max-dataset-bytes or the tenant's storage (kResourceExhausted).
  void check_upload(const std::string& tenant, const std::string& name, uint64_t total_bytes);
  // Validates (name, size, every line), stores the file durably and records it. `sha256`: the
  // bytes' digest when the caller already computed it (the gRPC upload checks the header's against
  // it as the chunks arrive), empty to compute it here. A failed write leaves no file and no record.
  DatasetRecord store_dataset(const std::string& tenant, const std::string& name, const std::string& bytes,
                              const std::string& sha256);
  DatasetRecord dataset(const std::string& tenant, const std::string& id);  // kNotFound
  // kFailedPrecondition while a queued or running job uses it.
  void delete_dataset(const std::string& tenant, const std::string& id);

  // `spec`: the job request as JSON with the proto's field names (CreateJobRequest); checked with
  // parse_job_params, its data sets must be the tenant's, and the tenant under --max-active-jobs.
  JobRecord create_job(const std::string& tenant, const nlohmann::json& spec);
  JobRecord job(const std::string& tenant, const std::string& id);  // kNotFound (another tenant's too)
  JobRecord cancel_job(const std::string& tenant, const std::string& id);  // kFailedPrecondition when over

  void set_stopping() { stopping_ = true; }
  bool stopping() const { return stopping_; }

 private:
  int64_t count_tokens(std::string_view text, int64_t limit) const;
  void count_upload(const char* result);

  const TrainServiceOptions& o_;
  JobStore& store_;
  JobRunner& runner_;
  EventBus& bus_;
  TrainingMetrics& metrics_;
  const engine::Tokenizer& tokenizer_;
  // The longest token's bytes: a data-set line longer than max_example_tokens times this is over the
  // token limit without tokenizing it.
  size_t max_token_bytes_ = 0;
  std::mutex upload_mu_;  // storage-limit check + insert are one step per process
  std::mutex create_mu_;  // active-job limit check + insert likewise
  std::atomic<bool> stopping_{false};
};

// A fresh id: `prefix` and 16 hex digits.
std::string random_id(const std::string& prefix);

}  // namespace statetune::training
