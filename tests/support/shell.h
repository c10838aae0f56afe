// Running a command line through the shell from a test and keeping its exit code and output, for the
// tests that drive the real command-line binaries (statetune-engine) as a user would.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "tests/support/loopback_http.h"

namespace statetune::test_support {

struct ShellResult {
  int code = -1;
  std::string out, err;
};

// 'text' quoted for the shell.
inline std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs `command` (already shell-quoted where needed); its stdout and stderr go through numbered files
// in `scratch` so that large outputs cannot block a pipe.
inline ShellResult run_shell(const std::string& command, const std::filesystem::path& scratch) {
  static int n = 0;
  const std::filesystem::path out = scratch / ("stdout-" + std::to_string(n));
  const std::filesystem::path err = scratch / ("stderr-" + std::to_string(n++));
  const std::string cmd = command + " >" + quote(out.string()) + " 2>" + quote(err.string());
  const int status = std::system(cmd.c_str());
  ShellResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

inline std::string describe(const ShellResult& r) {
  return "exit " + std::to_string(r.code) + "\nstdout:\n" + r.out + "\nstderr:\n" + r.err;
}

}  // namespace statetune::test_support
