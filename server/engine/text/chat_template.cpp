#include "server/engine/text/chat_template.h"

#include <fstream>
#include <sstream>
#include <stdexcept>

#include "server/engine/util/bounded_json.h"

namespace statetune::engine {

ChatTemplate ChatTemplate::from_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::invalid_argument("cannot read the chat template " + path.string());
  std::stringstream buf;
  buf << in.rdbuf();
  const nlohmann::json j = parse_bounded_json(buf.str(), JsonLimits{size_t{64} << 10, 4}, "the chat template");
  if (!j.is_object()) throw std::invalid_argument("the chat template " + path.string() + " is not a JSON object");
  ChatTemplate t;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!it->is_string()) throw std::invalid_argument("chat template field '" + it.key() + "' is not a string");
    const std::string v = it->get<std::string>();
    if (it.key() == "system") t.system = v;
    else if (it.key() == "user") t.user = v;
    else if (it.key() == "assistant") t.assistant = v;
    else if (it.key() == "end_of_turn") t.end_of_turn = v;
    else throw std::invalid_argument("unknown chat template field '" + it.key() + "'");
  }
  if (t.generation_prompt().empty()) throw std::invalid_argument("the chat template's assistant prefix is empty");
  return t;
}

bool ChatTemplate::known_role(const std::string& role) {
  return role == "system" || role == "user" || role == "assistant";
}

const std::string& ChatTemplate::prefix(const std::string& role) const {
  if (role == "system") return system;
  if (role == "user") return user;
  if (role == "assistant") return assistant;
  throw std::invalid_argument("unknown message role '" + role.substr(0, 32) + "' (system, user or assistant)");
}

std::string ChatTemplate::generation_prompt() const {
  size_t end = assistant.size();
  while (end > 0 && (assistant[end - 1] == ' ' || assistant[end - 1] == '\t')) --end;
  return assistant.substr(0, end);
}

std::string ChatTemplate::render_turns(const std::vector<ChatMessage>& messages) const {
  if (messages.empty()) throw std::invalid_argument("`messages` is empty");
  std::string out;
  for (const auto& m : messages) out += prefix(m.role) + m.content + end_of_turn;
  return out + generation_prompt();
}

std::string ChatTemplate::render_prompt(const std::vector<ChatMessage>& messages) const {
  return render_turns(messages) + kPromptCompletionSeparator;
}

void ChatTemplate::render_example(const std::vector<ChatMessage>& messages, std::string& prompt,
                                  std::string& completion) const {
  if (messages.size() < 2 || messages.back().role != "assistant") {
    throw std::invalid_argument("a chat example needs at least two messages, the last one the assistant's");
  }
  prompt = render_turns(std::vector<ChatMessage>(messages.begin(), messages.end() - 1));
  completion = messages.back().content;
}

}  // namespace statetune::engine
