// The {"prompt", "completion"} JSON-lines format of fine-tuning data sets: what users upload to the
// training service and what convert_dataset writes.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace statetune::tasks {

struct Example;

struct PromptCompletion {
  std::string prompt;
  std::string completion;
};

// One JSON object per line with string fields "prompt" and "completion" (other fields are ignored,
// blank lines skipped). Throws std::runtime_error naming `source` and the 1-based line of the first
// problem.
std::vector<PromptCompletion> parse_prompt_completion_jsonl(std::string_view text,
                                                            const std::string& source = "<jsonl>");
std::vector<PromptCompletion> read_prompt_completion_jsonl(const std::string& path);

// One line per record. Written to "<path>.tmp" and renamed, so readers never see half a file. Throws
// std::runtime_error when the file cannot be written or a text is not valid UTF-8.
void write_prompt_completion_jsonl(const std::string& path, const std::vector<PromptCompletion>& records);
void write_prompt_completion_jsonl(const std::string& path, const std::vector<Example>& examples);

}  // namespace statetune::tasks
