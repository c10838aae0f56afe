// RMSNorm, the pre-norm of every Mamba layer and the final norm before the output head:
//   out[r] = x[r] * rsqrt(mean(x[r]^2) + eps) * weight        (computed in fp32)
// Like the scan and conv kernels (kernels/ssm_kernels.h), one interface with three implementations:
//   ref::   plain LibTorch ops: the definition the backends are tested against;
//   cpu     a row loop threaded over rows (kernels/rmsnorm.cpp);
//   cuda    one block per row (kernels/cuda/rmsnorm.cu): one launch instead of the ~5 ATen ops
//           (and their temporaries) the formula costs as tensor ops, twice per layer per token.
// The un-namespaced function checks its arguments once and dispatches on the device of `x`.
#pragma once

#include <ATen/ATen.h>

namespace statetune::kernels {

// x: [T, M] fp32; weight: [M] fp32, contiguous; out: [T, M] fp32 or bf16, allocated by the caller
// (it is written, never resized, so a workspace tensor can be reused). All on one device. x and out
// may be row-strided views (any stride between rows) but each row must be contiguous. out may be x
// itself (fp32): a row is read in full before it is written; any other overlap is rejected.
// Throws c10::Error (TORCH_CHECK) naming the argument that does not fit.
void rmsnorm(const at::Tensor& x, const at::Tensor& weight, double eps, at::Tensor& out);

// The checks `rmsnorm` makes before dispatching, for tests that call a backend directly.
void check_rmsnorm_args(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out);

namespace ref {
// Any shapes and layouts that broadcast; out takes the result in its own dtype.
void rmsnorm(const at::Tensor& x, const at::Tensor& weight, double eps, at::Tensor& out);
}  // namespace ref

namespace cpu {
// Arguments as checked by check_rmsnorm_args, on the CPU.
void rmsnorm(const at::Tensor& x, const at::Tensor& weight, double eps, at::Tensor& out);
}  // namespace cpu

}  // namespace statetune::kernels
