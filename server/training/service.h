// statetune-train: the gRPC Training service (statetune.v1.Training, grpc.health.v1.Health) over
// the job store, the data set validator and the job runner, with Prometheus metrics on their own
// port.
//
// Storage under --data-dir: jobs.db (SQLite, WAL), datasets/<tenant>/<id>.jsonl,
// checkpoints/<job>/, outputs/<tenant>/<job>.safetensors (every trained adapter, kept after
// publishing).
//
// Shared mode (--database, shared/docs/scale-out.md): the state lives in PostgreSQL instead
// (storage::PgJobStore); every replica answers for every job, workers claim jobs under leases
// (--lease-seconds), and a finished job is published through the database in the transaction that
// marks it succeeded (no --serving-addr). --data-dir then only holds local copies and scratch files.
//
// Publishing (embedded mode): a finished job pushes its adapter to statetune-serve through that service's Adapters
// UploadAdapter RPC with the admin key (--serving-addr, --serving-admin-key) for the job's tenant.
// The serving process keeps its adapter index in memory, so writing into its store folder behind
// its back would not be seen until its restart; the RPC makes the new version current at once (hot
// swap) and validates it against the served base model.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "server/common/service_main.h"
#include "server/common/service_options.h"
#include "server/engine/adapters/adapter_storage.h"
#include "server/engine/text/chat_template.h"
#include "server/http/http_server.h"

namespace statetune::training {

struct TrainServiceOptions {
  common::ServiceOptions service;  // listen, metrics, model, tenants, TLS, device, ready file
  std::filesystem::path data_dir = "train-data";
  std::string serving_addr = "127.0.0.1:50051";
  std::string serving_admin_key;
  int64_t max_dataset_bytes = int64_t{256} << 20;
  int64_t tenant_storage_bytes = int64_t{1} << 30;
  int64_t max_active_jobs = 4;  // queued + running per tenant
  int64_t min_examples = 8;
  int64_t max_example_tokens = 4096;
  int64_t checkpoint_every = 10;
  int64_t log_every = 1;
  // The OpenAI-style HTTP API (server/training/http_routes.h); http.listen empty: none.
  http::HttpOptions http;
  std::string model_id;  // the base model's id there
  engine::ChatTemplate chat_template;  // for chat-format fine-tuning files
  // How long a finished job retries publishing while statetune-serve is unavailable.
  std::chrono::milliseconds publish_retry_for{std::chrono::minutes(10)};
  // Shared mode: jobs, data sets, checkpoints and outputs in this PostgreSQL database.
  common::DatabaseFlags database;  // no URL: SQLite in data_dir
  std::chrono::milliseconds lease{std::chrono::seconds(30)};  // a claimed job's lease
  engine::AdapterQuota adapter_quota;  // statetune-serve's, checked when a job publishes
};

class TrainService final : public common::Service {
 public:
  explicit TrainService(TrainServiceOptions options);
  ~TrainService() override;
  TrainService(const TrainService&) = delete;
  TrainService& operator=(const TrainService&) = delete;

  // Loads the model and tokenizer, opens the store (re-queueing interrupted jobs), starts the
  // worker and listens. Throws std::runtime_error naming what failed.
  void start() override;
  // Interrupts the running job at a step boundary (it resumes after the next start) and stops.
  void stop();
  // Logs why and stops.
  void shutdown(const std::string& reason) override;
  int port() const;
  int metrics_port() const;
  int http_port() const;  // 0 without --http-listen

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace statetune::training
