#include "server/engine/tasks/jsonl.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <stdexcept>

#include "server/engine/tasks/datasets.h"
#include "server/engine/tasks/text_files.h"
#include "server/engine/util/durable_file.h"

namespace statetune::tasks {

std::vector<PromptCompletion> parse_prompt_completion_jsonl(std::string_view text, const std::string& source) {
  std::vector<PromptCompletion> records;
  const auto lines = split_lines(text);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (trim_ascii(lines[i]).empty()) continue;
    const std::string where = source + ":" + std::to_string(i + 1);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(lines[i]);
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error(where + ": not a JSON object (" + std::string(e.what()) + ")");
    }
    if (!j.is_object()) throw std::runtime_error(where + ": each line must be a JSON object {\"prompt\", \"completion\"}");
    for (const char* field : {"prompt", "completion"}) {
      const auto it = j.find(field);
      if (it == j.end()) throw std::runtime_error(where + ": missing field \"" + field + "\"");
      if (!it->is_string()) throw std::runtime_error(where + ": field \"" + field + "\" must be a string");
    }
    records.push_back({j["prompt"].get<std::string>(), j["completion"].get<std::string>()});
  }
  return records;
}

std::vector<PromptCompletion> read_prompt_completion_jsonl(const std::string& path) {
  return parse_prompt_completion_jsonl(read_text_file(path), path);
}

void write_prompt_completion_jsonl(const std::string& path, const std::vector<PromptCompletion>& records) {
  engine::write_file_durably(path, [&](engine::FileSink& out) {
    for (size_t i = 0; i < records.size(); ++i) {
      nlohmann::json j = {{"prompt", records[i].prompt}, {"completion", records[i].completion}};
      try {
        out.write(j.dump() + "\n");
      } catch (const nlohmann::json::exception& e) {
        throw std::runtime_error("record " + std::to_string(i) + " for '" + path + "': " + e.what());
      }
    }
  });
}

void write_prompt_completion_jsonl(const std::string& path, const std::vector<Example>& examples) {
  std::vector<PromptCompletion> records;
  records.reserve(examples.size());
  for (const auto& ex : examples) records.push_back({ex.prompt, ex.completion});
  write_prompt_completion_jsonl(path, records);
}

}  // namespace statetune::tasks
