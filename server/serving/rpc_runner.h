// What every statetune-serve handler does around its own work, in one place: authenticate the caller
// (failures logged, rate-limited, never with the key), run the handler, turn anything it throws into a
// real status (server/common/grpc_status.h), bound the message, and log every failed call with its request id.
// (RpcStatusInterceptor counts them, with the failures gRPC answers before any handler runs.)
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

#include "server/serving/auth.h"

namespace statetune::serving {

// One authenticated call, as the handler and the logs see it.
struct RpcCall {
  const char* method = "";
  std::string request_id;
  Principal principal;
  // The tenant label of logs and metrics: the caller's tenant, "_admin" for the admin key.
  std::string tenant_label() const { return principal.admin ? "_admin" : principal.tenant; }
};

class RpcRunner {
 public:
  using Body = std::function<grpc::Status(const RpcCall&)>;
  // Runs after an authenticated call's final status is known (per-RPC metrics).
  using Finished = std::function<void(const RpcCall&, const grpc::Status&)>;

  explicit RpcRunner(const TenantRegistry& tenants) : tenants_(tenants) {}

  grpc::Status run(grpc::ServerContext* ctx, const char* method, const Body& body, const Finished& finished = {});

 private:
  grpc::Status authenticate(grpc::ServerContext* ctx, const char* method, Principal& out);
  // At most one auth.failed line a second; the next line says how many were left out.
  void log_auth_failure(grpc::ServerContext* ctx, const char* method, const char* reason);

  const TenantRegistry& tenants_;
  std::mutex auth_log_mu_;
  std::chrono::steady_clock::time_point last_auth_log_{};
  int64_t auth_failures_unlogged_ = 0;
};

}  // namespace statetune::serving
