#include "server/common/logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <memory>
#include <random>
#include <stdexcept>

namespace statetune::common {
namespace {

// Structured payloads start with this byte (ASCII record separator) followed by a JSON object of
// fields, so the JSON formatter can merge them while plain messages become "msg".
constexpr char kStructuredMark = '\x1e';

std::atomic<LogFormat> g_format{LogFormat::kText};

std::string iso_utc_millis(spdlog::log_clock::time_point tp) {
  const auto since = tp.time_since_epoch();
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(since);
  const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(since - secs).count();
  const std::time_t t = static_cast<std::time_t>(secs.count());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(millis));
  return buf;
}

class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const std::string payload(msg.payload.data(), msg.payload.size());
    nlohmann::json record = nlohmann::json::object();
    record["ts"] = iso_utc_millis(msg.time);
    const auto level = spdlog::level::to_string_view(msg.level);
    record["level"] = std::string(level.data(), level.size());
    if (!payload.empty() && payload[0] == kStructuredMark) {
      nlohmann::json fields = nlohmann::json::parse(payload.substr(1), nullptr, /*allow_exceptions=*/false);
      if (fields.is_object()) {
        for (auto& [k, v] : fields.items()) record[k] = v;
      } else {
        record["msg"] = payload.substr(1);
      }
    } else {
      record["msg"] = payload;
    }
    const std::string line =
        record.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace) + "\n";
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};

std::string render_value(const nlohmann::json& v) {
  // A value that is not valid UTF-8 is written with U+FFFD, not thrown at the caller.
  const auto dump = [&] { return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); };
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    // Quote values a reader could not split on spaces.
    if (s.empty() || s.find_first_of(" \t\"=") != std::string::npos) return dump();
    return s;
  }
  return dump();
}

}  // namespace

LogFormat parse_log_format(const std::string& name) {
  if (name == "json") return LogFormat::kJson;
  if (name == "text") return LogFormat::kText;
  throw std::invalid_argument("--log-format must be json or text, got '" + name + "'");
}

void setup_logging(LogFormat format, const std::string& level) {
  auto logger = std::make_shared<spdlog::logger>("statetune", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  if (format == LogFormat::kJson) {
    logger->set_formatter(std::make_unique<JsonFormatter>());
  } else {
    logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %-5l %v");
  }
  const auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") {
    throw std::invalid_argument("unknown log level '" + level + "' (trace, debug, info, warn, error, critical, off)");
  }
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::warn);
  g_format = format;
  spdlog::set_default_logger(std::move(logger));
}

std::string new_request_id() {
  // A per-process random prefix plus a counter: unique within the process, unguessable across them.
  static const uint32_t prefix = [] {
    std::random_device rd;
    return static_cast<uint32_t>(rd());
  }();
  static std::atomic<uint64_t> counter{0};
  char buf[32];
  std::snprintf(buf, sizeof(buf), "r-%08x%08llx", prefix,
                static_cast<unsigned long long>(counter.fetch_add(1) + 1));
  return buf;
}

void log_event(spdlog::level::level_enum level, const std::string& event, const nlohmann::json& fields) {
  auto logger = spdlog::default_logger_raw();
  if (!logger->should_log(level)) return;
  if (g_format.load() == LogFormat::kJson) {
    nlohmann::json record = nlohmann::json::object();
    record["msg"] = event;
    if (fields.is_object()) {
      for (auto& [k, v] : fields.items()) record[k] = v;
    }
    logger->log(level, "{}{}", kStructuredMark,
                record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    return;
  }
  std::string line = event;
  if (fields.is_object()) {
    for (auto& [k, v] : fields.items()) line += " " + k + "=" + render_value(v);
  }
  logger->log(level, "{}", line);
}

}  // namespace statetune::common
