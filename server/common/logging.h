// Process-wide logging on spdlog, in one of two formats chosen at start-up:
//   text  "2025-01-01 12:00:00.123 info  generate.done request_id=r-1f2e tenant=acme tokens=12"
//   json  {"ts":"2025-01-01T12:00:00.123Z","level":"info","msg":"generate.done","request_id":"r-1f2e",...}
// Structured records go through log_event() with key/value fields; plain spdlog calls from the engine
// still come out in the chosen format (their text becomes "msg"). Every request gets an id
// (new_request_id()) that is logged with each of its records and returned to the client.
#pragma once

#include <nlohmann/json.hpp>
#include <spdlog/common.h>

#include <string>

namespace statetune::common {

enum class LogFormat { kText, kJson };

// "json" | "text"; throws std::invalid_argument otherwise.
LogFormat parse_log_format(const std::string& name);

// Replaces the default spdlog logger with a stderr logger in `format` at `level`
// ("trace".."critical", "off"). Call once at start-up, before other threads log.
void setup_logging(LogFormat format, const std::string& level = "info");

// A process-unique, hard-to-guess request id such as "r-5f3a9c0d12e4b871".
std::string new_request_id();

// One structured record: `event` is a short dotted name ("generate.done"), `fields` a flat JSON object.
void log_event(spdlog::level::level_enum level, const std::string& event,
               const nlohmann::json& fields = nlohmann::json::object());

}  // namespace statetune::common
