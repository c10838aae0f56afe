// Mamba-1 (Hugging Face `MambaForCausalLM`) inference in LibTorch: checkpoint loading, batched prefill
// of right-padded prompts and a one-token decode step over a per-sequence state cache, with per-row
// adapters from the slot pool. Free of gRPC; one MambaModel is driven by one thread at a time (it keeps
// reusable workspaces), while the weights are read-only and may be shared.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "server/engine/model/adapter_pool_view.h"
#include "server/engine/model/model_config.h"

namespace statetune::engine {

struct LoadOptions {
  at::Device device = at::kCPU;
  // Compute dtype of the weights: kFloat or kBFloat16. A, D, biases of the scan and all states stay fp32.
  at::ScalarType dtype = at::kFloat;
};

// The recurrent state of up to `capacity` sequences (one cache row each). Prefill with resume=false
// (re)initialises a row, so rows need no clearing between sequences.
class StateCache {
 public:
  StateCache(const MambaConfig& config, int64_t capacity, at::Device device);
  int64_t capacity() const { return ssm.size(1); }
  // Bytes of state one sequence costs (conv + ssm, all layers).
  static int64_t bytes_per_sequence(const MambaConfig& config);

  at::Tensor conv;  // [n_layer, C, D, K-1] fp32
  at::Tensor ssm;   // [n_layer, C, D, N] fp32
};

class MambaModel {
 public:
  // Loads a Hugging Face checkpoint folder (config.json + model.safetensors or a sharded
  // model.safetensors.index.json). Throws std::runtime_error with a message naming the file and the
  // problem on anything malformed or missing.
  static std::unique_ptr<MambaModel> load(const std::filesystem::path& dir, const LoadOptions& options);

  const MambaConfig& config() const { return config_; }
  const ModelFingerprint& fingerprint() const { return fingerprint_; }
  at::Device device() const { return options_.device; }
  at::ScalarType dtype() const { return options_.dtype; }

  // tokens: [B, L] int64 right-padded; lengths: [B] int64 (CPU), each in [1, L];
  // rows: [B] int64 cache rows; slots: [B] int32 adapter slots (undefined = base model for all rows).
  // resume: continue each row from the state already in its cache row (chunked prefill, multi-turn).
  // Returns fp32 logits [B, V] at each row's last valid position, or [B, L, V] if all_positions.
  at::Tensor prefill(const at::Tensor& tokens, const at::Tensor& lengths, const at::Tensor& rows,
                     const at::Tensor& slots, const AdapterPoolView& adapters, StateCache& cache,
                     bool resume = false, bool all_positions = false);

  // One token per row. tokens: [B] int64; rows, slots as above. Returns fp32 logits [B, V].
  // logits_out: optional caller-owned buffer the logits are written into (resized only when its
  // shape or dtype differs), so a decode loop allocates nothing; the returned tensor is then *logits_out.
  at::Tensor decode(const at::Tensor& tokens, const at::Tensor& rows, const at::Tensor& slots,
                    const AdapterPoolView& adapters, StateCache& cache,
                    at::Tensor* logits_out = nullptr);

  ~MambaModel();

 private:
  MambaModel() = default;
  struct Weights;
  struct Workspace;
  MambaConfig config_;
  ModelFingerprint fingerprint_;
  LoadOptions options_;
  std::unique_ptr<Weights> weights_;
  std::unique_ptr<Workspace> workspace_;
};

}  // namespace statetune::engine
