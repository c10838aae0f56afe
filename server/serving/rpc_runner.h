// What every statetune-serve handler does around its own work, in one place: authenticate the caller
// (failures logged, rate-limited, never with the key), run the handler, turn anything it throws into a
// real status (server/common/grpc_status.h), bound the message, and log every failed call with its request id.
// (RpcStatusInterceptor counts them, with the failures gRPC answers before any handler runs.)
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <string>

#include "server/common/auth.h"
#include "server/common/grpc_auth.h"

namespace statetune::serving {
using common::Principal;
using common::TenantRegistry;

// One authenticated call, as the handler and the logs see it.
struct RpcCall {
  const char* method = "";
  std::string request_id;
  Principal principal;
  // The tenant label of logs and metrics: the caller's tenant, "_admin" for the admin key.
  std::string tenant_label() const { return principal.label(); }
};

class RpcRunner {
 public:
  using Body = std::function<grpc::Status(const RpcCall&)>;
  // Runs after an authenticated call's final status is known (per-RPC metrics).
  using Finished = std::function<void(const RpcCall&, const grpc::Status&)>;

  explicit RpcRunner(const TenantRegistry& tenants) : auth_(tenants) {}

  grpc::Status run(grpc::ServerContext* ctx, const char* method, const Body& body, const Finished& finished = {});

 private:
  common::GrpcAuthenticator auth_;
};

}  // namespace statetune::serving
