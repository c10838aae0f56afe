#include "server/training/rpc_status.h"

#include "server/common/grpc_status.h"
#include "server/common/logging.h"
#include "server/common/status_codes.h"
#include "server/engine/util/storage_error.h"

namespace statetune::training {
using grpc::Status;
using grpc::StatusCode;

namespace {

Status from_exception(const char* method, const std::string& request_id) {
  try {
    throw;
  } catch (const engine::StorageError& e) {
    common::log_event(spdlog::level::err, "rpc.storage_error",
                      {{"method", method}, {"request_id", request_id}, {"error", e.what()}});
    if (e.full()) {
      return Status(StatusCode::RESOURCE_EXHAUSTED,
                    "the training service's storage is full; nothing was changed, try again later "
                    "(request " + request_id + ")");
    }
    return Status(StatusCode::INTERNAL, "the training service could not write its storage; "
                                        "nothing was changed (request " + request_id + ")");
  } catch (...) {
    std::string detail;
    Status st = common::to_grpc_status(std::current_exception(), request_id, &detail);
    if (st.error_code() == StatusCode::INTERNAL) {
      common::log_event(spdlog::level::err, "rpc.internal_error",
                        {{"method", method}, {"request_id", request_id}, {"error", detail}});
    }
    return st;
  }
}

}  // namespace

Status run_rpc(const char* method, prometheus::Family<prometheus::Counter>& errors,
               const std::function<Status()>& handler) {
  Status st;
  try {
    st = handler();
  } catch (...) {
    st = from_exception(method, common::new_request_id());
  }
  if (st.ok()) return st;
  st = common::bounded_status(st);
  const std::string code_name = common::status_code_name(st.error_code());
  errors.Add({{"method", method}, {"code", code_name}}).Increment();
  common::log_event(st.error_code() == StatusCode::INTERNAL ? spdlog::level::err : spdlog::level::info,
                    "rpc.failed", {{"method", method}, {"code", code_name}, {"message", st.error_message()}});
  return st;
}

}  // namespace statetune::training
