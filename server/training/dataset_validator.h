// Validation of uploaded fine-tuning data: JSON lines, each a UTF-8 object under the one
// prompt/completion rule (tasks::prompt_completion_problems: exactly the string fields "prompt" and
// "completion"), both non-empty (the service's upload policy), and prompt + completion within a
// token limit.
// Every problem is reported with its 1-based line number, many at once, so a user fixes a file in
// one round trip instead of one error per upload.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "server/engine/tasks/jsonl.h"

namespace statetune::training {

struct DatasetProblem {
  int64_t line = 0;  // 1-based; 0 for whole-file problems (e.g. too few examples)
  std::string message;
};

// The example type every reader shares (tasks/jsonl.h), with the line it came from.
struct ValidatedExample : tasks::PromptCompletion {
  int64_t line = 0;  // 1-based line in the upload
};

struct ValidationOptions {
  // Problems kept with their messages; the rest are only counted. Small, because the report goes
  // back in a gRPC status, whose message travels in metadata of bounded size.
  int64_t max_problems = 20;
  int64_t min_examples = 1;
  int64_t max_example_tokens = 0;  // 0: no token limit
  // Bytes of the tokenizer's longest token. With a token limit, a line longer than
  // max_example_tokens * max_token_bytes cannot fit and is rejected before it is parsed or
  // tokenized (tokenizing 20 MB takes seconds). 0: no such check.
  size_t max_token_bytes = 0;
  // Tokens of one text (the model's tokenizer); needed when max_example_tokens > 0. It may stop
  // counting once the count is above `limit` (and return any count above it).
  std::function<int64_t(std::string_view text, int64_t limit)> count_tokens;
};

struct ValidationReport {
  std::vector<ValidatedExample> examples;  // the valid lines, in order
  std::vector<DatasetProblem> problems;    // empty = valid; the first max_problems only
  int64_t total_problems = 0;              // all of them, kept or not
  int64_t max_example_tokens = 0;          // longest valid example, in tokens (when counted)

  bool ok() const { return problems.empty(); }
  // "the data set has 2000 problems: line 3: missing field \"completion\"; line 7: ...; and 1980
  // more" (at most `limit` entries, and no more than fit in about 1.5 KB).
  std::string summary(size_t limit = 20) const;
};

ValidationReport validate_jsonl(std::string_view text, const ValidationOptions& options);

// True when `text` is well-formed UTF-8 (no overlongs, surrogates or code points above U+10FFFF).
bool is_valid_utf8(std::string_view text);

}  // namespace statetune::training
