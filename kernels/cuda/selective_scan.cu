// Selective scan (Mamba-1) with the gate and the state-offset adapters, prefill and decode step.
//
// Prefill: one thread block per (batch row, chunk of D channels); each thread owns one channel d
// and keeps its N states (padded up to the template size kN) in registers, walking the time axis
// sequentially. All threads of a block share the batch row, so B_t/C_t are the same for all of
// them: the block stages them in shared memory a chunk of time steps at a time (one global read
// per value per block instead of one per thread) and every thread reads them as broadcasts.
// Padding (t >= lengths[b]) is uniform across the block, so there is no divergence.
//
// Step: one thread per (b, d), N states read from and written back to the cache row.
#include <algorithm>

#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/ssm_cuda.cuh"

namespace statetune::kernels::cuda_raw {
namespace {

using detail::clamp_length;
using detail::from_float;
using detail::silu;
using detail::softplus;
using detail::to_float;

// Time steps of B/C staged in shared memory at a time.
constexpr int kScanChunkT = 32;
constexpr int kMaxThreads = 128;
// exp(a) = exp2(a * log2(e)): A is pre-scaled once per thread so each step costs one ex2.
constexpr float kLog2e = 1.4426950408889634f;

// Whether the call reads the slot pool (only then is a slot index meaningful).
__host__ __device__ inline bool uses_slots(const ScanParams& p) {
  return p.state_offset.ptr != nullptr || p.output_offset.ptr != nullptr ||
         p.initial_state.ptr != nullptr;
}

template <typename T, int kN>
__global__ void __launch_bounds__(kMaxThreads) scan_prefill_kernel(const ScanParams p) {
  extern __shared__ float smem[];  // sB[kScanChunkT][kN], then sC[kScanChunkT][kN]
  float* s_b = smem;
  float* s_c = smem + kScanChunkT * kN;

  const int b = blockIdx.y;
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  const bool active = d < p.dim;
  const int n_state = p.dstate;
  const int64_t len = clamp_length(p.lengths, b, p.seqlen);
  const int64_t slot = p.slots != nullptr ? p.slots[b] : 0;
  const int64_t row = p.rows != nullptr ? p.rows[b] : b;
  // b is the same for the whole block, so a bad index returns the whole block before any barrier.
  if (!detail::index_ok(row, p.num_rows) || (uses_slots(p) && !detail::index_ok(slot, p.num_slots))) {
    return;
  }
  const int64_t dn = static_cast<int64_t>(d) * n_state;

  float* state = p.ssm_state + row * p.ssm_state_row_stride + dn;
  const float* init = nullptr;
  if (p.resume) {
    init = state;
  } else if (p.initial_state.ptr != nullptr) {
    init = p.initial_state.ptr + slot * p.initial_state.slot_stride + dn;
  }
  const float* h_off = p.state_offset.ptr != nullptr
                           ? p.state_offset.ptr + slot * p.state_offset.slot_stride + dn
                           : nullptr;

  // States beyond N (padding up to kN) stay exactly 0: a2 = 0, h = 0, B = C = 0.
  float h[kN], a2[kN], hoff[kN];
#pragma unroll
  for (int n = 0; n < kN; ++n) {
    const bool in = active && n < n_state;
    a2[n] = in ? p.A[dn + n] * kLog2e : 0.f;
    h[n] = (in && init != nullptr) ? init[n] : 0.f;
    hoff[n] = (in && h_off != nullptr) ? h_off[n] : 0.f;
  }
  float dskip = 0.f, dbias = 0.f, yoff = 0.f;
  if (active) {
    if (p.Dskip != nullptr) dskip = p.Dskip[d];
    if (p.delta_bias != nullptr) dbias = p.delta_bias[d];
    if (p.output_offset.ptr != nullptr) yoff = p.output_offset.ptr[slot * p.output_offset.slot_stride + d];
  }

  const T* xp = static_cast<const T*>(p.x.ptr) + b * p.x.batch_stride + d;
  const T* dp = static_cast<const T*>(p.delta.ptr) + b * p.delta.batch_stride + d;
  const T* zp = static_cast<const T*>(p.z.ptr) + b * p.z.batch_stride + d;
  const T* bp = static_cast<const T*>(p.Bm.ptr) + b * p.Bm.batch_stride;
  const T* cp = static_cast<const T*>(p.Cm.ptr) + b * p.Cm.batch_stride;
  T* op = static_cast<T*>(p.out.ptr) + b * p.out.batch_stride + d;

  for (int64_t t0 = 0; t0 < len; t0 += kScanChunkT) {
    const int nt = static_cast<int>(len - t0 < kScanChunkT ? len - t0 : kScanChunkT);
    __syncthreads();  // every thread is done with the previous chunk
    for (int i = threadIdx.x; i < nt * kN; i += blockDim.x) {
      const int tt = i / kN;
      const int n = i % kN;
      float vb = 0.f, vc = 0.f;
      if (n < n_state) {
        const int64_t t = t0 + tt;
        vb = to_float(bp[t * p.Bm.time_stride + n]);
        vc = to_float(cp[t * p.Cm.time_stride + n]);
      }
      s_b[i] = vb;
      s_c[i] = vc;
    }
    __syncthreads();
    if (!active) continue;
#pragma unroll 2
    for (int tt = 0; tt < nt; ++tt) {
      const int64_t t = t0 + tt;
      const float xv = to_float(xp[t * p.x.time_stride]);
      const float dv = softplus(to_float(dp[t * p.delta.time_stride]) + dbias);
      const float zv = to_float(zp[t * p.z.time_stride]);
      const float dx = dv * xv;
      const float* b_t = s_b + tt * kN;
      const float* c_t = s_c + tt * kN;
      float y = 0.f;
#pragma unroll
      for (int n = 0; n < kN; ++n) {
        h[n] = exp2f(dv * a2[n]) * h[n] + dx * b_t[n];
        y += c_t[n] * (h[n] + hoff[n]);
      }
      y += dskip * xv + yoff;
      op[t * p.out.time_stride] = from_float<T>(y * silu(zv));
    }
  }
  if (!active) return;
  for (int64_t t = len; t < p.seqlen; ++t) op[t * p.out.time_stride] = from_float<T>(0.f);
#pragma unroll
  for (int n = 0; n < kN; ++n) {
    if (n < n_state) state[n] = h[n];
  }
}

template <typename T>
__global__ void __launch_bounds__(kMaxThreads) scan_step_kernel(const ScanParams p) {
  const int b = blockIdx.y;
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d >= p.dim) return;
  const int n_state = p.dstate;
  const int64_t slot = p.slots != nullptr ? p.slots[b] : 0;
  const int64_t row = p.rows != nullptr ? p.rows[b] : b;
  if (!detail::index_ok(row, p.num_rows) || (uses_slots(p) && !detail::index_ok(slot, p.num_slots))) {
    return;
  }
  const int64_t dn = static_cast<int64_t>(d) * n_state;

  float* state = p.ssm_state + row * p.ssm_state_row_stride + dn;
  const float* h_off = p.state_offset.ptr != nullptr
                           ? p.state_offset.ptr + slot * p.state_offset.slot_stride + dn
                           : nullptr;
  const float* a = p.A + dn;
  const T* bp = static_cast<const T*>(p.Bm.ptr) + b * p.Bm.batch_stride;
  const T* cp = static_cast<const T*>(p.Cm.ptr) + b * p.Cm.batch_stride;

  const float xv = to_float(static_cast<const T*>(p.x.ptr)[b * p.x.batch_stride + d]);
  const float dbias = p.delta_bias != nullptr ? p.delta_bias[d] : 0.f;
  const float dv =
      softplus(to_float(static_cast<const T*>(p.delta.ptr)[b * p.delta.batch_stride + d]) + dbias);
  const float zv = to_float(static_cast<const T*>(p.z.ptr)[b * p.z.batch_stride + d]);
  const float dx = dv * xv;
  float y = 0.f;
  for (int n = 0; n < n_state; ++n) {
    // Same formula as the prefill kernel, so prefill and repeated steps agree to rounding.
    const float hn = exp2f(dv * (a[n] * kLog2e)) * state[n] + dx * to_float(bp[n]);
    state[n] = hn;
    y += to_float(cp[n]) * (hn + (h_off != nullptr ? h_off[n] : 0.f));
  }
  if (p.Dskip != nullptr) y += p.Dskip[d] * xv;
  if (p.output_offset.ptr != nullptr) y += p.output_offset.ptr[slot * p.output_offset.slot_stride + d];
  static_cast<T*>(p.out.ptr)[b * p.out.batch_stride + d] = from_float<T>(y * silu(zv));
}

bool params_ok(const ScanParams& p, bool prefill) {
  if (p.batch < 0 || p.dim < 0 || p.dstate < 1 || p.dstate > kMaxDState) return false;
  if (prefill && p.seqlen < 0) return false;
  if (p.batch > 65535) return false;  // grid.y
  if (p.A == nullptr || p.ssm_state == nullptr) return false;
  if (p.num_rows < (p.rows != nullptr ? 1 : p.batch)) return false;
  if (uses_slots(p) && p.num_slots < 1) return false;
  return true;
}

template <typename T, int kN>
cudaError_t launch_prefill(const ScanParams& p, cudaStream_t stream) {
  int threads = kMaxThreads;
  const cudaError_t e = detail::pick_threads(p.batch, p.dim, kMaxThreads, &threads);
  if (e != cudaSuccess) return e;
  const dim3 grid((p.dim + threads - 1) / threads, p.batch);
  const size_t smem = 2 * kScanChunkT * kN * sizeof(float);
  static_assert(2 * kScanChunkT * 64 * sizeof(float) <= 48 * 1024,
                "the scan prefill's shared memory must fit the default 48 KiB per block");
  scan_prefill_kernel<T, kN><<<grid, threads, smem, stream>>>(p);
  return detail::launch_status();
}

template <typename T>
cudaError_t dispatch_prefill(const ScanParams& p, cudaStream_t stream) {
  if (p.dstate <= 8) return launch_prefill<T, 8>(p, stream);
  if (p.dstate <= 16) return launch_prefill<T, 16>(p, stream);
  if (p.dstate <= 32) return launch_prefill<T, 32>(p, stream);
  return launch_prefill<T, 64>(p, stream);
}

}  // namespace

cudaError_t selective_scan_prefill(const ScanParams& p, cudaStream_t stream) {
  if (!params_ok(p, /*prefill=*/true)) return cudaErrorInvalidValue;
  if (p.batch == 0 || p.dim == 0) return cudaSuccess;
  return p.dtype == DType::kBFloat16 ? dispatch_prefill<__nv_bfloat16>(p, stream)
                                     : dispatch_prefill<float>(p, stream);
}

cudaError_t selective_scan_step(const ScanParams& p, cudaStream_t stream) {
  if (!params_ok(p, /*prefill=*/false)) return cudaErrorInvalidValue;
  if (p.batch == 0 || p.dim == 0) return cudaSuccess;
  const dim3 grid((p.dim + kMaxThreads - 1) / kMaxThreads, p.batch);
  if (p.dtype == DType::kBFloat16) {
    scan_step_kernel<__nv_bfloat16><<<grid, kMaxThreads, 0, stream>>>(p);
  } else {
    scan_step_kernel<float><<<grid, kMaxThreads, 0, stream>>>(p);
  }
  return detail::launch_status();
}

}  // namespace statetune::kernels::cuda_raw
