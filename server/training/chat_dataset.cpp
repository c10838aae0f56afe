#include "server/training/chat_dataset.h"

#include "server/engine/util/bounded_json.h"

namespace statetune::training {

namespace {

// The messages of a chat line; throws std::invalid_argument saying what is wrong.
std::vector<engine::ChatMessage> read_messages(const nlohmann::json& messages) {
  if (!messages.is_array()) throw std::invalid_argument("\"messages\" is not an array");
  std::vector<engine::ChatMessage> out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    const std::string at = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) throw std::invalid_argument(at + " is not an object");
    auto role = m.find("role");
    auto content = m.find("content");
    if (role == m.end() || !role->is_string() || !engine::ChatTemplate::known_role(role->get<std::string>())) {
      throw std::invalid_argument(at + ".role must be \"system\", \"user\" or \"assistant\"");
    }
    if (content == m.end() || !content->is_string()) throw std::invalid_argument(at + ".content must be a string");
    out.push_back({role->get<std::string>(), content->get<std::string>()});
  }
  return out;
}

}  // namespace

ChatConversion convert_chat_jsonl(std::string_view text, const engine::ChatTemplate& chat_template,
                                  int64_t max_problems) {
  ChatConversion out;
  out.jsonl.reserve(text.size());
  int64_t line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    ++line_no;
    std::string converted(line);
    // Cheap test first: most lines of a prompt/completion file are never parsed twice.
    if (line.find("\"messages\"") != std::string_view::npos) {
      try {
        const nlohmann::json j = engine::parse_bounded_json(line, {line.size(), 8}, "the line");
        if (j.is_object() && j.contains("messages")) {
          std::string prompt, completion;
          chat_template.render_example(read_messages(j["messages"]), prompt, completion);
          converted = nlohmann::json{{"prompt", prompt}, {"completion", completion}}.dump(
              -1, ' ', false, nlohmann::json::error_handler_t::strict);
        }
      } catch (const engine::JsonInputError&) {
        // Not JSON: left as it is for the validator to report.
      } catch (const std::exception& e) {
        ++out.problems.total_problems;
        if (static_cast<int64_t>(out.problems.problems.size()) < max_problems) {
          out.problems.problems.push_back({line_no, e.what()});
        }
      }
    }
    out.jsonl += converted;
    if (end < text.size()) out.jsonl += '\n';
    pos = end + 1;
  }
  return out;
}

}  // namespace statetune::training
