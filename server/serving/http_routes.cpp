#include "server/serving/http_routes.h"

#include <algorithm>
#include <chrono>
#include <ctime>

#include "server/common/logging.h"
#include "server/engine/adapters/adapter_store.h"
#include "server/engine/runtime/generation.h"
#include "server/http/api_error.h"
#include "server/http/bearer_auth.h"
#include "server/http/json_body.h"

namespace statetune::serving {
namespace {

using http::ApiError;
using http::invalid_request;
using nlohmann::json;

// Nesting of a completion request: messages[i].content is the deepest; the rest only stops a hostile
// document from costing the stack.
constexpr int kMaxBodyDepth = 16;
// OpenAI's default max_tokens for /v1/completions.
constexpr int64_t kCompletionsDefaultMaxTokens = 16;
// How often a stream with no new token looks whether its client is still there.
constexpr auto kDisconnectCheckInterval = std::chrono::milliseconds(50);

// The one mapping of the engine's refusals (thrown by TextGenerator::start or reported in a finish) to
// HTTP statuses.
std::optional<ApiError> map_engine_error(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const engine::AdapterNotFound&) {
    return http::not_found("the model does not exist or you do not have access to it", "model_not_found");
  } catch (const engine::QueueFull& e) {
    return ApiError(429, "rate_limit_error", "the server's queue is full; retry shortly", "", "queue_full");
  } catch (const engine::NotAccepting& e) {
    return ApiError(503, "service_unavailable_error", "the server is draining or stopping; retry elsewhere");
  } catch (...) {
  }
  return std::nullopt;
}

ApiError error_of_finish(const engine::GenerationFinish& f) {
  switch (f.error_kind) {
    case engine::ErrorKind::kNotFound:
      return http::not_found("the model does not exist or you do not have access to it", "model_not_found");
    case engine::ErrorKind::kResourceExhausted: return ApiError(429, "rate_limit_error", "out of capacity: " + f.error);
    case engine::ErrorKind::kInvalidArgument: return invalid_request(f.error);
    default: {
      const std::string id = common::new_request_id();
      common::log_event(spdlog::level::err, "http.engine_error", {{"request_id", id}, {"message", f.error}});
      return ApiError(500, "server_error", "internal error (request " + id + ")");
    }
  }
}

const char* finish_reason(const engine::GenerationFinish& f) {
  return f.reason == engine::FinishReason::kLength ? "length" : "stop";
}

json usage_object(const engine::GenerationUsage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

// One parsed /v1/completions or /v1/chat/completions request.
struct ApiRequest {
  bool chat = false;
  std::string model;  // as the client named it (echoed in replies)
  engine::TextGenerationRequest generation;
  bool stream = false;
  bool include_usage = false;
};

// `model` -> the adapter (name, optional version) or the base model.
void resolve_model(const std::string& model, const std::string& model_id, engine::TextGenerationRequest& g) {
  if (model == model_id) return;
  const size_t at = model.find('@');
  g.adapter = model.substr(0, at);
  if (at != std::string::npos) g.adapter_version = model.substr(at + 1);
  try {
    engine::AdapterStore::validate_name("model", g.adapter);
  } catch (const std::invalid_argument&) {
    // Not a name any adapter can have: unknown, as OpenAI says for any model it does not serve.
    throw http::not_found("the model does not exist or you do not have access to it", "model_not_found");
  }
}

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
  if (auto n = http::opt_integer(body, "n"); n && *n != 1) {
    throw invalid_request("only `n` = 1 is supported", "n");
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

ApiRequest read_completion_request(const json& body, const std::string& model_id) {
  std::set<std::string> known = kCommonFields;
  known.insert({"prompt", "echo", "best_of", "ignore_eos"});
  http::reject_unknown_fields(body, known);
  ApiRequest r;
  r.model = http::required_string(body, "model");
  resolve_model(r.model, model_id, r.generation);
  auto prompt = body.find("prompt");
  if (prompt == body.end() || prompt->is_null()) throw invalid_request("missing required parameter: `prompt`", "prompt");
  const auto is_token_ids = [](const json& a) {
    return a.is_array() && !a.empty() && std::all_of(a.begin(), a.end(), [](const json& t) { return t.is_number_integer(); });
  };
  if (prompt->is_string()) {
    r.generation.prompt_text = prompt->get<std::string>();
  } else if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) {
    r.generation.prompt_text = (*prompt)[0].get<std::string>();
  } else if (is_token_ids(*prompt) || (prompt->is_array() && prompt->size() == 1 && is_token_ids((*prompt)[0]))) {
    // Token ids, as OpenAI allows; the facade checks them against the vocabulary and the prompt limit.
    const json& ids = (*prompt)[0].is_array() ? (*prompt)[0] : *prompt;
    for (const auto& t : ids) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0) throw invalid_request("token ids must be >= 0", "prompt");
      r.generation.prompt_tokens.push_back(t.get<int64_t>());
    }
  } else {
    throw invalid_request("`prompt` must be a string or an array of token ids (a list of several prompts is not "
                          "supported; send one per request)", "prompt");
  }
  if (auto echo = http::opt_bool(body, "echo"); echo && *echo) throw invalid_request("`echo` is not supported", "echo");
  if (auto best_of = http::opt_integer(body, "best_of"); best_of && *best_of != 1) {
    throw invalid_request("only `best_of` = 1 is supported", "best_of");
  }
  read_sampling(body, r.generation, kCompletionsDefaultMaxTokens);
  read_stream(body, r);
  // An extension (vLLM's name): generate exactly max_tokens, as benchmarks need.
  if (auto ignore = http::opt_bool(body, "ignore_eos")) r.generation.stop_at_eos = !*ignore;
  return r;
}

ApiRequest read_chat_request(const json& body, const std::string& model_id, const engine::ChatTemplate& chat_template) {
  std::set<std::string> known = kCommonFields;
  known.insert({"messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice", "functions",
                "response_format", "parallel_tool_calls"});
  http::reject_unknown_fields(body, known);
  ApiRequest r;
  r.chat = true;
  r.model = http::required_string(body, "model");
  resolve_model(r.model, model_id, r.generation);
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
  r.generation.prompt_text = chat_template.render_prompt(messages);
  read_sampling(body, r.generation, /*default_max_tokens=*/0);  // 0: --max-new-tokens
  read_stream(body, r);
  return r;
}

json choice_of(const ApiRequest& r, const std::string& text, const json& reason, bool chunk) {
  if (!r.chat) return {{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", reason}};
  json c = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", reason}};
  if (chunk) {
    c["delta"] = reason.is_null() ? json{{"content", text}} : json::object();
  } else {
    c["message"] = {{"role", "assistant"}, {"content", text}, {"refusal", nullptr}};
  }
  return c;
}

json reply_base(const ApiRequest& r, const std::string& id, int64_t created, bool chunk) {
  const char* object = r.chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion";
  return {{"id", id}, {"object", object}, {"created", created}, {"model", r.model}, {"system_fingerprint", nullptr}};
}

std::string sse(const json& j) {
  return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

void count_request(ServingMetrics& m, const std::string& tenant, const std::string& status) {
  m.request_finished(tenant, status, "http");
}

// The per-request metrics both fronts record (gRPC in server.cpp).
void record(ServingMetrics& m, const std::string& tenant, const engine::GenerationFinish& f, const std::string& status) {
  m.queue_time(f.usage.queue_seconds);
  m.request_duration(tenant, f.usage.total_seconds);
  m.tokens(tenant, f.usage.prompt_tokens, f.usage.completion_tokens);
  count_request(m, tenant, status);
}

// The body of both POST routes: start the request, then answer whole or as an event stream.
void generate(const ServingHttpContext& ctx, const httplib::Request& req, httplib::Response& res, bool chat) {
  const Principal principal = http::authenticate(req, ctx.tenants);
  const std::string tenant = principal.tenant;
  const ServingBackendView b = ctx.backend();
  if (b.generator == nullptr) throw ApiError(503, "service_unavailable_error", b.unavailable);
  const std::string request_id = common::new_request_id();
  std::shared_ptr<ApiRequest> r;
  std::shared_ptr<engine::GenerationStream> stream;
  try {
    const json body = http::parse_json_body(req, {static_cast<size_t>(ctx.max_request_bytes), kMaxBodyDepth});
    r = std::make_shared<ApiRequest>(chat ? read_chat_request(body, ctx.model_id, ctx.chat_template)
                                          : read_completion_request(body, ctx.model_id));
    r->generation.request_id = request_id;
    r->generation.tenant = tenant;
    stream = b.generator->start(r->generation);  // validation, the adapter, the queue: all throw here
  } catch (...) {
    // Counted like gRPC counts a refused Generate; respond() answers it.
    const std::exception_ptr error = std::current_exception();
    int status = 500;
    try {
      if (auto mapped = map_engine_error(error)) throw *mapped;
      std::rethrow_exception(error);
    } catch (const ApiError& e) {
      status = e.status;
    } catch (const std::invalid_argument&) {
      status = 400;
    } catch (...) {
    }
    count_request(ctx.metrics, tenant, http::grpc_code_name(status));
    std::rethrow_exception(error);
  }
  const std::string id = (chat ? "chatcmpl-" : "cmpl-") + request_id.substr(2);
  const int64_t created = static_cast<int64_t>(std::time(nullptr));
  ServingMetrics* metrics = &ctx.metrics;

  if (!r->stream) {
    std::string text;
    std::optional<engine::GenerationFinish> finish;
    while (!finish) {
      auto event = stream->next();
      if (!event) continue;
      if (event->delta) text += event->delta->text;
      if (event->finish) finish = std::move(event->finish);
    }
    if (finish->reason == engine::FinishReason::kError) {
      const ApiError e = error_of_finish(*finish);
      record(ctx.metrics, tenant, *finish, http::grpc_code_name(e.status));
      throw e;
    }
    if (finish->reason == engine::FinishReason::kCancelled) {
      record(ctx.metrics, tenant, *finish, "unavailable");
      throw ApiError(503, "service_unavailable_error", "the server is draining; the request was cancelled");
    }
    record(ctx.metrics, tenant, *finish, "ok");
    json reply = reply_base(*r, id, created, false);
    reply["choices"] = json::array({choice_of(*r, text, finish_reason(*finish), false)});
    reply["usage"] = usage_object(finish->usage);
    http::write_json(res, reply);
    return;
  }

  // Streaming: the provider runs on this connection's thread after the handler returns, one call per
  // burst of text. A write that fails (the client went away) ends it; the releaser then cancels the
  // request, which frees its scheduler row at the next step.
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [r, stream, id, created, tenant, metrics, started = false](size_t, httplib::DataSink& sink) mutable {
        if (!started && r->chat) {
          json first = reply_base(*r, id, created, true);
          first["choices"] = json::array({{{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}}},
                                           {"logprobs", nullptr}, {"finish_reason", nullptr}}});
          const std::string event = sse(first);
          if (!sink.write(event.data(), event.size())) return false;
        }
        started = true;
        auto event = stream->next(engine::Clock::now() + kDisconnectCheckInterval);
        if (!event) return sink.is_writable();  // nothing yet: keep going while the client is there
        std::string out;
        if (event->delta && !event->delta->text.empty()) {
          json chunk = reply_base(*r, id, created, true);
          chunk["choices"] = json::array({choice_of(*r, event->delta->text, nullptr, true)});
          out += sse(chunk);
        }
        if (event->finish) {
          const engine::GenerationFinish& f = *event->finish;
          if (f.reason == engine::FinishReason::kError || f.reason == engine::FinishReason::kCancelled) {
            const ApiError e = f.reason == engine::FinishReason::kError
                                   ? error_of_finish(f)
                                   : ApiError(503, "service_unavailable_error", "the request was cancelled");
            record(*metrics, tenant, f, f.cancelled_by_caller ? "cancelled" : http::grpc_code_name(e.status));
            out += sse({{"error", {{"message", e.what()}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}}}});
          } else {
            record(*metrics, tenant, f, "ok");
            json last = reply_base(*r, id, created, true);
            last["choices"] = json::array({choice_of(*r, "", finish_reason(f), true)});
            out += sse(last);
            if (r->include_usage) {
              json usage = reply_base(*r, id, created, true);
              usage["choices"] = json::array();
              usage["usage"] = usage_object(f.usage);
              out += sse(usage);
            }
          }
          out += "data: [DONE]\n\n";
          if (!sink.write(out.data(), out.size())) return false;
          sink.done();
          return true;
        }
        return out.empty() ? sink.is_writable() : sink.write(out.data(), out.size());
      },
      [stream, tenant, metrics](bool success) {
        if (success) return;
        stream->cancel();  // the client went away: free the row now
        count_request(*metrics, tenant, "cancelled");
      });
}

json model_object(const std::string& id, int64_t created, const std::string& owner) {
  return {{"id", id}, {"object", "model"}, {"created", created}, {"owned_by", owner}};
}

// The caller's models: the base, then each adapter by name (its current version).
std::vector<json> models_of(const ServingHttpContext& ctx, const engine::AdapterStore& store, const Principal& p) {
  std::vector<json> out = {model_object(ctx.model_id, 0, "statetune")};
  for (const auto& a : store.list(p.tenant)) {
    out.push_back(model_object(a.name, a.created_unix, p.tenant));
  }
  return out;
}

}  // namespace

void add_serving_routes(httplib::Server& server, const ServingHttpContext& context) {
  const ServingHttpContext* c = &context;
  auto store_or_503 = [c]() -> const engine::AdapterStore& {
    const ServingBackendView b = c->backend();
    if (b.store == nullptr) throw ApiError(503, "service_unavailable_error", b.unavailable);
    return *b.store;
  };
  server.Get("/v1/models", [c, store_or_503](const httplib::Request& req, httplib::Response& res) {
    http::respond("GET /v1/models", res, [&] {
      const Principal p = http::authenticate(req, c->tenants);
      http::write_json(res, {{"object", "list"}, {"data", models_of(*c, store_or_503(), p)}});
    });
  });
  server.Get(R"(/v1/models/(.+))", [c, store_or_503](const httplib::Request& req, httplib::Response& res) {
    http::respond("GET /v1/models/{id}", res, [&] {
      const Principal p = http::authenticate(req, c->tenants);
      const std::string id = req.matches[1];
      const engine::AdapterStore& store = store_or_503();
      if (id == c->model_id) return http::write_json(res, model_object(c->model_id, 0, "statetune"));
      engine::TextGenerationRequest g;
      resolve_model(id, c->model_id, g);
      const auto info = store.get(p.tenant, g.adapter, g.adapter_version);
      if (!info) throw http::not_found("the model does not exist or you do not have access to it", "model_not_found");
      http::write_json(res, model_object(id, info->created_unix, p.tenant));
    });
  });
  server.Post("/v1/completions", [c](const httplib::Request& req, httplib::Response& res) {
    http::respond("POST /v1/completions", res, [&] { generate(*c, req, res, /*chat=*/false); }, map_engine_error);
  });
  server.Post("/v1/chat/completions", [c](const httplib::Request& req, httplib::Response& res) {
    http::respond("POST /v1/chat/completions", res, [&] { generate(*c, req, res, /*chat=*/true); }, map_engine_error);
  });
}

}  // namespace statetune::serving
