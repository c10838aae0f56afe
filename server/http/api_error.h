// Errors of the OpenAI-compatible HTTP API, in OpenAI's shape:
//   HTTP 4xx/5xx, body {"error": {"message": "...", "type": "...", "param": ... | null, "code": ... | null}}
// Every handler runs through respond(), the one place where a failure becomes what the client sees:
// an ApiError keeps its status; std::invalid_argument (engine::JsonInputError too) is a 400; anything
// else is a 500 naming only the request id (its text may hold server paths; it goes to the log).
#pragma once

#include <httplib.h>

#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

namespace statetune::http {

// Longest error message sent: an echoed input could be anything.
inline constexpr size_t kMaxErrorMessageBytes = 2048;

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string type, const std::string& message, std::string param = "",
           std::string code = "")
      : std::runtime_error(message), status(status), type(std::move(type)), param(std::move(param)),
        code(std::move(code)) {}
  int status;
  std::string type;   // invalid_request_error, authentication_error, ...
  std::string param;  // the request field at fault; empty: null
  std::string code;   // model_not_found, ...; empty: null
};

// The common ones.
ApiError invalid_request(const std::string& message, const std::string& param = "",
                         const std::string& code = "");                    // 400
ApiError not_found(const std::string& message, const std::string& code = "");  // 404

// Maps a failure the caller knows about (engine or service exceptions) to an ApiError; nullopt: not one
// of its kinds.
using ErrorMapper = std::function<std::optional<ApiError>(const std::exception_ptr&)>;

// Writes `error` as the response: status, JSON body, the message made printable and bounded.
void write_error(httplib::Response& res, const ApiError& error);

// Runs `handler`; a failure becomes an OpenAI-shaped error response (see the file comment). Returns the
// status sent (the handler's own on success), for metrics and logs.
int respond(const char* route, httplib::Response& res, const std::function<void()>& handler,
            const ErrorMapper& mapper = nullptr);

// The gRPC status code name ("ok", "invalid_argument", "not_found", "resource_exhausted", ...) that
// matches an HTTP status: metrics label both fronts' outcomes with one vocabulary, so one alert
// covers both.
std::string grpc_code_name(int http_status);

}  // namespace statetune::http
