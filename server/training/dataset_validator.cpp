#include "server/training/dataset_validator.h"

#include <nlohmann/json.hpp>

#include "server/engine/util/bounded_json.h"
#include "server/training/bounded_text.h"

namespace statetune::training {
namespace {

// A value from the file quoted in a problem, cut so that one line cannot blow up the report.
std::string shorten(const std::string& text) { return cut_text(text, 160, "..."); }

}  // namespace

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
  std::string out = "the data set has " + std::to_string(total_problems) +
                    (total_problems == 1 ? " problem: " : " problems: ");
  // Few enough entries to stay well within a gRPC status message (its metadata is bounded).
  constexpr size_t kMaxBytes = 1536;
  size_t shown = 0;
  for (const auto& p : problems) {
    if (shown == limit) break;
    const std::string entry =
        (shown > 0 ? "; " : "") +
        (p.line > 0 ? "line " + std::to_string(p.line) + ": " + p.message : p.message);
    if (shown > 0 && out.size() + entry.size() > kMaxBytes) break;
    out += entry;
    ++shown;
  }
  if (total_problems > static_cast<int64_t>(shown)) {
    out += "; and " + std::to_string(total_problems - static_cast<int64_t>(shown)) + " more";
  }
  return out;
}

ValidationReport validate_jsonl(std::string_view text, const ValidationOptions& options) {
  ValidationReport r;
  auto problem = [&](int64_t line, std::string message) {
    ++r.total_problems;
    if (static_cast<int64_t>(r.problems.size()) >= options.max_problems) return;
    r.problems.push_back({line, std::move(message)});
  };
  const size_t max_line_bytes =
      options.max_example_tokens > 0 && options.max_token_bytes > 0
          ? static_cast<size_t>(options.max_example_tokens) * options.max_token_bytes
          : size_t{0};
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
    if (max_line_bytes > 0 && line.size() > max_line_bytes) {
      problem(line_no, "the line is " + std::to_string(line.size()) +
                           " bytes: more than " + std::to_string(options.max_example_tokens) +
                           " tokens can hold");
      continue;
    }
    if (!is_valid_utf8(line)) {
      problem(line_no, "not valid UTF-8");
      continue;
    }
    nlohmann::json j;
    try {
      // A line is a flat object: 8 levels leave room for nothing legitimate to be refused.
      j = engine::parse_bounded_json(line, {line.size(), 8}, "the line");
    } catch (const engine::JsonInputError& e) {
      // "the line is not valid JSON: ..." / "the line nests deeper than 8 levels" -> without the
      // subject, after "line N: ".
      std::string what = e.what();
      for (const char* subject : {"the line is ", "the line "}) {
        if (what.rfind(subject, 0) == 0) {
          what.erase(0, std::string(subject).size());
          break;
        }
      }
      problem(line_no, shorten(what));
      continue;
    }
    ValidatedExample example;
    example.line = line_no;
    const std::vector<std::string> problems =
        tasks::prompt_completion_problems(j, /*require_non_empty=*/true, example);
    for (const std::string& p : problems) problem(line_no, p);
    if (!problems.empty()) continue;
    if (options.max_example_tokens > 0 && options.count_tokens) {
      const int64_t prompt_tokens = options.count_tokens(example.prompt, options.max_example_tokens);
      const int64_t tokens =
          prompt_tokens > options.max_example_tokens
              ? prompt_tokens
              : prompt_tokens +
                    options.count_tokens(example.completion, options.max_example_tokens - prompt_tokens);
      if (tokens > options.max_example_tokens) {
        // Counting stops past the limit: the count is a lower bound.
        problem(line_no, "prompt + completion are at least " + std::to_string(tokens) +
                             " tokens, above the limit of " +
                             std::to_string(options.max_example_tokens));
        continue;
      }
      r.max_example_tokens = std::max(r.max_example_tokens, tokens);
    }
    r.examples.push_back(std::move(example));
  }
  if (r.problems.empty() && static_cast<int64_t>(r.examples.size()) < options.min_examples) {
    problem(0, "the data set has " + std::to_string(r.examples.size()) +
                   " examples, fewer than the minimum of " + std::to_string(options.min_examples));
  }
  return r;
}

}  // namespace statetune::training
