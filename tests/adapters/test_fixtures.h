// Small model dimensions and helpers shared by the adapter suites.
#pragma once

#include <ATen/ATen.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

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

// A safetensors file taken apart into its tensors, so tests can damage one thing and put it back
// together (the layout is the public format: u64 header size, JSON header, packed data).
struct RawFile {
  struct Entry {
    std::string dtype;
    std::vector<int64_t> shape;
    std::string bytes;
  };
  nlohmann::json metadata;
  std::map<std::string, Entry> tensors;

  static RawFile parse(const std::string& file) {
    uint64_t n = 0;
    std::memcpy(&n, file.data(), 8);
    const auto header = nlohmann::json::parse(file.substr(8, n));
    const std::string data = file.substr(8 + n);
    RawFile out;
    for (const auto& [name, v] : header.items()) {
      if (name == "__metadata__") {
        out.metadata = v;
        continue;
      }
      const auto begin = v.at("data_offsets")[0].get<size_t>();
      const auto end = v.at("data_offsets")[1].get<size_t>();
      out.tensors[name] = {v.at("dtype"), v.at("shape").get<std::vector<int64_t>>(),
                           data.substr(begin, end - begin)};
    }
    return out;
  }

  std::string serialize() const {
    nlohmann::json header;
    header["__metadata__"] = metadata;
    std::string data;
    for (const auto& [name, e] : tensors) {
      header[name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {data.size(), data.size() + e.bytes.size()}}};
      data += e.bytes;
    }
    std::string h = header.dump();
    while (h.size() % 8 != 0) h += ' ';
    const uint64_t n = h.size();
    std::string out(8, '\0');
    std::memcpy(out.data(), &n, 8);
    return out + h + data;
  }
};

}  // namespace statetune::engine::testing
