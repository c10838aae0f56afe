// CPU backward of the selective scan and of the causal conv1d (see ssm_backward.h for the math and
// the memory scheme).
//
// Work is split into tasks (row b, range of channels); a task walks its channels in tiles of kTile
// channels. Per tile: one forward pass keeps the state every `chunk` steps; then chunks are visited
// last to first, each one's states are recomputed from its checkpoint and the adjoint
//   gh_t = C_t * gy_t + exp(delta_{t+1} A) * gh_{t+1}
// runs backwards through it. The inner loops run over d_state with no branches (compiled with -O3,
// once per CPU level, like the other cpu_*.cpp). Sums over channels (dB, dC) go to per-range partial
// buffers and per-row buffers (dDskip, adapters, ...) so tasks never write the same memory.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/ssm_backward.h"
#include "kernels/cpu_common.h"  // last: it switches on the level's instruction set

namespace statetune::kernels::cpu::STATETUNE_CPU_LEVEL {
namespace {

constexpr int64_t kTile = 8;  // channels whose states (kTile * N values) are walked together
static_assert(kTile == 8, "sigmoid_tile computes one v8f per tile");

template <typename T>
struct Args {
  int64_t B = 0, L = 0, D = 0, N = 0, S = 0, chunk = 64;
  int64_t n_ranges = 1, range_width = 0;
  // Inputs, contiguous. delta_bias, Dskip and the adapters may be null (absent).
  const T *x = nullptr, *delta_in = nullptr, *delta_bias = nullptr, *A = nullptr, *Bm = nullptr,
          *Cm = nullptr, *Dskip = nullptr, *z = nullptr, *gout = nullptr;
  const T *state_offset = nullptr, *output_offset = nullptr, *initial_state = nullptr;
  const int64_t* lengths = nullptr;
  const int32_t* slots = nullptr;  // null: every row reads slot 0
  // Outputs, zero-initialised by the caller. Null where not wanted.
  T *dx = nullptr, *ddelta_in = nullptr, *dz = nullptr;  // [B, L, D]
  T *dB_part = nullptr, *dC_part = nullptr;               // [n_ranges, B, L, N]
  T *ddelta_bias_b = nullptr, *dDskip_b = nullptr;        // [B, D]
  T *dA_b = nullptr;                                      // [B, D, N]
  T *dso_b = nullptr, *doo_b = nullptr, *dis_b = nullptr; // [B, D, N], [B, D], [B, D, N]
};

// PyTorch's softplus with beta 1 and threshold 20, and its derivative.
template <typename T>
inline void softplus_and_grad(T v, T& value, T& grad) {
  if (v > T(20)) {
    value = v;
    grad = T(1);
  } else {
    const T e = std::exp(v);
    value = std::log1p(e);
    grad = e / (e + T(1));
  }
}

// out[n] = exp(s * a[n]): the kernels' vectorised expf for fp32 (GCC vectorises no std::exp without
// -ffast-math), std::exp for the fp64 checking path.
inline void exp_scaled(const float* a, float s, float* out, int64_t n) {
  using namespace detail;
  int64_t i = 0;
  const v8f vs = splat8(s);
  for (; i + 8 <= n; i += 8) store8(out + i, exp8(vs * load8(a + i)));
  for (; i < n; ++i) out[i] = exp1(s * a[i]);
}
inline void exp_scaled(const double* a, double s, double* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = std::exp(s * a[i]);
}

// One step of the adjoint for one channel, over d_state. Separate, with restrict pointers, because
// GCC gives up vectorising the loop when it has to version it for this many possible aliases.
template <typename T>
inline void adjoint_step(int64_t N, const T* __restrict hcur, const T* __restrict Hp,
                         const T* __restrict Ct, const T* __restrict e, const T* __restrict hprev,
                         const T* __restrict Ad, const T* __restrict Bt, T gy, T xv, T delta_x,
                         T* __restrict ghd, T* __restrict dCt, T* __restrict dBt,
                         T* __restrict acc_y, T* __restrict acc_delta, T* __restrict acc_x) {
  for (int64_t n = 0; n < N; ++n) {
    const T read = hcur[n] + Hp[n];
    acc_y[n] = Ct[n] * read;
    dCt[n] += gy * read;
    const T g_h = ghd[n] + gy * Ct[n];  // gradient of h_t
    const T p = g_h * e[n] * hprev[n];  // d/d(delta*A) of exp(delta*A) * h_{t-1}
    acc_delta[n] = p * Ad[n] + g_h * Bt[n] * xv;
    acc_x[n] = g_h * Bt[n];
    dBt[n] += g_h * delta_x;
    ghd[n] = g_h * e[n];  // carried to h_{t-1}
  }
}

// out[j] = sigmoid(z[j]) for the channels of a tile (contiguous in the channel-last layout).
inline void sigmoid_tile(const float* z, float* out, int64_t nd) {
  using namespace detail;
  if (nd == 8) {
    store8(out, splat8(1.0f) / (splat8(1.0f) + exp8(-load8(z))));
    return;
  }
  for (int64_t j = 0; j < nd; ++j) out[j] = 1.0f / (1.0f + exp1(-z[j]));
}
inline void sigmoid_tile(const double* z, double* out, int64_t nd) {
  for (int64_t j = 0; j < nd; ++j) out[j] = 1.0 / (1.0 + std::exp(-z[j]));
}

template <typename T>
void run_range(const Args<T>& a, int64_t b, int64_t r) {
  const int64_t L = a.L, D = a.D, N = a.N, chunk = a.chunk;
  const int64_t d_begin = r * a.range_width;
  const int64_t d_end = std::min(D, d_begin + a.range_width);
  const int64_t len = a.lengths[b];
  if (len <= 0 || d_begin >= d_end) return;
  const int64_t slot = a.slots ? a.slots[b] : 0;
  const int64_t n_chunks = (len + chunk - 1) / chunk;
  T* dB = a.dB_part + (r * a.B + b) * L * N;
  T* dC = a.dC_part + (r * a.B + b) * L * N;

  const int64_t tile_n = kTile * N;
  std::vector<T> ckpt(n_chunks * tile_n);
  std::vector<T> hs((chunk + 1) * tile_n);  // states h_{t0-1} .. h_{t1-1} of one chunk
  std::vector<T> decay(chunk * tile_n);     // exp(delta_t * A) of one chunk
  // delta and softplus' derivative of the tile at every step: computed once, in pass 1.
  std::vector<T> deltas(len * kTile), dsoft(len * kTile);
  std::vector<T> gh(tile_n), zeros(N, T(0)), acc_delta(N), acc_x(N), acc_y(N), e_tmp(N),
      sig_z(kTile);

  for (int64_t d0 = d_begin; d0 < d_end; d0 += kTile) {
    const int64_t nd = std::min(kTile, d_end - d0);

    // 1. Forward through the whole sequence, keeping the state at the start of each chunk.
    T* h = hs.data();
    for (int64_t dd = 0; dd < nd; ++dd) {
      const T* h0 = a.initial_state ? a.initial_state + (slot * D + d0 + dd) * N : zeros.data();
      std::copy(h0, h0 + N, h + dd * N);
    }
    for (int64_t t = 0; t < len; ++t) {
      if (t % chunk == 0) std::copy(h, h + nd * N, ckpt.data() + (t / chunk) * tile_n);
      const int64_t row = (b * L + t) * D;
      const T* Bt = a.Bm + (b * L + t) * N;
      for (int64_t dd = 0; dd < nd; ++dd) {
        const int64_t d = d0 + dd;
        T& delta = deltas[t * kTile + dd];
        softplus_and_grad(a.delta_in[row + d] + (a.delta_bias ? a.delta_bias[d] : T(0)), delta,
                          dsoft[t * kTile + dd]);
        const T dx = delta * a.x[row + d];
        T* hd = h + dd * N;
        exp_scaled(a.A + d * N, delta, e_tmp.data(), N);
        for (int64_t n = 0; n < N; ++n) hd[n] = e_tmp[n] * hd[n] + dx * Bt[n];
      }
    }

    // 2. Chunks last to first: recompute the chunk's states, then the adjoint backwards through it.
    std::fill(gh.begin(), gh.end(), T(0));
    for (int64_t c = n_chunks - 1; c >= 0; --c) {
      const int64_t t0 = c * chunk;
      const int64_t steps = std::min(len, t0 + chunk) - t0;
      std::copy(ckpt.data() + c * tile_n, ckpt.data() + c * tile_n + nd * N, hs.data());
      for (int64_t s = 0; s < steps; ++s) {
        const int64_t t = t0 + s;
        const int64_t row = (b * L + t) * D;
        const T* Bt = a.Bm + (b * L + t) * N;
        for (int64_t dd = 0; dd < nd; ++dd) {
          const int64_t d = d0 + dd;
          const T delta = deltas[t * kTile + dd];
          const T dx = delta * a.x[row + d];
          const T* prev = hs.data() + (s * kTile + dd) * N;
          T* next = hs.data() + ((s + 1) * kTile + dd) * N;
          T* e = decay.data() + (s * kTile + dd) * N;
          exp_scaled(a.A + d * N, delta, e, N);
          for (int64_t n = 0; n < N; ++n) next[n] = e[n] * prev[n] + dx * Bt[n];
        }
      }
      for (int64_t s = steps - 1; s >= 0; --s) {
        const int64_t t = t0 + s;
        const int64_t row = (b * L + t) * D;
        const T* Bt = a.Bm + (b * L + t) * N;
        const T* Ct = a.Cm + (b * L + t) * N;
        T* dBt = dB + t * N;
        T* dCt = dC + t * N;
        sigmoid_tile(a.z + row + d0, sig_z.data(), nd);
        for (int64_t dd = 0; dd < nd; ++dd) {
          const int64_t d = d0 + dd;
          const int64_t i = row + d;
          const T* hcur = hs.data() + ((s + 1) * kTile + dd) * N;
          const T* hprev = hs.data() + (s * kTile + dd) * N;
          const T* e = decay.data() + (s * kTile + dd) * N;
          const T* Hp = a.state_offset ? a.state_offset + (slot * D + d) * N : zeros.data();
          const T* Ad = a.A + d * N;
          const T xv = a.x[i];
          const T dskip = a.Dskip ? a.Dskip[d] : T(0);

          const T zv = a.z[i];
          const T sz = sig_z[dd];
          const T g = a.gout[i];
          const T gy = g * zv * sz;  // gradient of y_t
          if (a.dDskip_b) a.dDskip_b[b * D + d] += gy * xv;
          if (a.doo_b) a.doo_b[b * D + d] += gy;
          if (a.dso_b) {
            T* dso = a.dso_b + (b * D + d) * N;
            for (int64_t n = 0; n < N; ++n) dso[n] += gy * Ct[n];
          }

          const T delta = deltas[t * kTile + dd];
          const T delta_x = delta * xv;
          T* ghd = gh.data() + dd * N;
          adjoint_step(N, hcur, Hp, Ct, e, hprev, Ad, Bt, gy, xv, delta_x, ghd, dCt, dBt,
                       acc_y.data(), acc_delta.data(), acc_x.data());
          if (a.dA_b) {
            // p again, from the gradient now carried: g_h * e[n] = ghd[n].
            T* dAd = a.dA_b + (b * D + d) * N;
            for (int64_t n = 0; n < N; ++n) dAd[n] += ghd[n] * hprev[n] * delta;
          }
          // y_t (before the gate) recomputed for dz.
          T y = dskip * xv + (a.output_offset ? a.output_offset[slot * D + d] : T(0));
          T sum_delta = 0, sum_x = 0;
          for (int64_t n = 0; n < N; ++n) {
            y += acc_y[n];
            sum_delta += acc_delta[n];
            sum_x += acc_x[n];
          }
          a.dz[i] = g * y * sz * (T(1) + zv * (T(1) - sz));
          a.dx[i] = gy * dskip + delta * sum_x;
          const T ddin = sum_delta * dsoft[t * kTile + dd];
          a.ddelta_in[i] = ddin;
          if (a.ddelta_bias_b) a.ddelta_bias_b[b * D + d] += ddin;
        }
      }
    }
    // 3. What is left of the adjoint is the gradient of h_0.
    if (a.dis_b) {
      for (int64_t dd = 0; dd < nd; ++dd) {
        std::copy(gh.data() + dd * N, gh.data() + (dd + 1) * N, a.dis_b + (b * D + d0 + dd) * N);
      }
    }
  }
}

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}
template <typename T>
T* mut_or_null(at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}


// ---------------------------------------------------------------------------------------------
// Conv1d backward. Tasks are (row, block of channels); loops run over time with the channel block
// innermost (contiguous in the channel-last layout, so they vectorise). Per time step t the gradient
// of the pre-activation is scattered to the K inputs the window read.

constexpr int64_t kConvBlock = 64;  // channels per conv task

template <typename T>
void conv_backward_block(const T* x, const T* wt /* [K, D] */, const T* bias, const T* gout,
                         int64_t L, int64_t D, int64_t K, int64_t len, int64_t d0, int64_t nd,
                         T* dx, T* dwt_b /* [K, D] or null */, T* dbias_b /* [D] or null */) {
  std::vector<T> pre(nd), dpre(nd);
  for (int64_t t = 0; t < len; ++t) {
    for (int64_t j = 0; j < nd; ++j) pre[j] = bias ? bias[d0 + j] : T(0);
    for (int64_t k = 0; k < K; ++k) {
      const int64_t src = t - (K - 1) + k;
      if (src < 0) continue;
      const T* xs = x + src * D + d0;
      const T* wk = wt + k * D + d0;
      for (int64_t j = 0; j < nd; ++j) pre[j] += wk[j] * xs[j];
    }
    const T* g = gout + t * D + d0;
    for (int64_t j = 0; j < nd; ++j) {
      const T s = T(1) / (T(1) + std::exp(-pre[j]));
      dpre[j] = g[j] * s * (T(1) + pre[j] * (T(1) - s));
    }
    if (dbias_b) {
      for (int64_t j = 0; j < nd; ++j) dbias_b[d0 + j] += dpre[j];
    }
    for (int64_t k = 0; k < K; ++k) {
      const int64_t src = t - (K - 1) + k;
      if (src < 0) continue;
      const T* wk = wt + k * D + d0;
      T* dxs = dx + src * D + d0;
      for (int64_t j = 0; j < nd; ++j) dxs[j] += wk[j] * dpre[j];
      if (dwt_b) {
        const T* xs = x + src * D + d0;
        T* dwk = dwt_b + k * D + d0;
        for (int64_t j = 0; j < nd; ++j) dwk[j] += dpre[j] * xs[j];
      }
    }
  }
}

}  // namespace

ConvGrads causal_conv1d_backward(const at::Tensor& x, const at::Tensor& weight,
                                 const at::Tensor& bias, const at::Tensor& lengths,
                                 const at::Tensor& grad_out, bool need_weight_grads) {
  TORCH_CHECK(x.dim() == 3, "conv backward: x must be [B, L, D]");
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2);
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == D && weight.size(1) >= 1,
              "conv backward: weight must be [D, K]");
  const int64_t K = weight.size(1);
  TORCH_CHECK(grad_out.sizes() == x.sizes(), "conv backward: grad_out must be [B, L, D]");
  if (bias.defined()) TORCH_CHECK(bias.numel() == D, "conv backward: bias must be [D]");
  TORCH_CHECK(lengths.numel() == B, "conv backward: lengths must be [B]");
  const at::Tensor len = lengths.to(at::kCPU, at::kLong).contiguous();
  const int64_t* lp = len.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(lp[b] >= 0 && lp[b] <= L, "conv backward: lengths[", b, "] = ", lp[b],
                " outside [0, ", L, "]");
  }
  const auto ct = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor xc = x.to(at::kCPU, ct).contiguous();
  const at::Tensor wt = weight.to(at::kCPU, ct).t().contiguous();  // [K, D]
  const at::Tensor bc = bias.defined() ? bias.to(at::kCPU, ct).contiguous() : at::Tensor();
  const at::Tensor gc = grad_out.to(at::kCPU, ct).contiguous();
  const auto opts = xc.options();
  at::Tensor dx = at::zeros({B, L, D}, opts);
  at::Tensor dwt_b = need_weight_grads ? at::zeros({B, K, D}, opts) : at::Tensor();
  at::Tensor db_b = need_weight_grads && bc.defined() ? at::zeros({B, D}, opts) : at::Tensor();
  const int64_t blocks = (D + kConvBlock - 1) / kConvBlock;

  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* xp = xc.data_ptr<T>();
    const T* wp = wt.data_ptr<T>();
    const T* bp = ptr_or_null<T>(bc);
    const T* gp = gc.data_ptr<T>();
    T* dxp = dx.data_ptr<T>();
    T* dwp = mut_or_null<T>(dwt_b);
    T* dbp = mut_or_null<T>(db_b);
    at::parallel_for(0, B * blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / blocks, d0 = (task % blocks) * kConvBlock;
        conv_backward_block<T>(xp + b * L * D, wp, bp, gp + b * L * D, L, D, K, lp[b], d0,
                               std::min(kConvBlock, D - d0), dxp + b * L * D,
                               dwp ? dwp + b * K * D : nullptr, dbp ? dbp + b * D : nullptr);
      }
    });
  };
  if (ct == at::kDouble) {
    run(double{});
  } else {
    run(float{});
  }
  ConvGrads g;
  g.dx = dx.to(x.options());
  if (dwt_b.defined()) g.dweight = dwt_b.sum(0).t().contiguous().to(weight.options());
  if (db_b.defined()) g.dbias = db_b.sum(0).reshape(bias.sizes()).to(bias.options());
  return g;
}

ScanGrads selective_scan_backward(const CheckedScan& scan, const at::Tensor& grad_out,
                                  const ScanBackwardOptions& options) {
  const ScanArgs& in = scan.args;
  const LayerAdapters& adapters = in.adapters;
  const int64_t B = scan.B, L = scan.L, D = scan.D, N = scan.N, S = scan.S;
  TORCH_CHECK(options.chunk > 0, "scan backward: chunk must be positive");

  // Off the CPU (fp64 gradient checks, devices without a backward) the inputs are copied here.
  const bool use_double = in.x.scalar_type() == at::kDouble;
  const auto ct = use_double ? at::kDouble : at::kFloat;
  auto prep = [&](const at::Tensor& t) {
    return t.defined() ? t.to(at::kCPU, ct).contiguous() : at::Tensor();
  };
  const at::Tensor xc = prep(in.x), dic = prep(in.delta_in), dbc = prep(in.delta_bias),
                   Ac = prep(in.A), Bc = prep(in.Bm), Cc = prep(in.Cm), Dc = prep(in.Dskip),
                   zc = prep(in.z), gc = prep(grad_out);
  const at::Tensor so = prep(adapters.state_offset), oo = prep(adapters.output_offset),
                   is = prep(adapters.initial_state);
  const at::Tensor len = in.lengths.to(at::kCPU, at::kLong).contiguous();
  const int64_t* lp = len.data_ptr<int64_t>();
  at::Tensor slots;
  if (adapters.slots.defined()) slots = adapters.slots.to(at::kCPU, at::kInt).contiguous();

  // Enough tasks to keep the threads busy; ranges are whole tiles.
  const int64_t tiles = (D + kTile - 1) / kTile;
  const int64_t want = (4 * static_cast<int64_t>(at::get_num_threads()) + B - 1) / std::max<int64_t>(B, 1);
  int64_t n_ranges = std::clamp<int64_t>(want, 1, tiles);
  const int64_t range_width = ((tiles + n_ranges - 1) / n_ranges) * kTile;
  n_ranges = (D + range_width - 1) / range_width;

  const auto opts = xc.options();
  ScanGrads g;
  at::Tensor dx = at::zeros({B, L, D}, opts), ddin = at::zeros({B, L, D}, opts),
             dz = at::zeros({B, L, D}, opts);
  at::Tensor dBp = at::zeros({n_ranges, B, L, N}, opts), dCp = at::zeros({n_ranges, B, L, N}, opts);
  at::Tensor ddb_b = dbc.defined() ? at::zeros({B, D}, opts) : at::Tensor();
  at::Tensor dD_b = Dc.defined() ? at::zeros({B, D}, opts) : at::Tensor();
  at::Tensor dA_b = options.need_dA ? at::zeros({B, D, N}, opts) : at::Tensor();
  at::Tensor dso_b = so.defined() ? at::zeros({B, D, N}, opts) : at::Tensor();
  at::Tensor doo_b = oo.defined() ? at::zeros({B, D}, opts) : at::Tensor();
  at::Tensor dis_b = is.defined() ? at::zeros({B, D, N}, opts) : at::Tensor();

  auto run = [&](auto tag) {
    using T = decltype(tag);
    Args<T> a;
    a.B = B, a.L = L, a.D = D, a.N = N, a.S = S, a.chunk = options.chunk;
    a.n_ranges = n_ranges, a.range_width = range_width;
    a.x = xc.data_ptr<T>(), a.delta_in = dic.data_ptr<T>(), a.delta_bias = ptr_or_null<T>(dbc);
    a.A = Ac.data_ptr<T>(), a.Bm = Bc.data_ptr<T>(), a.Cm = Cc.data_ptr<T>();
    a.Dskip = ptr_or_null<T>(Dc), a.z = zc.data_ptr<T>(), a.gout = gc.data_ptr<T>();
    a.state_offset = ptr_or_null<T>(so), a.output_offset = ptr_or_null<T>(oo);
    a.initial_state = ptr_or_null<T>(is);
    a.lengths = lp;
    a.slots = slots.defined() ? slots.data_ptr<int32_t>() : nullptr;
    a.dx = dx.data_ptr<T>(), a.ddelta_in = ddin.data_ptr<T>(), a.dz = dz.data_ptr<T>();
    a.dB_part = dBp.data_ptr<T>(), a.dC_part = dCp.data_ptr<T>();
    a.ddelta_bias_b = mut_or_null<T>(ddb_b), a.dDskip_b = mut_or_null<T>(dD_b);
    a.dA_b = mut_or_null<T>(dA_b);
    a.dso_b = mut_or_null<T>(dso_b), a.doo_b = mut_or_null<T>(doo_b), a.dis_b = mut_or_null<T>(dis_b);
    at::parallel_for(0, B * n_ranges, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) run_range(a, task / n_ranges, task % n_ranges);
    });
  };
  if (use_double) {
    run(double{});
  } else {
    run(float{});
  }

  // Reductions over channel ranges and rows, then back to the callers' dtypes and device.
  const at::Tensor slot_idx =
      slots.defined() ? slots.to(at::kLong) : at::zeros({B}, len.options());
  auto per_slot = [&](const at::Tensor& per_row, const at::Tensor& like) {
    at::Tensor out = at::zeros(like.sizes(), per_row.options());
    out.index_add_(0, slot_idx, per_row);
    return out;
  };
  g.dx = dx.to(in.x.options());
  g.ddelta_in = ddin.to(in.delta_in.options());
  g.dz = dz.to(in.z.options());
  g.dBm = (n_ranges == 1 ? dBp[0] : dBp.sum(0)).to(in.Bm.options());
  g.dCm = (n_ranges == 1 ? dCp[0] : dCp.sum(0)).to(in.Cm.options());
  if (ddb_b.defined()) g.ddelta_bias = ddb_b.sum(0).to(in.delta_bias.options());
  if (dD_b.defined()) g.dDskip = dD_b.sum(0).to(in.Dskip.options());
  if (dA_b.defined()) g.dA = dA_b.sum(0).to(in.A.options());
  if (dso_b.defined()) g.dstate_offset = per_slot(dso_b, so).to(adapters.state_offset.options());
  if (doo_b.defined()) g.doutput_offset = per_slot(doo_b, oo).to(adapters.output_offset.options());
  if (dis_b.defined()) g.dinitial_state = per_slot(dis_b, is).to(adapters.initial_state.options());
  return g;
}

}  // namespace statetune::kernels::cpu::STATETUNE_CPU_LEVEL

STATETUNE_CPU_LEVEL_END
