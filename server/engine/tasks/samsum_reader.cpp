// SAMSum: [{"id", "dialogue", "summary"}]; the dialogue's "\r\n" line breaks become "\n".
#include <nlohmann/json.hpp>

#include <stdexcept>

#include "server/engine/tasks/dataset_readers.h"
#include "server/engine/tasks/text_files.h"

namespace statetune::tasks::readers {

std::vector<Example> load_samsum(Split split, const std::string& samsum_dir) {
  const std::string path = samsum_dir + "/" +
                           (split == Split::kTrain ? "train" : split == Split::kValidation ? "val" : "test") + ".json";
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(read_text_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("'" + path + "' is not valid JSON: " + e.what());
  }
  if (!root.is_array()) throw std::runtime_error("'" + path + "' must hold [{id, dialogue, summary}, ...]");
  std::vector<Example> examples;
  examples.reserve(root.size());
  for (size_t i = 0; i < root.size(); ++i) {
    try {
      const std::string dialogue = trim_ascii(normalize_newlines(root[i].at("dialogue").get<std::string>()));
      const std::string summary = trim_ascii(root[i].at("summary").get<std::string>());
      Example ex;
      ex.prompt = "Summarize the dialogue.\n" + dialogue;
      ex.completion = summary;
      ex.references = {summary};
      examples.push_back(std::move(ex));
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error("'" + path + "' entry " + std::to_string(i) + ": " + e.what());
    }
  }
  return examples;
}

}  // namespace statetune::tasks::readers
