// The gRPC side of auth.h, shared by both services: the caller of a call from its `authorization`
// metadata. Failures are answered UNAUTHENTICATED and logged at most once a second (the next line
// says how many were left out), never with the key.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <mutex>

#include "server/common/auth.h"

namespace statetune::common {

class GrpcAuthenticator {
 public:
  explicit GrpcAuthenticator(const TenantRegistry& tenants) : tenants_(tenants) {}

  // OK with `out` set, or UNAUTHENTICATED (no metadata, not `Bearer <key>`, unknown key).
  grpc::Status authenticate(const grpc::ServerContext& ctx, const char* method, Principal& out);

 private:
  void log_failure(const grpc::ServerContext& ctx, const char* method, const char* reason);

  const TenantRegistry& tenants_;
  std::mutex log_mu_;
  std::chrono::steady_clock::time_point last_log_{};
  int64_t failures_unlogged_ = 0;
};

}  // namespace statetune::common
