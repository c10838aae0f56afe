#include "server/engine/tasks/datasets.h"

#include <cstdlib>
#include <filesystem>
#include <stdexcept>

#include "server/engine/tasks/dataset_readers.h"

#ifndef STATETUNE_DEFAULT_DATASETS_DIR
#define STATETUNE_DEFAULT_DATASETS_DIR "../shared/datasets"
#endif

namespace statetune::tasks {

Split parse_split(std::string_view name) {
  if (name == "train") return Split::kTrain;
  if (name == "validation" || name == "val" || name == "dev") return Split::kValidation;
  if (name == "test") return Split::kTest;
  throw std::invalid_argument("unknown split '" + std::string(name) + "': use train, validation or test");
}

std::string_view split_name(Split split) {
  switch (split) {
    case Split::kTrain: return "train";
    case Split::kValidation: return "validation";
    case Split::kTest: return "test";
  }
  return "train";
}

const std::vector<std::string>& task_names() {
  static const std::vector<std::string> names = {"cola", "mrpc",   "rte",    "sst2", "mnli",
                                                 "qnli", "qqp",    "samsum", "spider", "dart"};
  return names;
}

std::string canonical_task_name(std::string_view task) {
  std::string name;
  for (const char c : task) {
    if (c == '-' || c == '_') continue;
    name += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  }
  for (const auto& known : task_names())
    if (name == known) return name;
  std::string list;
  for (const auto& known : task_names()) list += (list.empty() ? "" : ", ") + known;
  throw std::invalid_argument("unknown task '" + std::string(task) + "': use one of " + list);
}

bool is_glue_task(std::string_view t) {
  return t == "cola" || t == "mrpc" || t == "rte" || t == "sst2" || t == "mnli" || t == "qnli" || t == "qqp";
}

std::string default_datasets_dir() {
  if (const char* env = std::getenv("STATETUNE_DATASETS_DIR"); env != nullptr && *env != '\0') return env;
  return STATETUNE_DEFAULT_DATASETS_DIR;
}

std::string existing_datasets_dir(const std::string& given, const std::string& task_folder) {
  const char* env = std::getenv("STATETUNE_DATASETS_DIR");
  const std::string dir = given.empty() ? default_datasets_dir() : given;
  const std::string checked = task_folder.empty() ? dir : dir + "/" + task_folder;
  std::error_code ec;
  if (std::filesystem::is_directory(checked, ec)) return dir;
  const std::string from = !given.empty()                     ? "--datasets-dir"
                           : (env != nullptr && *env != '\0') ? "STATETUNE_DATASETS_DIR"
                                                              : "the default of this build";
  throw std::invalid_argument("no data sets at " + checked + " (" + from +
                              "): mount or copy the data sets there (glue/, samsum/, spider/, "
                              "dart/) or name their folder with --datasets-dir or "
                              "STATETUNE_DATASETS_DIR");
}

std::vector<Example> load_examples(std::string_view task, Split split, const DatasetOptions& options) {
  const std::string name = canonical_task_name(task);
  const std::string folder = is_glue_task(name) ? "glue" : name;
  const std::string dir = existing_datasets_dir(options.datasets_dir, folder);
  if (is_glue_task(name)) return readers::load_glue(name, split, dir + "/glue");
  if (name == "samsum") return readers::load_samsum(split, dir + "/samsum");
  if (name == "spider") return readers::load_spider(split, dir + "/spider");
  return readers::load_dart(split, dir + "/dart", options.seed, options.validation_fraction);
}

}  // namespace statetune::tasks
