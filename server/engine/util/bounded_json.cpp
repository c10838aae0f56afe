#include "server/engine/util/bounded_json.h"

#include <limits>

namespace statetune::engine {

int json_nesting_depth(std::string_view text, int stop_above) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"': in_string = true; break;
      case '[':
      case '{':
        if (++depth > deepest) {
          deepest = depth;
          if (deepest > stop_above) return deepest;
        }
        break;
      case ']':
      case '}':
        if (depth > 0) --depth;
        break;
      default: break;
    }
  }
  return deepest;
}

nlohmann::json parse_bounded_json(std::string_view text, const JsonLimits& limits, const std::string& what) {
  if (text.size() > limits.max_bytes) {
    throw JsonInputError(what + " is " + std::to_string(text.size()) + " bytes; at most " +
                         std::to_string(limits.max_bytes) + " are accepted");
  }
  if (json_nesting_depth(text, limits.max_depth) > limits.max_depth) {
    throw JsonInputError(what + " nests deeper than " + std::to_string(limits.max_depth) + " levels");
  }
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    // nlohmann's messages name a byte position and the last token read, never the whole input.
    std::string msg = e.what();
    if (msg.size() > 200) msg.resize(200);
    throw JsonInputError(what + " is not valid JSON: " + msg);
  }
}

int64_t json_int64(const nlohmann::json& value, const std::string& what) {
  if (value.is_number_unsigned()) {
    if (value.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      throw JsonInputError(what + " is out of range");
    }
    return static_cast<int64_t>(value.get<uint64_t>());
  }
  if (value.is_number_integer()) return value.get<int64_t>();
  throw JsonInputError(what + " must be an integer");
}

uint64_t json_uint64(const nlohmann::json& value, const std::string& what) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer()) {
    if (value.get<int64_t>() < 0) throw JsonInputError(what + " must not be negative");
    return static_cast<uint64_t>(value.get<int64_t>());
  }
  throw JsonInputError(what + " must be a non-negative integer");
}

}  // namespace statetune::engine
