// The real task data (GLUE, SAMSum, Spider, DART under shared/datasets) as prompt/completion examples
// with the prompt templates of the experiments. The trainer appends the "###" separator to the prompt
// and the end-of-text token to the completion; neither is added here.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace statetune::tasks {

struct Example {
  std::string prompt;
  std::string completion;               // what the model is trained to produce
  std::vector<std::string> references;  // every reference of the example (BLEU/ROUGE/Spider gold)
  std::string label;                    // GLUE: the class name ("entailment"); empty for generation tasks
  std::string db_id;                    // Spider: the database the prompt's schema belongs to
};

enum class Split { kTrain, kValidation, kTest };

// "train"; "validation" / "val" / "dev"; "test". Throws std::invalid_argument otherwise.
Split parse_split(std::string_view name);
std::string_view split_name(Split split);

// cola, mrpc, rte, sst2, mnli, qnli, qqp, samsum, spider, dart.
const std::vector<std::string>& task_names();
// Lowercase with "-" and "_" removed ("SST-2" -> "sst2"); throws std::invalid_argument for an unknown task.
std::string canonical_task_name(std::string_view task);
bool is_glue_task(std::string_view canonical_task);

struct DatasetOptions {
  std::string datasets_dir;           // empty: default_datasets_dir()
  uint64_t seed = 42;                 // DART's train/validation split of the dev file
  double validation_fraction = 0.2;   // share of DART triple sets that go to validation
};

// STATETUNE_DATASETS_DIR if set, else shared/datasets beside the checkout (fixed at build time).
std::string default_datasets_dir();

// The folder the readers use for `given` (a --datasets-dir value; empty: default_datasets_dir()).
// Throws std::invalid_argument when it (or its `task_folder`, e.g. "glue") is not a folder, naming
// it and where it came from (flag, STATETUNE_DATASETS_DIR or the build's default), so that a
// container without the data sets mounted says where they go.
std::string existing_datasets_dir(const std::string& given, const std::string& task_folder = "");

// Splits: GLUE train / validation (the official dev set; GLUE's test labels are not public); SAMSum
// train / validation / test; Spider train / validation (dev.json); DART train / validation (the dev json,
// split by triple set with `seed`; train has one example per reference) and test (the xml file).
// Throws std::invalid_argument for a split the task does not have, std::runtime_error for unreadable or
// malformed files (naming the file and the line or entry).
std::vector<Example> load_examples(std::string_view task, Split split, const DatasetOptions& options = {});

}  // namespace statetune::tasks
