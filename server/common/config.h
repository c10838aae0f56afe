// Command-line flags with environment-variable fallbacks, declared in one place per executable so the
// `--help` text documents every setting. Precedence: `--flag value` / `--flag=value` on the command
// line, then the environment variable (STATETUNE_<FLAG> with '-' as '_', e.g. --max-batch ->
// STATETUNE_MAX_BATCH), then the declared default.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace statetune::common {

struct FlagSpec {
  std::string name;          // without dashes: "max-batch"
  std::string default_value; // "" = unset
  std::string help;
  bool is_bool = false;      // may be given bare (`--flag`) meaning true
};

class FlagSet {
 public:
  // `program` and `summary` head the help text; `env_prefix` is "STATETUNE_".
  FlagSet(std::string program, std::string summary, std::string env_prefix = "STATETUNE_");

  // Declares a flag. Throws std::logic_error on a duplicate name.
  void add(const std::string& name, const std::string& default_value, const std::string& help);
  void add_bool(const std::string& name, bool default_value, const std::string& help);

  // Parses argv[first..argc). Unknown flags, a missing value and stray positional arguments throw
  // std::invalid_argument naming them. Returns false when --help was given (help() should be printed).
  bool parse(int argc, const char* const* argv, int first = 1);

  // The effective value (command line > environment > default); nullopt when none of them sets it.
  std::optional<std::string> get(const std::string& name) const;
  std::string str(const std::string& name) const;  // "" when unset
  // Typed getters throw std::invalid_argument naming the flag, its source and the expected form.
  int64_t integer(const std::string& name) const;
  double number(const std::string& name) const;
  bool boolean(const std::string& name) const;
  // Byte sizes accept a plain integer or a K/M/G/KiB/MiB/GiB suffix (powers of 1024): "64MiB".
  int64_t bytes(const std::string& name) const;
  // Where the effective value came from: "command line", "environment variable STATETUNE_X", "default".
  std::string source(const std::string& name) const;
  std::string env_name(const std::string& name) const;

  std::string help() const;

 private:
  const FlagSpec& spec(const std::string& name) const;

  std::string program_, summary_, env_prefix_;
  std::vector<FlagSpec> specs_;
  std::map<std::string, std::string> given_;  // from the command line
};

// "64MiB" -> 67108864; throws std::invalid_argument on anything else.
int64_t parse_byte_size(const std::string& text);

// The intra-op thread count a --threads value asks for: the value itself when > 0, else one per
// hardware core. (Debian's LibTorch starts with 1 thread, so "its default" would leave cores idle.)
// Throws std::invalid_argument for a negative value.
int resolve_thread_count(int64_t flag_value);

}  // namespace statetune::common
