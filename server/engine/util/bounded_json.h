#pragma once
// JSON from outside the process (uploaded files' headers and metadata, data-set lines, job parameters,
// the tenants file, stored indexes) is parsed only through these functions. nlohmann's parser and
// destructor recurse once per nesting level, so a value nested ~100,000 deep overflows the stack and
// kills the process; the depth and the size are therefore checked by a flat scan *before* the parser
// runs, and a failure is an exception that says what was wrong without echoing the input.

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace statetune::engine {

struct JsonLimits {
  size_t max_bytes = size_t{1} << 20;
  // Deep enough for every document this project reads (the deepest, a tokenizer.json or a job's
  // parameters, nests < 10) and far below where recursion becomes a danger.
  int max_depth = 64;
};

// What went wrong with a bounded parse: too large, too deep, or not JSON. `what()` never contains the
// input itself, only `what` (the caller's name for the document), the limit and the position.
class JsonInputError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// The deepest nesting of arrays/objects in `text` (brackets inside strings do not count). The scan
// stops as soon as the depth passes `stop_above` and returns that depth. Malformed text is not an
// error here: the parser reports it.
int json_nesting_depth(std::string_view text, int stop_above);

// Parses `text` as one JSON document after checking its size and depth against `limits`.
// Throws JsonInputError naming `what` on any failure.
nlohmann::json parse_bounded_json(std::string_view text, const JsonLimits& limits, const std::string& what);

// Integers read from a parsed document. nlohmann's get<integer>() on a float value is a static_cast,
// undefined behaviour when the value lies outside the integer's range (7.8e127 as a tensor offset was
// a fuzzing finding), and it silently truncates 1.5; these accept only a JSON integer that fits and
// otherwise throw JsonInputError naming `what`.
int64_t json_int64(const nlohmann::json& value, const std::string& what);
uint64_t json_uint64(const nlohmann::json& value, const std::string& what);

}  // namespace statetune::engine
