// A differentiable forward of a frozen Mamba-1 base for adapter training: the same math as
// MambaModel::prefill (docs/adapter-math.md), written with LibTorch ops plus the
// autograd scan and conv (scan_autograd.h), so a loss on the logits back-propagates into the adapter
// tensors. The base weights are views of the loaded MambaModel (no copy) and never require grad;
// only the adapter tensors are autograd leaves.
//
// One adapter is trained at a time, so the slot machinery of inference is not needed: every row reads
// "slot 0" of a one-slot view of the trainable tensors.
//
// Full-parameter mode (pretraining, full fine-tuning): constructed from Hugging Face-named weight
// tensors that are themselves autograd leaves; every forward derives the per-layer pieces (the halves
// of in_proj, the parts of x_proj, A = -exp(A_log)) from them afresh, so gradients reach every weight.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "server/engine/model/mamba_model.h"

namespace statetune::engine::trainer {

// The trainable tensors of one adapter (fp32, on the model's device). Any may be undefined (that
// method is not trained).
struct AdapterTensors {
  at::Tensor state_offset;   // [n_layer, D, N]
  at::Tensor output_offset;  // [n_layer, D]
  at::Tensor initial_state;  // [n_layer, D, N]

  // The defined tensors, in canonical method order.
  std::vector<at::Tensor> defined() const;
};

class TrainableMamba {
 public:
  // Keeps views of `model`'s weights: the model must outlive this object.
  explicit TrainableMamba(const MambaModel& model, int64_t scan_chunk = 64);

  // Full-parameter mode. `weights`: fp32 tensors named as in random_weights / a HF checkpoint
  // (backbone.embeddings.weight, backbone.layers.i.mixer.in_proj.weight, ...; lm_head.weight only when
  // untied), usually leaves that require grad. The tensors are shared, not copied: an optimizer
  // updating them in place changes the next forward. Throws std::invalid_argument on a missing or
  // mis-shaped tensor.
  TrainableMamba(const MambaConfig& config, const std::map<std::string, at::Tensor>& weights,
                 int64_t scan_chunk = 64);

  const MambaConfig& config() const { return config_; }
  at::Device device() const { return device_; }
  at::ScalarType dtype() const { return dtype_; }

  // tokens: [B, L] int64 right-padded; lengths: [B] int64 on the CPU, each in [1, L].
  // Returns the final-normed hidden states [B, L, M] in the compute dtype (rows past a row's length
  // hold values that depend on nothing but the padding; callers ignore them).
  at::Tensor hidden(const at::Tensor& tokens, const at::Tensor& lengths,
                    const AdapterTensors& adapter) const;

  // lm_head on some hidden rows [P, M] -> fp32 logits [P, V].
  at::Tensor logits(const at::Tensor& hidden_rows) const;
  // The output layer [V, M] (the embedding when tied), for losses that fuse it (linear_cross_entropy.h).
  const at::Tensor& lm_head() const { return lm_head_; }

  // Convenience for tests: logits at every position, [B, L, V] fp32.
  at::Tensor forward(const at::Tensor& tokens, const at::Tensor& lengths,
                     const AdapterTensors& adapter) const;

 private:
  // Layer i's pieces: the frozen model's own (shared storage), or split afresh from hf_weights_ (full
  // mode, so gradients reach the leaves).
  LayerWeights layer(int64_t i) const;
  MambaConfig config_;
  at::Device device_ = at::kCPU;
  at::ScalarType dtype_ = at::kFloat;
  int64_t scan_chunk_;
  at::Tensor embedding_, lm_head_, norm_f_;
  std::vector<LayerWeights> layers_;                      // frozen mode
  std::map<std::string, at::Tensor> hf_weights_;   // full mode (empty otherwise)
};

}  // namespace statetune::engine::trainer
