// The {"prompt", "completion"} JSON-lines format of fine-tuning data sets: what users upload to the
// training service, what the trainer reads (statetune-engine train --data) and what convert_dataset
// writes. One example type (PromptCompletion) and one rule for a line (prompt_completion_problems)
// serve all three.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace statetune::tasks {

struct Example;

// One fine-tuning example. The trainer appends the "###" separator to the prompt and the
// end-of-text token to the completion; neither is stored here.
struct PromptCompletion {
  std::string prompt;
  std::string completion;
};

// The rule for one line, already parsed: a JSON object with exactly the string fields "prompt" and
// "completion". Other fields are refused, not ignored: in a fine-tuning file an extra or misspelt field
// is far more often a mistake than data meant to be skipped, and refusing it means an upload the
// service accepts is read the same way by every other reader. `require_non_empty` adds the training
// service's upload policy (an empty prompt or completion is refused). Returns the problems in field
// order, each a message without the line number (empty = valid); on success fills `out`.
std::vector<std::string> prompt_completion_problems(const nlohmann::json& line, bool require_non_empty,
                                                    PromptCompletion& out);

// One JSON object per line under prompt_completion_problems' rule (empty strings allowed; blank lines
// skipped). Throws std::runtime_error naming `source` and the 1-based line of the first problem.
std::vector<PromptCompletion> parse_prompt_completion_jsonl(std::string_view text,
                                                            const std::string& source = "<jsonl>");
std::vector<PromptCompletion> read_prompt_completion_jsonl(const std::string& path);

// One line per record. Written to "<path>.tmp" and renamed, so readers never see half a file. Throws
// std::runtime_error when the file cannot be written or a text is not valid UTF-8.
void write_prompt_completion_jsonl(const std::string& path, const std::vector<PromptCompletion>& records);
void write_prompt_completion_jsonl(const std::string& path, const std::vector<Example>& examples);

}  // namespace statetune::tasks
