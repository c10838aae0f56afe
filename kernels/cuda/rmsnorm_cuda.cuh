// Raw-pointer CUDA RMSNorm (the contract is kernels/rmsnorm.h). Plain C++ like ssm_cuda.cuh, whose
// conventions it follows: device pointers, strides in elements, the launcher only enqueues work on
// `stream` and returns cudaSuccess, cudaErrorInvalidValue for parameters it does not support
// (checked before any launch) or the launch's own error (cudaPeekAtLastError).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/ssm_cuda.cuh"

namespace statetune::kernels::cuda_raw {

// Threads per block (one block per row): a power of two (the block reduction halves it), about
// four elements per thread, from one warp up to kRmsNormMaxThreads. Plain arithmetic, so tests can
// say which block a width gets: 64 or 100 -> 32 threads, 2560 / 5120 -> 256 (eight warps).
inline constexpr int kRmsNormMaxThreads = 256;
inline int rmsnorm_threads_for(int64_t dim) {
  int threads = 32;
  while (threads < kRmsNormMaxThreads && threads * 4LL < dim) threads *= 2;
  return threads;
}

struct RmsNormParams {
  DType out_dtype = DType::kFloat32;
  int64_t rows = 0;  // T, at most 2^31 - 1 (grid.x)
  int64_t dim = 0;   // M
  float eps = 0.f;
  const float* x = nullptr;  // [T, M], rows contiguous
  int64_t x_row_stride = 0;
  const float* weight = nullptr;  // [M] contiguous
  void* out = nullptr;            // [T, M] in out_dtype, rows contiguous; may equal x (fp32)
  int64_t out_row_stride = 0;
};

// out[r] = x[r] * rsqrt(mean(x[r]^2) + eps) * weight, accumulated in fp32.
cudaError_t rmsnorm(const RmsNormParams& p, cudaStream_t stream);

}  // namespace statetune::kernels::cuda_raw
