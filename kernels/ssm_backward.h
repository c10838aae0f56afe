// Backward of the selective scan and of the causal conv1d (kernels/ssm_kernels.h, prefill without
// resume), for training adapters: the base model is frozen, but the gradients w.r.t. the scan's
// inputs (x, delta, B, C, z) are needed to reach the adapters of earlier layers, so all of them are
// computed.
//
// The forward, per row b and channel d (t < lengths[b]; padding does not advance the state):
//   delta_t = softplus(delta_in_t + delta_bias)        (PyTorch softplus, threshold 20)
//   h_0     = initial_state[slot] (or 0)
//   h_t     = exp(delta_t*A) * h_{t-1} + delta_t * Bm_t * x_t
//   y_t     = Cm_t . (h_t + state_offset[slot]) + Dskip*x_t + output_offset[slot]
//   out_t   = y_t * silu(z_t)
// Memory: no [B, L, D, N] states are kept. Per (row, block of channels) a forward pass stores the
// state every `chunk` steps; the reverse pass then recomputes each chunk's states from its checkpoint
// and runs the adjoint recurrence backwards through the chunk. Extra memory: O(B*D*N + B*L*N).
// The un-namespaced functions dispatch on x (kernels/dispatch.cpp): CUDA tensors with fp32 / bf16
// activations go to the CUDA backward (kernels/cuda), everything else to cpu:: (the CUDA workspace
// holds B*(L/chunk + chunk)*N*D floats of checkpoints instead).
#pragma once

#include <ATen/ATen.h>

#include "kernels/ssm_kernels.h"

namespace statetune::kernels {

// Gradients of the scan. A gradient is undefined where its input was undefined (an absent adapter
// kind, no Dskip / delta_bias) or was not asked for (dA unless need_dA). Adapter gradients have the
// shape of the slot tensors [S, D, N] / [S, D] and hold the sum over the rows that read each slot.
// Activation gradients have the activations' dtype; the others have their input's dtype.
struct ScanGrads {
  at::Tensor dx, ddelta_in, dz;    // [B, L, D], zero at padding positions
  at::Tensor dBm, dCm;             // [B, L, N], zero at padding positions
  at::Tensor ddelta_bias, dDskip;  // [D]
  at::Tensor dA;                   // [D, N]
  at::Tensor dstate_offset;        // [S, D, N]
  at::Tensor doutput_offset;       // [S, D]
  at::Tensor dinitial_state;       // [S, D, N]
};

struct ScanBackwardOptions {
  bool need_dA = false;  // the base A is frozen; its gradient costs a [B, D, N] buffer and a reduction
  int64_t chunk = 64;    // time steps between state checkpoints
};

// Inputs as for selective_scan_prefill (resume = false); grad_out: [B, L, D], the gradient of `out`.
// fp32 and bf16 activations compute in fp32; fp64 inputs compute in fp64 (for gradient checks).
ScanGrads selective_scan_backward(const ScanArgs& args, const at::Tensor& grad_out,
                                  const ScanBackwardOptions& options = {});

// Backward of causal_conv1d_prefill (resume = false: the inputs before t = 0 are zeros):
//   pre[b,t,d] = bias[d] + sum_{k<K} weight[d,k] * x[b, t-(K-1)+k, d];   out = silu(pre), 0 at padding.
// dx is what training needs (the conv weights are frozen); dweight / dbias only when asked for.
struct ConvGrads {
  at::Tensor dx;       // [B, L, D], x's dtype; zero at padding positions
  at::Tensor dweight;  // [D, K], weight's dtype (need_weight_grads)
  at::Tensor dbias;    // [D], bias's dtype (need_weight_grads and bias defined)
};
ConvGrads causal_conv1d_backward(const at::Tensor& x, const at::Tensor& weight,
                                 const at::Tensor& bias, const at::Tensor& lengths,
                                 const at::Tensor& grad_out, bool need_weight_grads = false);

namespace cpu {
ConvGrads causal_conv1d_backward(const at::Tensor& x, const at::Tensor& weight,
                                 const at::Tensor& bias, const at::Tensor& lengths,
                                 const at::Tensor& grad_out, bool need_weight_grads);
// scan: CheckedScan::backward(args, grad_out).
ScanGrads selective_scan_backward(const CheckedScan& scan, const at::Tensor& grad_out,
                                  const ScanBackwardOptions& options);
}  // namespace cpu

}  // namespace statetune::kernels
