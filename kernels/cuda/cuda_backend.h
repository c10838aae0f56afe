// The CUDA backend of the kernel interface in kernels/ssm_kernels.h: the same four functions as
// ref:: and cpu::, for tensors on a CUDA device, the backward of kernels/ssm_backward.h
// (fp32 / bf16 activations; fp64 gradient checks stay on the CPU) and RMSNorm (kernels/rmsnorm.h).
// Built only against a CUDA LibTorch (STATETUNE_TORCH_HAS_CUDA); the kernels themselves live in
// kernels/cuda/ssm_cuda.cuh and rmsnorm_cuda.cuh.
// Work is enqueued on the current CUDA stream of x's device; nothing here synchronises.
#pragma once

#include <ATen/ATen.h>

#include "kernels/rmsnorm.h"
#include "kernels/ssm_backward.h"
#include "kernels/ssm_kernels.h"

namespace statetune::kernels::cuda {

void causal_conv1d_prefill(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                           const at::Tensor& lengths, LayerCache& cache, bool resume,
                           at::Tensor& out);
void causal_conv1d_step(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                        LayerCache& cache, at::Tensor& out);
void selective_scan_prefill(const CheckedScan& scan, LayerCache& cache, bool resume, at::Tensor& out);
void selective_scan_step(const CheckedScan& scan, LayerCache& cache, at::Tensor& out);

ScanGrads selective_scan_backward(const CheckedScan& scan, const at::Tensor& grad_out,
                                  const ScanBackwardOptions& options);
ConvGrads causal_conv1d_backward(const at::Tensor& x, const at::Tensor& weight,
                                 const at::Tensor& bias, const at::Tensor& lengths,
                                 const at::Tensor& grad_out, bool need_weight_grads);

// Arguments as checked by check_rmsnorm_args (kernels/rmsnorm.h).
void rmsnorm(const at::Tensor& x, const at::Tensor& weight, double eps, at::Tensor& out);

}  // namespace statetune::kernels::cuda
