// Shared helpers of the text tests: fixture loading and the shared tokenizer.
#pragma once

#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "server/engine/text/tokenizer.h"

namespace statetune::engine::testing {

inline std::string neox_tokenizer_path() {
  return std::string(STATETUNE_SHARED_DIR) + "/models/gpt-neox-20b-tokenizer.json";
}

inline bool file_exists(const std::string& path) { return std::ifstream(path).good(); }

// Loaded once per test binary (parsing the 2 MB file takes a while on a shared machine).
inline const Tokenizer* neox_tokenizer() {
  static std::unique_ptr<Tokenizer> tok = []() -> std::unique_ptr<Tokenizer> {
    if (!file_exists(neox_tokenizer_path())) return nullptr;
    return std::make_unique<Tokenizer>(Tokenizer::from_file(neox_tokenizer_path()));
  }();
  return tok.get();
}

inline std::vector<nlohmann::json> read_jsonl(const std::string& name) {
  const std::string path = std::string(STATETUNE_SOURCE_DIR) + "/tests/text/fixtures/" + name;
  std::ifstream in(path);
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

}  // namespace statetune::engine::testing

#define STATETUNE_REQUIRE_NEOX(tok)                                                  \
  const Tokenizer* tok = ::statetune::engine::testing::neox_tokenizer();             \
  if (tok == nullptr) {                                                              \
    GTEST_SKIP() << "no tokenizer at " << ::statetune::engine::testing::neox_tokenizer_path() \
                 << " (set STATETUNE_SHARED_DIR)";                                   \
  }
