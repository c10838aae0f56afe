// How a chat (a list of role + content messages) becomes one prompt for the model, and how a chat
// example becomes a prompt/completion pair for training. The same template must be used for both, so
// that an adapter trained on chats is prompted the way it was trained.
//
// The plain template (the default):
//   System: <content>\n          (one line per message, in order; roles system | user | assistant)
//   User: <content>\n
//   Assistant: <content>\n
// and a generation prompt after the last message: "Assistant:" then the separator the trainer puts
// between a prompt and its completion ("\n###\n", kPromptCompletionSeparator). A chat training example
// is every message but the last rendered so (without the separator, which the trainer adds) as the
// prompt, and the last (the assistant's) content as the completion. A template file (JSON, read with
// parse_bounded_json) may replace the parts: {"system": "System: ", "user": "User: ",
// "assistant": "Assistant: ", "end_of_turn": "\n"} (every key optional). Hugging Face's Jinja
// templates are not interpreted.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace statetune::engine {

// Between a prompt and its completion in every training example (TrainerOptions::separator), so also
// at the end of a prompt that asks an adapter for a completion.
inline constexpr const char* kPromptCompletionSeparator = "\n###\n";

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;
};

struct ChatTemplate {
  std::string system = "System: ", user = "User: ", assistant = "Assistant: ", end_of_turn = "\n";

  // Throws std::invalid_argument naming the file and the problem.
  static ChatTemplate from_file(const std::filesystem::path& path);

  // The prompt that asks the model for the next assistant message (ends with the separator). Throws
  // std::invalid_argument for an unknown role or no messages.
  std::string render_prompt(const std::vector<ChatMessage>& messages) const;
  // A training example: every message but the last as the prompt (as render_prompt, without the
  // separator), the last, which must be the assistant's, as the completion.
  void render_example(const std::vector<ChatMessage>& messages, std::string& prompt, std::string& completion) const;

  static bool known_role(const std::string& role);

 private:
  const std::string& prefix(const std::string& role) const;
  // The messages' turns then the assistant prefix without its trailing whitespace.
  std::string render_turns(const std::vector<ChatMessage>& messages) const;
  std::string generation_prompt() const;
};

}  // namespace statetune::engine
