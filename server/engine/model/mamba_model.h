// Mamba-1 (Hugging Face `MambaForCausalLM`) inference in LibTorch: checkpoint loading, batched prefill
// of right-padded prompts and a one-token decode step over a per-sequence state cache, with per-row
// adapters from the slot pool. Free of gRPC; one MambaModel is driven by one thread at a time (it keeps
// reusable workspaces), while the weights are read-only and may be shared.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "server/engine/model/adapter_pool_view.h"
#include "server/engine/model/layer_weights.h"
#include "server/engine/model/model_config.h"

namespace statetune::engine {

struct LoadOptions {
  at::Device device = at::kCPU;
  // Compute dtype of the weights: kFloat or kBFloat16. A, D, biases of the scan and all states stay fp32.
  at::ScalarType dtype = at::kFloat;
};

// The recurrent state of up to `capacity` sequences (one cache row each). Prefill with resume=false
// (re)initialises a row, so rows need no clearing between sequences.
// `scratch_rows` more rows follow the sequences' ones (rows capacity .. capacity + scratch_rows - 1):
// the padding rows of a bucketed decode step write there (BucketedDecoder), never into a sequence's
// row. Callers' row indices are checked against capacity(), so no request can name a scratch row.
class StateCache {
 public:
  StateCache(const MambaConfig& config, int64_t capacity, at::Device device, int64_t scratch_rows = 0);
  int64_t capacity() const { return capacity_; }
  int64_t scratch_rows() const { return ssm.size(1) - capacity_; }
  // Bytes of state one sequence costs (conv + ssm, all layers).
  static int64_t bytes_per_sequence(const MambaConfig& config);

  at::Tensor conv;  // [n_layer, C, D, K-1] fp32, C = capacity + scratch rows
  at::Tensor ssm;   // [n_layer, C, D, N] fp32

 private:
  int64_t capacity_ = 0;
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

  // What decode() checks of its inputs (throws std::invalid_argument naming the problem): tokens
  // [B] int64 with ids in [0, V) (checked when on the CPU), rows [B] int64 in [0, cache.capacity())
  // and unique, slots undefined or [B] in the adapter pool (values checked when on the CPU).
  void check_decode_inputs(const at::Tensor& tokens, const at::Tensor& rows, const at::Tensor& slots,
                           const AdapterPoolView& adapters, const StateCache& cache) const;

  // The reusable buffers of one forward. decode() and prefill() use the model's own; a caller that
  // keeps tensors' addresses fixed across calls (a captured CUDA graph) owns one per batch size.
  struct Workspace;
  static std::shared_ptr<Workspace> new_workspace();

  // The decode step alone, on buffers the caller owns: what a CUDA graph captures (BucketedDecoder).
  // tokens, rows: [B] int64, slots: [B] int32 (slot 0 = the base model), logits: [B, V] fp32, all
  // already on the model's device. Nothing is checked or copied from the host and nothing is
  // synchronised; once `ws` has run at this B, nothing is allocated, so every tensor read or written
  // keeps its address from call to call. The caller guarantees what decode() checks: token ids in
  // [0, V), rows in the cache and unique, slots in the pool.
  void decode_into(const at::Tensor& tokens, const at::Tensor& rows, const at::Tensor& slots,
                   const AdapterPoolView& adapters, StateCache& cache, Workspace& ws,
                   at::Tensor& logits);

  // Read-only views of the loaded weights (shared storage, never copies), for code that recomputes
  // the same forward with other ops (the adapter trainer's differentiable forward). Keys:
  //   "embedding" [V, M], "lm_head" [V, M] (the embedding when tied), "norm_f" [M] fp32, and per layer
  //   "layers.{i}.X" for X in norm [M] fp32, in_x / in_z [D, M] (the halves of in_proj), conv_w [D, K]
  //   fp32, x_dt [R, D] / x_B [N, D] / x_C [N, D] (the parts of x_proj), dt_w [D, R], dt_b [D] fp32,
  //   A [D, N] fp32 (= -exp(A_log)), Dskip [D] fp32, out_w [M, D], and when the config has them
  //   conv_b [D] fp32, in_x_b / in_z_b [D], out_b [M]. Unmarked tensors are in the compute dtype.
  // Callers must not write into them.
  std::map<std::string, at::Tensor> weight_views() const;
  // Layer i's loaded weights (read-only, shared storage), as split_layer_weights made them.
  const LayerWeights& layer_weights(int64_t i) const;

  ~MambaModel();

 private:
  MambaModel() = default;
  struct Weights;
  struct LayerBatch;
  // The parts of a forward that prefill and decode share: the embedding lookup into the fp32
  // residual stream, and one Mamba layer (norm, in_proj, conv, x_proj, dt_proj, scan, out_proj,
  // residual add) over the batch's tokens.
  at::Tensor& embed(const at::Tensor& tokens, Workspace& ws);
  void mamba_layer(int64_t i, const LayerBatch& batch, Workspace& ws, at::Tensor& hidden);
  MambaConfig config_;
  ModelFingerprint fingerprint_;
  LoadOptions options_;
  std::unique_ptr<Weights> weights_;
  std::shared_ptr<Workspace> workspace_;
};

}  // namespace statetune::engine
