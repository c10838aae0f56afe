// Causal depthwise conv1d + SiLU (Mamba-1 mixer), prefill and decode step.
//
// Prefill: one thread per (b, chunk of kConvChunkT time steps, d); the thread slides a window of
// the last K inputs in registers over its chunk. Weights and window are right-aligned in arrays of
// the compile-time size kMaxK, with zero weights in front, so every loop is fully unrolled with
// constant indices (no local memory) for any runtime K <= kMaxK.
// The conv state of a row is read (resume) and rewritten only by the threads of chunk 0: chunks
// >= 1 start at t0 >= kConvChunkT >= K-1 and take their history from x, so no thread can see a
// half-updated state and no second pass is needed.
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/ssm_cuda.cuh"

namespace statetune::kernels::cuda_raw {
namespace {

using detail::clamp_length;
using detail::from_float;
using detail::load_dyn;
using detail::silu;
using detail::to_float;

constexpr int kConvChunkT = 32;
constexpr int kThreads = 128;
static_assert(kConvChunkT >= kMaxConvWidth, "chunks >= 1 must not reach before t = 0");

template <typename T, int kMaxK>
__global__ void __launch_bounds__(kThreads) conv_prefill_kernel(const ConvParams p) {
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d >= p.dim) return;
  const int b = blockIdx.z;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kConvChunkT;
  const int k_width = p.width;
  const int64_t len = clamp_length(p.lengths, b, p.seqlen);
  const int64_t row = p.rows != nullptr ? p.rows[b] : b;
  if (!detail::index_ok(row, p.num_rows)) return;

  const T* xp = static_cast<const T*>(p.x.ptr) + b * p.x.batch_stride + d;
  T* op = static_cast<T*>(p.out.ptr) + b * p.out.batch_stride + d;
  float* st = p.conv_state + row * p.conv_state_row_stride + static_cast<int64_t>(d) * (k_width - 1);

  // w[kMaxK - K + k] = weight[d, k]; win[kMaxK - 1 - j] = input at (current t) - j.
  float w[kMaxK], win[kMaxK];
#pragma unroll
  for (int i = 0; i < kMaxK; ++i) {
    const int k = i - (kMaxK - k_width);
    w[i] = k >= 0 ? load_dyn(p.weight, p.weight_dtype, static_cast<int64_t>(d) * k_width + k) : 0.f;
    win[i] = 0.f;
  }
  const float bias = p.bias != nullptr ? load_dyn(p.bias, p.bias_dtype, d) : 0.f;

  // History before t0: positions t0 - (kMaxK - 1 - i) for the slots that carry a weight.
#pragma unroll
  for (int i = 0; i < kMaxK - 1; ++i) {
    if (i < kMaxK - k_width) continue;
    const int64_t tp = t0 - (kMaxK - 1 - i);
    if (tp >= 0) {
      win[i] = to_float(xp[tp * p.x.time_stride]);
    } else if (p.resume) {
      // Only chunk 0 gets here; position tp < 0 is conv_state entry (K - 1) + tp.
      win[i] = st[(k_width - 1) + tp];
    }
  }

  const int64_t t_end = t0 + kConvChunkT < p.seqlen ? t0 + kConvChunkT : p.seqlen;
  const int64_t t_valid = t_end < len ? t_end : len;
  for (int64_t t = t0; t < t_valid; ++t) {
    win[kMaxK - 1] = to_float(xp[t * p.x.time_stride]);
    float acc = bias;
#pragma unroll
    for (int i = 0; i < kMaxK; ++i) acc += w[i] * win[i];
    op[t * p.out.time_stride] = from_float<T>(silu(acc));
#pragma unroll
    for (int i = 0; i < kMaxK - 1; ++i) win[i] = win[i + 1];
  }
  for (int64_t t = t0 > len ? t0 : len; t < t_end; ++t) op[t * p.out.time_stride] = from_float<T>(0.f);

  if (blockIdx.y != 0) return;
  // New state: inputs at len-(K-1) .. len-1, older ones from the previous state (or 0). Entry j
  // reads old entry len + j >= j, which this loop has not overwritten yet.
  for (int j = 0; j < k_width - 1; ++j) {
    const int64_t pos = len - (k_width - 1) + j;
    float v = 0.f;
    if (pos >= 0) {
      v = to_float(xp[pos * p.x.time_stride]);
    } else if (p.resume) {
      v = st[(k_width - 1) + pos];
    }
    st[j] = v;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) conv_step_kernel(const ConvParams p) {
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d >= p.dim) return;
  const int b = blockIdx.y;
  const int k_width = p.width;
  const int64_t row = p.rows != nullptr ? p.rows[b] : b;
  if (!detail::index_ok(row, p.num_rows)) return;
  float* st = p.conv_state + row * p.conv_state_row_stride + static_cast<int64_t>(d) * (k_width - 1);
  const int64_t w0 = static_cast<int64_t>(d) * k_width;

  const float xv = to_float(static_cast<const T*>(p.x.ptr)[b * p.x.batch_stride + d]);
  float acc = p.bias != nullptr ? load_dyn(p.bias, p.bias_dtype, d) : 0.f;
  for (int k = 0; k < k_width - 1; ++k) acc += load_dyn(p.weight, p.weight_dtype, w0 + k) * st[k];
  acc += load_dyn(p.weight, p.weight_dtype, w0 + k_width - 1) * xv;
  for (int k = 0; k + 1 < k_width - 1; ++k) st[k] = st[k + 1];
  if (k_width > 1) st[k_width - 2] = xv;
  static_cast<T*>(p.out.ptr)[b * p.out.batch_stride + d] = from_float<T>(silu(acc));
}

bool params_ok(const ConvParams& p, bool prefill) {
  if (p.batch < 0 || p.dim < 0 || p.width < 1 || p.width > kMaxConvWidth) return false;
  if (prefill && p.seqlen < 0) return false;
  if (p.weight == nullptr || (p.width > 1 && p.conv_state == nullptr)) return false;
  if (p.batch > 65535) return false;  // grid.z / grid.y
  if (p.num_rows < (p.rows != nullptr ? 1 : p.batch)) return false;
  return true;
}

template <typename T>
cudaError_t launch_prefill(const ConvParams& p, cudaStream_t stream) {
  // L == 0 still needs chunk 0 to (re)write the conv state.
  const int chunks = p.seqlen > 0 ? (p.seqlen + kConvChunkT - 1) / kConvChunkT : 1;
  if (chunks > 65535) return cudaErrorInvalidValue;
  const dim3 grid((p.dim + kThreads - 1) / kThreads, chunks, p.batch);
  if (p.width <= 4) {
    conv_prefill_kernel<T, 4><<<grid, kThreads, 0, stream>>>(p);
  } else {
    conv_prefill_kernel<T, kMaxConvWidth><<<grid, kThreads, 0, stream>>>(p);
  }
  return detail::launch_status();
}

}  // namespace

cudaError_t causal_conv1d_prefill(const ConvParams& p, cudaStream_t stream) {
  if (!params_ok(p, /*prefill=*/true)) return cudaErrorInvalidValue;
  if (p.batch == 0 || p.dim == 0) return cudaSuccess;
  return p.dtype == DType::kBFloat16 ? launch_prefill<__nv_bfloat16>(p, stream)
                                     : launch_prefill<float>(p, stream);
}

cudaError_t causal_conv1d_step(const ConvParams& p, cudaStream_t stream) {
  if (!params_ok(p, /*prefill=*/false)) return cudaErrorInvalidValue;
  if (p.batch == 0 || p.dim == 0) return cudaSuccess;
  const dim3 grid((p.dim + kThreads - 1) / kThreads, p.batch);
  if (p.dtype == DType::kBFloat16) {
    conv_step_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(p);
  } else {
    conv_step_kernel<float><<<grid, kThreads, 0, stream>>>(p);
  }
  return detail::launch_status();
}

}  // namespace statetune::kernels::cuda_raw
