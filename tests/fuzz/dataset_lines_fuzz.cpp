// An uploaded fine-tuning data set (JSON lines), through the validator the upload path runs.
#include <string>
#include <string_view>

#include "server/training/dataset_validator.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  statetune::training::ValidationOptions options;
  options.max_problems = 8;
  options.max_example_tokens = 64;
  options.max_token_bytes = 16;
  // A stand-in for the tokenizer (tokenizer_fuzz covers it): one token per 4 bytes.
  options.count_tokens = [](std::string_view s, int64_t) { return static_cast<int64_t>(s.size() / 4 + 1); };
  try {
    const auto report = statetune::training::validate_jsonl(text, options);
    FUZZ_CHECK(report.problems.size() <= static_cast<size_t>(options.max_problems));
    FUZZ_CHECK(report.total_problems >= static_cast<int64_t>(report.problems.size()));
    for (const auto& e : report.examples) {
      // Accepted examples are what the validator promises: non-empty UTF-8 within the limit.
      FUZZ_CHECK(!e.prompt.empty() && !e.completion.empty());
      FUZZ_CHECK(statetune::training::is_valid_utf8(e.prompt) && statetune::training::is_valid_utf8(e.completion));
      FUZZ_CHECK(e.line >= 1);
    }
    (void)report.summary(4);
  } catch (const std::exception&) {
  }
  return 0;
}
