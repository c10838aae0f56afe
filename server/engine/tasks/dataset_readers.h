// The per-data-set readers behind load_examples (datasets.h); internal to the tasks library.
#pragma once

#include <string>
#include <vector>

#include "server/engine/tasks/datasets.h"

namespace statetune::tasks::readers {

// canonical_task: cola, mrpc, rte, sst2, mnli, qnli, qqp. dir: datasets/glue.
std::vector<Example> load_glue(const std::string& canonical_task, Split split, const std::string& glue_dir);
std::vector<Example> load_samsum(Split split, const std::string& samsum_dir);
std::vector<Example> load_spider(Split split, const std::string& spider_dir);
std::vector<Example> load_dart(Split split, const std::string& dart_dir, uint64_t seed, double validation_fraction);

// The prompt of one GLUE example. text_b is empty for single-sentence tasks.
std::string glue_prompt(const std::string& canonical_task, const std::string& text_a, const std::string& text_b);

}  // namespace statetune::tasks::readers
