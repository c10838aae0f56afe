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

// Whether a batch row's cache row / adapter slot lies inside what the launcher was told exists.
// The host validates indices where it builds them; this is the last line that keeps an unchecked
// index from touching memory of another sequence or tenant.
__device__ __forceinline__ bool index_ok(int64_t i, int64_t count) { return i >= 0 && i < count; }

// The same for the current device. A failed device query is returned (not cleared: clearing would
// hide it from whoever owns it), and the launcher reports it instead of launching.
inline cudaError_t pick_threads(int batch, int dim, int max_threads, int* threads) {
  int device = 0, sms = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e != cudaSuccess) return e;
  *threads = block_threads_for(batch, dim, max_threads, sms);
  return cudaSuccess;
}

// The status of the launch just made. Launch configurations are checked before launching (block
// size, grid limits, shared memory), so what this reports is a real launch failure (no kernel
// image for the device, a sticky error of the context). Peek, not Get: an error is not cleared
// from under whoever else should see it.
inline cudaError_t launch_status() { return cudaPeekAtLastError(); }

}  // namespace statetune::kernels::cuda_raw::detail
