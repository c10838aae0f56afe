#include "server/serving/rpc_runner.h"

#include <spdlog/spdlog.h>

#include "server/common/grpc_status.h"
#include "server/common/logging.h"
#include "server/common/status_codes.h"
#include "server/engine/util/printable.h"

namespace statetune::serving {
using grpc::Status;
using grpc::StatusCode;

Status RpcRunner::run(grpc::ServerContext* ctx, const char* method, const Body& body, const Finished& finished) {
  RpcCall call;
  call.method = method;
  call.request_id = common::new_request_id();
  Status status = authenticate(ctx, method, call.principal);
  if (!status.ok()) return status;
  std::string detail;
  try {
    status = common::bounded_status(body(call));
    detail = status.error_message();
  } catch (...) {
    status = common::to_grpc_status(std::current_exception(), call.request_id, &detail);
  }
  if (!status.ok()) {
    const bool server_fault = status.error_code() == StatusCode::INTERNAL || status.error_code() == StatusCode::UNKNOWN;
    common::log_event(server_fault ? spdlog::level::err : spdlog::level::info, "rpc.failed",
                      {{"method", method}, {"request_id", call.request_id}, {"tenant", call.tenant_label()},
                       {"code", common::status_code_name(status.error_code())},
                       {"message", engine::printable_excerpt(detail, common::kMaxStatusMessageBytes)}});
  }
  if (finished) finished(call, status);
  return status;
}

Status RpcRunner::authenticate(grpc::ServerContext* ctx, const char* method, Principal& out) {
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    log_auth_failure(ctx, method, "no authorization metadata");
    return Status(StatusCode::UNAUTHENTICATED, "missing `authorization: Bearer <api key>` metadata");
  }
  auto p = tenants_.authenticate_header(std::string(it->second.data(), it->second.size()));
  if (!p) {
    log_auth_failure(ctx, method, "unknown API key or not `Bearer <key>`");
    return Status(StatusCode::UNAUTHENTICATED, "unknown API key");
  }
  out = *p;
  return Status::OK;
}

void RpcRunner::log_auth_failure(grpc::ServerContext* ctx, const char* method, const char* reason) {
  const auto now = std::chrono::steady_clock::now();
  int64_t unlogged = 0;
  {
    std::lock_guard<std::mutex> lock(auth_log_mu_);
    if (last_auth_log_ != std::chrono::steady_clock::time_point{} && now - last_auth_log_ < std::chrono::seconds(1)) {
      ++auth_failures_unlogged_;
      return;
    }
    last_auth_log_ = now;
    unlogged = auth_failures_unlogged_;
    auth_failures_unlogged_ = 0;
  }
  common::log_event(spdlog::level::warn, "auth.failed",
                    {{"method", method}, {"peer", engine::printable_excerpt(ctx->peer(), 128)}, {"reason", reason},
                     {"failures_not_logged_since_last", unlogged}});
}

}  // namespace statetune::serving
