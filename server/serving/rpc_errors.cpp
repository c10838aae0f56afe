#include "server/serving/rpc_errors.h"

#include <stdexcept>

#include "server/engine/adapters/adapter_store.h"
#include "server/engine/util/printable.h"

namespace statetune::serving {
using grpc::Status;
using grpc::StatusCode;

namespace {

Status internal_error(const std::string& request_id) {
  return Status(StatusCode::INTERNAL, "internal error (request " + request_id + "); the server log has the details");
}

}  // namespace

Status status_for_exception(const std::exception_ptr& error, const std::string& request_id, std::string* detail) {
  std::string what = "an exception that is not a std::exception";
  Status status;
  try {
    std::rethrow_exception(error);
  } catch (const engine::AdapterNotFound& e) {
    what = e.what();
    status = Status(StatusCode::NOT_FOUND, what);
  } catch (const engine::AdapterQuotaExceeded& e) {
    what = e.what();
    status = Status(StatusCode::RESOURCE_EXHAUSTED, what);
  } catch (const engine::AdapterStorageUnavailable& e) {
    what = e.what();
    status = Status(StatusCode::UNAVAILABLE, what);
  } catch (const engine::QueueFull& e) {
    what = e.what();
    status = Status(StatusCode::RESOURCE_EXHAUSTED, what);
  } catch (const engine::NotAccepting& e) {
    what = e.what();
    status = Status(StatusCode::UNAVAILABLE, what);
  } catch (const std::invalid_argument& e) {
    what = e.what();
    status = Status(StatusCode::INVALID_ARGUMENT, what);
  } catch (const std::exception& e) {
    what = e.what();
    status = internal_error(request_id);
  } catch (...) {
    status = internal_error(request_id);
  }
  if (detail != nullptr) *detail = what;
  return bounded_status(status);
}

Status status_for_engine_error(engine::ErrorKind kind, const std::string& message, const std::string& request_id,
                               std::string* detail) {
  if (detail != nullptr) *detail = message;
  switch (kind) {
    case engine::ErrorKind::kNotFound: return bounded_status(Status(StatusCode::NOT_FOUND, message));
    case engine::ErrorKind::kResourceExhausted:
      return bounded_status(Status(StatusCode::RESOURCE_EXHAUSTED, message));
    case engine::ErrorKind::kInvalidArgument: return bounded_status(Status(StatusCode::INVALID_ARGUMENT, message));
    default: return internal_error(request_id);
  }
}

Status bounded_status(const Status& status) {
  if (status.ok()) return status;
  const std::string& m = status.error_message();
  bool clean = m.size() <= kMaxStatusMessageBytes;
  for (size_t i = 0; clean && i < m.size(); ++i) {
    const auto c = static_cast<unsigned char>(m[i]);
    clean = c >= 0x20 && c < 0x7f;
  }
  if (clean) return status;
  return Status(status.error_code(), engine::printable_excerpt(m, kMaxStatusMessageBytes));
}

std::string code_name(StatusCode code) {
  switch (code) {
    case StatusCode::OK: return "ok";
    case StatusCode::CANCELLED: return "cancelled";
    case StatusCode::UNKNOWN: return "unknown";
    case StatusCode::INVALID_ARGUMENT: return "invalid_argument";
    case StatusCode::DEADLINE_EXCEEDED: return "deadline_exceeded";
    case StatusCode::NOT_FOUND: return "not_found";
    case StatusCode::ALREADY_EXISTS: return "already_exists";
    case StatusCode::PERMISSION_DENIED: return "permission_denied";
    case StatusCode::RESOURCE_EXHAUSTED: return "resource_exhausted";
    case StatusCode::FAILED_PRECONDITION: return "failed_precondition";
    case StatusCode::ABORTED: return "aborted";
    case StatusCode::OUT_OF_RANGE: return "out_of_range";
    case StatusCode::UNIMPLEMENTED: return "unimplemented";
    case StatusCode::INTERNAL: return "internal";
    case StatusCode::UNAVAILABLE: return "unavailable";
    case StatusCode::DATA_LOSS: return "data_loss";
    case StatusCode::UNAUTHENTICATED: return "unauthenticated";
    default: return "code_" + std::to_string(static_cast<int>(code));
  }
}

}  // namespace statetune::serving
