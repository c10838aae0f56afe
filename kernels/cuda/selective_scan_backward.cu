// Backward of the selective scan (kernels/ssm_backward.h has the math), the algorithm of the CPU
// backward (kernels/cpu_scan_backward.cpp) with one thread per (batch row, channel):
//   1. forward through the row, storing the state every `chunk` steps in the workspace;
//   2. chunks last to first: recompute the chunk's states from its checkpoint (stored in the
//      workspace too: the adjoint step at t needs h_{t-1}, which cannot be recovered from h_t
//      stably), then run the adjoint recurrence
//        gh_{t-1} = exp(delta_t A) * (gh_t + C_t * gy_t)
//      backwards through the chunk, with the thread's N adjoints in registers.
// Workspace layout [B][entry][N][D]: consecutive threads (channels) touch consecutive floats, so
// every workspace access is coalesced. Entries 0 .. n_ckpt-1 are checkpoints, the next `chunk` are
// the states of the chunk being walked.
//
// Sums: dB_t / dC_t (over channels) are first summed over the warp's 32 channels with shuffles
// (device_utils.cuh's warp_reduce_scatter: the 2 kN values in at most 2 kN shuffles, 31 for
// kN = 16), then added to global fp32 with one atomicAdd per warp, step and value, issued by
// different lanes (before: one per thread, step and n, 32 lanes on one address). The launcher's
// blocks are whole warps of one batch row (blockIdx.y), so a warp never mixes rows; lanes past the
// last channel stay through the backward walk and add zeros, since every lane must reach the
// full-warp shuffles. The per-channel sums (dA, ddelta_bias, dDskip, adapter gradients) stay in
// registers over the whole row and are added once per thread at the end (contention: only rows
// sharing a channel).
// Padding positions get 0 in dx / ddelta / dz and are never added to the sums.
// Registers: a thread holds A, h, the adjoint and the dA / state_offset sums (5 x kN floats) and,
// per step, the 2 x kN dB / dC terms, which fits for N <= 16 (Mamba's d_state; 184 registers at
// kN = 16 on sm_90); the kN = 32 / 64 instances spill some to local memory (ptxas warns), which
// costs speed, not correctness.
#include "kernels/cuda/device_utils.cuh"
#include "kernels/cuda/ssm_cuda_backward.cuh"

namespace statetune::kernels::cuda_raw {
namespace {

using detail::clamp_length;
using detail::from_float;
using detail::softplus;
using detail::to_float;

constexpr int kMaxThreads = 128;
// block_threads_for halves kMaxThreads down to 32 at least: every block is whole warps, which the
// warp sums of dB / dC need (all 32 lanes of each warp exist and reach the shuffles).
static_assert(kMaxThreads % detail::kWarpSize == 0 && (kMaxThreads & (kMaxThreads - 1)) == 0);

__host__ __device__ inline int64_t checkpoints(int seqlen, int chunk) {
  return (static_cast<int64_t>(seqlen) + chunk - 1) / chunk;
}

template <typename T, int kN>
__global__ void __launch_bounds__(kMaxThreads) scan_backward_kernel(const ScanBackwardParams p) {
  const int b = blockIdx.y;
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  // A lane past the last channel reads and writes nothing but takes part in the warp sums.
  const bool active = d < p.dim;
  const unsigned lane = threadIdx.x % detail::kWarpSize;  // blockDim.x is a multiple of 32
  const int n_state = p.dstate;
  const int64_t D = p.dim;
  const int chunk = p.chunk;
  const int64_t len = clamp_length(p.lengths, b, p.seqlen);
  const int64_t slot = p.slots != nullptr ? p.slots[b] : 0;
  const bool uses_slots = p.state_offset.ptr != nullptr || p.output_offset.ptr != nullptr ||
                          p.initial_state.ptr != nullptr;
  // Nothing read, nothing written. The row is the block's, so its warps leave whole.
  if (uses_slots && !detail::index_ok(slot, p.num_slots)) return;
  const int64_t dn = static_cast<int64_t>(d) * n_state;

  const T* xp = static_cast<const T*>(p.x.ptr) + b * p.x.batch_stride + d;
  const T* dp = static_cast<const T*>(p.delta.ptr) + b * p.delta.batch_stride + d;
  const T* zp = static_cast<const T*>(p.z.ptr) + b * p.z.batch_stride + d;
  const T* gp = static_cast<const T*>(p.grad_out.ptr) + b * p.grad_out.batch_stride + d;
  const T* bp = static_cast<const T*>(p.Bm.ptr) + b * p.Bm.batch_stride;
  const T* cp = static_cast<const T*>(p.Cm.ptr) + b * p.Cm.batch_stride;
  T* dxp = static_cast<T*>(p.dx.ptr) + b * p.dx.batch_stride + d;
  T* ddp = static_cast<T*>(p.ddelta.ptr) + b * p.ddelta.batch_stride + d;
  T* dzp = static_cast<T*>(p.dz.ptr) + b * p.dz.batch_stride + d;
  float* dB = p.dBm + static_cast<int64_t>(b) * p.seqlen * n_state;
  float* dC = p.dCm + static_cast<int64_t>(b) * p.seqlen * n_state;

  for (int64_t t = len; active && t < p.seqlen; ++t) {
    dxp[t * p.dx.time_stride] = from_float<T>(0.f);
    ddp[t * p.ddelta.time_stride] = from_float<T>(0.f);
    dzp[t * p.dz.time_stride] = from_float<T>(0.f);
  }
  // Nothing read, nothing to add (the adjoint of h_0 is 0). len is the row's: whole warps leave.
  if (len == 0) return;

  const int64_t n_ckpt = checkpoints(p.seqlen, chunk);
  float* ws = p.workspace + static_cast<int64_t>(b) * (n_ckpt + chunk) * n_state * D + d;
  const int64_t entry = n_state * D;  // floats between consecutive entries of one thread

  const float* init = p.initial_state.ptr != nullptr
                          ? p.initial_state.ptr + slot * p.initial_state.slot_stride + dn
                          : nullptr;
  const float* h_off = p.state_offset.ptr != nullptr
                           ? p.state_offset.ptr + slot * p.state_offset.slot_stride + dn
                           : nullptr;
  const float dskip = active && p.Dskip != nullptr ? p.Dskip[d] : 0.f;
  const float dbias = active && p.delta_bias != nullptr ? p.delta_bias[d] : 0.f;
  const float yoff = active && p.output_offset.ptr != nullptr
                         ? p.output_offset.ptr[slot * p.output_offset.slot_stride + d]
                         : 0.f;

  // States beyond N (padding up to kN) stay exactly 0: a = 0, h = 0, B = C = 0.
  float a[kN], h[kN];
#pragma unroll
  for (int n = 0; n < kN; ++n) {
    const bool in = active && n < n_state;
    a[n] = in ? p.A[dn + n] : 0.f;
    h[n] = (in && init != nullptr) ? init[n] : 0.f;
  }
  // h <- h_t from h_{t-1}, exactly as in pass 1 and in the recompute of pass 2.
  auto advance = [&](int64_t t) {
    const float dv = softplus(to_float(dp[t * p.delta.time_stride]) + dbias);
    const float dxv = dv * to_float(xp[t * p.x.time_stride]);
#pragma unroll
    for (int n = 0; n < kN; ++n) {
      const float bn = n < n_state ? to_float(bp[t * p.Bm.time_stride + n]) : 0.f;
      h[n] = expf(dv * a[n]) * h[n] + dxv * bn;
    }
  };

  // 1. Forward, keeping h_{t0-1} (the state before step t0) of every chunk.
  for (int64_t t = 0; active && t < len; ++t) {
    if (t % chunk == 0) {
      float* ck = ws + (t / chunk) * entry;
#pragma unroll
      for (int n = 0; n < kN; ++n) {
        if (n < n_state) ck[n * D] = h[n];
      }
    }
    advance(t);
  }

  // 2. Chunks last to first.
  float gh[kN], dA_acc[kN], dso_acc[kN];
#pragma unroll
  for (int n = 0; n < kN; ++n) gh[n] = dA_acc[n] = dso_acc[n] = 0.f;
  float dskip_acc = 0.f, doo_acc = 0.f, ddb_acc = 0.f;
  float* states = ws + n_ckpt * entry;  // entry s: h_{t0+s-1}
  const int64_t n_chunks = (len + chunk - 1) / chunk;
  for (int64_t c = n_chunks - 1; c >= 0; --c) {
    const int64_t t0 = c * chunk;
    const int64_t steps = (len < t0 + chunk ? len : t0 + chunk) - t0;
    const float* ck = ws + c * entry;
#pragma unroll
    for (int n = 0; n < kN; ++n) h[n] = active && n < n_state ? ck[n * D] : 0.f;
    for (int64_t s = 0; active && s < steps; ++s) {
      float* st = states + s * entry;
#pragma unroll
      for (int n = 0; n < kN; ++n) {
        if (n < n_state) st[n * D] = h[n];
      }
      advance(t0 + s);
    }
    // h is now h_{t0+steps-1}: the state read by the last step of the chunk.
    for (int64_t s = steps - 1; s >= 0; --s) {
      const int64_t t = t0 + s;
      // This channel's terms of dC_t (sums[n]) and dB_t (sums[kN + n]); 0 for n >= N and in the
      // lanes past the last channel.
      float sums[2 * kN];
#pragma unroll
      for (int i = 0; i < 2 * kN; ++i) sums[i] = 0.f;
      if (active) {
        const float* st = states + s * entry;  // h_{t-1}

        const float xv = to_float(xp[t * p.x.time_stride]);
        const float din = to_float(dp[t * p.delta.time_stride]) + dbias;
        // softplus and its derivative (sigmoid), PyTorch's threshold 20 included.
        const float dv = softplus(din);
        const float dsoft = din > 20.f ? 1.f : 1.f / (1.f + expf(-din));
        const float zv = to_float(zp[t * p.z.time_stride]);
        const float sz = 1.f / (1.f + expf(-zv));
        const float g = to_float(gp[t * p.grad_out.time_stride]);
        const float gy = g * zv * sz;  // gradient of y_t
        const float dxv = dv * xv;
        dskip_acc += gy * xv;
        doo_acc += gy;

        float y = dskip * xv + yoff;  // y_t recomputed for dz
        float sum_delta = 0.f, sum_x = 0.f;
#pragma unroll
        for (int n = 0; n < kN; ++n) {
          if (n >= n_state) continue;
          const float hp = st[n * D];
          const float cn = to_float(cp[t * p.Cm.time_stride + n]);
          const float bn = to_float(bp[t * p.Bm.time_stride + n]);
          const float read = h[n] + (h_off != nullptr ? h_off[n] : 0.f);
          y += cn * read;
          sums[n] = gy * read;
          const float g_h = gh[n] + gy * cn;  // gradient of h_t
          const float e = expf(dv * a[n]);
          const float pa = g_h * e * hp;  // d/d(delta*A) of exp(delta*A) * h_{t-1}
          sum_delta += pa * a[n] + g_h * bn * xv;
          sum_x += g_h * bn;
          sums[kN + n] = g_h * dxv;
          gh[n] = g_h * e;  // carried to h_{t-1}
          dA_acc[n] += pa * dv;
          dso_acc[n] += gy * cn;
          h[n] = hp;  // the next (earlier) step reads h_{t-1}
        }
        const float ddin = sum_delta * dsoft;
        ddb_acc += ddin;
        dzp[t * p.dz.time_stride] = from_float<T>(g * y * sz * (1.f + zv * (1.f - sz)));
        dxp[t * p.dx.time_stride] = from_float<T>(gy * dskip + dv * sum_x);
        ddp[t * p.ddelta.time_stride] = from_float<T>(ddin);
      }
      // Every lane of the warp is here (len and chunk are the row's): sum over the warp's channels.
      detail::warp_reduce_scatter(sums, lane);
      if (detail::warp_sum_writer<2 * kN>(lane)) {
        float* dBt = dB + t * n_state;
        float* dCt = dC + t * n_state;
        const int first = static_cast<int>(lane) * 2 * kN / detail::kWarpSize;
#pragma unroll
        for (int j = 0; j < detail::warp_sum_per_lane<2 * kN>(); ++j) {
          const int e = first + j;  // [0, kN): dC_t, [kN, 2 kN): dB_t
          const int n = e % kN;
          if (n < n_state) atomicAdd((e < kN ? dCt : dBt) + n, sums[j]);
        }
      }
    }
  }

  // 3. The per-channel sums, once per thread. What is left of the adjoint is the gradient of h_0.
  if (!active) return;
  if (p.dDskip != nullptr) atomicAdd(p.dDskip + d, dskip_acc);
  if (p.ddelta_bias != nullptr) atomicAdd(p.ddelta_bias + d, ddb_acc);
  if (p.doutput_offset != nullptr) atomicAdd(p.doutput_offset + slot * D + d, doo_acc);
  const int64_t slot_dn = slot * D * n_state + dn;
#pragma unroll
  for (int n = 0; n < kN; ++n) {
    if (n >= n_state) continue;
    if (p.dA != nullptr) atomicAdd(p.dA + dn + n, dA_acc[n]);
    if (p.dstate_offset != nullptr) atomicAdd(p.dstate_offset + slot_dn + n, dso_acc[n]);
    if (p.dinitial_state != nullptr) atomicAdd(p.dinitial_state + slot_dn + n, gh[n]);
  }
}

bool params_ok(const ScanBackwardParams& p) {
  if (p.batch < 0 || p.batch > 65535 || p.seqlen < 0 || p.dim < 0) return false;  // grid.y
  if (p.dstate < 1 || p.dstate > kMaxDState || p.chunk < 1) return false;
  if (p.A == nullptr || p.dBm == nullptr || p.dCm == nullptr) return false;
  if (p.dx.ptr == nullptr || p.ddelta.ptr == nullptr || p.dz.ptr == nullptr) return false;
  // An adapter gradient needs its adapter (to know the slots exist) and the slot count.
  if (p.dstate_offset != nullptr && p.state_offset.ptr == nullptr) return false;
  if (p.doutput_offset != nullptr && p.output_offset.ptr == nullptr) return false;
  if (p.dinitial_state != nullptr && p.initial_state.ptr == nullptr) return false;
  const bool adapters = p.state_offset.ptr != nullptr || p.output_offset.ptr != nullptr ||
                        p.initial_state.ptr != nullptr;
  if (adapters && p.num_slots < 1) return false;
  return true;
}

cudaError_t zero(float* ptr, int64_t count, cudaStream_t stream) {
  if (ptr == nullptr || count == 0) return cudaSuccess;
  return cudaMemsetAsync(ptr, 0, static_cast<size_t>(count) * sizeof(float), stream);
}

template <typename T, int kN>
cudaError_t launch(const ScanBackwardParams& p, cudaStream_t stream) {
  int threads = kMaxThreads;
  const cudaError_t e = detail::pick_threads(p.batch, p.dim, kMaxThreads, &threads);
  if (e != cudaSuccess) return e;
  const dim3 grid((p.dim + threads - 1) / threads, p.batch);
  scan_backward_kernel<T, kN><<<grid, threads, 0, stream>>>(p);
  return detail::launch_status();
}

template <typename T>
cudaError_t dispatch(const ScanBackwardParams& p, cudaStream_t stream) {
  if (p.dstate <= 8) return launch<T, 8>(p, stream);
  if (p.dstate <= 16) return launch<T, 16>(p, stream);
  if (p.dstate <= 32) return launch<T, 32>(p, stream);
  return launch<T, 64>(p, stream);
}

}  // namespace

size_t selective_scan_backward_workspace_floats(const ScanBackwardParams& p) {
  if (p.batch <= 0 || p.seqlen <= 0 || p.dim <= 0 || p.dstate <= 0 || p.chunk < 1) return 0;
  return static_cast<size_t>(p.batch) * (checkpoints(p.seqlen, p.chunk) + p.chunk) * p.dstate *
         p.dim;
}

cudaError_t selective_scan_backward(const ScanBackwardParams& p, cudaStream_t stream) {
  if (!params_ok(p)) return cudaErrorInvalidValue;
  const int64_t B = p.batch, L = p.seqlen, D = p.dim, N = p.dstate, S = p.num_slots;
  struct Sum {
    float* ptr;
    int64_t count;
  };
  const Sum sums[] = {{p.dBm, B * L * N},         {p.dCm, B * L * N},   {p.dA, D * N},
                      {p.ddelta_bias, D},         {p.dDskip, D},        {p.dstate_offset, S * D * N},
                      {p.doutput_offset, S * D},  {p.dinitial_state, S * D * N}};
  for (const Sum& sum : sums) {
    const cudaError_t e = zero(sum.ptr, sum.count, stream);
    if (e != cudaSuccess) return e;
  }
  if (B == 0 || L == 0 || D == 0) return cudaSuccess;
  if (p.workspace == nullptr) return cudaErrorInvalidValue;
  return p.dtype == DType::kBFloat16 ? dispatch<__nv_bfloat16>(p, stream)
                                     : dispatch<float>(p, stream);
}

}  // namespace statetune::kernels::cuda_raw
