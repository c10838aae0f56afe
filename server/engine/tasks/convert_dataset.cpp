#include "server/engine/tasks/convert_dataset.h"

#include "server/engine/tasks/jsonl.h"

namespace statetune::tasks {

size_t convert_dataset(std::string_view task, std::string_view split, const std::string& out_path, size_t limit,
                       const DatasetOptions& options) {
  std::vector<Example> examples = load_examples(task, parse_split(split), options);
  if (limit > 0 && examples.size() > limit) examples.resize(limit);
  write_prompt_completion_jsonl(out_path, examples);
  return examples.size();
}

}  // namespace statetune::tasks
