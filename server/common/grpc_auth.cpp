#include "server/common/grpc_auth.h"

#include <spdlog/spdlog.h>

#include "server/common/logging.h"
#include "server/engine/util/printable.h"

namespace statetune::common {
using grpc::Status;
using grpc::StatusCode;

Status GrpcAuthenticator::authenticate(const grpc::ServerContext& ctx, const char* method, Principal& out) {
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    log_failure(ctx, method, "no authorization metadata");
    return Status(StatusCode::UNAUTHENTICATED, "missing `authorization: Bearer <api key>` metadata");
  }
  auto p = tenants_.authenticate_header(std::string(it->second.data(), it->second.size()));
  if (!p) {
    log_failure(ctx, method, "unknown API key or not `Bearer <key>`");
    return Status(StatusCode::UNAUTHENTICATED, "unknown API key");
  }
  out = *p;
  return Status::OK;
}

void GrpcAuthenticator::log_failure(const grpc::ServerContext& ctx, const char* method, const char* reason) {
  const auto now = std::chrono::steady_clock::now();
  int64_t unlogged = 0;
  {
    std::lock_guard<std::mutex> lock(log_mu_);
    if (last_log_ != std::chrono::steady_clock::time_point{} && now - last_log_ < std::chrono::seconds(1)) {
      ++failures_unlogged_;
      return;
    }
    last_log_ = now;
    unlogged = failures_unlogged_;
    failures_unlogged_ = 0;
  }
  log_event(spdlog::level::warn, "auth.failed",
            {{"method", method}, {"peer", engine::printable_excerpt(ctx.peer(), 128)}, {"reason", reason},
             {"failures_not_logged_since_last", unlogged}});
}

}  // namespace statetune::common
