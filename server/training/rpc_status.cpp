#include "server/training/rpc_status.h"

#include "client/statetune_client.h"
#include "server/common/logging.h"
#include "server/training/bounded_text.h"
#include "server/training/storage_error.h"
#include "server/training/training_core.h"

namespace statetune::training {
using grpc::Status;
using grpc::StatusCode;

std::string cap_message(const std::string& text, size_t max_bytes) {
  return cut_text(text, max_bytes, "... (cut)");
}

namespace {

Status from_exception(const char* method, const std::string& request_id) {
  try {
    throw;
  } catch (const std::invalid_argument& e) {
    return Status(StatusCode::INVALID_ARGUMENT, cap_message(e.what()));
  } catch (const TrainingError& e) {
    switch (e.kind) {
      case TrainingError::Kind::kNotFound: return Status(StatusCode::NOT_FOUND, cap_message(e.what()));
      case TrainingError::Kind::kFailedPrecondition:
        return Status(StatusCode::FAILED_PRECONDITION, cap_message(e.what()));
      case TrainingError::Kind::kResourceExhausted:
        return Status(StatusCode::RESOURCE_EXHAUSTED, cap_message(e.what()));
      case TrainingError::Kind::kUnavailable: return Status(StatusCode::UNAVAILABLE, cap_message(e.what()));
    }
    return Status(StatusCode::INTERNAL, "internal error (request " + request_id + ")");
  } catch (const StorageError& e) {
    common::log_event(spdlog::level::err, "rpc.storage_error",
                      {{"method", method}, {"request_id", request_id}, {"error", e.what()}});
    if (e.full()) {
      return Status(StatusCode::RESOURCE_EXHAUSTED,
                    "the training service's storage is full; nothing was changed, try again later "
                    "(request " + request_id + ")");
    }
    return Status(StatusCode::INTERNAL, "the training service could not write its storage; "
                                        "nothing was changed (request " + request_id + ")");
  } catch (const std::exception& e) {
    common::log_event(spdlog::level::err, "rpc.internal_error",
                      {{"method", method}, {"request_id", request_id}, {"error", e.what()}});
    return Status(StatusCode::INTERNAL, "internal error (request " + request_id + ")");
  } catch (...) {
    common::log_event(spdlog::level::err, "rpc.internal_error",
                      {{"method", method},
                       {"request_id", request_id},
                       {"error", "not a std::exception"}});
    return Status(StatusCode::INTERNAL, "internal error (request " + request_id + ")");
  }
}

}  // namespace

Status run_rpc(const char* method, prometheus::Family<prometheus::Counter>& errors,
               const std::function<Status()>& handler) {
  Status st;
  std::string request_id;
  try {
    st = handler();
  } catch (...) {
    request_id = common::new_request_id();
    st = from_exception(method, request_id);
  }
  if (st.ok()) return st;
  const StatusCode code =
      st.error_code() == StatusCode::UNKNOWN ? StatusCode::INTERNAL : st.error_code();
  const std::string message = cap_message(st.error_message());
  const std::string code_name = client::status_code_name(code);
  errors.Add({{"method", method}, {"code", code_name}}).Increment();
  common::log_event(code == StatusCode::INTERNAL ? spdlog::level::err : spdlog::level::info,
                    "rpc.failed",
                    {{"method", method}, {"code", code_name}, {"message", message}});
  return Status(code, message);
}

}  // namespace statetune::training
