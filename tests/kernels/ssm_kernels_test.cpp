// The scan and conv kernels: the reference against a hand-written formula, and the CPU backend (and
// the dispatching entry points) against the reference over random shapes, adapters, slots, cache
// rows, resumes, padding, dtypes, and prefill versus step-by-step decode.
#include "kernels/ssm_kernels.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace statetune::kernels {
namespace {

enum class Impl { kRef, kCpu, kDispatch };
const char* name(Impl i) { return i == Impl::kRef ? "ref" : i == Impl::kCpu ? "cpu" : "dispatch"; }

void conv_prefill(Impl i, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                  const at::Tensor& lengths, LayerCache& c, bool resume, at::Tensor& out) {
  if (i == Impl::kRef) return ref::causal_conv1d_prefill(x, w, b, lengths, c, resume, out);
  if (i == Impl::kCpu) return cpu::causal_conv1d_prefill(x, w, b, lengths, c, resume, out);
  causal_conv1d_prefill(x, w, b, lengths, c, resume, out);
}
void conv_step(Impl i, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, LayerCache& c,
               at::Tensor& out) {
  if (i == Impl::kRef) return ref::causal_conv1d_step(x, w, b, c, out);
  if (i == Impl::kCpu) return cpu::causal_conv1d_step(x, w, b, c, out);
  causal_conv1d_step(x, w, b, c, out);
}

// One layer's scan inputs in the engine's layout.
struct ScanInputs {
  at::Tensor x, delta_in, delta_bias, A, Bm, Cm, Dskip, z;
  ScanArgs args(const at::Tensor& lengths, const LayerAdapters& ad) const {
    return ScanArgs{x, delta_in, delta_bias, A, Bm, Cm, Dskip, z, lengths, ad};
  }
};

// The backends are called as the dispatch calls them: with the arguments checked once.
void scan_prefill(Impl i, const ScanInputs& in, const at::Tensor& lengths, const LayerAdapters& ad,
                  LayerCache& c, bool resume, at::Tensor& out) {
  const ScanArgs args = in.args(lengths, ad);
  if (i == Impl::kDispatch) return selective_scan_prefill(args, c, resume, out);
  const CheckedScan scan = CheckedScan::prefill(args, c);
  if (i == Impl::kRef) return ref::selective_scan_prefill(scan, c, resume, out);
  cpu::selective_scan_prefill(scan, c, resume, out);
}
void scan_step(Impl i, const ScanInputs& in, const LayerAdapters& ad, LayerCache& c,
               at::Tensor& out) {
  const ScanArgs args = in.args(at::Tensor(), ad);
  if (i == Impl::kDispatch) return selective_scan_step(args, c, out);
  const CheckedScan scan = CheckedScan::step(args, c);
  if (i == Impl::kRef) return ref::selective_scan_step(scan, c, out);
  cpu::selective_scan_step(scan, c, out);
}

at::TensorOptions f32() { return at::TensorOptions().dtype(at::kFloat); }

// |a - b| <= atol + rtol * |b| elementwise, with atol scaled to the size of the expected values.
void expect_close(const at::Tensor& got, const at::Tensor& want, double rtol,
                  const std::string& what, double atol_rel = 1e-5) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const at::Tensor g = got.to(at::kDouble), w = want.to(at::kDouble);
  const double scale = std::max(1.0, w.abs().max().item<double>());
  const double atol = atol_rel * scale;
  const at::Tensor bad = (g - w).abs().gt(atol + rtol * w.abs());
  EXPECT_FALSE(bad.any().item<bool>())
      << what << ": max abs diff " << (g - w).abs().max().item<double>() << " (atol " << atol
      << ", rtol " << rtol << "), " << bad.sum().item<int64_t>() << " of " << g.numel() << " off";
}

struct Problem {
  int64_t B, L, D, N, K, C, S, layers;
  at::ScalarType dtype = at::kFloat;
  ScanInputs scan;
  at::Tensor conv_x, conv_w, conv_b, lengths, rows;
  at::Tensor so_pool, oo_pool, h0_pool;  // [S, layers, ...]
  at::Tensor slots;
  at::Tensor conv_state, ssm_state;  // the caches, [C, layers, ...] so rows are strided
  int64_t layer = 0;
};

// A random problem. A is negative as in Mamba (A = -exp(A_log)); some delta_in are large to take
// softplus' threshold branch.
Problem make_problem(std::mt19937& rng, int64_t B, int64_t L, int64_t D, int64_t N, int64_t K,
                     at::ScalarType dtype = at::kFloat) {
  Problem p;
  p.B = B, p.L = L, p.D = D, p.N = N, p.K = K, p.dtype = dtype;
  p.C = B + 3, p.S = 4, p.layers = 3;
  p.layer = std::uniform_int_distribution<int64_t>(0, p.layers - 1)(rng);
  auto act = [&](std::vector<int64_t> s, double scale = 1.0) {
    return (at::randn(s, f32()) * scale).to(dtype);
  };
  p.scan.x = act({B, L, D});
  p.scan.delta_in = act({B, L, D}, 0.7) - 1.0;
  // A few entries above the softplus threshold.
  // Edge values for softplus: above its threshold, near it, and far in the exp-underflow tail.
  {
    const std::vector<float> edge = {21.5f, 19.99f, -30.0f, 0.0f, -12.0f, 7.0f};
    at::Tensor flat = p.scan.delta_in.view({-1});
    for (size_t i = 0; i < edge.size() && static_cast<int64_t>(i) < flat.numel(); ++i)
      flat[i * 3 % flat.numel()].fill_(edge[i]);
  }
  p.scan.delta_bias = at::randn({D}, f32()) * 0.3;
  p.scan.A = -at::exp(at::randn({D, N}, f32()) * 0.7);
  p.scan.Bm = act({B, L, N});
  p.scan.Cm = act({B, L, N});
  p.scan.Dskip = at::randn({D}, f32());
  p.scan.z = act({B, L, D});
  p.conv_x = act({B, L, D});
  p.conv_w = at::randn({D, K}, f32()) * 0.5;
  p.conv_b = at::randn({D}, f32()) * 0.2;
  std::vector<int64_t> len(B);
  for (auto& l : len) l = std::uniform_int_distribution<int64_t>(1, L)(rng);
  len[0] = L;
  if (B > 1) len[1] = 1;
  p.lengths = at::tensor(len, at::TensorOptions().dtype(at::kLong));
  // Rows: a random permutation of part of the cache.
  p.rows = at::randperm(p.C, at::TensorOptions().dtype(at::kLong)).narrow(0, 0, B).contiguous();
  p.so_pool = at::randn({p.S, p.layers, D, N}, f32()) * 0.3;
  p.oo_pool = at::randn({p.S, p.layers, D}, f32()) * 0.3;
  p.h0_pool = at::randn({p.S, p.layers, D, N}, f32()) * 0.5;
  for (auto* t : {&p.so_pool, &p.oo_pool, &p.h0_pool}) (*t)[0].zero_();  // slot 0 = zero adapter
  std::vector<int32_t> sl(B);
  for (auto& s : sl) s = std::uniform_int_distribution<int32_t>(0, p.S - 1)(rng);
  sl[0] = 0;
  p.slots = at::tensor(sl, at::TensorOptions().dtype(at::kInt));
  p.conv_state = at::randn({p.C, p.layers, D, K - 1}, f32());
  p.ssm_state = at::randn({p.C, p.layers, D, N}, f32());
  return p;
}

// Adapter kinds as bits: 1 state_offset, 2 output_offset, 4 initial_state; 8 = pass slots.
LayerAdapters adapters_of(const Problem& p, int kinds) {
  LayerAdapters a;
  if (kinds & 8) a.slots = p.slots;
  if (kinds & 1) a.state_offset = p.so_pool.select(1, p.layer);
  if (kinds & 2) a.output_offset = p.oo_pool.select(1, p.layer);
  if (kinds & 4) a.initial_state = p.h0_pool.select(1, p.layer);
  return a;
}

// A fresh copy of the problem's caches (same strided layout), so each implementation starts equal.
struct CacheCopy {
  at::Tensor conv_full, ssm_full;
  LayerCache cache;
  CacheCopy(const Problem& p, const at::Tensor& rows) {
    conv_full = p.conv_state.clone();
    ssm_full = p.ssm_state.clone();
    cache.conv_state = conv_full.select(1, p.layer);
    cache.ssm_state = ssm_full.select(1, p.layer);
    cache.rows = rows;
  }
};

// ---------------------------------------------------------------------------------------------
// The reference against the formulas written out by hand (double precision loops).

TEST(ReferenceKernels, MatchesDirectFormula) {
  at::manual_seed(1);
  std::mt19937 rng(1);
  const int64_t B = 3, L = 4, D = 3, N = 2, K = 3;
  for (bool resume : {false, true}) {
    Problem p = make_problem(rng, B, L, D, N, K);
    p.lengths = at::tensor(std::vector<int64_t>{4, 1, 2}, at::TensorOptions().dtype(at::kLong));
    const LayerAdapters ad = adapters_of(p, 1 | 2 | 4 | 8);
    CacheCopy c(p, p.rows);
    at::Tensor out, cout;
    scan_prefill(Impl::kRef, p.scan, p.lengths, ad, c.cache, resume, out);
    conv_prefill(Impl::kRef, p.conv_x, p.conv_w, p.conv_b, p.lengths, c.cache, resume, cout);

    auto X = p.scan.x.accessor<float, 3>(), DI = p.scan.delta_in.accessor<float, 3>(),
         Z = p.scan.z.accessor<float, 3>(), Bv = p.scan.Bm.accessor<float, 3>(),
         Cv = p.scan.Cm.accessor<float, 3>(), CX = p.conv_x.accessor<float, 3>();
    auto A = p.scan.A.accessor<float, 2>(), W = p.conv_w.accessor<float, 2>();
    auto DB = p.scan.delta_bias.accessor<float, 1>(), DS = p.scan.Dskip.accessor<float, 1>(),
         CB = p.conv_b.accessor<float, 1>();
    auto SO = p.so_pool.accessor<float, 4>(), H0 = p.h0_pool.accessor<float, 4>(),
         SS = p.ssm_state.accessor<float, 4>(), CS = p.conv_state.accessor<float, 4>();
    auto OO = p.oo_pool.accessor<float, 3>();
    auto O = out.accessor<float, 3>(), CO = cout.accessor<float, 3>();
    auto NS = c.ssm_full.accessor<float, 4>(), NC = c.conv_full.accessor<float, 4>();
    const int64_t l = p.layer;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t s = p.slots[b].item<int32_t>(), r = p.rows[b].item<int64_t>();
      const int64_t len = p.lengths[b].item<int64_t>();
      for (int64_t d = 0; d < D; ++d) {
        std::vector<double> h(N);
        for (int64_t n = 0; n < N; ++n) h[n] = resume ? SS[r][l][d][n] : H0[s][l][d][n];
        for (int64_t t = 0; t < L; ++t) {
          double want = 0, cwant = 0;
          if (t < len) {
            const double pre = DI[b][t][d] + DB[d];
            const double dt = pre > 20 ? pre : std::log1p(std::exp(pre));
            double y = DS[d] * X[b][t][d] + OO[s][l][d];
            for (int64_t n = 0; n < N; ++n) {
              h[n] = std::exp(dt * A[d][n]) * h[n] + dt * Bv[b][t][n] * X[b][t][d];
              y += Cv[b][t][n] * (h[n] + SO[s][l][d][n]);
            }
            want = y * Z[b][t][d] / (1 + std::exp(-Z[b][t][d]));
            double acc = CB[d];
            for (int64_t k = 0; k < K; ++k) {
              const int64_t j = t - (K - 1) + k;
              const double v = j >= 0 ? CX[b][j][d] : (resume ? CS[r][l][d][K - 1 + j] : 0.0);
              acc += W[d][k] * v;
            }
            cwant = acc / (1 + std::exp(-acc));
          }
          EXPECT_NEAR(O[b][t][d], want, 1e-4 * (1 + std::abs(want))) << b << "," << t << "," << d;
          EXPECT_NEAR(CO[b][t][d], cwant, 1e-5 * (1 + std::abs(cwant)))
              << b << "," << t << "," << d;
        }
        for (int64_t n = 0; n < N; ++n)
          EXPECT_NEAR(NS[r][l][d][n], h[n], 1e-4 * (1 + std::abs(h[n])));
        for (int64_t i = 0; i < K - 1; ++i) {
          const int64_t j = len - (K - 1) + i;
          const double v = j >= 0 ? CX[b][j][d] : (resume ? CS[r][l][d][K - 1 + j] : 0.0);
          EXPECT_FLOAT_EQ(NC[r][l][d][i], v) << "conv state b=" << b << " d=" << d << " i=" << i;
        }
      }
    }
    // Cache rows not named in `rows` are untouched.
    std::vector<bool> used(p.C, false);
    for (int64_t b = 0; b < B; ++b) used[p.rows[b].item<int64_t>()] = true;
    for (int64_t r = 0; r < p.C; ++r)
      if (!used[r]) {
        EXPECT_TRUE(at::equal(c.ssm_full[r], p.ssm_state[r]));
        EXPECT_TRUE(at::equal(c.conv_full[r], p.conv_state[r]));
      }
  }
}

// ---------------------------------------------------------------------------------------------
// Backends against the reference.

void compare_prefill(const Problem& p, int kinds, bool resume, Impl impl, double rtol,
                     const std::string& tag) {
  const LayerAdapters ad = adapters_of(p, kinds);
  CacheCopy want(p, p.rows), got(p, p.rows);
  at::Tensor out_w, out_g, cout_w, cout_g;
  scan_prefill(Impl::kRef, p.scan, p.lengths, ad, want.cache, resume, out_w);
  scan_prefill(impl, p.scan, p.lengths, ad, got.cache, resume, out_g);
  conv_prefill(Impl::kRef, p.conv_x, p.conv_w, p.conv_b, p.lengths, want.cache, resume, cout_w);
  conv_prefill(impl, p.conv_x, p.conv_w, p.conv_b, p.lengths, got.cache, resume, cout_g);
  EXPECT_EQ(out_g.scalar_type(), p.dtype);
  EXPECT_EQ(cout_g.scalar_type(), p.dtype);
  expect_close(out_g, out_w, rtol, tag + " scan out");
  expect_close(got.ssm_full, want.ssm_full, rtol, tag + " ssm state");
  expect_close(cout_g, cout_w, rtol, tag + " conv out");
  expect_close(got.conv_full, want.conv_full, rtol, tag + " conv state");
}

void compare_step(const Problem& p, int kinds, Impl impl, double rtol, const std::string& tag) {
  const LayerAdapters ad = adapters_of(p, kinds);
  ScanInputs in = p.scan;
  for (auto* t : {&in.x, &in.delta_in, &in.Bm, &in.Cm, &in.z}) *t = t->select(1, p.L - 1);
  CacheCopy want(p, p.rows), got(p, p.rows);
  at::Tensor out_w, out_g, cout_w, cout_g;
  scan_step(Impl::kRef, in, ad, want.cache, out_w);
  scan_step(impl, in, ad, got.cache, out_g);
  const at::Tensor cx = p.conv_x.select(1, 0);
  conv_step(Impl::kRef, cx, p.conv_w, p.conv_b, want.cache, cout_w);
  conv_step(impl, cx, p.conv_w, p.conv_b, got.cache, cout_g);
  expect_close(out_g, out_w, rtol, tag + " step out");
  expect_close(got.ssm_full, want.ssm_full, rtol, tag + " step ssm state");
  expect_close(cout_g, cout_w, rtol, tag + " conv step out");
  expect_close(got.conv_full, want.conv_full, rtol, tag + " conv step state");
}

TEST(CpuKernels, MatchReferenceOnRandomShapes) {
  at::manual_seed(7);
  std::mt19937 rng(7);
  auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  const std::vector<int64_t> Ds = {8, 13, 24, 64}, Ns = {1, 5, 8, 16};
  for (int iter = 0; iter < 24; ++iter) {
    const int64_t B = pick(1, 5), L = iter % 4 == 0 ? 1 : pick(1, 33), D = Ds[iter % 4],
                  N = Ns[(iter / 4) % 4], K = pick(2, 4);
    Problem p = make_problem(rng, B, L, D, N, K);
    const int kinds = iter % 16;  // every adapter kind alone and combined, with and without slots
    const bool resume = iter % 3 == 1;
    const std::string tag = "iter " + std::to_string(iter) + " B=" + std::to_string(B) +
                            " L=" + std::to_string(L) + " D=" + std::to_string(D) +
                            " N=" + std::to_string(N) + " K=" + std::to_string(K) +
                            " kinds=" + std::to_string(kinds) + (resume ? " resume" : "");
    for (Impl impl : {Impl::kCpu, Impl::kDispatch}) {
      compare_prefill(p, kinds, resume, impl, 1e-4, tag + " " + name(impl));
      compare_step(p, kinds, impl, 1e-4, tag + " " + name(impl));
    }
  }
}

TEST(CpuKernels, TypicalMambaShape) {
  at::manual_seed(11);
  std::mt19937 rng(11);
  Problem p = make_problem(rng, 4, 19, 96, 16, 4);
  compare_prefill(p, 15, false, Impl::kCpu, 1e-4, "typical");
  compare_prefill(p, 15, true, Impl::kCpu, 1e-4, "typical resume");
  compare_step(p, 15, Impl::kCpu, 1e-4, "typical");
}

TEST(CpuKernels, ContiguousCacheAndReusedOutput) {
  at::manual_seed(12);
  std::mt19937 rng(12);
  Problem p = make_problem(rng, 3, 9, 16, 16, 4);
  p.layers = 1;
  p.layer = 0;
  p.conv_state = p.conv_state.narrow(1, 0, 1).contiguous();
  p.ssm_state = p.ssm_state.narrow(1, 0, 1).contiguous();
  p.so_pool = p.so_pool.narrow(1, 0, 1).contiguous();
  p.oo_pool = p.oo_pool.narrow(1, 0, 1).contiguous();
  p.h0_pool = p.h0_pool.narrow(1, 0, 1).contiguous();
  compare_prefill(p, 15, false, Impl::kCpu, 1e-4, "contiguous");
  // An output buffer of the wrong shape is resized; one of the right shape is written in place.
  const LayerAdapters ad = adapters_of(p, 15);
  CacheCopy c(p, p.rows);
  at::Tensor out = at::empty({1}, f32());
  scan_prefill(Impl::kCpu, p.scan, p.lengths, ad, c.cache, false, out);
  ASSERT_EQ(out.sizes(), p.scan.x.sizes());
  const void* ptr = out.data_ptr();
  CacheCopy c2(p, p.rows);
  scan_prefill(Impl::kCpu, p.scan, p.lengths, ad, c2.cache, false, out);
  EXPECT_EQ(out.data_ptr(), ptr);
}

// The activations as the engine produces them: x and z are halves of in_proj's output, Bm and Cm
// slices of x_proj's, so their time and batch strides are not those of a contiguous tensor.
TEST(CpuKernels, StridedActivationViews) {
  at::manual_seed(13);
  std::mt19937 rng(13);
  Problem p = make_problem(rng, 3, 11, 24, 16, 4);
  const at::Tensor xz = at::randn({3, 11, 48}, f32());
  const at::Tensor dbc = at::randn({3, 11, 2 + 32}, f32());
  p.scan.x = xz.narrow(2, 0, 24);
  p.scan.z = xz.narrow(2, 24, 24);
  p.scan.Bm = dbc.narrow(2, 2, 16);
  p.scan.Cm = dbc.narrow(2, 18, 16);
  p.conv_x = xz.narrow(2, 0, 24);
  compare_prefill(p, 15, false, Impl::kCpu, 1e-4, "strided");
  compare_step(p, 15, Impl::kCpu, 1e-4, "strided");
}

TEST(CpuKernels, Bf16ActivationsWithin1e2) {
  at::manual_seed(5);
  std::mt19937 rng(5);
  for (int iter = 0; iter < 4; ++iter) {
    Problem p = make_problem(rng, 1 + iter, 7 + 5 * iter, 32, 16, 4, at::kBFloat16);
    compare_prefill(p, 15, iter % 2 == 1, Impl::kCpu, 1e-2, "bf16 " + std::to_string(iter));
    compare_step(p, 15, Impl::kCpu, 1e-2, "bf16 " + std::to_string(iter));
  }
  // bf16 weights for the conv as well.
  Problem p = make_problem(rng, 2, 9, 16, 16, 4, at::kBFloat16);
  p.conv_w = p.conv_w.to(at::kBFloat16);
  p.conv_b = p.conv_b.to(at::kBFloat16);
  compare_prefill(p, 0, false, Impl::kCpu, 1e-2, "bf16 weights");
}

// A zero adapter (all three kinds, any slot) must reproduce the base model bit for bit.
TEST(CpuKernels, ZeroAdapterIsBitForBitTheBaseModel) {
  at::manual_seed(3);
  std::mt19937 rng(3);
  Problem p = make_problem(rng, 4, 17, 32, 16, 4);
  p.so_pool.zero_();
  p.oo_pool.zero_();
  p.h0_pool.zero_();
  for (Impl impl : {Impl::kRef, Impl::kCpu}) {
    for (bool resume : {false, true}) {
      CacheCopy base(p, p.rows), adapted(p, p.rows);
      at::Tensor out_b, out_a;
      scan_prefill(impl, p.scan, p.lengths, LayerAdapters{}, base.cache, resume, out_b);
      scan_prefill(impl, p.scan, p.lengths, adapters_of(p, 15), adapted.cache, resume, out_a);
      EXPECT_TRUE(at::equal(out_a, out_b)) << name(impl);
      EXPECT_TRUE(at::equal(adapted.ssm_full, base.ssm_full)) << name(impl);
      ScanInputs in = p.scan;
      for (auto* t : {&in.x, &in.delta_in, &in.Bm, &in.Cm, &in.z}) *t = t->select(1, 0);
      scan_step(impl, in, LayerAdapters{}, base.cache, out_b);
      scan_step(impl, in, adapters_of(p, 15), adapted.cache, out_a);
      EXPECT_TRUE(at::equal(out_a, out_b)) << name(impl);
      EXPECT_TRUE(at::equal(adapted.ssm_full, base.ssm_full)) << name(impl);
    }
  }
}

// Decoding a prompt token by token (conv step + scan step, each row up to its own length) gives
// the prefill's outputs and final states; so does a prefill split into two resumed halves.
TEST(Kernels, PrefillEqualsStepByStepDecode) {
  at::manual_seed(9);
  std::mt19937 rng(9);
  for (Impl impl : {Impl::kRef, Impl::kCpu}) {
    for (int kinds : {0, 15, 1 | 8, 4 | 8}) {
      Problem p = make_problem(rng, 4, 13, 24, 16, 4);
      const LayerAdapters ad = adapters_of(p, kinds);
      CacheCopy pre(p, p.rows), dec(p, p.rows);
      at::Tensor out_p, cout_p;
      scan_prefill(impl, p.scan, p.lengths, ad, pre.cache, false, out_p);
      conv_prefill(impl, p.conv_x, p.conv_w, p.conv_b, p.lengths, pre.cache, false, cout_p);

      // The decode's starting state: what a non-resumed prefill starts from.
      const at::Tensor slots =
          ad.slots.defined() ? ad.slots.to(at::kLong) : at::zeros({p.B}, at::kLong);
      dec.cache.conv_state.index_fill_(0, p.rows, 0.0);
      dec.cache.ssm_state.index_copy_(0, p.rows,
                                      ad.initial_state.defined()
                                          ? ad.initial_state.index_select(0, slots)
                                          : at::zeros({p.B, p.D, p.N}, f32()));
      at::Tensor out_d = at::zeros_like(out_p), cout_d = at::zeros_like(cout_p);
      for (int64_t t = 0; t < p.L; ++t) {
        const at::Tensor active = p.lengths.gt(t).nonzero().view({-1});
        if (active.numel() == 0) break;
        LayerCache c = dec.cache;
        c.rows = p.rows.index_select(0, active);
        LayerAdapters a = ad;
        if (a.slots.defined()) a.slots = a.slots.index_select(0, active);
        ScanInputs in = p.scan;
        for (auto* x : {&in.x, &in.delta_in, &in.Bm, &in.Cm, &in.z})
          *x = x->select(1, t).index_select(0, active);
        at::Tensor o, co;
        scan_step(impl, in, a, c, o);
        conv_step(impl, p.conv_x.select(1, t).index_select(0, active), p.conv_w, p.conv_b, c, co);
        out_d.select(1, t).index_copy_(0, active, o);
        cout_d.select(1, t).index_copy_(0, active, co);
      }
      const std::string tag = std::string(name(impl)) + " kinds=" + std::to_string(kinds);
      expect_close(out_d, out_p, 1e-4, tag + " scan out");
      expect_close(dec.ssm_full, pre.ssm_full, 1e-4, tag + " ssm state");
      expect_close(cout_d, cout_p, 1e-4, tag + " conv out");
      expect_close(dec.conv_full, pre.conv_full, 1e-4, tag + " conv state");

      // Two resumed prefills: positions [0, 5) then the rest (rows shorter than 5 take 0 more).
      CacheCopy two(p, p.rows);
      const int64_t cut = 5;
      const at::Tensor len1 = p.lengths.clamp_max(cut), len2 = (p.lengths - cut).clamp_min(0);
      at::Tensor o1, o2, c1, c2;
      ScanInputs h1 = p.scan, h2 = p.scan;
      for (auto* x : {&h1.x, &h1.delta_in, &h1.Bm, &h1.Cm, &h1.z}) *x = x->narrow(1, 0, cut);
      for (auto* x : {&h2.x, &h2.delta_in, &h2.Bm, &h2.Cm, &h2.z})
        *x = x->narrow(1, cut, p.L - cut);
      scan_prefill(impl, h1, len1, ad, two.cache, false, o1);
      conv_prefill(impl, p.conv_x.narrow(1, 0, cut), p.conv_w, p.conv_b, len1, two.cache, false,
                   c1);
      scan_prefill(impl, h2, len2, ad, two.cache, true, o2);
      conv_prefill(impl, p.conv_x.narrow(1, cut, p.L - cut), p.conv_w, p.conv_b, len2, two.cache,
                   true, c2);
      expect_close(at::cat({o1, o2}, 1), out_p, 1e-4, tag + " resumed scan out");
      expect_close(two.ssm_full, pre.ssm_full, 1e-4, tag + " resumed ssm state");
      expect_close(at::cat({c1, c2}, 1), cout_p, 1e-4, tag + " resumed conv out");
      expect_close(two.conv_full, pre.conv_full, 1e-4, tag + " resumed conv state");
    }
  }
}

TEST(Kernels, RejectsBadLengthsAndReportsNoCuda) {
  at::manual_seed(4);
  std::mt19937 rng(4);
  Problem p = make_problem(rng, 2, 5, 8, 4, 3);
  CacheCopy c(p, p.rows);
  at::Tensor out;
  const at::Tensor bad =
      at::tensor(std::vector<int64_t>{6, 1}, at::TensorOptions().dtype(at::kLong));
  for (Impl impl : {Impl::kRef, Impl::kCpu}) {
    EXPECT_THROW(scan_prefill(impl, p.scan, bad, LayerAdapters{}, c.cache, false, out), c10::Error);
    EXPECT_THROW(conv_prefill(impl, p.conv_x, p.conv_w, p.conv_b, bad, c.cache, false, out),
                 c10::Error);
  }
  // A slot outside the pool, and a cache whose rows are not contiguous inside (the kernels write
  // rows in place, so they cannot work on a copy).
  Problem q = make_problem(rng, 2, 5, 8, 4, 3);
  q.slots = at::tensor(std::vector<int32_t>{0, 9}, at::TensorOptions().dtype(at::kInt));
  EXPECT_THROW(
      scan_prefill(Impl::kCpu, q.scan, q.lengths, adapters_of(q, 1 | 8), c.cache, false, out),
      c10::Error);
  LayerCache strided = c.cache;
  strided.ssm_state = at::zeros({q.C, 4, 8}, f32()).transpose(1, 2);
  EXPECT_THROW(scan_prefill(Impl::kCpu, q.scan, q.lengths, LayerAdapters{}, strided, false, out),
               c10::Error);
  // A device without a backend is refused with an error, not run on the CPU.
  const at::Tensor meta =
      at::empty({2, 8}, at::TensorOptions().dtype(at::kFloat).device(at::kMeta));
  EXPECT_THROW(causal_conv1d_step(meta, q.conv_w, q.conv_b, c.cache, out), c10::Error);
#ifndef STATETUNE_WITH_CUDA
  EXPECT_FALSE(cuda_kernels_available());
#endif
}

// CheckedScan is the one place a scan's arguments are checked, for every backend: a shape, dtype
// or pool that does not fit is refused there, with the sizes it found when everything fits.
TEST(Kernels, CheckedScanRefusesWhatDoesNotFitAndReportsTheSizes) {
  at::manual_seed(5);
  std::mt19937 rng(5);
  Problem p = make_problem(rng, 2, 5, 8, 4, 3);
  CacheCopy c(p, p.rows);
  const LayerAdapters ad = adapters_of(p, 1 | 2 | 8);
  const ScanArgs good = p.scan.args(p.lengths, ad);
  const CheckedScan ok = CheckedScan::prefill(good, c.cache);
  EXPECT_EQ(std::vector<int64_t>({ok.B, ok.L, ok.D, ok.N, ok.S}),
            std::vector<int64_t>({2, 5, 8, 4, p.S}));
  auto refused = [&](ScanArgs a, const std::string& what) {
    try {
      CheckedScan::prefill(a, c.cache);
      ADD_FAILURE() << what << ": accepted";
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what_without_backtrace()).find(what), std::string::npos)
          << e.what_without_backtrace();
    }
  };
  ScanArgs a = good;
  a.Bm = a.Bm.narrow(2, 0, 3);
  refused(a, "Bm has shape");
  a = good;
  a.z = a.z.to(at::kBFloat16);
  refused(a, "z is BFloat16");
  a = good;
  a.Dskip = at::ones({7});
  refused(a, "Dskip has shape");
  a = good;
  a.adapters.output_offset = at::zeros({p.S + 1, 8});
  refused(a, "adapter tensors disagree on S");
  a = good;
  a.lengths = at::Tensor();
  refused(a, "lengths is required");
  // A step has no lengths and takes [B, D] activations.
  const ScanArgs step{p.scan.x.select(1, 0), p.scan.delta_in.select(1, 0), p.scan.delta_bias,
                      p.scan.A, p.scan.Bm.select(1, 0), p.scan.Cm.select(1, 0), p.scan.Dskip,
                      p.scan.z.select(1, 0), at::Tensor(), ad};
  EXPECT_EQ(CheckedScan::step(step, c.cache).L, 1);
  EXPECT_THROW(CheckedScan::step(good, c.cache), c10::Error);
}

}  // namespace
}  // namespace statetune::kernels
