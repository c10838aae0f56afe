// Writes a task's split as {"prompt", "completion"} JSON lines, the upload format of the training
// service (exposed as `statetune-engine convert-dataset`).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "server/engine/tasks/datasets.h"

namespace statetune::tasks {

// split: "train", "validation" (or "val", "dev"), "test". limit: the first `limit` examples; 0 = all.
// Returns the number of lines written. Throws like load_examples and write_prompt_completion_jsonl.
size_t convert_dataset(std::string_view task, std::string_view split, const std::string& out_path, size_t limit = 0,
                       const DatasetOptions& options = {});

}  // namespace statetune::tasks
