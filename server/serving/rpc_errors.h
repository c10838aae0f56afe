// The one place where a failure becomes the gRPC status a client sees. Every handler's exceptions and
// the engine's per-request errors go through here, so the mapping is the same for every RPC and no
// exception ever escapes to gRPC (which would answer UNKNOWN, unlogged and uncounted).
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstddef>
#include <exception>
#include <string>

#include "server/engine/runtime/scheduler.h"

namespace statetune::serving {

// Longest status message sent: gRPC carries it in a trailer, and a trailer over the client's metadata
// limit (8 KiB by default) replaces the real error with RESOURCE_EXHAUSTED.
inline constexpr size_t kMaxStatusMessageBytes = 1024;

// The status for an exception a handler let escape:
//   engine::AdapterNotFound                          NOT_FOUND
//   engine::AdapterQuotaExceeded                     RESOURCE_EXHAUSTED
//   engine::QueueFull                                RESOURCE_EXHAUSTED
//   engine::NotAccepting                             UNAVAILABLE
//   std::invalid_argument (bad names, versions, uploads, UTF-8, JSON)   INVALID_ARGUMENT
//   anything else                                    INTERNAL, "internal error (request <id>)": the
//                                                    text may hold server paths, so it is only logged
// `detail` (optional) receives the full text for the log.
grpc::Status status_for_exception(const std::exception_ptr& error, const std::string& request_id,
                                  std::string* detail = nullptr);

// The same for an error the engine reported for one request (GenerationResult::error_kind).
grpc::Status status_for_engine_error(engine::ErrorKind kind, const std::string& message,
                                     const std::string& request_id, std::string* detail = nullptr);

// `status` with its message made safe to send: at most kMaxStatusMessageBytes, and bytes that are not
// printable ASCII escaped (a NUL would cut it, an echoed input could be anything).
grpc::Status bounded_status(const grpc::Status& status);

// "ok", "invalid_argument", ... (the label values of the serving metrics).
std::string code_name(grpc::StatusCode code);

}  // namespace statetune::serving
