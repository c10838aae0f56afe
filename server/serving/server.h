// statetune-serve: one resident base model serving many tenants' adapters in shared batches over gRPC
// (statetune.v1.Generation, statetune.v1.Adapters, grpc.health.v1.Health, reflection), with
// Prometheus metrics on their own port.
//
// Life cycle: start() listens at once with health NOT_SERVING (Generate answers UNAVAILABLE), load()
// brings up the model, tokenizer, adapter store, pool and scheduler and flips health to SERVING;
// drain() flips it back to NOT_SERVING, refuses new work, lets running requests finish until the
// deadline, cancels the rest and stops the gRPC server.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "server/common/service_main.h"
#include "server/common/service_options.h"
#include "server/engine/text/chat_template.h"
#include "server/http/http_server.h"

namespace statetune::serving {

struct ServerOptions {
  common::ServiceOptions service;  // listen, metrics, model, tenants, TLS, device, ready file
  std::filesystem::path adapters_dir = "adapters";  // the store; with a database, the bytes cache
  // Shared mode: adapters in this PostgreSQL database, shared by every replica. No URL: the local
  // folder store.
  common::DatabaseFlags database;
  int64_t max_batch = 32;
  bool cuda_graphs = false;  // decode steps as CUDA graphs (engine::DecodePath::kCudaGraphs)
  int64_t queue_size = 64;
  int64_t max_prefill_tokens = 4096;
  int64_t max_prompt_tokens = 2048;
  int64_t max_new_tokens = 256;
  int64_t max_request_bytes = int64_t{1} << 20;
  int64_t max_upload_bytes = int64_t{64} << 20;  // also capped by the largest adapter the base can have
  int64_t max_uploads = 8;                         // uploads running at once, in all
  int64_t max_uploads_per_tenant = 2;              // ... per caller (API principal)
  std::chrono::milliseconds upload_idle_timeout{30000};  // an upload sending nothing this long is cancelled
  int64_t max_rpc_threads = 0;  // gRPC handler threads; 0: max_batch + queue_size + max_uploads + 32
  int64_t adapter_pool_bytes = int64_t{256} << 20;
  int64_t adapter_slots = 0;  // 0: as many as the budget holds
  // Per-tenant adapter store quotas (engine::AdapterQuota); an upload past one is RESOURCE_EXHAUSTED.
  int64_t tenant_adapter_bytes = int64_t{1} << 30;
  int64_t tenant_adapters = 256;
  int64_t adapter_versions = 64;        // versions kept per adapter
  bool prune_adapter_versions = false;  // at adapter_versions: drop the oldest instead of refusing
  std::chrono::milliseconds drain_timeout{30000};
  // The OpenAI-compatible HTTP API (server/serving/http_routes.h); http.listen empty: none. It uses
  // the TLS files above too, and max_request_bytes as its body limit.
  http::HttpOptions http;
  std::string model_id;  // the base model's `model` there
  engine::ChatTemplate chat_template;
};

class ServingServer final : public common::Service {
 public:
  explicit ServingServer(ServerOptions options);
  ~ServingServer() override;
  ServingServer(const ServingServer&) = delete;
  ServingServer& operator=(const ServingServer&) = delete;

  // Listens (gRPC and metrics). Throws std::runtime_error when a port cannot be bound or the TLS
  // files cannot be read.
  void start() override;
  // Loads everything and starts serving. Throws std::runtime_error naming what failed.
  void load() override;
  // Graceful stop; returns the number of requests cancelled because the deadline ran out.
  int64_t drain();
  // Logs why and drains.
  void shutdown(const std::string& reason) override;

  int port() const;
  int metrics_port() const;
  int http_port() const;  // 0 without --http-listen

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace statetune::serving
