#include "server/common/grpc_status.h"

#include "server/engine/text/unicode.h"
#include "server/engine/util/printable.h"

namespace statetune::common {
using engine::ErrorKind;
using grpc::Status;
using grpc::StatusCode;

namespace {

Status internal_error(const std::string& request_id) {
  return Status(StatusCode::INTERNAL, "internal error (request " + request_id + "); the server log has the details");
}

// Well-formed UTF-8 without C0 controls or DEL (a NUL would cut the message short).
bool clean_text(const std::string& s) {
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) return false;
  }
  return engine::unicode::first_invalid_utf8(s) == std::string::npos;
}

}  // namespace

StatusCode to_grpc_code(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument: return StatusCode::INVALID_ARGUMENT;
    case ErrorKind::kNotFound: return StatusCode::NOT_FOUND;
    case ErrorKind::kPermissionDenied: return StatusCode::PERMISSION_DENIED;
    case ErrorKind::kResourceExhausted: return StatusCode::RESOURCE_EXHAUSTED;
    case ErrorKind::kUnavailable: return StatusCode::UNAVAILABLE;
    case ErrorKind::kFailedPrecondition: return StatusCode::FAILED_PRECONDITION;
    case ErrorKind::kNone:
    case ErrorKind::kInternal: break;
  }
  return StatusCode::INTERNAL;
}

Status to_grpc_status(ErrorKind kind, const std::string& message, const std::string& request_id) {
  const StatusCode code = to_grpc_code(kind);
  if (code == StatusCode::INTERNAL) return internal_error(request_id);
  return bounded_status(Status(code, message));
}

Status to_grpc_status(const std::exception_ptr& error, const std::string& request_id, std::string* detail) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    if (detail != nullptr) *detail = e.what();
    return to_grpc_status(engine::error_kind_of(e), e.what(), request_id);
  } catch (...) {
    if (detail != nullptr) *detail = "an exception that is not a std::exception";
    return internal_error(request_id);
  }
}

Status bounded_status(const Status& status) {
  if (status.ok()) return status;
  const StatusCode code = status.error_code() == StatusCode::UNKNOWN ? StatusCode::INTERNAL : status.error_code();
  const std::string& m = status.error_message();
  if (!clean_text(m)) return Status(code, engine::printable_excerpt(m, kMaxStatusMessageBytes / 2));
  if (m.size() <= kMaxStatusMessageBytes) return Status(code, m);
  const std::string marker = "... (cut)";
  size_t cut = kMaxStatusMessageBytes - marker.size();
  while (cut > 0 && (static_cast<unsigned char>(m[cut]) & 0xC0) == 0x80) --cut;
  return Status(code, m.substr(0, cut) + marker);
}

}  // namespace statetune::common
