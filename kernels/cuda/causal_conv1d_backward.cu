// Backward of the causal depthwise conv1d + SiLU (prefill without resume; kernels/ssm_backward.h):
//   pre[t] = bias + sum_k w[k] * x[t-(K-1)+k],  out[t] = silu(pre[t]),
//   dpre[t] = gout[t] * silu'(pre[t])                       (0 for t >= len)
//   dx[u]   = sum_k w[k] * dpre[u+(K-1)-k]                  (0 for u >= len)
//   dw[k]   = sum_t dpre[t] * x[t-(K-1)+k],  dbias = sum_t dpre[t]
// One thread per (b, chunk of kConvChunkT time steps, d), like the forward. dx is gathered, not
// scattered: the thread owning positions [t0, t_end) walks t from t0 to t_end+K-2, recomputing
// dpre[t] (a sliding window of the last K inputs) and keeping the last K of them, so each dx[u] is
// written by exactly one thread and needs no atomics. dw / dbias sum dpre over the positions the
// thread owns ([t0, t_end), so chunks never count a position twice) and are added once per thread.
// Windows and weights are right-aligned in arrays of the compile-time size kMaxK with zeros in
// front, as in the forward, so every inner loop is unrolled with constant indices.
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/ssm_cuda_backward.cuh"

namespace statetune::kernels::cuda_raw {
namespace {

using detail::clamp_length;
using detail::from_float;
using detail::load_dyn;
using detail::to_float;

constexpr int kConvChunkT = 32;
constexpr int kThreads = 128;

template <typename T, int kMaxK>
__global__ void __launch_bounds__(kThreads) conv_backward_kernel(const ConvBackwardParams p) {
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d >= p.dim) return;
  const int b = blockIdx.z;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kConvChunkT;
  const int k_width = p.width;
  const int64_t len = clamp_length(p.lengths, b, p.seqlen);
  const int64_t t_end = t0 + kConvChunkT < p.seqlen ? t0 + kConvChunkT : p.seqlen;

  const T* xp = static_cast<const T*>(p.x.ptr) + b * p.x.batch_stride + d;
  const T* gp = static_cast<const T*>(p.grad_out.ptr) + b * p.grad_out.batch_stride + d;
  T* dxp = static_cast<T*>(p.dx.ptr) + b * p.dx.batch_stride + d;

  // w[kMaxK - K + k] = weight[d, k]; wflip[kMaxK - 1 - k] = weight[d, k] (for the gather of dx).
  // xwin[kMaxK - 1 - j] = x[t - j]; dwin[kMaxK - 1 - j] = dpre[t - j].
  float w[kMaxK], wflip[kMaxK], xwin[kMaxK], dwin[kMaxK], dw[kMaxK];
#pragma unroll
  for (int i = 0; i < kMaxK; ++i) {
    const int k = i - (kMaxK - k_width);
    w[i] = k >= 0 ? load_dyn(p.weight, p.weight_dtype, static_cast<int64_t>(d) * k_width + k) : 0.f;
    xwin[i] = dwin[i] = dw[i] = 0.f;
  }
#pragma unroll
  for (int i = 0; i < kMaxK; ++i) {
    const int k = kMaxK - 1 - i;
    wflip[i] = k < k_width ? load_dyn(p.weight, p.weight_dtype, static_cast<int64_t>(d) * k_width + k) : 0.f;
  }
  const float bias = p.bias != nullptr ? load_dyn(p.bias, p.bias_dtype, d) : 0.f;
  float db = 0.f;

  // Inputs before t0 (0 before t = 0: no resume in training).
#pragma unroll
  for (int i = 0; i < kMaxK - 1; ++i) {
    const int64_t tp = t0 - (kMaxK - 1 - i);
    if (i >= kMaxK - k_width && tp >= 0) xwin[i] = to_float(xp[tp * p.x.time_stride]);
  }

  const int64_t t_last = t_end + k_width - 1;  // one past the last dpre any owned dx reads
  for (int64_t t = t0; t < t_last; ++t) {
    float dpre = 0.f;
    if (t < len) {
      xwin[kMaxK - 1] = to_float(xp[t * p.x.time_stride]);
      float pre = bias;
#pragma unroll
      for (int i = 0; i < kMaxK; ++i) pre += w[i] * xwin[i];
      const float s = 1.f / (1.f + expf(-pre));
      dpre = to_float(gp[t * p.grad_out.time_stride]) * s * (1.f + pre * (1.f - s));
      if (t < t_end) {
        db += dpre;
#pragma unroll
        for (int i = 0; i < kMaxK; ++i) dw[i] += dpre * xwin[i];
      }
#pragma unroll
      for (int i = 0; i < kMaxK - 1; ++i) xwin[i] = xwin[i + 1];
    }
#pragma unroll
    for (int i = 0; i < kMaxK - 1; ++i) dwin[i] = dwin[i + 1];
    dwin[kMaxK - 1] = dpre;
    // dx[u] for u = t - (K-1) reads dpre[u .. t], all >= t0 once u >= t0.
    const int64_t u = t - (k_width - 1);
    if (u >= t0 && u < t_end) {
      float acc = 0.f;
      if (u < len) {
#pragma unroll
        for (int i = 0; i < kMaxK; ++i) acc += wflip[i] * dwin[i];
      }
      dxp[u * p.dx.time_stride] = from_float<T>(acc);
    }
  }

  if (p.dbias != nullptr) atomicAdd(p.dbias + d, db);
  if (p.dweight != nullptr) {
#pragma unroll
    for (int i = 0; i < kMaxK; ++i) {
      const int k = i - (kMaxK - k_width);
      if (k >= 0) atomicAdd(p.dweight + static_cast<int64_t>(d) * k_width + k, dw[i]);
    }
  }
}

bool params_ok(const ConvBackwardParams& p) {
  if (p.batch < 0 || p.batch > 65535 || p.seqlen < 0 || p.dim < 0) return false;  // grid.z
  if (p.width < 1 || p.width > kMaxConvWidth) return false;
  if (p.weight == nullptr || p.dx.ptr == nullptr) return false;
  return true;
}

template <typename T>
cudaError_t launch(const ConvBackwardParams& p, cudaStream_t stream) {
  const int chunks = (p.seqlen + kConvChunkT - 1) / kConvChunkT;
  if (chunks > 65535) return cudaErrorInvalidValue;
  const dim3 grid((p.dim + kThreads - 1) / kThreads, chunks, p.batch);
  if (p.width <= 4) {
    conv_backward_kernel<T, 4><<<grid, kThreads, 0, stream>>>(p);
  } else {
    conv_backward_kernel<T, kMaxConvWidth><<<grid, kThreads, 0, stream>>>(p);
  }
  return detail::launch_status();
}

}  // namespace

cudaError_t causal_conv1d_backward(const ConvBackwardParams& p, cudaStream_t stream) {
  if (!params_ok(p)) return cudaErrorInvalidValue;
  const int64_t D = p.dim;
  if (p.dweight != nullptr) {
    const cudaError_t e = cudaMemsetAsync(p.dweight, 0, sizeof(float) * D * p.width, stream);
    if (e != cudaSuccess) return e;
  }
  if (p.dbias != nullptr) {
    const cudaError_t e = cudaMemsetAsync(p.dbias, 0, sizeof(float) * D, stream);
    if (e != cudaSuccess) return e;
  }
  if (p.batch == 0 || p.seqlen == 0 || p.dim == 0) return cudaSuccess;
  return p.dtype == DType::kBFloat16 ? launch<__nv_bfloat16>(p, stream)
                                     : launch<float>(p, stream);
}

}  // namespace statetune::kernels::cuda_raw
