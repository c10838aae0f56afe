#include "server/training/dataset_validator.h"

#include <nlohmann/json.hpp>

namespace statetune::training {

bool is_valid_utf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (int k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000))
      return false;
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

std::string ValidationReport::summary(size_t limit) const {
  std::string out;
  size_t shown = 0;
  for (const auto& p : problems) {
    if (shown == limit) break;
    if (!out.empty()) out += "; ";
    out += p.line > 0 ? "line " + std::to_string(p.line) + ": " + p.message : p.message;
    ++shown;
  }
  if (problems.size() > shown || truncated) {
    out += "; ... and more problems";
  }
  return out;
}

ValidationReport validate_jsonl(std::string_view text, const ValidationOptions& options) {
  ValidationReport r;
  auto problem = [&](int64_t line, std::string message) {
    if (static_cast<int64_t>(r.problems.size()) >= options.max_problems) {
      r.truncated = true;
      return;
    }
    r.problems.push_back({line, std::move(message)});
  };
  int64_t line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos)
      continue;  // blank lines are allowed
    if (!is_valid_utf8(line)) {
      problem(line_no, "not valid UTF-8");
      continue;
    }
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      std::string what = e.what();
      // nlohmann's "[json.exception.parse_error.101] parse error at line 1, column 9: ..." -> the
      // tail.
      if (auto c = what.find("column"); c != std::string::npos) what = what.substr(c);
      problem(line_no, "not valid JSON (" + what + ")");
      continue;
    }
    if (!j.is_object()) {
      problem(line_no, "not a JSON object");
      continue;
    }
    bool bad = false;
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key() != "prompt" && it.key() != "completion") {
        problem(line_no,
                "unexpected field \"" + it.key() + "\" (only \"prompt\" and \"completion\")");
        bad = true;
      }
    }
    std::string fields[2];
    const char* names[2] = {"prompt", "completion"};
    for (int k = 0; k < 2; ++k) {
      auto it = j.find(names[k]);
      if (it == j.end()) {
        problem(line_no, std::string("missing field \"") + names[k] + "\"");
        bad = true;
      } else if (!it->is_string()) {
        problem(line_no, std::string("field \"") + names[k] + "\" is not a string");
        bad = true;
      } else if (it->get_ref<const std::string&>().empty()) {
        problem(line_no, std::string("field \"") + names[k] + "\" is empty");
        bad = true;
      } else {
        fields[k] = it->get<std::string>();
      }
    }
    if (bad) continue;
    if (options.max_example_tokens > 0 && options.count_tokens) {
      const int64_t tokens = options.count_tokens(fields[0]) + options.count_tokens(fields[1]);
      if (tokens > options.max_example_tokens) {
        problem(line_no, "prompt + completion are " + std::to_string(tokens) +
                             " tokens, above the limit of " +
                             std::to_string(options.max_example_tokens));
        continue;
      }
      r.max_example_tokens = std::max(r.max_example_tokens, tokens);
    }
    r.examples.push_back({line_no, std::move(fields[0]), std::move(fields[1])});
  }
  if (r.problems.empty() && static_cast<int64_t>(r.examples.size()) < options.min_examples) {
    problem(0, "the data set has " + std::to_string(r.examples.size()) +
                   " examples, fewer than the minimum of " + std::to_string(options.min_examples));
  }
  return r;
}

}  // namespace statetune::training
