// A small `--flag value` parser for the offline tool's subcommands. Every flag a subcommand reads is
// declared by reading it, so `finish()` can refuse unknown or misspelt flags with the list of valid ones.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace statetune::tools {

class CliArgs {
 public:
  // argv: the arguments after the subcommand name. `--flag=value`, `--flag value` and bare `--flag`
  // (a boolean) are accepted.
  CliArgs(int argc, char** argv);

  std::string str(const std::string& flag, const std::string& fallback);
  std::string required(const std::string& flag);
  int64_t integer(const std::string& flag, int64_t fallback);
  double number(const std::string& flag, double fallback);
  bool boolean(const std::string& flag);  // present (or =true/1) -> true
  // Comma-separated list, e.g. --methods state_offset,output_offset.
  std::vector<std::string> list(const std::string& flag, const std::string& fallback);
  const std::vector<std::string>& positional() const { return positional_; }

  // Throws std::invalid_argument naming any flag that was given but never read.
  void finish() const;

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
  std::set<std::string> known_;
};

}  // namespace statetune::tools
