// Reading one sample from a Prometheus text exposition (a service's /metrics body), for the
// integration tests.
#pragma once

#include <sstream>
#include <string>

namespace statetune::test_support {

// The value of the first sample line that starts with `prefix` (the name, with its labels in the
// order prometheus-cpp writes them: by name), or -1 when there is none.
inline double metric_sample(const std::string& text, const std::string& prefix) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.compare(0, prefix.size(), prefix) == 0 && line.size() > prefix.size() &&
        (line[prefix.size()] == ' ' || line[prefix.size()] == '{')) {
      return std::stod(line.substr(line.rfind(' ') + 1));
    }
  }
  return -1;
}

}  // namespace statetune::test_support
