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
  Status status = auth_.authenticate(*ctx, method, call.principal);
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

}  // namespace statetune::serving
