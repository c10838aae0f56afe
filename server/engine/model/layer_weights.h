// One Mamba-1 layer's weights in the form the forward computes with, split from the Hugging Face
// tensors: in_proj into its x and z halves, x_proj into its dt / B / C parts, the conv weight as
// [D, K], and A = -exp(A_log). Inference (MambaModel::load) and training (TrainableMamba's
// full-parameter mode) both split with split_layer_weights, so the two forwards cannot disagree on
// what a checkpoint's tensor means.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "server/engine/model/model_config.h"

namespace statetune::engine {

// Shapes with M = d_model, D = d_inner, N = d_state, K = d_conv, R = dt_rank. "compute" tensors are
// in the model's compute dtype, "fp32" ones stay fp32 whatever it is (see WeightPrecision).
struct LayerWeights {
  at::Tensor norm;            // [M] fp32
  at::Tensor in_proj;         // [2D, M] compute: one GEMM gives x and z side by side
  at::Tensor in_proj_b;       // [2D] compute, or undefined (config.proj_bias)
  at::Tensor in_x, in_z;      // [D, M] compute (the two halves of in_proj)
  at::Tensor in_x_b, in_z_b;  // [D] compute, or undefined (config.proj_bias)
  at::Tensor conv_w, conv_b;  // [D, K] fp32, [D] fp32 or undefined (config.conv_bias)
  at::Tensor x_proj;          // [R + 2N, D] compute: one GEMM gives dt, B and C side by side
  at::Tensor x_dt, x_B, x_C;  // [R, D], [N, D], [N, D] compute (the three parts of x_proj)
  at::Tensor dt_w;            // [D, R] compute
  at::Tensor dt_b;            // [D] fp32 (the scan's delta_bias)
  at::Tensor A;               // [D, N] fp32 = -exp(A_log)
  at::Tensor Dskip;           // [D] fp32
  at::Tensor out_w, out_b;    // [M, D] compute, [M] compute or undefined (config.proj_bias)
};

enum class WeightPrecision { kCompute, kFp32 };

// fetch(name, shape, precision) returns the checkpoint tensor `name` (Hugging Face naming) with that
// shape, or throws naming what is wrong: the caller decides where tensors come from (a safetensors
// file, autograd leaves) and what a precision means to it.
using LayerWeightFetch =
    std::function<at::Tensor(const std::string& name, const std::vector<int64_t>& shape, WeightPrecision)>;

// Layer `layer`'s tensors, fetched as backbone.layers.{layer}.* and split. The halves and parts are
// views of the fetched tensors (no copy), so gradients reach the fetched tensor when it is a leaf.
LayerWeights split_layer_weights(const MambaConfig& config, int64_t layer, const LayerWeightFetch& fetch);

}  // namespace statetune::engine
