// The one way the engine says what kind of failure happened, so that every front end (gRPC, HTTP)
// maps it to its own status from one table (server/common/grpc_status.h for gRPC) instead of a
// catch list per service. An EngineError's message (what()) is written for the client, except for
// kInternal, whose text may name server paths: it is for the log only.
#pragma once

#include <exception>
#include <stdexcept>
#include <string>

namespace statetune::engine {

enum class ErrorKind {
  kNone,                // not an error
  kInvalidArgument,     // the request itself is wrong
  kNotFound,            // what it names does not exist (for this caller)
  kPermissionDenied,    // the caller may not do this
  kResourceExhausted,   // a limit or quota ran out; retrying later (or smaller) can work
  kUnavailable,         // the service cannot take work now (loading, draining)
  kFailedPrecondition,  // the target is not in a state that allows this
  kInternal,            // a server fault
};

// "invalid_argument", "not_found", ... (lowercase snake, like the status code names).
inline const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kNone: return "none";
    case ErrorKind::kInvalidArgument: return "invalid_argument";
    case ErrorKind::kNotFound: return "not_found";
    case ErrorKind::kPermissionDenied: return "permission_denied";
    case ErrorKind::kResourceExhausted: return "resource_exhausted";
    case ErrorKind::kUnavailable: return "unavailable";
    case ErrorKind::kFailedPrecondition: return "failed_precondition";
    case ErrorKind::kInternal: return "internal";
  }
  return "internal";
}

class EngineError : public std::runtime_error {
 public:
  EngineError(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

// The kind of any exception: an EngineError's own; std::invalid_argument (how names, uploads, JSON
// (JsonInputError) and requests are refused throughout the engine) kInvalidArgument; anything else
// kInternal.
inline ErrorKind error_kind_of(const std::exception& e) {
  if (const auto* engine_error = dynamic_cast<const EngineError*>(&e)) return engine_error->kind();
  if (dynamic_cast<const std::invalid_argument*>(&e) != nullptr) return ErrorKind::kInvalidArgument;
  return ErrorKind::kInternal;
}

}  // namespace statetune::engine
