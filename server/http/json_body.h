// Request bodies of the HTTP API: JSON parsed only through engine::parse_bounded_json, and typed field
// readers that answer a wrong type, a non-finite number or a value out of range with a 400 naming the
// field (OpenAI's `param`), never with an exception text of the JSON library.
#pragma once

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <set>
#include <string>

#include "server/engine/util/bounded_json.h"

namespace statetune::http {

// The body as a JSON object. 400 when it is not JSON, too deep or too large (the size was also bounded
// by the server's payload limit before any byte was read into memory), or not an object.
nlohmann::json parse_json_body(const httplib::Request& req, const engine::JsonLimits& limits);

// 400 naming the first field of `body` not in `known` (OpenAI rejects unknown parameters).
void reject_unknown_fields(const nlohmann::json& body, const std::set<std::string>& known);

// Optional fields: nullopt when absent or null; 400 when of the wrong type.
std::optional<std::string> opt_string(const nlohmann::json& body, const char* field);
std::optional<bool> opt_bool(const nlohmann::json& body, const char* field);
// A finite number (JSON has no NaN; 1e999 parses as infinity and is refused here).
std::optional<double> opt_number(const nlohmann::json& body, const char* field);
// A JSON integer that fits in int64 (1.5 and 1e300 are refused).
std::optional<int64_t> opt_integer(const nlohmann::json& body, const char* field);
// An object (nullopt when absent or null).
const nlohmann::json* opt_object(const nlohmann::json& body, const char* field);

std::string required_string(const nlohmann::json& body, const char* field);

// The reply body of a successful call.
void write_json(httplib::Response& res, const nlohmann::json& body, int status = 200);

}  // namespace statetune::http
