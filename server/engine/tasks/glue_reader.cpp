// GLUE: CoLA, MRPC, RTE, SST-2 as the official tsv files (no quoting; CoLA without a header), MNLI, QNLI,
// QQP as {"0": {"text_a", "text_b", "label"}, ...} subsets. The completion is the label's digit.
#include <nlohmann/json.hpp>

#include <map>
#include <stdexcept>

#include "server/engine/tasks/dataset_readers.h"
#include "server/engine/tasks/text_files.h"

namespace statetune::tasks::readers {
namespace {

struct GlueTask {
  std::string folder;                      // under datasets/glue
  std::vector<std::string> class_names;    // index = the digit the model answers
  bool json = false;
};

const GlueTask& glue_task(const std::string& task) {
  static const std::map<std::string, GlueTask> tasks = {
      {"cola", {"CoLA", {"unacceptable", "acceptable"}, false}},
      {"mrpc", {"MRPC", {"not_equivalent", "equivalent"}, false}},
      {"rte", {"RTE", {"entailment", "not_entailment"}, false}},
      {"sst2", {"SST-2", {"negative", "positive"}, false}},
      {"mnli", {"MNLI", {"entailment", "neutral", "contradiction"}, true}},
      {"qnli", {"QNLI", {"entailment", "not_entailment"}, true}},
      {"qqp", {"QQP", {"not_duplicate", "duplicate"}, true}},
  };
  const auto it = tasks.find(task);
  if (it == tasks.end()) throw std::invalid_argument("'" + task + "' is not a GLUE task");
  return it->second;
}

// The label as the file has it (a digit or a class name) -> the digit.
std::string label_digit(const GlueTask& task, const std::string& raw, const std::string& where) {
  const std::string label = trim_ascii(raw);
  for (size_t i = 0; i < task.class_names.size(); ++i) {
    if (label == std::to_string(i) || label == task.class_names[i]) return std::to_string(i);
  }
  throw std::runtime_error(where + ": unknown label '" + label + "'");
}

Example make_example(const std::string& canonical_task, const GlueTask& task, const std::string& text_a,
                     const std::string& text_b, const std::string& digit) {
  Example ex;
  ex.prompt = glue_prompt(canonical_task, trim_ascii(text_a), trim_ascii(text_b));
  ex.completion = digit;
  ex.references = {digit};
  ex.label = task.class_names.at(static_cast<size_t>(std::stoi(digit)));
  return ex;
}

std::vector<Example> read_tsv(const std::string& canonical_task, const GlueTask& task, const std::string& path) {
  std::string text = read_text_file(path);
  if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) text.erase(0, 3);  // MRPC starts with a byte-order mark
  const auto lines = split_lines(text);
  // Column positions: (text_a, text_b or -1, label), from the header where the file has one.
  int a = -1, b = -1, l = -1;
  size_t first = 0;
  if (canonical_task == "cola") {
    a = 3, l = 1;  // source, label, original label, sentence
  } else {
    if (lines.empty()) throw std::runtime_error("'" + path + "' is empty");
    const auto header = split_tabs(lines[0]);
    auto column = [&](const std::string& name) {
      for (size_t i = 0; i < header.size(); ++i)
        if (trim_ascii(header[i]) == name) return static_cast<int>(i);
      throw std::runtime_error("'" + path + "' has no column '" + name + "' in its header");
    };
    if (canonical_task == "mrpc") a = column("#1 String"), b = column("#2 String"), l = column("Quality");
    if (canonical_task == "rte") a = column("sentence1"), b = column("sentence2"), l = column("label");
    if (canonical_task == "sst2") a = column("sentence"), l = column("label");
    first = 1;
  }
  const int needed = std::max({a, b, l}) + 1;
  std::vector<Example> examples;
  for (size_t i = first; i < lines.size(); ++i) {
    if (trim_ascii(lines[i]).empty()) continue;
    const auto fields = split_tabs(lines[i]);
    const std::string where = path + ":" + std::to_string(i + 1);
    if (static_cast<int>(fields.size()) < needed) {
      throw std::runtime_error(where + ": " + std::to_string(fields.size()) + " tab-separated fields, expected " +
                               std::to_string(needed));
    }
    examples.push_back(make_example(canonical_task, task, fields[static_cast<size_t>(a)],
                                    b >= 0 ? fields[static_cast<size_t>(b)] : std::string(),
                                    label_digit(task, fields[static_cast<size_t>(l)], where)));
  }
  return examples;
}

std::vector<Example> read_json(const std::string& canonical_task, const GlueTask& task, const std::string& path) {
  nlohmann::ordered_json root;  // keep the file's order ("0", "1", ..., not sorted as strings)
  try {
    root = nlohmann::ordered_json::parse(read_text_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("'" + path + "' is not valid JSON: " + e.what());
  }
  if (!root.is_object()) throw std::runtime_error("'" + path + "' must hold {\"0\": {text_a, text_b, label}, ...}");
  std::vector<Example> examples;
  for (const auto& [key, item] : root.items()) {
    const std::string where = path + " entry \"" + key + "\"";
    try {
      examples.push_back(make_example(canonical_task, task, item.at("text_a").get<std::string>(),
                                      item.at("text_b").get<std::string>(),
                                      label_digit(task, item.at("label").get<std::string>(), where)));
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error(where + ": " + e.what());
    }
  }
  return examples;
}

}  // namespace

std::string glue_prompt(const std::string& task, const std::string& a, const std::string& b) {
  if (task == "rte") return "Sentence 1: " + a + "\nSentence 2: " + b + "\nDo they entail? Answer 0 for yes, 1 for no";
  if (task == "mrpc") {
    return "Sentence 1: " + a + "\nSentence 2: " + b + "\nDo they mean the same? Answer 1 for yes, 0 for no";
  }
  if (task == "qqp") {
    return "Question 1: " + a + "\nQuestion 2: " + b + "\nDo they ask the same thing? Answer 1 for yes, 0 for no";
  }
  if (task == "qnli") {
    return "Question: " + a + "\nSentence: " + b +
           "\nDoes the sentence answer the question? Answer 0 for yes, 1 for no";
  }
  if (task == "mnli") {
    return "Premise: " + a + "\nHypothesis: " + b +
           "\nDoes the premise entail the hypothesis? Answer 0 for yes, 1 for maybe, 2 for no";
  }
  if (task == "cola") return "Sentence: " + a + "\nIs it grammatically acceptable? Answer 1 for yes, 0 for no";
  if (task == "sst2") return "Sentence: " + a + "\nIs its sentiment positive? Answer 1 for yes, 0 for no";
  throw std::invalid_argument("'" + task + "' is not a GLUE task");
}

std::vector<Example> load_glue(const std::string& canonical_task, Split split, const std::string& glue_dir) {
  const GlueTask& task = glue_task(canonical_task);
  if (split == Split::kTest) {
    throw std::invalid_argument("GLUE test labels are not public: evaluate '" + canonical_task +
                                "' on split 'validation' (the official dev set)");
  }
  const std::string stem = split == Split::kTrain ? "train" : "dev";
  const std::string path = glue_dir + "/" + task.folder + "/" + stem + (task.json ? ".json" : ".tsv");
  return task.json ? read_json(canonical_task, task, path) : read_tsv(canonical_task, task, path);
}

}  // namespace statetune::tasks::readers
