// RMSNorm, one block per row (kernels/cuda/rmsnorm_cuda.cuh).
//
// Each thread sums the squares of a strided share of the row (coalesced: neighbouring threads read
// neighbouring elements), the block adds the partial sums up in shared memory with a halving tree
// and __syncthreads, and every thread then scales its own elements. Warp shuffles would save the
// last five rounds of the tree; the tree keeps the kernel runnable in the CPU emulation of the
// tests and costs little next to the row's two passes over global memory.
// A thread writes out[i] only for the i it read itself, after the barrier every read of the first
// pass is behind, so out may be x itself.
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/rmsnorm_cuda.cuh"

namespace statetune::kernels::cuda_raw {
namespace {

using detail::from_float;

template <typename T>
__global__ void __launch_bounds__(kRmsNormMaxThreads) rmsnorm_kernel(const RmsNormParams p) {
  extern __shared__ float partial[];  // [blockDim.x]
  const int tid = threadIdx.x;
  const int threads = blockDim.x;
  const float* xr = p.x + static_cast<int64_t>(blockIdx.x) * p.x_row_stride;
  T* o = static_cast<T*>(p.out) + static_cast<int64_t>(blockIdx.x) * p.out_row_stride;

  float ss = 0.f;
  for (int64_t i = tid; i < p.dim; i += threads) {
    const float v = xr[i];
    ss += v * v;
  }
  partial[tid] = ss;
  __syncthreads();
  for (int half = threads / 2; half > 0; half /= 2) {
    if (tid < half) partial[tid] += partial[tid + half];
    __syncthreads();
  }
  // sqrtf and the division are IEEE-rounded (no fast math), like the CPU loop's 1 / std::sqrt.
  const float scale = 1.f / sqrtf(partial[0] / static_cast<float>(p.dim) + p.eps);
  for (int64_t i = tid; i < p.dim; i += threads) o[i] = from_float<T>(xr[i] * scale * p.weight[i]);
}

}  // namespace

cudaError_t rmsnorm(const RmsNormParams& p, cudaStream_t stream) {
  if (p.rows < 0 || p.dim < 0 || p.rows > INT32_MAX) return cudaErrorInvalidValue;
  if (p.rows == 0 || p.dim == 0) return cudaSuccess;
  if (p.x == nullptr || p.weight == nullptr || p.out == nullptr) return cudaErrorInvalidValue;
  const int threads = rmsnorm_threads_for(p.dim);
  const size_t smem = static_cast<size_t>(threads) * sizeof(float);
  const dim3 grid(static_cast<unsigned>(p.rows));
  if (p.out_dtype == DType::kBFloat16) {
    rmsnorm_kernel<__nv_bfloat16><<<grid, threads, smem, stream>>>(p);
  } else {
    rmsnorm_kernel<float><<<grid, threads, smem, stream>>>(p);
  }
  return detail::launch_status();
}

}  // namespace statetune::kernels::cuda_raw
