#include "server/engine/tasks/jsonl.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <stdexcept>

#include "server/engine/tasks/datasets.h"
#include "server/engine/tasks/text_files.h"
#include "server/engine/util/printable.h"

namespace statetune::tasks {

std::vector<std::string> prompt_completion_problems(const nlohmann::json& j, bool require_non_empty,
                                                    PromptCompletion& out) {
  if (!j.is_object()) return {"not a JSON object (each line is {\"prompt\": ..., \"completion\": ...})"};
  std::vector<std::string> problems;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() != "prompt" && it.key() != "completion") {
      // The key comes from outside: quoted bounded and printable.
      problems.push_back("unexpected field \"" + engine::printable_excerpt(it.key(), 160) +
                         "\" (only \"prompt\" and \"completion\")");
    }
  }
  std::string* fields[2] = {&out.prompt, &out.completion};
  const char* names[2] = {"prompt", "completion"};
  std::string values[2];
  for (int k = 0; k < 2; ++k) {
    const auto it = j.find(names[k]);
    if (it == j.end()) {
      problems.push_back(std::string("missing field \"") + names[k] + "\"");
    } else if (!it->is_string()) {
      problems.push_back(std::string("field \"") + names[k] + "\" is not a string");
    } else if (require_non_empty && it->get_ref<const std::string&>().empty()) {
      problems.push_back(std::string("field \"") + names[k] + "\" is empty");
    } else {
      values[k] = it->get<std::string>();
    }
  }
  if (problems.empty()) {
    for (int k = 0; k < 2; ++k) *fields[k] = std::move(values[k]);
  }
  return problems;
}

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
    PromptCompletion record;
    const std::vector<std::string> problems = prompt_completion_problems(j, /*require_non_empty=*/false, record);
    if (!problems.empty()) throw std::runtime_error(where + ": " + problems.front());
    records.push_back(std::move(record));
  }
  return records;
}

std::vector<PromptCompletion> read_prompt_completion_jsonl(const std::string& path) {
  return parse_prompt_completion_jsonl(read_text_file(path), path);
}

void write_prompt_completion_jsonl(const std::string& path, const std::vector<PromptCompletion>& records) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error("cannot create '" + tmp + "': check that the folder exists and is writable");
    for (size_t i = 0; i < records.size(); ++i) {
      nlohmann::json j = {{"prompt", records[i].prompt}, {"completion", records[i].completion}};
      try {
        out << j.dump() << '\n';
      } catch (const nlohmann::json::exception& e) {
        out.close();
        std::remove(tmp.c_str());
        throw std::runtime_error("record " + std::to_string(i) + " for '" + path + "': " + e.what());
      }
    }
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      throw std::runtime_error("error while writing '" + tmp + "' (disk full?)");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw std::runtime_error("cannot rename '" + tmp + "' to '" + path + "'");
  }
}

void write_prompt_completion_jsonl(const std::string& path, const std::vector<Example>& examples) {
  std::vector<PromptCompletion> records;
  records.reserve(examples.size());
  for (const auto& ex : examples) records.push_back({ex.prompt, ex.completion});
  write_prompt_completion_jsonl(path, records);
}

}  // namespace statetune::tasks
