// The metrics each task reports, computed from the model's generated completions.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "server/engine/tasks/datasets.h"

namespace statetune::tasks {

// predictions[i] is the generated completion for examples[i] (without the prompt, separator or
// end-of-text token). Keys by task:
//   GLUE: "accuracy"; CoLA also "matthews_correlation"; MRPC and QQP also "f1" (class "1").
//   samsum: "rouge1", "rouge2", "rougeL" (F-measures in [0, 1], Porter stemming, best reference).
//   dart: "bleu" (sacrebleu corpus BLEU, 0-100, no smoothing), "brevity_penalty".
//   spider: "exact_match" (fraction), "prediction_parse_failures", "gold_parse_failures" (counts);
//   the schemas are read from <datasets_dir>/spider/tables.json (empty: default_datasets_dir()).
// Throws std::invalid_argument on size mismatch or no examples.
std::map<std::string, double> task_metric(std::string_view task, const std::vector<std::string>& predictions,
                                          const std::vector<Example>& examples, const std::string& datasets_dir = "");

}  // namespace statetune::tasks
