#include "server/http/json_body.h"

#include <cmath>

#include "server/http/api_error.h"

namespace statetune::http {

namespace {

const nlohmann::json* field_of(const nlohmann::json& body, const char* field) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

[[noreturn]] void wrong_type(const char* field, const char* expected) {
  throw invalid_request(std::string("`") + field + "` must be " + expected, field);
}

}  // namespace

nlohmann::json parse_json_body(const httplib::Request& req, const engine::JsonLimits& limits) {
  nlohmann::json body;
  try {
    body = engine::parse_bounded_json(req.body, limits, "the request body");
  } catch (const engine::JsonInputError& e) {
    throw invalid_request(std::string(e.what()) + " (send a JSON object)");
  }
  if (!body.is_object()) throw invalid_request("the request body must be a JSON object");
  return body;
}

void reject_unknown_fields(const nlohmann::json& body, const std::set<std::string>& known) {
  for (auto it = body.begin(); it != body.end(); ++it) {
    if (known.count(it.key()) == 0) {
      // The name is outside input: bounded by the field-name check in the message's cap.
      throw invalid_request("unrecognized request argument supplied: " + it.key().substr(0, 64), it.key().substr(0, 64));
    }
  }
}

std::optional<std::string> opt_string(const nlohmann::json& body, const char* field) {
  const nlohmann::json* v = field_of(body, field);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) wrong_type(field, "a string");
  return v->get<std::string>();
}

std::optional<bool> opt_bool(const nlohmann::json& body, const char* field) {
  const nlohmann::json* v = field_of(body, field);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) wrong_type(field, "a boolean");
  return v->get<bool>();
}

std::optional<double> opt_number(const nlohmann::json& body, const char* field) {
  const nlohmann::json* v = field_of(body, field);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) wrong_type(field, "a number");
  const double d = v->get<double>();
  if (!std::isfinite(d)) wrong_type(field, "a finite number");
  return d;
}

std::optional<int64_t> opt_integer(const nlohmann::json& body, const char* field) {
  const nlohmann::json* v = field_of(body, field);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number_integer()) wrong_type(field, "an integer");
  try {
    return engine::json_int64(*v, field);
  } catch (const engine::JsonInputError&) {
    wrong_type(field, "an integer in range");
  }
}

const nlohmann::json* opt_object(const nlohmann::json& body, const char* field) {
  const nlohmann::json* v = field_of(body, field);
  if (v != nullptr && !v->is_object()) wrong_type(field, "an object");
  return v;
}

std::string required_string(const nlohmann::json& body, const char* field) {
  auto v = opt_string(body, field);
  if (!v) throw invalid_request(std::string("missing required parameter: `") + field + "`", field);
  return *v;
}

void write_json(httplib::Response& res, const nlohmann::json& body, int status) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "application/json");
}

}  // namespace statetune::http
