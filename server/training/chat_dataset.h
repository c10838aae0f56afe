// Fine-tuning files in OpenAI's chat format ({"messages": [{"role": ..., "content": ...}, ...]} per
// line) become the prompt/completion lines that the validator checks and the job runner trains on,
// rendered with the serving side's chat template (engine::ChatTemplate) so that a chat-trained adapter
// is prompted at serving time exactly as it was trained. Lines without "messages" pass through
// unchanged (prompt/completion files, or a mix), as do lines that are not JSON: the validator reports
// those with their line numbers.
#pragma once

#include <string>
#include <string_view>

#include "server/engine/text/chat_template.h"
#include "server/training/dataset_validator.h"

namespace statetune::training {

struct ChatConversion {
  std::string jsonl;          // the converted file, one line per input line (numbers unchanged)
  ValidationReport problems;  // chat lines that could not be converted, with their line numbers
};

ChatConversion convert_chat_jsonl(std::string_view text, const engine::ChatTemplate& chat_template,
                                  int64_t max_problems = 20);

}  // namespace statetune::training
