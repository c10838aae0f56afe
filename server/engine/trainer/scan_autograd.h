// The selective scan and the causal conv1d as differentiable ops for adapter training. The scan: the forward is the inference kernel
// (kernels::selective_scan_prefill, no resume), the backward is kernels::selective_scan_backward,
// which recomputes states chunk by chunk instead of keeping [B, L, D, N] of them. The conv: the
// inference kernel and kernels::causal_conv1d_backward.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "kernels/ssm_kernels.h"

namespace statetune::engine::trainer {

struct ScanAutogradOptions {
  int64_t chunk = 64;  // time steps between the backward's state checkpoints
};

// out = selective_scan_prefill(args, ...) with gradients flowing to every floating input that
// requires them: x, delta_in, delta_bias, A, Bm, Cm, Dskip, z and the adapter tensors in
// args.adapters (state_offset [S, D, N], output_offset [S, D], initial_state [S, D, N]; gradients
// summed over the rows that read each slot). Any of delta_bias, Dskip and the adapter tensors may be
// undefined. args.lengths: [B] int64 (right padding; padding positions output 0 and get zero
// gradients). Activations fp32 or bf16 (computed in fp32, as the kernels' contract says); for fp64
// gradient checks call kernels::selective_scan_backward directly.
at::Tensor selective_scan(const kernels::ScanArgs& args, const ScanAutogradOptions& options = {});

// out = causal_conv1d_prefill(x, ...) (SiLU included, no resume: zeros before t = 0) with
// gradients for x and, where they require them, weight [D, K] and bias [D] (undefined bias: none).
// lengths: [B] int64; padding positions output 0 and get zero gradients. x: fp32 or bf16.
at::Tensor causal_conv1d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                         const at::Tensor& lengths);

}  // namespace statetune::engine::trainer
