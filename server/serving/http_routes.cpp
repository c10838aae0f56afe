#include "server/serving/http_routes.h"

#include <chrono>
#include <ctime>

#include "server/common/logging.h"
#include "server/engine/adapters/adapter_storage.h"
#include "server/engine/runtime/generation.h"
#include "server/http/api_error.h"
#include "server/http/bearer_auth.h"
#include "server/http/json_body.h"
#include "server/serving/openai_request.h"

namespace statetune::serving {
namespace {

using http::ApiError;
using http::invalid_request;
using nlohmann::json;

// Nesting of a completion request: messages[i].content is the deepest; the rest only stops a hostile
// document from costing the stack.
constexpr int kMaxBodyDepth = 16;
// How often a stream with no new token looks whether its client is still there.
constexpr auto kDisconnectCheckInterval = std::chrono::milliseconds(50);
// With several choices, how long a stream with nothing new waits on one of them before it looks at
// the others again (the most a token of another choice can wait).
constexpr auto kMultiChoiceWait = std::chrono::milliseconds(5);

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
  } catch (const engine::AdapterStorageUnavailable&) {
    return ApiError(503, "service_unavailable_error", "the adapter storage is unavailable; retry shortly");
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

// Usage over every choice: each was prefilled and decoded as a request of its own.
void add_usage(engine::GenerationUsage& total, const engine::GenerationUsage& u) {
  total.prompt_tokens += u.prompt_tokens;
  total.completion_tokens += u.completion_tokens;
}

// The scheduler requests of one HTTP request, one per choice.
struct ChoiceStreams {
  std::vector<std::shared_ptr<engine::GenerationStream>> streams;
  std::vector<bool> done;
  void cancel_all() {
    for (auto& s : streams) s->cancel();
  }
};

json usage_object(const engine::GenerationUsage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

json choice_of(const ApiRequest& r, size_t index, const std::string& text, const json& reason, bool chunk) {
  if (!r.chat) return {{"index", index}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", reason}};
  json c = {{"index", index}, {"logprobs", nullptr}, {"finish_reason", reason}};
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

// The body of both POST routes: start one scheduler request per choice, then answer whole or as an
// event stream.
void generate(const ServingHttpContext& ctx, const httplib::Request& req, httplib::Response& res, bool chat) {
  const common::Principal principal = http::authenticate(req, ctx.tenants);
  const std::string tenant = principal.tenant;
  const ServingBackendView b = ctx.backend();
  if (b.generator == nullptr) throw ApiError(503, "service_unavailable_error", b.unavailable);
  const std::string request_id = common::new_request_id();
  std::shared_ptr<ApiRequest> r;
  auto choices = std::make_shared<ChoiceStreams>();
  try {
    const json body = http::parse_json_body(req, {static_cast<size_t>(ctx.max_request_bytes), kMaxBodyDepth});
    r = std::make_shared<ApiRequest>(chat ? read_chat_request(body, ctx.model_id, ctx.chat_template)
                                          : read_completion_request(body, ctx.model_id));
    for (size_t i = 0; i < r->choices.size(); ++i) {
      engine::TextGenerationRequest& g = r->choices[i];
      g.request_id = r->choices.size() == 1 ? request_id : request_id + "-" + std::to_string(i);
      g.tenant = tenant;
      // Validation, the adapter, the queue: all throw here.
      choices->streams.push_back(b.generator->start(g));
    }
    choices->done.assign(choices->streams.size(), false);
  } catch (...) {
    choices->cancel_all();  // the choices already queued leave with the one refused
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
    // The choices run side by side in the scheduler; reading them one after the other only orders
    // the reply (a stream keeps its events until they are read).
    json reply = reply_base(*r, id, created, false);
    reply["choices"] = json::array();
    engine::GenerationUsage usage;
    for (size_t i = 0; i < choices->streams.size(); ++i) {
      std::string text;
      std::optional<engine::GenerationFinish> finish;
      while (!finish) {
        auto event = choices->streams[i]->next();
        if (!event) continue;
        if (event->delta) text += event->delta->text;
        if (event->finish) finish = std::move(event->finish);
      }
      if (finish->reason == engine::FinishReason::kError || finish->reason == engine::FinishReason::kCancelled) {
        choices->cancel_all();
        const ApiError e = finish->reason == engine::FinishReason::kError
                               ? error_of_finish(*finish)
                               : ApiError(503, "service_unavailable_error", "the server is draining; the request was cancelled");
        record(ctx.metrics, tenant, *finish, finish->reason == engine::FinishReason::kError ? http::grpc_code_name(e.status) : "unavailable");
        throw e;
      }
      record(ctx.metrics, tenant, *finish, "ok");
      add_usage(usage, finish->usage);
      reply["choices"].push_back(choice_of(*r, i, text, finish_reason(*finish), false));
    }
    reply["usage"] = usage_object(usage);
    http::write_json(res, reply);
    return;
  }

  // Streaming: the provider runs on this connection's thread after the handler returns, one call per
  // burst of text. A write that fails (the client went away) ends it; the releaser then cancels the
  // requests, which frees their scheduler rows at the next step.
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [r, choices, id, created, tenant, metrics, started = false, usage = engine::GenerationUsage{}, finished = size_t{0},
       turn = size_t{0}](size_t, httplib::DataSink& sink) mutable {
        std::string out;
        if (!started && r->chat) {
          for (size_t i = 0; i < choices->streams.size(); ++i) {
            json first = reply_base(*r, id, created, true);
            first["choices"] = json::array({{{"index", i}, {"delta", {{"role", "assistant"}, {"content", ""}}},
                                             {"logprobs", nullptr}, {"finish_reason", nullptr}}});
            out += sse(first);
          }
        }
        started = true;
        const size_t n = choices->streams.size();
        // An event of every choice that has one; when none has, wait a little on one of them (in turn:
        // with one choice, the whole interval at which a stream looks whether its client is there).
        bool failed = false;
        auto take = [&](size_t i, engine::GenerationEvent& event) {
          if (event.delta && !event.delta->text.empty()) {
            json chunk = reply_base(*r, id, created, true);
            chunk["choices"] = json::array({choice_of(*r, i, event.delta->text, nullptr, true)});
            out += sse(chunk);
          }
          if (!event.finish) return;
          const engine::GenerationFinish& f = *event.finish;
          choices->done[i] = true;
          ++finished;
          if (f.reason == engine::FinishReason::kError || f.reason == engine::FinishReason::kCancelled) {
            const ApiError e = f.reason == engine::FinishReason::kError
                                   ? error_of_finish(f)
                                   : ApiError(503, "service_unavailable_error", "the request was cancelled");
            record(*metrics, tenant, f, f.cancelled_by_caller ? "cancelled" : http::grpc_code_name(e.status));
            out += sse({{"error", {{"message", e.what()}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}}}});
            failed = true;
            return;
          }
          record(*metrics, tenant, f, "ok");
          add_usage(usage, f.usage);
          json last = reply_base(*r, id, created, true);
          last["choices"] = json::array({choice_of(*r, i, "", finish_reason(f), true)});
          out += sse(last);
        };
        bool any = false;
        for (size_t i = 0; i < n && !failed; ++i) {
          if (choices->done[i]) continue;
          if (auto event = choices->streams[i]->next(engine::Clock::now())) {
            any = true;
            take(i, *event);
          }
        }
        if (!any && !failed) {
          while (choices->done[turn % n]) ++turn;
          const size_t i = turn++ % n;
          const auto wait = n == 1 ? kDisconnectCheckInterval : kMultiChoiceWait;
          if (auto event = choices->streams[i]->next(engine::Clock::now() + wait)) take(i, *event);
        }
        if (failed || finished == n) {
          if (failed) {
            choices->cancel_all();
          } else if (r->include_usage) {
            json last = reply_base(*r, id, created, true);
            last["choices"] = json::array();
            last["usage"] = usage_object(usage);
            out += sse(last);
          }
          out += "data: [DONE]\n\n";
          if (!sink.write(out.data(), out.size())) return false;
          sink.done();
          return true;
        }
        // Nothing yet: call again. A client that went away is found by the next write that fails
        // (is_writable() would wait up to the write timeout on a slow reader's full buffer).
        return out.empty() || sink.write(out.data(), out.size());
      },
      [choices, tenant, metrics](bool success) {
        if (success) return;
        choices->cancel_all();  // the client went away: free the rows now
        count_request(*metrics, tenant, "cancelled");
      });
}

json model_object(const std::string& id, int64_t created, const std::string& owner) {
  return {{"id", id}, {"object", "model"}, {"created", created}, {"owned_by", owner}};
}

// The caller's models: the base, then each adapter by name (its current version).
std::vector<json> models_of(const ServingHttpContext& ctx, const engine::AdapterStorage& store, const common::Principal& p) {
  std::vector<json> out = {model_object(ctx.model_id, 0, "statetune")};
  for (const auto& a : store.list(p.tenant)) {
    out.push_back(model_object(a.name, a.created_unix, p.tenant));
  }
  return out;
}

}  // namespace

void add_serving_routes(httplib::Server& server, const ServingHttpContext& context) {
  const ServingHttpContext* c = &context;
  auto store_or_503 = [c]() -> const engine::AdapterStorage& {
    const ServingBackendView b = c->backend();
    if (b.store == nullptr) throw ApiError(503, "service_unavailable_error", b.unavailable);
    return *b.store;
  };
  server.Get("/v1/models", [c, store_or_503](const httplib::Request& req, httplib::Response& res) {
    http::respond("GET /v1/models", res, [&] {
      const common::Principal p = http::authenticate(req, c->tenants);
      http::write_json(res, {{"object", "list"}, {"data", models_of(*c, store_or_503(), p)}});
    }, map_engine_error);
  });
  server.Get(R"(/v1/models/(.+))", [c, store_or_503](const httplib::Request& req, httplib::Response& res) {
    http::respond("GET /v1/models/{id}", res, [&] {
      const common::Principal p = http::authenticate(req, c->tenants);
      const std::string id = req.matches[1];
      const engine::AdapterStorage& store = store_or_503();
      if (id == c->model_id) return http::write_json(res, model_object(c->model_id, 0, "statetune"));
      engine::TextGenerationRequest g;
      resolve_model(id, c->model_id, g);
      const auto info = store.get(p.tenant, g.adapter, g.adapter_version);
      if (!info) throw http::not_found("the model does not exist or you do not have access to it", "model_not_found");
      http::write_json(res, model_object(id, info->created_unix, p.tenant));
    }, map_engine_error);
  });
  server.Post("/v1/completions", [c](const httplib::Request& req, httplib::Response& res) {
    http::respond("POST /v1/completions", res, [&] { generate(*c, req, res, /*chat=*/false); }, map_engine_error);
  });
  server.Post("/v1/chat/completions", [c](const httplib::Request& req, httplib::Response& res) {
    http::respond("POST /v1/chat/completions", res, [&] { generate(*c, req, res, /*chat=*/true); }, map_engine_error);
  });
}

}  // namespace statetune::serving
