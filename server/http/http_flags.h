// The HTTP front end's flags, the same on statetune-serve and statetune-train:
//   --http-listen host:port (empty: no HTTP), --http-threads, --http-timeout-seconds,
//   --http-keep-alive-seconds, --http-metrics, --model-id (the base model's id in the API), --chat-template.
#pragma once

#include <filesystem>
#include <string>

#include "server/common/config.h"
#include "server/engine/text/chat_template.h"
#include "server/http/http_server.h"

namespace statetune::http {

void add_http_flags(common::FlagSet& flags);
// Throws std::invalid_argument naming the flag that is out of range. `max_body_bytes` is the service's;
// `auto_threads` what --http-threads 0 means for it.
HttpOptions http_options_from_flags(const common::FlagSet& flags, int64_t max_body_bytes, int64_t auto_threads);
// --model-id, or the model folder's name ("default" for models/default).
std::string model_id_from_flags(const common::FlagSet& flags, const std::filesystem::path& model_dir);
// --chat-template's file, or <model_dir>/chat_template.json when there is one, or the plain template.
engine::ChatTemplate chat_template_from_flags(const common::FlagSet& flags, const std::filesystem::path& model_dir);

}  // namespace statetune::http
