// Device helpers shared by the .cu files of kernels/cuda (device code: include from .cu only).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/ssm_cuda.cuh"

namespace statetune::kernels::cuda_raw::detail {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// A scalar of a tensor whose dtype is only known at run time (conv weight / bias): the branch is
// uniform across the grid, so it costs nothing measurable.
__device__ __forceinline__ float load_dyn(const void* p, DType dt, int64_t i) {
  return dt == DType::kBFloat16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i])
                                : static_cast<const float*>(p)[i];
}

// PyTorch's softplus (beta 1, threshold 20).
__device__ __forceinline__ float softplus(float v) { return v > 20.f ? v : log1pf(expf(v)); }

__device__ __forceinline__ float silu(float v) { return v / (1.f + expf(-v)); }

__device__ __forceinline__ int64_t clamp_length(const int64_t* lengths, int b, int seqlen) {
  if (lengths == nullptr) return seqlen;
  const int64_t len = lengths[b];
  return len < 0 ? 0 : (len > seqlen ? seqlen : len);
}

// Threads per block for kernels that give one thread to each (row, channel) and walk time
// sequentially: fewer than max_threads when the grid would otherwise leave SMs idle (small batch),
// since parallelism only comes from B x D. Host code.
inline int pick_threads(int batch, int dim, int max_threads) {
  int device = 0, sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    cudaGetLastError();  // do not leave a sticky-looking error for the launch check
    sms = 0;
  }
  int threads = max_threads;
  while (threads > 32) {
    const int64_t blocks = static_cast<int64_t>(batch) * ((dim + threads - 1) / threads);
    if (blocks >= 2LL * sms) break;
    threads /= 2;
  }
  return threads;
}

}  // namespace statetune::kernels::cuda_raw::detail
