#include "server/serving/openai_request.h"

#include <algorithm>
#include <set>

#include "server/engine/adapters/adapter_id.h"
#include "server/engine/adapters/adapter_store.h"
#include "server/http/api_error.h"
#include "server/http/json_body.h"

namespace statetune::serving {

using http::invalid_request;
using nlohmann::json;

namespace {

// OpenAI's default max_tokens for /v1/completions.
constexpr int64_t kCompletionsDefaultMaxTokens = 16;

// The sampling fields both routes share, checked as OpenAI documents them.
void read_sampling(const json& body, engine::TextGenerationRequest& g, int64_t default_max_tokens) {
  const auto max_tokens = body.contains("max_completion_tokens") ? http::opt_integer(body, "max_completion_tokens")
                                                                 : http::opt_integer(body, "max_tokens");
  if (max_tokens && *max_tokens < 1) throw invalid_request("`max_tokens` must be at least 1", "max_tokens");
  g.max_tokens = max_tokens.value_or(default_max_tokens);
  if (auto t = http::opt_number(body, "temperature")) {
    if (*t < 0 || *t > 2) throw invalid_request("`temperature` must be in [0, 2]", "temperature");
    g.temperature = *t;
  }
  if (auto p = http::opt_number(body, "top_p")) {
    if (!(*p > 0 && *p <= 1)) throw invalid_request("`top_p` must be in (0, 1]", "top_p");
    g.top_p = *p;
  }
  if (auto k = http::opt_integer(body, "top_k")) {
    if (*k < 0) throw invalid_request("`top_k` must be >= 0 (0: no limit)", "top_k");
    g.top_k = *k;
  }
  if (auto s = http::opt_integer(body, "seed")) {
    if (*s < 0) throw invalid_request("`seed` must be >= 0", "seed");
    g.seed = static_cast<uint64_t>(*s);
  }
  if (auto it = body.find("stop"); it != body.end() && !it->is_null()) {
    if (it->is_string()) {
      g.stop.push_back(it->get<std::string>());
    } else if (it->is_array()) {
      for (const auto& s : *it) {
        if (!s.is_string()) throw invalid_request("`stop` must be a string or an array of strings", "stop");
        g.stop.push_back(s.get<std::string>());
      }
    } else {
      throw invalid_request("`stop` must be a string or an array of strings", "stop");
    }
  }
  // Accepted when they ask for nothing statetune does not do.
  for (const char* field : {"presence_penalty", "frequency_penalty"}) {
    if (auto v = http::opt_number(body, field); v && *v != 0) {
      throw invalid_request(std::string("`") + field + "` is not supported (only 0)", field);
    }
  }
  for (const char* field : {"logprobs", "top_logprobs", "logit_bias", "tools", "functions", "response_format", "suffix"}) {
    auto it = body.find(field);
    if (it != body.end() && !it->is_null() && !(it->is_boolean() && !it->get<bool>())) {
      throw invalid_request(std::string("`") + field + "` is not supported", field);
    }
  }
}

// One request per prompt and choice: `n` choices of each prompt, at most kMaxChoices in all. With a
// `seed`, choice j of a prompt samples with seed + j: the choices differ and each is reproducible.
std::vector<engine::TextGenerationRequest> expand_choices(const json& body, const engine::TextGenerationRequest& base,
                                                          const std::vector<engine::TextGenerationRequest>& prompts) {
  const int64_t n = http::opt_integer(body, "n").value_or(1);
  if (n < 1 || n > kMaxChoices) {
    throw invalid_request("`n` must be in [1, " + std::to_string(kMaxChoices) + "]", "n");
  }
  if (static_cast<int64_t>(prompts.size()) * n > kMaxChoices) {
    throw invalid_request("at most " + std::to_string(kMaxChoices) + " choices (prompts x n) per request", "n");
  }
  std::vector<engine::TextGenerationRequest> out;
  for (const auto& p : prompts) {
    for (int64_t j = 0; j < n; ++j) {
      engine::TextGenerationRequest g = base;
      g.prompt_text = p.prompt_text;
      g.prompt_tokens = p.prompt_tokens;
      if (base.seed) g.seed = *base.seed + static_cast<uint64_t>(j);
      out.push_back(std::move(g));
    }
  }
  return out;
}

void read_stream(const json& body, ApiRequest& r) {
  r.stream = http::opt_bool(body, "stream").value_or(false);
  if (const json* so = http::opt_object(body, "stream_options")) {
    if (!r.stream) throw invalid_request("`stream_options` is only allowed with `stream`: true", "stream_options");
    http::reject_unknown_fields(*so, {"include_usage"});
    r.include_usage = http::opt_bool(*so, "include_usage").value_or(false);
  }
}

const std::set<std::string> kCommonFields = {
    "model",          "max_tokens", "temperature",      "top_p",           "top_k",     "seed",
    "n",              "stop",       "stream",           "stream_options",  "user",      "presence_penalty",
    "frequency_penalty", "logprobs", "logit_bias",      "metadata",        "store",     "suffix"};

}  // namespace

void resolve_model(const std::string& model, const std::string& model_id, engine::TextGenerationRequest& g) {
  if (model == model_id) return;
  const size_t at = model.find('@');
  g.adapter = model.substr(0, at);
  if (at != std::string::npos) g.adapter_version = model.substr(at + 1);
  try {
    engine::validate_name("model", g.adapter);
  } catch (const std::invalid_argument&) {
    // Not a name any adapter can have: unknown, as OpenAI says for any model it does not serve.
    throw http::not_found("the model does not exist or you do not have access to it", "model_not_found");
  }
}

ApiRequest read_completion_request(const json& body, const std::string& model_id) {
  std::set<std::string> known = kCommonFields;
  known.insert({"prompt", "echo", "best_of", "ignore_eos"});
  http::reject_unknown_fields(body, known);
  ApiRequest r;
  engine::TextGenerationRequest g;
  r.model = http::required_string(body, "model");
  resolve_model(r.model, model_id, g);
  auto prompt = body.find("prompt");
  if (prompt == body.end() || prompt->is_null()) throw invalid_request("missing required parameter: `prompt`", "prompt");
  const auto is_token_ids = [](const json& a) {
    return a.is_array() && !a.empty() && std::all_of(a.begin(), a.end(), [](const json& t) { return t.is_number_integer(); });
  };
  // A string, token ids, or a list of either (several prompts), as OpenAI allows; the facade checks
  // token ids against the vocabulary and every prompt against the prompt limit.
  std::vector<json> items;
  if (prompt->is_string() || is_token_ids(*prompt)) {
    items.push_back(*prompt);
  } else if (prompt->is_array() && !prompt->empty() && prompt->size() <= static_cast<size_t>(kMaxChoices)) {
    items.assign(prompt->begin(), prompt->end());
  } else {
    throw invalid_request("`prompt` must be a string, an array of token ids, or a list of at most " +
                          std::to_string(kMaxChoices) + " of either", "prompt");
  }
  std::vector<engine::TextGenerationRequest> prompts(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    if (items[i].is_string()) {
      prompts[i].prompt_text = items[i].get<std::string>();
    } else if (is_token_ids(items[i])) {
      for (const auto& t : items[i]) {
        if (t.get<int64_t>() < 0) throw invalid_request("token ids must be >= 0", "prompt");
        prompts[i].prompt_tokens.push_back(t.get<int64_t>());
      }
    } else {
      throw invalid_request("`prompt` must be a string, an array of token ids, or a list of either", "prompt");
    }
  }
  if (auto echo = http::opt_bool(body, "echo"); echo && *echo) throw invalid_request("`echo` is not supported", "echo");
  if (auto best_of = http::opt_integer(body, "best_of"); best_of && *best_of != 1) {
    throw invalid_request("only `best_of` = 1 is supported", "best_of");
  }
  read_sampling(body, g, kCompletionsDefaultMaxTokens);
  read_stream(body, r);
  // An extension (vLLM's name): generate exactly max_tokens, as benchmarks need.
  if (auto ignore = http::opt_bool(body, "ignore_eos")) g.stop_at_eos = !*ignore;
  r.choices = expand_choices(body, g, prompts);
  return r;
}

ApiRequest read_chat_request(const json& body, const std::string& model_id, const engine::ChatTemplate& chat_template) {
  std::set<std::string> known = kCommonFields;
  known.insert({"messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice", "functions",
                "response_format", "parallel_tool_calls"});
  http::reject_unknown_fields(body, known);
  ApiRequest r;
  engine::TextGenerationRequest g;
  r.chat = true;
  r.model = http::required_string(body, "model");
  resolve_model(r.model, model_id, g);
  auto it = body.find("messages");
  if (it == body.end() || !it->is_array()) throw invalid_request("`messages` must be an array", "messages");
  if (it->empty()) throw invalid_request("`messages` must not be empty", "messages");
  std::vector<engine::ChatMessage> messages;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    const std::string param = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) throw invalid_request(param + " must be an object", param);
    const std::string role = http::required_string(m, "role");
    if (role == "developer") {
      messages.push_back({"system", ""});  // OpenAI's newer name for the system role
    } else if (!engine::ChatTemplate::known_role(role)) {
      throw invalid_request(param + ".role must be system, developer, user or assistant", param + ".role");
    } else {
      messages.push_back({role, ""});
    }
    auto content = m.find("content");
    if (content == m.end() || content->is_null()) {
      throw invalid_request(param + ".content is required", param + ".content");
    } else if (content->is_string()) {
      messages.back().content = content->get<std::string>();
    } else if (content->is_array()) {  // [{"type": "text", "text": "..."}, ...]
      for (const auto& part : *content) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string()) {
          throw invalid_request(param + ".content parts must be {\"type\": \"text\", \"text\": ...}", param + ".content");
        }
        messages.back().content += part["text"].get<std::string>();
      }
    } else {
      throw invalid_request(param + ".content must be a string or an array of text parts", param + ".content");
    }
  }
  g.prompt_text = chat_template.render_prompt(messages);
  read_sampling(body, g, /*default_max_tokens=*/0);  // 0: --max-new-tokens
  read_stream(body, r);
  r.choices = expand_choices(body, g, {g});
  return r;
}

}  // namespace statetune::serving
