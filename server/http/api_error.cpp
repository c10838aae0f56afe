#include "server/http/api_error.h"

#include <nlohmann/json.hpp>

#include "server/common/logging.h"

namespace statetune::http {

namespace {

// `text` cut to at most `max_bytes` without splitting a UTF-8 character.
std::string bounded(const std::string& text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t n = max_bytes;
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  return text.substr(0, n) + "... (cut)";
}

const char* type_for_status(int status) {
  switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "invalid_request_error";
    case 409: return "conflict_error";
    case 413: return "invalid_request_error";
    case 415: return "invalid_request_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

}  // namespace

ApiError invalid_request(const std::string& message, const std::string& param, const std::string& code) {
  return ApiError(400, "invalid_request_error", message, param, code);
}

ApiError not_found(const std::string& message, const std::string& code) {
  return ApiError(404, "invalid_request_error", message, "", code);
}

void write_error(httplib::Response& res, const ApiError& error) {
  nlohmann::json e = {{"message", bounded(error.what(), kMaxErrorMessageBytes)},
                      {"type", error.type.empty() ? type_for_status(error.status) : error.type},
                      {"param", error.param.empty() ? nlohmann::json() : nlohmann::json(error.param)},
                      {"code", error.code.empty() ? nlohmann::json() : nlohmann::json(error.code)}};
  res.status = error.status;
  // Bytes that are not UTF-8 (a quoted input) become U+FFFD instead of making the body unwritable.
  res.set_content(nlohmann::json{{"error", e}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                  "application/json");
}

int respond(const char* route, httplib::Response& res, const std::function<void()>& handler,
            const ErrorMapper& mapper) {
  try {
    handler();
    return res.status <= 0 ? 200 : res.status;
  } catch (...) {
    const std::exception_ptr error = std::current_exception();
    std::optional<ApiError> api;
    try {
      if (mapper) api = mapper(error);
      if (!api) std::rethrow_exception(error);
    } catch (const ApiError& e) {
      api = e;
    } catch (const std::invalid_argument& e) {
      api = invalid_request(e.what());
    } catch (const std::exception& e) {
      const std::string id = common::new_request_id();
      common::log_event(spdlog::level::err, "http.internal_error",
                        {{"route", route}, {"request_id", id}, {"message", e.what()}});
      api = ApiError(500, "server_error", "internal error (request " + id + ")");
    } catch (...) {
      const std::string id = common::new_request_id();
      common::log_event(spdlog::level::err, "http.internal_error", {{"route", route}, {"request_id", id}});
      api = ApiError(500, "server_error", "internal error (request " + id + ")");
    }
    write_error(res, *api);
    return api->status;
  }
}

std::string grpc_code_name(int http_status) {
  if (http_status >= 200 && http_status < 300) return "ok";
  switch (http_status) {
    case 400: case 411: case 413: case 415: return "invalid_argument";
    case 401: return "unauthenticated";
    case 403: return "permission_denied";
    case 404: return "not_found";
    case 429: case 507: return "resource_exhausted";
    case 503: return "unavailable";
    default: return "internal";
  }
}

}  // namespace statetune::http
