// Helpers of the model suites: a tiny config, temp folders, an adapter pool, and an independent
// forward pass written straight from docs/adapter-math.md in float64 LibTorch ops.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "server/engine/model/adapter_pool_view.h"
#include "server/engine/model/mamba_model.h"
#include "server/engine/model/model_config.h"
#include "server/engine/model/model_init.h"
#include "server/engine/util/safetensors.h"

namespace statetune::engine::testing {

namespace fs = std::filesystem;

inline MambaConfig tiny_config(bool tied = true) {
  MambaConfig c;
  c.d_model = 16;
  c.n_layer = 2;
  c.vocab_size = 40;
  c.unpadded_vocab_size = 40;
  c.d_state = 4;
  c.expand = 2;
  c.d_inner = 32;
  c.d_conv = 4;
  c.dt_rank = 2;
  c.tie_embeddings = tied;
  return c;
}

inline fs::path fresh_dir(const std::string& name) {
  static std::atomic<int> counter{0};
  const fs::path dir = fs::path(STATETUNE_BINARY_DIR) / "test-tmp" / "model" /
                       (name + "-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

inline std::unique_ptr<MambaModel> load(const fs::path& dir, at::ScalarType dtype = at::kFloat) {
  LoadOptions o;
  o.dtype = dtype;
  return MambaModel::load(dir, o);
}

// max |got - want| relative to max |want|.
inline double rel_err(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor g = got.to(at::kDouble), w = want.to(at::kDouble);
  return (g - w).abs().max().item<double>() / std::max(1e-12, w.abs().max().item<double>());
}

// An adapter pool of S slots (slot 0 all zeros) holding the requested kinds with N(0, scale) values.
inline AdapterPoolView random_pool(const MambaConfig& c, int64_t S, bool so, bool oo, bool h0, uint64_t seed,
                                   double scale = 0.5) {
  at::manual_seed(seed);
  AdapterPoolView p;
  auto make = [&](std::vector<int64_t> shape) {
    at::Tensor t = at::randn(shape) * scale;
    t[0].zero_();
    return t;
  };
  if (so) p.state_offset = make({S, c.n_layer, c.d_inner, c.d_state});
  if (oo) p.output_offset = make({S, c.n_layer, c.d_inner});
  if (h0) p.initial_state = make({S, c.n_layer, c.d_inner, c.d_state});
  return p;
}

inline at::Tensor t64(std::vector<int64_t> v) { return at::tensor(v, at::kLong); }
inline at::Tensor t32(std::vector<int32_t> v) { return at::tensor(v, at::kInt); }

// The independent forward: one sequence, every position, float64, no batching, no caches.
// `slot` selects the adapter of `pool` (slot 0 or an empty pool: the base model). Returns [T, V].
inline at::Tensor reference_logits(const fs::path& dir, const std::vector<int64_t>& tokens,
                                   const AdapterPoolView& pool = {}, int64_t slot = 0) {
  std::ifstream in(dir / "config.json");
  const MambaConfig c = MambaConfig::from_json(nlohmann::json::parse(in));
  const auto ck = safetensors::Checkpoint::open(dir);
  auto W = [&](const std::string& name) { return ck.tensor(name, at::kDouble); };
  const std::string emb_name =
      ck.contains("backbone.embeddings.weight") ? "backbone.embeddings.weight" : "backbone.embedding.weight";
  const at::Tensor emb = W(emb_name);
  const int64_t T = static_cast<int64_t>(tokens.size());
  const int64_t D = c.d_inner, N = c.d_state, R = c.dt_rank, K = c.d_conv;
  auto rmsnorm = [&](const at::Tensor& x, const at::Tensor& w) {
    return x * at::rsqrt(x.pow(2).mean(-1, true) + c.norm_eps) * w;
  };
  at::Tensor h = emb.index_select(0, at::tensor(tokens, at::kLong));  // [T, M]
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string p = "backbone.layers." + std::to_string(i) + ".mixer.";
    const at::Tensor u = rmsnorm(h, W("backbone.layers." + std::to_string(i) + ".norm.weight"));
    at::Tensor xz = at::matmul(u, W(p + "in_proj.weight").t());
    if (c.proj_bias) xz = xz + W(p + "in_proj.bias");
    const at::Tensor x = xz.narrow(1, 0, D), z = xz.narrow(1, D, D);
    // Causal depthwise conv over zero history, then silu.
    const at::Tensor cw = W(p + "conv1d.weight").view({D, K});
    const at::Tensor xp = at::cat({at::zeros({K - 1, D}, x.options()), x}, 0);
    at::Tensor xc = at::zeros({T, D}, x.options());
    for (int64_t t = 0; t < T; ++t) {
      at::Tensor acc = (xp.narrow(0, t, K).t() * cw).sum(1);
      if (c.conv_bias) acc = acc + W(p + "conv1d.bias");
      xc[t] = at::silu(acc);
    }
    const at::Tensor dbc = at::matmul(xc, W(p + "x_proj.weight").t());
    const at::Tensor dt = dbc.narrow(1, 0, R), Bm = dbc.narrow(1, R, N), Cm = dbc.narrow(1, R + N, N);
    const at::Tensor delta = at::log1p(at::exp(at::matmul(dt, W(p + "dt_proj.weight").t()) + W(p + "dt_proj.bias")));
    const at::Tensor A = -at::exp(W(p + "A_log"));
    const at::Tensor Dskip = W(p + "D");
    at::Tensor hs = pool.initial_state.defined() ? pool.initial_state[slot][i].to(at::kDouble)
                                                 : at::zeros({D, N}, x.options());
    at::Tensor y = at::zeros({T, D}, x.options());
    for (int64_t t = 0; t < T; ++t) {
      hs = at::exp(delta[t].unsqueeze(1) * A) * hs + (delta[t] * xc[t]).unsqueeze(1) * Bm[t].unsqueeze(0);
      at::Tensor read = hs;
      if (pool.state_offset.defined()) read = read + pool.state_offset[slot][i].to(at::kDouble);
      at::Tensor yt = at::matmul(read, Cm[t]) + Dskip * xc[t];
      if (pool.output_offset.defined()) yt = yt + pool.output_offset[slot][i].to(at::kDouble);
      y[t] = yt;
    }
    at::Tensor o = at::matmul(y * at::silu(z), W(p + "out_proj.weight").t());
    if (c.proj_bias) o = o + W(p + "out_proj.bias");
    h = h + o;
  }
  const at::Tensor hf = rmsnorm(h, W("backbone.norm_f.weight"));
  const at::Tensor head = c.tie_embeddings ? emb : W("lm_head.weight");
  return at::matmul(hf, head.t());
}

}  // namespace statetune::engine::testing
