// The CPU selective scan: threads over (batch row x chunk of channels), each task runs its rows
// sequentially over time with the states of its channels in a small local buffer (L1-resident),
// vectorised over d_state. The state offset is folded into the read-out loop so an adapter costs
// one add per (d, n) on top of the base model's FMAs.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "kernels/ssm_kernels.h"
#include "kernels/cpu_common.h"  // last: it switches on the level's instruction set

namespace statetune::kernels::cpu::STATETUNE_CPU_LEVEL {
namespace {

using namespace detail;

// Adapter tensors of one layer as raw pointers plus slot strides (shapes and slots were checked by
// CheckedScan).
struct AdapterPtrs {
  const int32_t* slots = nullptr;
  const float* so = nullptr;
  const float* oo = nullptr;
  const float* h0 = nullptr;
  int64_t so_s = 0, oo_s = 0, h0_s = 0;
  at::Tensor keep_slots, keep_so, keep_oo, keep_h0;

  explicit AdapterPtrs(const LayerAdapters& a) {
    auto slot_view = [&](const at::Tensor& t, at::Tensor& keep, const char* what,
                         int64_t& stride) -> const float* {
      if (!t.defined()) return nullptr;
      TORCH_CHECK(t.scalar_type() == at::kFloat, "cpu scan: ", what, " must be fp32");
      // Contiguous inside a slot is the contract; a view that is not gets copied (still correct).
      keep = contiguous_inside_rows(t) ? t : t.contiguous();
      stride = keep.stride(0);
      return keep.data_ptr<float>();
    };
    so = slot_view(a.state_offset, keep_so, "state_offset", so_s);
    oo = slot_view(a.output_offset, keep_oo, "output_offset", oo_s);
    h0 = slot_view(a.initial_state, keep_h0, "initial_state", h0_s);
    if (a.slots.defined()) {
      keep_slots = a.slots.to(at::kInt).contiguous();
      slots = keep_slots.data_ptr<int32_t>();
    }
  }
  int64_t slot(int64_t b) const { return slots ? slots[b] : 0; }
};

// One (d) row of the recurrence over d_state, returning C . (h + H'):
//   h[n] = exp(dt*A[n]) h[n] + dBx*Bv[n];  y = sum_n C[n] (h[n] + so[n])
// NT > 0 fixes N at compile time (N = 16 is every Mamba-1 checkpoint); SO says whether there is a
// state offset.
template <int NT, bool SO>
inline float update_row(int64_t N_, float* __restrict h, const float* __restrict a,
                        const float* __restrict bv, const float* __restrict cv,
                        const float* __restrict so, float dt, float dbx) {
  const int64_t N = NT > 0 ? NT : N_;
  const v8f vdt = splat8(dt), vdbx = splat8(dbx);
  v8f acc = splat8(0.0f);
  int64_t n = 0;
  for (; n + 8 <= N; n += 8) {
    const v8f e = exp8(vdt * load8(a + n));
    const v8f hn = e * load8(h + n) + vdbx * load8(bv + n);
    store8(h + n, hn);
    if constexpr (SO) {
      acc += load8(cv + n) * (hn + load8(so + n));
    } else {
      acc += load8(cv + n) * hn;
    }
  }
  float y = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; n < N; ++n) {
    const float hn = exp1(dt * a[n]) * h[n] + dbx * bv[n];
    h[n] = hn;
    y += cv[n] * (SO ? hn + so[n] : hn);
  }
  return y;
}

// Per-thread scratch, grown once and reused, so that steady-state calls do not allocate.
struct Scratch {
  std::vector<float> h, bv, cv, dt, xv, gate, y;
  void ensure(int64_t chunk, int64_t N) {
    if (static_cast<int64_t>(h.size()) < chunk * N) h.resize(chunk * N);
    for (auto* v : {&bv, &cv})
      if (static_cast<int64_t>(v->size()) < N) v->resize(N);
    for (auto* v : {&dt, &xv, &gate, &y})
      if (static_cast<int64_t>(v->size()) < chunk) v->resize(chunk);
  }
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// The raw pointers and sizes the scan loops read.
struct ScanPtrs {
  int64_t B, L, D, N;
  const float *A, *dskip, *dbias;
  const int64_t* rows;
  float* ssm;
  int64_t ssm_rs;
};

// Time steps [0, len) of one row for channels [d0, d1), the state in `h` ([d1-d0, N]).
template <typename T, int NT, bool SO>
void scan_chunk(const ScanPtrs& g, const Act<T>& x, const Act<T>& dl, const Act<T>& bm,
                const Act<T>& cm, const Act<T>& z, int64_t b, int64_t d0, int64_t d1, int64_t len,
                const float* so, const float* oo, float* h, Scratch& s, T* out, int64_t out_st) {
  const int64_t N = NT > 0 ? NT : g.N, nd = d1 - d0;
  for (int64_t t = 0; t < len; ++t) {
    const T* bt = bm.at(b, t);
    const T* ct = cm.at(b, t);
    for (int64_t n = 0; n < N; ++n) s.bv[n] = to_f(bt[n]), s.cv[n] = to_f(ct[n]);
    const T* xt = x.at(b, t) + d0;
    const T* dtt = dl.at(b, t) + d0;
    const T* zt = z.at(b, t) + d0;
    for (int64_t i = 0; i < nd; ++i) {
      s.xv[i] = to_f(xt[i]);
      s.dt[i] = to_f(dtt[i]) + (g.dbias ? g.dbias[d0 + i] : 0.0f);
      s.gate[i] = to_f(zt[i]);
    }
    softplus_inplace(s.dt.data(), nd);
    silu_inplace(s.gate.data(), nd);
    T* ot = out + b * g.L * g.D + t * out_st + d0;
    for (int64_t i = 0; i < nd; ++i) {
      const int64_t d = d0 + i;
      const float dt = s.dt[i], xv = s.xv[i];
      float y = update_row<NT, SO>(N, h + i * N, g.A + d * N, s.bv.data(), s.cv.data(),
                                   SO ? so + d * N : nullptr, dt, dt * xv);
      if (g.dskip) y += g.dskip[d] * xv;
      if (oo) y += oo[d];
      ot[i] = from_f<T>(y * s.gate[i]);
    }
  }
  for (int64_t t = len; t < g.L; ++t) {
    T* ot = out + b * g.L * g.D + t * out_st + d0;
    for (int64_t i = 0; i < nd; ++i) ot[i] = from_f<T>(0.0f);
  }
}

template <typename T, int NT>
void scan_prefill_impl(const ScanPtrs& g, const Act<T>& x, const Act<T>& dl, const Act<T>& bm,
                       const Act<T>& cm, const Act<T>& z, const int64_t* lengths,
                       const AdapterPtrs& ad, bool resume, T* out) {
  const int64_t nchunk = (g.D + kChunk - 1) / kChunk;
  at::parallel_for(0, g.B * nchunk, 1, [&](int64_t begin, int64_t end) {
    Scratch& s = scratch();
    s.ensure(kChunk, g.N);
    for (int64_t w = begin; w < end; ++w) {
      const int64_t b = w / nchunk, d0 = (w % nchunk) * kChunk, d1 = std::min(g.D, d0 + kChunk);
      const int64_t slot = ad.slot(b), nd = d1 - d0;
      float* row = g.ssm + g.rows[b] * g.ssm_rs + d0 * g.N;
      float* h = s.h.data();
      if (resume) {
        std::copy(row, row + nd * g.N, h);
      } else if (ad.h0) {
        const float* h0 = ad.h0 + slot * ad.h0_s + d0 * g.N;
        std::copy(h0, h0 + nd * g.N, h);
      } else {
        std::fill(h, h + nd * g.N, 0.0f);
      }
      const float* so = ad.so ? ad.so + slot * ad.so_s : nullptr;
      const float* oo = ad.oo ? ad.oo + slot * ad.oo_s : nullptr;
      if (so) {
        scan_chunk<T, NT, true>(g, x, dl, bm, cm, z, b, d0, d1, lengths[b], so, oo, h, s, out, g.D);
      } else {
        scan_chunk<T, NT, false>(g, x, dl, bm, cm, z, b, d0, d1, lengths[b], so, oo, h, s, out,
                                 g.D);
      }
      std::copy(h, h + nd * g.N, row);
    }
  });
}

// How far ahead (in state rows) the decode step prefetches; see step_chunk.
constexpr int64_t kPrefetchRows = 8;

// One token per row, the state updated in place in its cache row.
template <typename T, int NT, bool SO>
void step_chunk(const ScanPtrs& g, const Act<T>& x, const Act<T>& dl, const Act<T>& bm,
                const Act<T>& cm, const Act<T>& z, int64_t b, int64_t d0, int64_t d1,
                const float* so, const float* oo, Scratch& s, T* out) {
  const int64_t N = NT > 0 ? NT : g.N, nd = d1 - d0;
  const T* bt = bm.at(b, 0);
  const T* ct = cm.at(b, 0);
  for (int64_t n = 0; n < N; ++n) s.bv[n] = to_f(bt[n]), s.cv[n] = to_f(ct[n]);
  const T* xt = x.at(b, 0) + d0;
  const T* dtt = dl.at(b, 0) + d0;
  const T* zt = z.at(b, 0) + d0;
  for (int64_t i = 0; i < nd; ++i) {
    s.xv[i] = to_f(xt[i]);
    s.dt[i] = to_f(dtt[i]) + (g.dbias ? g.dbias[d0 + i] : 0.0f);
    s.gate[i] = to_f(zt[i]);
  }
  softplus_inplace(s.dt.data(), nd);
  silu_inplace(s.gate.data(), nd);
  float* h = g.ssm + g.rows[b] * g.ssm_rs;
  T* ot = out + b * g.D + d0;
  for (int64_t i = 0; i < nd; ++i) {
    const int64_t d = d0 + i;
    // A decode step does little arithmetic per state row (one 64-byte line at N = 16), so it waits on
    // memory: the row's state and, with a state offset, the adapter's row of every sequence stream in
    // from DRAM. Asking for the rows kPrefetchRows ahead hides that latency (past the chunk's end they
    // are the next chunk's rows, which this task or its neighbour reads next; prefetches never fault).
    __builtin_prefetch(h + (d + kPrefetchRows) * N, 1);
    if constexpr (SO) __builtin_prefetch(so + (d + kPrefetchRows) * N, 0);
    const float dt = s.dt[i], xv = s.xv[i];
    float y = update_row<NT, SO>(N, h + d * N, g.A + d * N, s.bv.data(), s.cv.data(),
                                 SO ? so + d * N : nullptr, dt, dt * xv);
    if (g.dskip) y += g.dskip[d] * xv;
    if (oo) y += oo[d];
    ot[i] = from_f<T>(y * s.gate[i]);
  }
}

template <typename T, int NT>
void scan_step_impl(const ScanPtrs& g, const Act<T>& x, const Act<T>& dl, const Act<T>& bm,
                    const Act<T>& cm, const Act<T>& z, const AdapterPtrs& ad, T* out) {
  const int64_t nchunk = (g.D + kChunk - 1) / kChunk;
  at::parallel_for(0, g.B * nchunk, 1, [&](int64_t begin, int64_t end) {
    Scratch& s = scratch();
    s.ensure(kChunk, g.N);
    for (int64_t w = begin; w < end; ++w) {
      const int64_t b = w / nchunk, d0 = (w % nchunk) * kChunk, d1 = std::min(g.D, d0 + kChunk);
      const int64_t slot = ad.slot(b);
      const float* so = ad.so ? ad.so + slot * ad.so_s : nullptr;
      const float* oo = ad.oo ? ad.oo + slot * ad.oo_s : nullptr;
      if (so) {
        step_chunk<T, NT, true>(g, x, dl, bm, cm, z, b, d0, d1, so, oo, s, out);
      } else {
        step_chunk<T, NT, false>(g, x, dl, bm, cm, z, b, d0, d1, so, oo, s, out);
      }
    }
  });
}

// The pointer set-up prefill and step share.
struct Prepared {
  ScanPtrs g;
  at::Tensor A, dskip, dbias, rows_keep;
};

Prepared prepare(const CheckedScan& scan, LayerCache& cache) {
  const ScanArgs& a = scan.args;
  TORCH_CHECK(a.x.device().is_cpu(), "cpu scan: tensors must be on the CPU");
  Prepared p;
  p.A = f32c(a.A);
  p.dskip = f32c(a.Dskip);
  p.dbias = f32c(a.delta_bias);
  p.g.B = scan.B, p.g.L = scan.L, p.g.D = scan.D, p.g.N = scan.N;
  p.g.A = p.A.data_ptr<float>();
  p.g.dskip = p.dskip.defined() ? p.dskip.data_ptr<float>() : nullptr;
  p.g.dbias = p.dbias.defined() ? p.dbias.data_ptr<float>() : nullptr;
  p.rows_keep = cache.rows.to(at::kLong).contiguous();
  p.g.rows = p.rows_keep.data_ptr<int64_t>();
  p.g.ssm_rs = cache.ssm_state.stride(0);
  p.g.ssm = cache.ssm_state.data_ptr<float>();
  return p;
}

template <typename T>
void prefill_typed(const Prepared& p, const ScanArgs& a, const int64_t* lengths,
                   const AdapterPtrs& ad, bool resume, at::Tensor& out) {
  at::Tensor k1, k2, k3, k4, k5;
  const auto ax = act_of<T>(a.x, k1), adl = act_of<T>(a.delta_in, k2), abm = act_of<T>(a.Bm, k3),
             acm = act_of<T>(a.Cm, k4), az = act_of<T>(a.z, k5);
  T* o = out.data_ptr<T>();
  if (p.g.N == 16) {
    scan_prefill_impl<T, 16>(p.g, ax, adl, abm, acm, az, lengths, ad, resume, o);
  } else {
    scan_prefill_impl<T, 0>(p.g, ax, adl, abm, acm, az, lengths, ad, resume, o);
  }
}

template <typename T>
void step_typed(const Prepared& p, const ScanArgs& a, const AdapterPtrs& ad,
                at::Tensor& out) {
  at::Tensor k1, k2, k3, k4, k5;
  const auto ax = act_of<T>(a.x, k1), adl = act_of<T>(a.delta_in, k2), abm = act_of<T>(a.Bm, k3),
             acm = act_of<T>(a.Cm, k4), az = act_of<T>(a.z, k5);
  T* o = out.data_ptr<T>();
  if (p.g.N == 16) {
    scan_step_impl<T, 16>(p.g, ax, adl, abm, acm, az, ad, o);
  } else {
    scan_step_impl<T, 0>(p.g, ax, adl, abm, acm, az, ad, o);
  }
}

}  // namespace

void selective_scan_prefill(const CheckedScan& scan, LayerCache& cache, bool resume,
                            at::Tensor& out) {
  const ScanArgs& a = scan.args;
  Prepared p = prepare(scan, cache);
  const at::Tensor len = a.lengths.to(at::kLong).contiguous();
  const AdapterPtrs ad(a.adapters);
  prepare_out(out, {scan.B, scan.L, scan.D}, a.x);
  if (a.x.scalar_type() == at::kFloat) {
    prefill_typed<float>(p, a, len.data_ptr<int64_t>(), ad, resume, out);
  } else {
    prefill_typed<c10::BFloat16>(p, a, len.data_ptr<int64_t>(), ad, resume, out);
  }
}

void selective_scan_step(const CheckedScan& scan, LayerCache& cache, at::Tensor& out) {
  const ScanArgs& a = scan.args;
  Prepared p = prepare(scan, cache);
  const AdapterPtrs ad(a.adapters);
  prepare_out(out, {scan.B, scan.D}, a.x);
  if (a.x.scalar_type() == at::kFloat) {
    step_typed<float>(p, a, ad, out);
  } else {
    step_typed<c10::BFloat16>(p, a, ad, out);
  }
}

}  // namespace statetune::kernels::cpu::STATETUNE_CPU_LEVEL

STATETUNE_CPU_LEVEL_END
