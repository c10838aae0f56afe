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

constexpr int kWarpSize = 32;

// Sums v[0 .. V) over the 32 lanes of a warp (every lane must call it: the shuffles name the full
// warp). A butterfly in which each lane hands half of what it carries to its partner at every step
// (reduce-scatter): V/2 + V/4 + ... shuffles in all (31 for V = 32) instead of 5 per value, and the
// totals end up spread over the lanes, ready for one atomic per value from different lanes.
// On return lane l holds the totals of elements (l * V) / 32 + j in v[j], j < max(V / 32, 1);
// for V < 32, 32 / V neighbouring lanes hold the same total (warp_sum_writer picks one of them).
template <int V, int kStage = 0>
__device__ __forceinline__ void warp_reduce_scatter(float (&v)[V], unsigned lane) {
  static_assert(V >= 1 && (V & (V - 1)) == 0, "V must be a power of two");
  // Stages as template recursion, not a loop: every index below must be a compile-time constant,
  // or v goes to local memory.
  if constexpr (kStage < 5) {
    constexpr int kOffset = 16 >> kStage;
    constexpr int kCarried = V >> kStage;
    if constexpr (kCarried > 1) {
      constexpr int kHalf = kCarried / 2;
      const bool upper = (lane & kOffset) != 0;  // keeps elements [kHalf, kCarried), sends the rest
#pragma unroll
      for (int i = 0; i < kHalf; ++i) {
        const float send = upper ? v[i] : v[i + kHalf];
        const float keep = upper ? v[i + kHalf] : v[i];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, kOffset);
      }
    } else {  // one value left: an ordinary butterfly sum over the remaining lane bits
      v[0] += __shfl_xor_sync(0xffffffffu, v[0], kOffset);
    }
    warp_reduce_scatter<V, kStage + 1>(v, lane);
  }
}

// The values a lane holds after warp_reduce_scatter<V>, and whether it is the one lane that
// should write them.
template <int V>
constexpr int warp_sum_per_lane() {
  return V >= kWarpSize ? V / kWarpSize : 1;
}
template <int V>
__device__ __forceinline__ bool warp_sum_writer(unsigned lane) {
  if constexpr (V >= kWarpSize) {
    return true;
  } else {
    return lane % (kWarpSize / V) == 0;
  }
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
