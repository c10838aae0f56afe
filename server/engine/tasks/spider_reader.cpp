// Spider: train.json / dev.json [{db_id, query, question, ...}] with the schema of each database from
// tables.json in the prompt. The completion is the gold query with its whitespace runs collapsed.
#include <nlohmann/json.hpp>

#include <stdexcept>

#include "server/engine/tasks/dataset_readers.h"
#include "server/engine/tasks/spider_schema.h"
#include "server/engine/tasks/text_files.h"

namespace statetune::tasks::readers {

std::vector<Example> load_spider(Split split, const std::string& spider_dir) {
  if (split == Split::kTest) {
    throw std::invalid_argument("Spider's test set is not available: evaluate on split 'validation' (dev.json)");
  }
  const SpiderSchemaSet schemas = SpiderSchemaSet::load(spider_dir + "/tables.json");
  const std::string path = spider_dir + (split == Split::kTrain ? "/train.json" : "/dev.json");
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(read_text_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("'" + path + "' is not valid JSON: " + e.what());
  }
  if (!root.is_array()) throw std::runtime_error("'" + path + "' must hold [{db_id, query, question}, ...]");
  std::vector<Example> examples;
  examples.reserve(root.size());
  for (size_t i = 0; i < root.size(); ++i) {
    try {
      Example ex;
      ex.db_id = root[i].at("db_id").get<std::string>();
      const std::string query = root[i].at("query").get<std::string>();
      const std::string question = trim_ascii(root[i].at("question").get<std::string>());
      ex.prompt = "Write the SQL query that answers the question on database " + ex.db_id + ".\nSchema:\n" +
                  describe_schema(schemas.at(ex.db_id)) + "\nQuestion: " + question;
      ex.completion = collapse_whitespace(query);
      ex.references = {query};
      examples.push_back(std::move(ex));
    } catch (const std::exception& e) {
      throw std::runtime_error("'" + path + "' entry " + std::to_string(i) + ": " + e.what());
    }
  }
  return examples;
}

}  // namespace statetune::tasks::readers
