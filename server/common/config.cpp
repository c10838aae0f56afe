#include "server/common/config.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace statetune::common {
namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t");
  size_t e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

}  // namespace

int resolve_thread_count(int64_t flag_value) {
  if (flag_value < 0 || flag_value > 1024) {
    throw std::invalid_argument("--threads expects 0 (one per core) .. 1024, got " + std::to_string(flag_value));
  }
  if (flag_value > 0) return static_cast<int>(flag_value);
  const unsigned cores = std::thread::hardware_concurrency();
  return cores == 0 ? 1 : static_cast<int>(cores);
}

int64_t parse_byte_size(const std::string& text) {
  const std::string t = trim(text);
  size_t digits = 0;
  while (digits < t.size() && std::isdigit(static_cast<unsigned char>(t[digits]))) ++digits;
  if (digits == 0) {
    throw std::invalid_argument("'" + text + "' is not a byte size (use e.g. 1048576, 64MiB or 2G)");
  }
  const std::string unit = lower(trim(t.substr(digits)));
  int64_t scale = 1;
  if (unit.empty() || unit == "b") scale = 1;
  else if (unit == "k" || unit == "kb" || unit == "kib") scale = int64_t{1} << 10;
  else if (unit == "m" || unit == "mb" || unit == "mib") scale = int64_t{1} << 20;
  else if (unit == "g" || unit == "gb" || unit == "gib") scale = int64_t{1} << 30;
  else throw std::invalid_argument("'" + text + "': unknown size unit '" + unit + "' (use K, M or G)");
  errno = 0;
  const long long value = std::strtoll(t.substr(0, digits).c_str(), nullptr, 10);
  if (errno == ERANGE || value > INT64_MAX / scale) {
    throw std::invalid_argument("'" + text + "' is too large a byte size");
  }
  return static_cast<int64_t>(value) * scale;
}

FlagSet::FlagSet(std::string program, std::string summary, std::string env_prefix)
    : program_(std::move(program)), summary_(std::move(summary)), env_prefix_(std::move(env_prefix)) {}

void FlagSet::add(const std::string& name, const std::string& default_value, const std::string& help) {
  for (const auto& s : specs_) {
    if (s.name == name) throw std::logic_error("flag --" + name + " declared twice");
  }
  specs_.push_back(FlagSpec{name, default_value, help, false});
}

void FlagSet::add_bool(const std::string& name, bool default_value, const std::string& help) {
  add(name, default_value ? "true" : "false", help);
  specs_.back().is_bool = true;
}

const FlagSpec& FlagSet::spec(const std::string& name) const {
  for (const auto& s : specs_) {
    if (s.name == name) return s;
  }
  throw std::logic_error("flag --" + name + " was never declared");
}

std::string FlagSet::env_name(const std::string& name) const {
  std::string env = env_prefix_;
  for (char c : name) env += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return env;
}

bool FlagSet::parse(int argc, const char* const* argv, int first) {
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") return false;
    if (arg.rfind("--", 0) != 0) {
      throw std::invalid_argument("unexpected argument '" + arg + "'; flags look like --name value");
    }
    arg = arg.substr(2);
    std::optional<std::string> value;
    if (auto eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    }
    const FlagSpec* found = nullptr;
    for (const auto& s : specs_) {
      if (s.name == arg) found = &s;
    }
    if (found == nullptr) {
      throw std::invalid_argument("unknown flag --" + arg + " (see --help for the list)");
    }
    if (!value) {
      const bool next_is_value = i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0;
      if (found->is_bool && !next_is_value) {
        value = "true";
      } else if (!next_is_value) {
        throw std::invalid_argument("flag --" + arg + " needs a value");
      } else {
        value = argv[++i];
      }
    }
    given_[arg] = *value;
  }
  return true;
}

std::optional<std::string> FlagSet::get(const std::string& name) const {
  const FlagSpec& s = spec(name);
  if (auto it = given_.find(name); it != given_.end()) return it->second;
  if (const char* env = std::getenv(env_name(name).c_str()); env != nullptr && *env != '\0') {
    return std::string(env);
  }
  if (!s.default_value.empty()) return s.default_value;
  return std::nullopt;
}

std::string FlagSet::str(const std::string& name) const { return get(name).value_or(""); }

std::string FlagSet::source(const std::string& name) const {
  if (given_.count(name)) return "command line";
  if (const char* env = std::getenv(env_name(name).c_str()); env != nullptr && *env != '\0') {
    return "environment variable " + env_name(name);
  }
  return "default";
}

int64_t FlagSet::integer(const std::string& name) const {
  const std::string v = trim(str(name));
  char* end = nullptr;
  errno = 0;
  const long long parsed = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE) {
    throw std::invalid_argument("--" + name + " (" + source(name) + ") must be an integer, got '" + v + "'");
  }
  return parsed;
}

double FlagSet::number(const std::string& name) const {
  const std::string v = trim(str(name));
  char* end = nullptr;
  const double parsed = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0') {
    throw std::invalid_argument("--" + name + " (" + source(name) + ") must be a number, got '" + v + "'");
  }
  return parsed;
}

bool FlagSet::boolean(const std::string& name) const {
  const std::string v = lower(trim(str(name)));
  if (v == "true" || v == "1" || v == "yes" || v == "on") return true;
  if (v == "false" || v == "0" || v == "no" || v == "off" || v.empty()) return false;
  throw std::invalid_argument("--" + name + " (" + source(name) + ") must be true or false, got '" + v + "'");
}

int64_t FlagSet::bytes(const std::string& name) const {
  try {
    return parse_byte_size(str(name));
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("--" + name + " (" + source(name) + "): " + e.what());
  }
}

std::string FlagSet::help() const {
  std::ostringstream out;
  out << "usage: " << program_ << " [--flag value ...]\n" << summary_ << "\n\nflags (environment fallback in brackets):\n";
  for (const auto& s : specs_) {
    out << "  --" << s.name << "  [" << env_name(s.name) << "]";
    if (!s.default_value.empty()) out << "  default: " << s.default_value;
    out << "\n      " << s.help << "\n";
  }
  return out.str();
}

}  // namespace statetune::common
