#include "server/engine/model/model_init.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <stdexcept>

#include "server/engine/util/durable_file.h"
#include "server/engine/util/safetensors.h"

namespace statetune::engine {

std::map<std::string, at::Tensor> random_weights(const MambaConfig& c, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const int64_t M = c.d_model, D = c.d_inner, N = c.d_state, R = c.dt_rank, K = c.d_conv;
  auto normal = [&](std::vector<int64_t> shape, double std) {
    at::Tensor t = at::empty(shape, f32);
    t.normal_(0.0, std, gen);
    return t;
  };
  auto uniform = [&](std::vector<int64_t> shape, double lo, double hi) {
    at::Tensor t = at::empty(shape, f32);
    t.uniform_(lo, hi, gen);
    return t;
  };
  std::map<std::string, at::Tensor> w;
  w["backbone.embeddings.weight"] = normal({c.vocab_size, M}, 0.02);
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string p = "backbone.layers." + std::to_string(i) + ".";
    w[p + "norm.weight"] = at::ones({M}, f32);
    w[p + "mixer.in_proj.weight"] = normal({2 * D, M}, 0.02);
    if (c.proj_bias) w[p + "mixer.in_proj.bias"] = at::zeros({2 * D}, f32);
    const double conv_bound = 1.0 / std::sqrt(static_cast<double>(K));
    w[p + "mixer.conv1d.weight"] = uniform({D, 1, K}, -conv_bound, conv_bound);
    if (c.conv_bias) w[p + "mixer.conv1d.bias"] = uniform({D}, -conv_bound, conv_bound);
    w[p + "mixer.x_proj.weight"] = normal({R + 2 * N, D}, 0.02);
    const double dt_std = 1.0 / std::sqrt(static_cast<double>(R));
    w[p + "mixer.dt_proj.weight"] = uniform({D, R}, -dt_std, dt_std);
    // dt log-uniform in [dt_min, dt_max], floored at 1e-4; the bias is its inverse softplus.
    at::Tensor dt = uniform({D}, std::log(1e-3), std::log(1e-1)).exp().clamp_min(1e-4);
    w[p + "mixer.dt_proj.bias"] = dt + at::log(-at::expm1(-dt));
    w[p + "mixer.A_log"] = at::log(at::arange(1, N + 1, f32)).unsqueeze(0).expand({D, N}).contiguous();
    w[p + "mixer.D"] = at::ones({D}, f32);
    w[p + "mixer.out_proj.weight"] = normal({M, D}, 0.02 / std::sqrt(static_cast<double>(c.n_layer)));
    if (c.proj_bias) w[p + "mixer.out_proj.bias"] = at::zeros({M}, f32);
  }
  w["backbone.norm_f.weight"] = at::ones({M}, f32);
  if (!c.tie_embeddings) w["lm_head.weight"] = normal({c.vocab_size, M}, 0.02);
  return w;
}

nlohmann::json to_mamba_ssm_json(const MambaConfig& c) {
  return {{"d_model", c.d_model},
          {"n_layer", c.n_layer},
          {"vocab_size", c.vocab_size},
          {"ssm_cfg",
           {{"d_state", c.d_state},
            {"d_conv", c.d_conv},
            {"expand", c.expand},
            {"dt_rank", c.dt_rank},
            {"conv_bias", c.conv_bias},
            {"bias", c.proj_bias}}},
          {"rms_norm", true},
          {"residual_in_fp32", true},
          {"fused_add_norm", true},
          {"norm_epsilon", c.norm_eps},
          {"pad_vocab_size_multiple", c.pad_vocab_size_multiple},
          {"tie_embeddings", c.tie_embeddings}};
}

void write_checkpoint(const std::filesystem::path& dir, const MambaConfig& config,
                      const std::map<std::string, at::Tensor>& weights, const CheckpointWriteOptions& options) {
  if (options.dtype != at::kFloat && options.dtype != at::kHalf && options.dtype != at::kBFloat16) {
    throw std::invalid_argument("write_checkpoint: dtype must be float, half or bfloat16");
  }
  if (options.shards < 1) throw std::invalid_argument("write_checkpoint: shards must be >= 1");
  std::filesystem::create_directories(dir);
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, t] : weights) {
    std::string n = name;
    if (options.mamba_ssm_layout && n == "backbone.embeddings.weight") n = "backbone.embedding.weight";
    out[n] = t.to(at::kCPU, options.dtype).contiguous();
  }
  const nlohmann::json cfg = options.mamba_ssm_layout ? to_mamba_ssm_json(config) : config.to_json();
  write_file_durably(dir / "config.json", cfg.dump(2) + "\n");
  if (options.shards == 1) {
    safetensors::write_file(dir / "model.safetensors", out, {{"format", "pt"}});
    return;
  }
  // Round-robin in name order: every shard gets tensors, and layers spread over files.
  const int n = options.shards;
  std::vector<std::map<std::string, at::Tensor>> parts(static_cast<size_t>(n));
  nlohmann::json weight_map = nlohmann::json::object();
  int i = 0;
  auto shard_name = [&](int k) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "model-%05d-of-%05d.safetensors", k + 1, n);
    return std::string(buf);
  };
  int64_t total = 0;
  for (const auto& [name, t] : out) {
    parts[static_cast<size_t>(i % n)][name] = t;
    weight_map[name] = shard_name(i % n);
    total += t.numel() * t.element_size();
    ++i;
  }
  for (int k = 0; k < n; ++k) {
    safetensors::write_file(dir / shard_name(k), parts[static_cast<size_t>(k)], {{"format", "pt"}});
  }
  const nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  write_file_durably(dir / "model.safetensors.index.json", index.dump(2) + "\n");
}

void write_random_checkpoint(const std::filesystem::path& dir, const MambaConfig& config, uint64_t seed,
                             at::ScalarType dtype) {
  CheckpointWriteOptions o;
  o.dtype = dtype;
  write_random_checkpoint(dir, config, seed, o);
}

void write_random_checkpoint(const std::filesystem::path& dir, const MambaConfig& config, uint64_t seed,
                             const CheckpointWriteOptions& options) {
  write_checkpoint(dir, config, random_weights(config, seed), options);
}

}  // namespace statetune::engine
