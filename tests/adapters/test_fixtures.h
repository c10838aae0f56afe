// Small model dimensions and helpers shared by the adapter suites.
#pragma once

#include <ATen/ATen.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>

#include "server/engine/adapters/adapter.h"
#include "server/engine/model/model_config.h"

namespace statetune::engine::testing {

// A tiny Mamba: 3 layers, D = 8, N = 4. Small enough that every test runs in milliseconds.
inline MambaConfig tiny_config() {
  MambaConfig c;
  c.d_model = 4;
  c.n_layer = 3;
  c.vocab_size = 16;
  c.d_state = 4;
  c.expand = 2;
  c.d_conv = 4;
  c.dt_rank = 1;
  c.d_inner = 8;
  c.pad_vocab_size_multiple = 8;
  return c;
}

inline ModelFingerprint tiny_fingerprint(const std::string& weights_sha256 = std::string(64, 'a')) {
  const MambaConfig c = tiny_config();
  ModelFingerprint f;
  f.d_model = c.d_model;
  f.n_layer = c.n_layer;
  f.d_inner = c.d_inner;
  f.d_state = c.d_state;
  f.d_conv = c.d_conv;
  f.dt_rank = c.dt_rank;
  f.vocab_size = c.vocab_size;
  f.weights_sha256 = weights_sha256;
  return f;
}

// An adapter whose every element equals `value`: easy to recognise in a pool slot.
inline Adapter constant_adapter(float value, const std::vector<std::string>& methods =
                                                 {kStateOffset, kOutputOffset, kInitialState}) {
  Adapter a = zero_adapter(tiny_config(), tiny_fingerprint(), methods);
  if (a.state_offset.defined()) a.state_offset.fill_(value);
  if (a.output_offset.defined()) a.output_offset.fill_(value);
  if (a.initial_state.defined()) a.initial_state.fill_(value * 2);
  a.name = "const";
  a.version = "1";
  return a;
}

// A fresh empty folder under the build tree, unique per test.
inline std::filesystem::path fresh_dir(const std::string& name) {
  static std::atomic<int> counter{0};
  const auto dir = std::filesystem::path(STATETUNE_BINARY_DIR) / "test-tmp" / "adapters" /
                   (name + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace statetune::engine::testing
