// Generation-based evaluation of an adapter (or the bare base model): batched greedy decoding with the
// inference MambaModel, the adapter bound into a two-slot pool view [zero, adapter], and the task
// metrics of server/engine/tasks on the generated completions.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "server/engine/adapters/adapter.h"
#include "server/engine/model/mamba_model.h"
#include "server/engine/tasks/datasets.h"
#include "server/engine/text/tokenizer.h"

namespace statetune::engine::trainer {

struct GenerationOptions {
  int64_t max_new_tokens = 64;
  int64_t batch_size = 16;
  int64_t max_prompt_tokens = 1024;    // longer prompts lose tokens from their start
  std::string separator = "\n###\n";   // appended to every prompt, as in training
};

// Greedy completions of `prompts` (prompt + separator is what the model sees), stopping at the
// end-of-text token or max_new_tokens; special tokens are left out of the returned text. `adapter`
// nullptr: the base model; otherwise it must match the model's fingerprint (std::runtime_error).
std::vector<std::string> generate_completions(MambaModel& model, const Tokenizer& tokenizer,
                                              const Adapter* adapter, const std::vector<std::string>& prompts,
                                              const GenerationOptions& options);

// The tokens a task's completions need at most (GLUE labels are one digit; summaries and SQL longer).
int64_t default_max_new_tokens(const std::string& task);

struct TaskEvalResult {
  std::map<std::string, double> metrics;
  std::vector<std::string> predictions;
  int64_t examples = 0;
  double seconds = 0;
  double generated_tokens_per_s = 0;
};

// Generates for every example and scores with tasks::task_metric (task: a name tasks knows, e.g.
// "rte", "samsum"), or, for task "" (user JSONL data), "exact_match": the share of completions equal
// to the reference after trimming.
TaskEvalResult evaluate_task(MambaModel& model, const Tokenizer& tokenizer, const Adapter* adapter,
                             const std::string& task, const std::vector<tasks::Example>& examples,
                             const GenerationOptions& options, const std::string& datasets_dir = "");

}  // namespace statetune::engine::trainer
