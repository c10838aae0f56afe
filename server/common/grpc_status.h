// The one place where a failure becomes the gRPC status a client sees, for both services: an
// exception a handler let escape, or an error kind the engine reported for a request, maps to a
// precise code through engine::ErrorKind (server/engine/util/engine_error.h); every message is
// bounded and printable; UNKNOWN never reaches a client; anything unexpected is INTERNAL naming only
// a request id (its text, which may hold server paths, is for the log).
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstddef>
#include <exception>
#include <string>

#include "server/engine/util/engine_error.h"

namespace statetune::common {

// Longest status message sent: gRPC carries it in a trailer, and a trailer over the client's metadata
// limit (8 KiB by default) replaces the real error with RESOURCE_EXHAUSTED. A message that is not
// clean text is escaped (up to 4 bytes per byte), so it is cut at half of this first.
inline constexpr size_t kMaxStatusMessageBytes = 2048;

grpc::StatusCode to_grpc_code(engine::ErrorKind kind);

// The status for an engine error: its code with `message`, or for kInternal (and kNone) INTERNAL
// "internal error (request <id>); the server log has the details".
grpc::Status to_grpc_status(engine::ErrorKind kind, const std::string& message, const std::string& request_id);

// The status for an exception a handler let escape (engine::error_kind_of). `detail` (optional)
// receives its full text for the log.
grpc::Status to_grpc_status(const std::exception_ptr& error, const std::string& request_id,
                            std::string* detail = nullptr);

// `status` made safe to send: UNKNOWN becomes INTERNAL; a message of clean text (UTF-8 without
// control characters) is cut at kMaxStatusMessageBytes on a character boundary, marked "... (cut)";
// any other message is shown with its odd bytes escaped as \xNN, at most half that many bytes of it.
grpc::Status bounded_status(const grpc::Status& status);

}  // namespace statetune::common
