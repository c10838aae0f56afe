// The at::Tensor path to the CUDA kernels (dispatch -> kernels/cuda/cuda_backend.cpp) against the
// reference on the CPU: strided views, pool/cache views with layer strides, device slots/rows,
// CPU lengths with padding, fp32 and bf16, output reuse; and the backward (dispatch -> CUDA
// backward) against the CPU backward; RMSNorm (dispatch -> CUDA) against its reference. Built only
// with a CUDA LibTorch; skips when no device is visible.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>
#include <utility>

#include "kernels/rmsnorm.h"
#include "kernels/ssm_backward.h"
#include "kernels/ssm_kernels.h"

namespace statetune::kernels {
namespace {

class KernelsCudaTorch : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (!cuda_kernels_available()) {
      GTEST_SKIP() << "no CUDA device visible to LibTorch (or the CUDA kernels are not compiled in)";
    }
  }
};

void ExpectClose(const at::Tensor& actual, const at::Tensor& expected, double rtol,
                 const std::string& what) {
  const at::Tensor a = actual.to(at::kCPU).to(at::kDouble);
  const at::Tensor e = expected.to(at::kCPU).to(at::kDouble);
  ASSERT_EQ(a.sizes(), e.sizes()) << what;
  const double scale = e.abs().mean().item<double>();
  const at::Tensor bad = (a - e).abs().gt((e.abs() + scale) * rtol + 1e-6);
  EXPECT_EQ(bad.sum().item<int64_t>(), 0)
      << what << ": max abs diff " << (a - e).abs().max().item<double>();
}

constexpr int64_t B = 3, L = 37, D = 96, N = 16, K = 4, S = 3, layers = 2, C = 5, R = 4;

TEST_P(KernelsCudaTorch, PrefillAndStepMatchReference) {
  const bool bf16 = GetParam();
  const at::ScalarType act = bf16 ? at::kBFloat16 : at::kFloat;
  const double rtol = bf16 ? 1e-2 : 1e-4;
  const at::Device dev(at::kCUDA, 0);
  at::manual_seed(bf16 ? 11 : 10);

  const at::Tensor xz = at::randn({B, L, 2 * D}).to(act);
  const at::Tensor dbc = at::randn({B, L, R + 2 * N}).to(act);
  const at::Tensor dt = (at::randn({B, L, D}) * 0.5 - 1.0).to(act);
  const at::Tensor A = -at::exp(at::rand({D, N}) * 2.5 - 1.0);
  const at::Tensor Dskip = at::randn({D}), dbias = at::randn({D}) * 0.5 - 1.5;
  const at::Tensor conv_w = at::randn({D, K}) * 0.5, conv_b = at::randn({D}) * 0.2;
  at::Tensor pool_so = at::randn({S, layers, D, N}) * 0.3, pool_oo = at::randn({S, layers, D}) * 0.5,
             pool_is = at::randn({S, layers, D, N}) * 0.5;
  const at::Tensor lengths = at::tensor({L, int64_t{0}, int64_t{2}}, at::kLong);  // padding, empty row, short row
  const at::Tensor slots = at::tensor({1, 0, 2}, at::kInt);
  const at::Tensor rows = at::tensor({int64_t{4}, int64_t{0}, int64_t{2}}, at::kLong);
  const at::Tensor ssm0 = at::randn({C, layers, D, N}), conv0 = at::randn({C, layers, D, K - 1});

  // Per device: conv prefill, scan prefill, then one decode step of each (the scans read x itself,
  // so a one-ulp bf16 difference in the conv output cannot propagate).
  struct Result {
    at::Tensor conv_out, scan_out, conv_step, scan_step, ssm, conv;
  };
  auto run = [&](const at::Device& d, bool reference) {
    auto to = [&d](const at::Tensor& t) { return t.to(d); };
    const at::Tensor xz_d = to(xz), dbc_d = to(dbc), dt_d = to(dt);
    const at::Tensor so = to(pool_so), oo = to(pool_oo), is = to(pool_is);
    LayerAdapters ad;
    ad.slots = to(slots);
    ad.state_offset = so.select(1, 1);
    ad.output_offset = oo.select(1, 1);
    ad.initial_state = is.select(1, 1);
    Result r;
    r.ssm = to(ssm0);
    r.conv = to(conv0);
    LayerCache cache;
    cache.ssm_state = r.ssm.select(1, 1);
    cache.conv_state = r.conv.select(1, 1);
    cache.rows = to(rows);
    const at::Tensor x = xz_d.narrow(2, 0, D), z = xz_d.narrow(2, D, D);
    const at::Tensor Bm = dbc_d.narrow(2, R, N), Cm = dbc_d.narrow(2, R + N, N);
    const at::Tensor w = to(conv_w), b = to(conv_b), A_d = to(A), Ds = to(Dskip), db = to(dbias);
    const ScanArgs prefill{x, dt_d, db, A_d, Bm, Cm, Ds, z, lengths, ad};
    const ScanArgs step{x.select(1, 3),  dt_d.select(1, 3), db, A_d, Bm.select(1, 3),
                        Cm.select(1, 3), Ds, z.select(1, 3), at::Tensor(), ad};
    if (reference) {
      ref::causal_conv1d_prefill(x, w, b, lengths, cache, false, r.conv_out);
      ref::selective_scan_prefill(CheckedScan::prefill(prefill, cache), cache, false, r.scan_out);
      ref::causal_conv1d_step(x.select(1, 3), w, b, cache, r.conv_step);
      ref::selective_scan_step(CheckedScan::step(step, cache), cache, r.scan_step);
    } else {
      r.conv_out = at::empty({B, L, D}, x.options());  // reused: must not be re-allocated
      const void* conv_ptr = r.conv_out.data_ptr();
      causal_conv1d_prefill(x, w, b, lengths, cache, false, r.conv_out);
      EXPECT_EQ(r.conv_out.data_ptr(), conv_ptr);
      selective_scan_prefill(prefill, cache, false, r.scan_out);
      causal_conv1d_step(x.select(1, 3), w, b, cache, r.conv_step);
      selective_scan_step(step, cache, r.scan_step);
    }
    return r;
  };
  const Result want = run(at::Device(at::kCPU), true);
  const Result got = run(dev, false);
  ASSERT_TRUE(got.scan_out.is_cuda());
  EXPECT_EQ(got.scan_out.scalar_type(), act);
  ExpectClose(got.conv_out, want.conv_out, rtol, "conv prefill out");
  ExpectClose(got.scan_out, want.scan_out, rtol, "scan prefill out");
  ExpectClose(got.conv_step, want.conv_step, rtol, "conv step out");
  ExpectClose(got.scan_step, want.scan_step, rtol, "scan step out");
  ExpectClose(got.ssm, want.ssm, rtol, "ssm_state cache");
  ExpectClose(got.conv, want.conv, rtol, "conv_state cache");
}

// Sums are reduced in another order on the GPU: compare relative to each gradient's largest value.
void ExpectCloseToMax(const at::Tensor& actual, const at::Tensor& expected, double rtol,
                      const std::string& what) {
  ASSERT_TRUE(actual.defined() && expected.defined()) << what;
  const at::Tensor a = actual.to(at::kCPU).to(at::kDouble);
  const at::Tensor e = expected.to(at::kCPU).to(at::kDouble);
  ASSERT_EQ(a.sizes(), e.sizes()) << what;
  const double err = (a - e).abs().max().item<double>();
  const double scale = e.abs().max().item<double>();
  EXPECT_LE(err, rtol * scale + 1e-6) << what << ": max abs error " << err << ", max|e| " << scale;
}

TEST_P(KernelsCudaTorch, BackwardMatchesCpuBackward) {
  const bool bf16 = GetParam();
  const at::ScalarType act = bf16 ? at::kBFloat16 : at::kFloat;
  const double rtol = bf16 ? 1e-2 : 1e-4;
  const at::Device dev(at::kCUDA, 0);
  at::manual_seed(bf16 ? 21 : 20);

  const at::Tensor xz = at::randn({B, L, 2 * D}).to(act);
  const at::Tensor dbc = at::randn({B, L, R + 2 * N}).to(act);
  const at::Tensor dt = (at::randn({B, L, D}) * 0.5 - 1.0).to(act);
  const at::Tensor gout = at::randn({B, L, D}).to(act);
  const at::Tensor A = -at::exp(at::rand({D, N}) * 2.5 - 1.0);
  const at::Tensor Dskip = at::randn({D}), dbias = at::randn({D}) * 0.5 - 1.5;
  const at::Tensor conv_w = at::randn({D, K}) * 0.5, conv_b = at::randn({D}) * 0.2;
  const at::Tensor pool_so = at::randn({S, layers, D, N}) * 0.3,
                   pool_oo = at::randn({S, layers, D}) * 0.5,
                   pool_is = at::randn({S, layers, D, N}) * 0.5;
  const at::Tensor lengths = at::tensor({L, int64_t{0}, int64_t{9}}, at::kLong);
  const at::Tensor slots = at::tensor({1, 0, 1}, at::kInt);  // two rows share slot 1

  auto run = [&](const at::Device& d) {
    auto to = [&d](const at::Tensor& t) { return t.to(d); };
    const at::Tensor xz_d = to(xz), dbc_d = to(dbc);
    LayerAdapters ad;
    ad.slots = to(slots);
    ad.state_offset = to(pool_so).select(1, 1);
    ad.output_offset = to(pool_oo).select(1, 1);
    ad.initial_state = to(pool_is).select(1, 1);
    const at::Tensor x = xz_d.narrow(2, 0, D), z = xz_d.narrow(2, D, D);
    const at::Tensor Bm = dbc_d.narrow(2, R, N), Cm = dbc_d.narrow(2, R + N, N);
    ScanBackwardOptions opt;
    opt.need_dA = true;
    opt.chunk = 8;
    // The dispatching entry points: CUDA tensors must reach the CUDA backward.
    ScanGrads sg = selective_scan_backward({x, to(dt), to(dbias), to(A), Bm, Cm, to(Dskip), z,
                                            lengths, ad},
                                           to(gout), opt);
    ConvGrads cg = causal_conv1d_backward(x, to(conv_w), to(conv_b), lengths, to(gout), true);
    return std::make_pair(sg, cg);
  };
  const auto [want_s, want_c] = run(at::Device(at::kCPU));
  const auto [got_s, got_c] = run(dev);
  ASSERT_TRUE(got_s.dx.is_cuda());
  EXPECT_EQ(got_s.dx.scalar_type(), act);
  ExpectCloseToMax(got_s.dx, want_s.dx, rtol, "scan dx");
  ExpectCloseToMax(got_s.ddelta_in, want_s.ddelta_in, rtol, "scan ddelta_in");
  ExpectCloseToMax(got_s.dz, want_s.dz, rtol, "scan dz");
  ExpectCloseToMax(got_s.dBm, want_s.dBm, rtol, "scan dBm");
  ExpectCloseToMax(got_s.dCm, want_s.dCm, rtol, "scan dCm");
  ExpectCloseToMax(got_s.dA, want_s.dA, rtol, "scan dA");
  ExpectCloseToMax(got_s.dDskip, want_s.dDskip, rtol, "scan dDskip");
  ExpectCloseToMax(got_s.ddelta_bias, want_s.ddelta_bias, rtol, "scan ddelta_bias");
  ExpectCloseToMax(got_s.dstate_offset, want_s.dstate_offset, rtol, "scan dstate_offset");
  ExpectCloseToMax(got_s.doutput_offset, want_s.doutput_offset, rtol, "scan doutput_offset");
  ExpectCloseToMax(got_s.dinitial_state, want_s.dinitial_state, rtol, "scan dinitial_state");
  ASSERT_TRUE(got_c.dx.is_cuda());
  ExpectCloseToMax(got_c.dx, want_c.dx, rtol, "conv dx");
  ExpectCloseToMax(got_c.dweight, want_c.dweight, rtol, "conv dweight");
  ExpectCloseToMax(got_c.dbias, want_c.dbias, rtol, "conv dbias");
}

// Index tensors built on the CPU are validated by the glue before anything is launched
// (kernels/batch_indices.h): a bad row, a duplicate row, a bad slot (also in a one-slot pool, where
// a zero slot stride once mapped every slot to slot 0) is a c10::Error naming the index, and
// neither the cache nor the output is written.
TEST_P(KernelsCudaTorch, BadIndicesFailBeforeAnythingIsWritten) {
  if (GetParam()) GTEST_SKIP() << "dtype-independent";
  const at::Device dev(at::kCUDA, 0);
  at::manual_seed(30);
  const int64_t b = 2, l = 5, d = 64, n = 8;
  const at::Tensor x = at::randn({b, l, d}, dev), delta = at::randn({b, l, d}, dev) - 1.0,
                   z = at::randn({b, l, d}, dev);
  const at::Tensor Bm = at::randn({b, l, n}, dev), Cm = at::randn({b, l, n}, dev);
  const at::Tensor A = -at::rand({d, n}, dev) - 0.1;
  const at::Tensor lengths = at::full({b}, l, at::kLong);
  struct Case {
    at::Tensor rows, slots;
    int64_t pool_slots;
    std::string expect;
  };
  const at::Tensor ok_slots = at::tensor({0, 1}, at::kInt);
  const Case cases[] = {
      {at::tensor({int64_t{0}, int64_t{3}}, at::kLong), ok_slots, 2, "cache row 3 (batch row 1) outside [0, 3)"},
      {at::tensor({int64_t{1}, int64_t{1}}, at::kLong), ok_slots, 2, "cache row 1 appears twice"},
      {at::tensor({int64_t{0}, int64_t{1}}, at::kLong), at::tensor({0, 2}, at::kInt), 2, "adapter slot 2"},
      {at::tensor({int64_t{0}, int64_t{1}}, at::kLong), at::tensor({1, 0}, at::kInt), 1, "adapter slot 1"},
  };
  for (const Case& c : cases) {
    LayerAdapters ad;
    ad.slots = c.slots;
    ad.state_offset = at::randn({c.pool_slots, d, n}, dev);
    LayerCache cache;
    cache.ssm_state = at::randn({3, d, n}, dev);
    cache.conv_state = at::randn({3, d, K - 1}, dev);
    cache.rows = c.rows;
    const at::Tensor ssm_before = cache.ssm_state.clone(), conv_before = cache.conv_state.clone();
    at::Tensor out = at::full({b, l, d}, 7.0, dev);
    try {
      selective_scan_prefill({x, delta, at::Tensor(), A, Bm, Cm, at::Tensor(), z, lengths, ad},
                             cache, false, out);
      ADD_FAILURE() << c.expect << ": accepted";
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what_without_backtrace()).find(c.expect), std::string::npos)
          << e.what_without_backtrace();
    }
    if (c.slots.equal(ok_slots)) {  // rows are checked by the conv too
      EXPECT_THROW(causal_conv1d_prefill(x, at::randn({d, K}, dev), at::Tensor(), lengths, cache,
                                         false, out),
                   c10::Error)
          << c.expect;
    }
    EXPECT_TRUE(cache.ssm_state.equal(ssm_before)) << c.expect << ": ssm state written";
    EXPECT_TRUE(cache.conv_state.equal(conv_before)) << c.expect << ": conv state written";
    EXPECT_TRUE(out.eq(7.0).all().item<bool>()) << c.expect << ": output written";
  }
}

// d_conv = 1: the conv has no state ([C, D, 0]) and the glue must still accept the cache.
TEST_P(KernelsCudaTorch, ConvWidthOneMatchesReference) {
  const bool bf16 = GetParam();
  const at::ScalarType act = bf16 ? at::kBFloat16 : at::kFloat;
  const at::Device dev(at::kCUDA, 0);
  at::manual_seed(31);
  const at::Tensor x = at::randn({2, 9, 32}).to(act), w = at::randn({32, 1}), bias = at::randn({32});
  const at::Tensor lengths = at::tensor({int64_t{9}, int64_t{4}}, at::kLong);
  const at::Tensor rows = at::tensor({int64_t{1}, int64_t{0}}, at::kLong);
  LayerCache ref_cache, cache;
  ref_cache.conv_state = at::zeros({2, 32, 0});
  ref_cache.rows = rows;
  cache.conv_state = at::zeros({2, 32, 0}, dev);
  cache.rows = rows.to(dev);
  at::Tensor want, got;
  ref::causal_conv1d_prefill(x, w, bias, lengths, ref_cache, false, want);
  causal_conv1d_prefill(x.to(dev), w.to(dev), bias.to(dev), lengths, cache, false, got);
  ExpectClose(got, want, bf16 ? 1e-2 : 1e-4, "conv prefill, d_conv = 1");
  at::Tensor want_step, got_step;
  ref::causal_conv1d_step(x.select(1, 0), w, bias, ref_cache, want_step);
  causal_conv1d_step(x.select(1, 0).to(dev), w.to(dev), bias.to(dev), cache, got_step);
  ExpectClose(got_step, want_step, bf16 ? 1e-2 : 1e-4, "conv step, d_conv = 1");
}

// The model's use: x the fp32 residual stream (here a row-strided view), out in the compute dtype.
TEST_P(KernelsCudaTorch, RmsNormMatchesReference) {
  const bool bf16 = GetParam();
  const at::ScalarType odt = bf16 ? at::kBFloat16 : at::kFloat;
  const at::Device dev(at::kCUDA, 0);
  at::manual_seed(41);
  const int64_t T = 6, M = 2560;
  const at::Tensor x_wide = at::randn({T, M + 4}), w = at::randn({M});
  const at::Tensor x = x_wide.narrow(1, 2, M), x_dev = x_wide.to(dev).narrow(1, 2, M);
  at::Tensor want = at::empty({T, M}, odt);
  ref::rmsnorm(x, w, 1e-5, want);
  at::Tensor got = at::empty({T, M}, at::TensorOptions().dtype(odt).device(dev));
  rmsnorm(x_dev, w.to(dev), 1e-5, got);
  ExpectClose(got, want, bf16 ? 1e-2 : 1e-4, "rmsnorm");
  at::Tensor cpu_out = at::empty({T, M}, odt);
  EXPECT_THROW(rmsnorm(x_dev, w.to(dev), 1e-5, cpu_out), c10::Error) << "out on another device";
}

INSTANTIATE_TEST_SUITE_P(Dtypes, KernelsCudaTorch, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "bf16" : "fp32"; });

}  // namespace
}  // namespace statetune::kernels
