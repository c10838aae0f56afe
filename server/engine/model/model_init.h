// Randomly initialised Mamba-1 checkpoints in the Hugging Face layout, for tests, benchmarks and
// `statetune-engine init-model`. The initialisation follows mamba_ssm's: A_log[d, n] = log(n + 1),
// D = 1, dt_proj.bias = softplus^-1(dt) with dt log-uniform in [1e-3, 1e-1], dt_proj.weight uniform in
// +-dt_rank^-0.5, Linear weights N(0, 0.02) (out_proj scaled by 1/sqrt(n_layer)), conv1d uniform in
// +-1/sqrt(d_conv), norms 1. Same config and seed give the same bytes.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

#include "server/engine/model/model_config.h"

namespace statetune::engine {

struct CheckpointWriteOptions {
  at::ScalarType dtype = at::kFloat;  // on disk: kFloat, kHalf or kBFloat16
  bool mamba_ssm_layout = false;      // mamba_ssm config.json dialect and backbone.embedding.weight
  int shards = 1;                     // > 1: model-0000i-of-0000n.safetensors + index.json
};

// The model's tensors in fp32, Hugging Face names (backbone.embeddings.weight, ...; lm_head.weight
// only when the config is untied).
std::map<std::string, at::Tensor> random_weights(const MambaConfig& config, uint64_t seed);

// Writes config.json and the weights (tensor names as in random_weights; converted to options.dtype,
// renamed for mamba_ssm_layout). Creates `dir` if needed. Throws std::runtime_error on I/O errors.
void write_checkpoint(const std::filesystem::path& dir, const MambaConfig& config,
                      const std::map<std::string, at::Tensor>& weights,
                      const CheckpointWriteOptions& options = {});

// random_weights + write_checkpoint.
void write_random_checkpoint(const std::filesystem::path& dir, const MambaConfig& config, uint64_t seed,
                             at::ScalarType dtype = at::kFloat);
void write_random_checkpoint(const std::filesystem::path& dir, const MambaConfig& config, uint64_t seed,
                             const CheckpointWriteOptions& options);

// config.json in the mamba_ssm dialect (d_model, n_layer, ssm_cfg, ...).
nlohmann::json to_mamba_ssm_json(const MambaConfig& config);

}  // namespace statetune::engine
