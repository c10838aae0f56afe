// The one table of gRPC status code names, for the server (metric labels, logs) and the client (CLI
// messages, job errors). Header-only: the client library uses it without linking the services.
#pragma once

#include <grpcpp/support/status_code_enum.h>

#include <cctype>
#include <string>

namespace statetune::common {

// "ok", "invalid_argument", ... ("code_N" for a code outside the table): lowercase snake, the
// spelling of every `code` label on both services' metrics (Prometheus convention).
inline std::string status_code_name(grpc::StatusCode code) {
  static const char* const names[] = {"ok", "cancelled", "unknown", "invalid_argument", "deadline_exceeded",
                                      "not_found", "already_exists", "permission_denied", "resource_exhausted",
                                      "failed_precondition", "aborted", "out_of_range", "unimplemented",
                                      "internal", "unavailable", "data_loss", "unauthenticated"};
  const int i = static_cast<int>(code);
  return i >= 0 && i < static_cast<int>(sizeof(names) / sizeof(names[0])) ? names[i] : "code_" + std::to_string(i);
}

// The same name as gRPC spells the constant: "OK", "INVALID_ARGUMENT", ... (CLI messages, job errors).
inline std::string status_code_constant(grpc::StatusCode code) {
  std::string name = status_code_name(code);
  for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return name;
}

}  // namespace statetune::common
