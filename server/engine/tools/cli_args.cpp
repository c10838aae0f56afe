#include "server/engine/tools/cli_args.h"

#include <stdexcept>

namespace statetune::tools {

CliArgs::CliArgs(int argc, char** argv) {
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      positional_.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2);
    std::string value = "true";
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) {
      value = argv[++i];
    }
    values_[name] = value;
  }
}

std::string CliArgs::str(const std::string& flag, const std::string& fallback) {
  known_.insert(flag);
  auto it = values_.find(flag);
  return it == values_.end() ? fallback : it->second;
}

std::string CliArgs::required(const std::string& flag) {
  known_.insert(flag);
  auto it = values_.find(flag);
  if (it == values_.end()) throw std::invalid_argument("missing required flag --" + flag);
  return it->second;
}

int64_t CliArgs::integer(const std::string& flag, int64_t fallback) {
  std::string v = str(flag, "");
  if (v.empty()) return fallback;
  try {
    size_t used = 0;
    int64_t out = std::stoll(v, &used);
    if (used != v.size()) throw std::invalid_argument(v);
    return out;
  } catch (const std::exception&) {
    throw std::invalid_argument("--" + flag + " expects an integer, got '" + v + "'");
  }
}

double CliArgs::number(const std::string& flag, double fallback) {
  std::string v = str(flag, "");
  if (v.empty()) return fallback;
  try {
    size_t used = 0;
    double out = std::stod(v, &used);
    if (used != v.size()) throw std::invalid_argument(v);
    return out;
  } catch (const std::exception&) {
    throw std::invalid_argument("--" + flag + " expects a number, got '" + v + "'");
  }
}

bool CliArgs::boolean(const std::string& flag) {
  std::string v = str(flag, "false");
  if (v == "true" || v == "1" || v == "yes") return true;
  if (v == "false" || v == "0" || v == "no") return false;
  throw std::invalid_argument("--" + flag + " expects true or false, got '" + v + "'");
}

std::vector<std::string> CliArgs::list(const std::string& flag, const std::string& fallback) {
  std::string v = str(flag, fallback);
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= v.size()) {
    size_t comma = v.find(',', start);
    if (comma == std::string::npos) comma = v.size();
    if (comma > start) out.push_back(v.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

void CliArgs::finish() const {
  std::string unknown;
  for (const auto& [name, value] : values_) {
    if (!known_.count(name)) unknown += (unknown.empty() ? "--" : ", --") + name;
  }
  if (unknown.empty()) return;
  std::string valid;
  for (const auto& k : known_) valid += (valid.empty() ? "--" : ", --") + k;
  throw std::invalid_argument("unknown flag(s) " + unknown + "; this subcommand takes " + valid);
}

}  // namespace statetune::tools
