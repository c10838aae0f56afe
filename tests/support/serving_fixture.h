// What the statetune-serve integration tests share: a tiny random model with a few adapters for it and
// a tenants file (acme, beta and an admin key), the real statetune-serve binary started on loopback
// ports, and reading a metric out of its /metrics text.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "server/engine/adapters/adapter.h"
#include "server/engine/model/mamba_model.h"
#include "server/engine/model/model_init.h"
#include "server/engine/util/sha256.h"
#include "tests/support/loopback_http.h"
#include "tests/support/service_process.h"

namespace statetune::test_support {

inline const char* kAcmeKey = "acme-secret-key";
inline const char* kBetaKey = "beta-secret-key";
inline const char* kAdminKey = "admin-secret-key";

// Sum of a metric's samples whose label set contains every `needle` (e.g. tenant="acme").
inline double metric_value(const std::string& text, const std::string& name,
                           const std::vector<std::string>& needles = {}) {
  std::istringstream in(text);
  std::string line;
  double total = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line.compare(0, name.size(), name) != 0) continue;
    const char next = line.size() > name.size() ? line[name.size()] : ' ';
    if (next != ' ' && next != '{') continue;
    bool ok = true;
    for (const auto& n : needles) ok = ok && line.find(n) != std::string::npos;
    if (ok) total += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return total;
}

// Writes into `work`: model/ (a tiny random Mamba with the GPT-NeoX vocabulary), tenants.json (acme and
// beta with kAcmeKey / kBetaKey, and kAdminKey), and returns the bytes of `adapters` random adapter
// files for that model (state_offset + output_offset, seeds 10, 11, ...).
// The tiny random Mamba both services' integration tests run on (GPT-NeoX vocabulary, so the shipped
// tokenizer fits it).
inline engine::MambaConfig tiny_service_model_config() {
  engine::MambaConfig c;
  c.d_model = 64;
  c.n_layer = 2;
  c.vocab_size = 50280;
  c.d_state = 16;
  c.expand = 2;
  c.d_inner = 128;
  c.d_conv = 4;
  c.dt_rank = 4;
  return c;
}

inline std::vector<std::string> write_serving_files(const std::filesystem::path& work, int adapters) {
  std::filesystem::create_directories(work);
  engine::write_random_checkpoint(work / "model", tiny_service_model_config(), 77);
  auto model = engine::MambaModel::load(work / "model", engine::LoadOptions{});
  std::vector<std::string> files;
  for (int i = 0; i < adapters; ++i) {
    engine::Adapter a = engine::random_adapter(model->config(), model->fingerprint(),
                                               {engine::kStateOffset, engine::kOutputOffset}, 10 + i, 0.5);
    const std::filesystem::path p = work / ("adapter" + std::to_string(i) + ".safetensors");
    engine::save_adapter(a, p);
    files.push_back(slurp(p));
  }
  nlohmann::json tenants = {
      {"admin_key_sha256", engine::Sha256::hex(kAdminKey)},
      {"tenants",
       {{{"name", "acme"}, {"api_keys_sha256", {engine::Sha256::hex(kAcmeKey)}}},
        {{"name", "beta"}, {"api_keys_sha256", {engine::Sha256::hex(kBetaKey)}}}}}};
  std::ofstream(work / "tenants.json") << tenants.dump(2);
  return files;
}

// statetune-serve from this build, started and waited on until its health says SERVING.
class ServingProcess : public ServiceProcess {
 public:
  ServingProcess() : ServiceProcess(std::string(STATETUNE_BINARY_DIR) + "/server/serving/statetune-serve", "server") {}
  void start(const std::filesystem::path& work, const std::vector<std::string>& flags,
             const std::filesystem::path& tls_ca = {}) {
    ServiceProcess::start(work, flags, tls_ca, std::chrono::seconds(60));
    if (!::testing::Test::HasFatalFailure()) wait_serving();
  }
};

}  // namespace statetune::test_support
