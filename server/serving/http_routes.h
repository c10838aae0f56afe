// statetune-serve's OpenAI-compatible HTTP routes (--http-listen), over the same generation facade
// (engine::TextGenerator), scheduler, tenants and metrics as gRPC:
//   GET  /v1/models, /v1/models/{id}      the base model and the caller's adapters (owned_by = tenant)
//   POST /v1/completions                  model = adapter name, name@version, or the base model's id
//   POST /v1/chat/completions             messages rendered with the chat template
// Both POSTs stream as server-sent events when `stream` is true (`data: {chunk}` ... `data: [DONE]`); a
// client that disconnects mid-stream cancels its request in the scheduler. Another tenant's adapter is
// a 404 like one that does not exist. `n` choices (and, on completions, a list of prompts) are one
// scheduler request each; the reply's `index` orders them and `usage` sums them.
#pragma once

#include <httplib.h>

#include <cstdint>
#include <functional>
#include <string>

#include "server/engine/text/chat_template.h"
#include "server/common/auth.h"
#include "server/serving/serving_metrics.h"

namespace statetune::engine {
class AdapterStorage;
class TextGenerator;
}  // namespace statetune::engine

namespace statetune::serving {

// What the routes need of the loaded server; both null (and `unavailable` saying why) while the model
// is loading or the server drains.
struct ServingBackendView {
  engine::TextGenerator* generator = nullptr;
  const engine::AdapterStorage* store = nullptr;
  std::string unavailable;
};

struct ServingHttpContext {
  const common::TenantRegistry& tenants;
  ServingMetrics& metrics;
  std::string model_id;
  engine::ChatTemplate chat_template;
  int64_t max_request_bytes;
  std::function<ServingBackendView()> backend;
};

// The context must outlive the server.
void add_serving_routes(httplib::Server& server, const ServingHttpContext& context);

}  // namespace statetune::serving
