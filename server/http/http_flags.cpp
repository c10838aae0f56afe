#include "server/http/http_flags.h"

#include <stdexcept>

namespace statetune::http {

void add_http_flags(common::FlagSet& flags) {
  flags.add("http-listen", "", "OpenAI-compatible HTTP API address host:port (port 0 picks one); empty: off");
  flags.add("http-threads", "0",
            "HTTP connections served at once, the rest wait (0: statetune-serve max-batch + queue-size + 16, "
            "statetune-train 16)");
  flags.add("http-timeout-seconds", "30", "an HTTP connection that sends or takes nothing this long is closed");
  flags.add("http-keep-alive-seconds", "5", "how long an idle HTTP keep-alive connection is kept");
  flags.add_bool("http-metrics", false,
                 "also serve GET /metrics on the HTTP listener, unauthenticated (for the Gateway API Inference "
                 "Extension's endpoint picker, which scrapes the port it routes to); needs --metrics-listen");
  flags.add("model-id", "", "the base model's id in the HTTP API (default: the model folder's name)");
  flags.add("chat-template", "",
            "chat template JSON for /v1/chat/completions and chat fine-tuning files (default: "
            "<model>/chat_template.json if present, else the plain template; server/engine/text/chat_template.h)");
}

HttpOptions http_options_from_flags(const common::FlagSet& flags, int64_t max_body_bytes, int64_t auto_threads) {
  HttpOptions o;
  o.listen = flags.str("http-listen");
  o.threads = flags.integer("http-threads");
  if (o.threads == 0) o.threads = auto_threads;
  const double timeout = flags.number("http-timeout-seconds");
  const double keep_alive = flags.number("http-keep-alive-seconds");
  if (o.threads < 1 || o.threads > 4096 || !(timeout >= 1 && timeout <= 3600) || !(keep_alive >= 0 && keep_alive <= 3600)) {
    throw std::invalid_argument("--http-threads must be in [1, 4096], --http-timeout-seconds in [1, 3600], "
                                "--http-keep-alive-seconds in [0, 3600]");
  }
  o.read_timeout = o.write_timeout = std::chrono::seconds(static_cast<int64_t>(timeout));
  o.keep_alive_timeout = std::chrono::seconds(static_cast<int64_t>(keep_alive));
  o.max_body_bytes = max_body_bytes;
  o.serve_metrics = flags.boolean("http-metrics");
  return o;
}

std::string model_id_from_flags(const common::FlagSet& flags, const std::filesystem::path& model_dir) {
  std::string id = flags.str("model-id");
  if (id.empty()) {
    std::filesystem::path dir = model_dir;
    if (!dir.has_filename()) dir = dir.parent_path();  // "models/default/"
    id = dir.filename().string();
  }
  return id.empty() ? "statetune-base" : id;
}

engine::ChatTemplate chat_template_from_flags(const common::FlagSet& flags, const std::filesystem::path& model_dir) {
  if (!flags.str("chat-template").empty()) return engine::ChatTemplate::from_file(flags.str("chat-template"));
  const std::filesystem::path in_model = model_dir / "chat_template.json";
  if (std::filesystem::exists(in_model)) return engine::ChatTemplate::from_file(in_model);
  return engine::ChatTemplate{};
}

}  // namespace statetune::http
