#include "server/engine/tasks/task_metric.h"

#include <stdexcept>

#include "server/engine/tasks/bleu.h"
#include "server/engine/tasks/classification_metrics.h"
#include "server/engine/tasks/rouge.h"
#include "server/engine/tasks/spider_exact_match.h"

namespace statetune::tasks {

std::map<std::string, double> task_metric(std::string_view task, const std::vector<std::string>& predictions,
                                          const std::vector<Example>& examples, const std::string& datasets_dir) {
  const std::string name = canonical_task_name(task);
  if (predictions.size() != examples.size()) {
    throw std::invalid_argument("task_metric(" + name + "): " + std::to_string(predictions.size()) +
                                " predictions for " + std::to_string(examples.size()) + " examples");
  }
  if (examples.empty()) throw std::invalid_argument("task_metric(" + name + "): no examples to score");
  std::map<std::string, double> metrics;
  if (is_glue_task(name)) {
    std::vector<std::string> labels;
    labels.reserve(examples.size());
    for (const auto& ex : examples) labels.push_back(ex.completion);
    metrics["accuracy"] = accuracy(predictions, labels);
    if (name == "cola") metrics["matthews_correlation"] = matthews_correlation(predictions, labels);
    if (name == "mrpc" || name == "qqp") metrics["f1"] = binary_f1(predictions, labels, "1");
    return metrics;
  }
  std::vector<std::vector<std::string>> references;
  references.reserve(examples.size());
  for (const auto& ex : examples) references.push_back(ex.references);
  if (name == "samsum") {
    const RougeScores r = corpus_rouge(predictions, references, /*use_stemmer=*/true);
    metrics["rouge1"] = r.rouge1.fmeasure;
    metrics["rouge2"] = r.rouge2.fmeasure;
    metrics["rougeL"] = r.rougeL.fmeasure;
    return metrics;
  }
  if (name == "dart") {
    const BleuScore b = corpus_bleu(predictions, references);
    metrics["bleu"] = b.score;
    metrics["brevity_penalty"] = b.brevity_penalty;
    return metrics;
  }
  // spider
  const std::string dir = datasets_dir.empty() ? default_datasets_dir() : datasets_dir;
  const SpiderSchemaSet schemas = SpiderSchemaSet::load(dir + "/spider/tables.json");
  std::vector<std::string> golds, db_ids;
  for (const auto& ex : examples) {
    if (ex.references.empty() || ex.db_id.empty()) {
      throw std::invalid_argument("task_metric(spider): an example lacks its gold query or db_id");
    }
    golds.push_back(ex.references.front());
    db_ids.push_back(ex.db_id);
  }
  const SpiderCorpusMatch m = spider_corpus_exact_match(predictions, golds, db_ids, schemas);
  metrics["exact_match"] = m.exact_match;
  metrics["prediction_parse_failures"] = static_cast<double>(m.prediction_parse_failures);
  metrics["gold_parse_failures"] = static_cast<double>(m.gold_parse_failures);
  return metrics;
}

}  // namespace statetune::tasks
