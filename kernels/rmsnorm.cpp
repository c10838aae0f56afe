// RMSNorm: the argument checks, the device dispatch and the CPU backend (kernels/rmsnorm.h).
// The CPU loop is compiled with the project's ordinary flags, not per CPU level like the scan and
// conv kernels: it is a small share of a layer's time, and this way its results stay bit for bit
// what the model computed before the loop moved here (no FMA contraction on v3/v4).
#include "kernels/rmsnorm.h"

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>

#include <cmath>

#ifdef STATETUNE_WITH_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace statetune::kernels {
namespace {

// The innermost dimension is contiguous (a dimension of size <= 1 has no layout to get wrong).
bool unit_inner_stride(const at::Tensor& t) { return t.size(-1) <= 1 || t.stride(-1) == 1; }

}  // namespace

void check_rmsnorm_args(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& out) {
  TORCH_CHECK(x.defined() && weight.defined() && out.defined(),
              "statetune rmsnorm: x, weight and out are required");
  TORCH_CHECK(x.dim() == 2, "statetune rmsnorm: x must be [T, M], got shape ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat, "statetune rmsnorm: x must be float32, got ",
              x.scalar_type());
  TORCH_CHECK(unit_inner_stride(x), "statetune rmsnorm: the rows of x must be contiguous, got strides ",
              x.strides());
  const int64_t M = x.size(1);
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == M, "statetune rmsnorm: weight has shape ",
              weight.sizes(), ", expected [", M, "] (x is ", x.sizes(), ")");
  TORCH_CHECK(weight.scalar_type() == at::kFloat, "statetune rmsnorm: weight must be float32, got ",
              weight.scalar_type());
  TORCH_CHECK(unit_inner_stride(weight), "statetune rmsnorm: weight must be contiguous, got stride ",
              weight.strides());
  TORCH_CHECK(out.sizes() == x.sizes(), "statetune rmsnorm: out has shape ", out.sizes(),
              ", expected x's ", x.sizes());
  TORCH_CHECK(out.scalar_type() == at::kFloat || out.scalar_type() == at::kBFloat16,
              "statetune rmsnorm: out must be float32 or bfloat16, got ", out.scalar_type());
  TORCH_CHECK(unit_inner_stride(out),
              "statetune rmsnorm: the rows of out must be contiguous, got strides ", out.strides());
  TORCH_CHECK(weight.device() == x.device() && out.device() == x.device(),
              "statetune rmsnorm: x, weight and out must be on one device, got ", x.device(), ", ",
              weight.device(), " and ", out.device());
  // Each row is read in full before it is written, so out == x works; a shifted view does not.
  TORCH_CHECK(at::has_internal_overlap(out) != at::MemOverlap::Yes,
              "statetune rmsnorm: out has elements that share memory (e.g. an expanded tensor)");
  TORCH_CHECK(at::get_overlap_status(out, x) != at::MemOverlapStatus::Partial,
              "statetune rmsnorm: out partly overlaps x (it may be x itself, not a shifted view)");
}

void rmsnorm(const at::Tensor& x, const at::Tensor& weight, double eps, at::Tensor& out) {
  check_rmsnorm_args(x, weight, out);
  if (x.device().is_cpu()) return cpu::rmsnorm(x, weight, eps, out);
#ifdef STATETUNE_WITH_CUDA
  if (x.device().is_cuda()) return cuda::rmsnorm(x, weight, eps, out);
#endif
  TORCH_CHECK(false, "statetune rmsnorm: no backend for tensors on ", x.device(),
#ifdef STATETUNE_WITH_CUDA
              " (built with CPU and CUDA kernels)"
#else
              " (built without the CUDA kernels: configure with a CUDA LibTorch and nvcc)"
#endif
  );
}

namespace cpu {
namespace {

template <typename Out>
void rmsnorm_rows(const float* x, int64_t x_stride, const float* w, Out* out, int64_t out_stride,
                  int64_t rows, int64_t M, double eps) {
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = x + r * x_stride;
      Out* o = out + r * out_stride;
      float ss = 0.f;
      for (int64_t i = 0; i < M; ++i) ss += xr[i] * xr[i];
      const float scale = 1.f / std::sqrt(ss / static_cast<float>(M) + static_cast<float>(eps));
      for (int64_t i = 0; i < M; ++i) o[i] = static_cast<Out>(xr[i] * scale * w[i]);
    }
  });
}

}  // namespace

void rmsnorm(const at::Tensor& x, const at::Tensor& weight, double eps, at::Tensor& out) {
  const int64_t T = x.size(0), M = x.size(1);
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  if (out.scalar_type() == at::kFloat) {
    rmsnorm_rows(xp, x.stride(0), wp, out.data_ptr<float>(), out.stride(0), T, M, eps);
  } else {
    rmsnorm_rows(xp, x.stride(0), wp, out.data_ptr<at::BFloat16>(), out.stride(0), T, M, eps);
  }
}

}  // namespace cpu
}  // namespace statetune::kernels
