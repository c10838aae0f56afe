// A tiny random Mamba checkpoint with the GPT-NeoX vocabulary and a tenants file, written for the
// integration tests that start real services (fast to load and to train on two CPU cores).
#pragma once

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "server/engine/model/model_init.h"
#include "server/engine/util/sha256.h"

namespace statetune::test_support {

inline void write_tiny_model(const std::filesystem::path& dir, int64_t d_model, int64_t n_layer,
                             uint64_t seed) {
  engine::MambaConfig c;
  c.d_model = d_model;
  c.n_layer = n_layer;
  c.vocab_size = 50280;
  c.d_state = 16;
  c.expand = 2;
  c.d_inner = 2 * d_model;
  c.d_conv = 4;
  c.dt_rank = (d_model + 15) / 16;
  engine::write_random_checkpoint(dir, c, seed);
}

// The tenants file both services read: the admin key and each tenant's one key, stored hashed.
inline void write_tenants_file(const std::filesystem::path& file, const std::string& admin_key,
                               const std::vector<std::pair<std::string, std::string>>& tenant_keys) {
  nlohmann::json tenants = nlohmann::json::array();
  for (const auto& [name, key] : tenant_keys) {
    tenants.push_back({{"name", name}, {"api_keys_sha256", {engine::Sha256::hex(key)}}});
  }
  std::ofstream(file) << nlohmann::json({{"admin_key_sha256", engine::Sha256::hex(admin_key)},
                                         {"tenants", tenants}})
                             .dump(2);
}

}  // namespace statetune::test_support
