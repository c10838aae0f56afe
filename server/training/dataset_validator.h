// Validation of uploaded fine-tuning data: JSON lines, each a UTF-8 object with exactly the string
// fields "prompt" and "completion", both non-empty, and prompt + completion within a token limit.
// Every problem is reported with its 1-based line number, many at once, so a user fixes a file in
// one round trip instead of one error per upload.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace statetune::training {

struct DatasetProblem {
  int64_t line = 0;  // 1-based; 0 for whole-file problems (e.g. too few examples)
  std::string message;
};

struct ValidatedExample {
  int64_t line = 0;
  std::string prompt;
  std::string completion;
};

struct ValidationOptions {
  int64_t max_problems = 100;  // stop collecting beyond this many (the report says so)
  int64_t min_examples = 1;
  int64_t max_example_tokens = 0;  // 0: no token limit
  // Tokens of one text (the model's tokenizer); needed when max_example_tokens > 0.
  std::function<int64_t(const std::string&)> count_tokens;
};

struct ValidationReport {
  std::vector<ValidatedExample> examples;  // the valid lines, in order
  std::vector<DatasetProblem> problems;    // empty = valid
  bool truncated = false;                  // more problems than max_problems
  int64_t max_example_tokens = 0;          // longest valid example, in tokens (when counted)

  bool ok() const { return problems.empty(); }
  // "line 3: missing field \"completion\"; line 7: ..." (at most `limit` entries, then "... and N
  // more").
  std::string summary(size_t limit = 100) const;
};

ValidationReport validate_jsonl(std::string_view text, const ValidationOptions& options);

// True when `text` is well-formed UTF-8 (no overlongs, surrogates or code points above U+10FFFF).
bool is_valid_utf8(std::string_view text);

}  // namespace statetune::training
