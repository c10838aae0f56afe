// The request bodies of /v1/completions and /v1/chat/completions, checked as OpenAI documents them
// (types, ranges, unknown fields, unsupported options) and turned into the generation facade's typed
// request. Every refusal is an http::ApiError (400, or 404 for a model name no adapter can have) naming
// the field in `param`.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "server/engine/runtime/generation.h"
#include "server/engine/text/chat_template.h"

namespace statetune::serving {

// Choices one request may ask for (prompts x n): each is a scheduler row of its own.
inline constexpr int64_t kMaxChoices = 16;

struct ApiRequest {
  bool chat = false;
  std::string model;  // as the client named it (echoed in replies)
  // One per choice, in the order of the replies' `index`: prompt 0's n choices, then prompt 1's, ...
  // request_id and tenant left for the caller.
  std::vector<engine::TextGenerationRequest> choices;
  bool stream = false;
  bool include_usage = false;
};

// `model` -> the adapter (name, optional version after '@') or, when it is `model_id`, the base model.
void resolve_model(const std::string& model, const std::string& model_id, engine::TextGenerationRequest& g);

ApiRequest read_completion_request(const nlohmann::json& body, const std::string& model_id);
// `messages` rendered into the prompt with `chat_template`.
ApiRequest read_chat_request(const nlohmann::json& body, const std::string& model_id,
                             const engine::ChatTemplate& chat_template);

}  // namespace statetune::serving
