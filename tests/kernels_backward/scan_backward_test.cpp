// The scan backward (kernels/cpu_scan_backward.cpp) and its autograd wrapper against autograd through
// a plain LibTorch scan written here (differentiable ops, one time step at a time), and against
// finite differences in double precision.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "kernels/ssm_backward.h"
#include "kernels/ssm_kernels.h"
#include "server/engine/trainer/scan_autograd.h"

namespace statetune::engine::trainer {
namespace {

// Every floating input of the scan. Undefined members are absent.
struct ScanInputs {
  at::Tensor x, delta_in, delta_bias, A, Bm, Cm, Dskip, z;  // activations / frozen weights
  at::Tensor state_offset, output_offset, initial_state;      // adapters [S, ...]
  at::Tensor lengths, slots;                                   // int64 [B], int32 [B] or undefined

  std::vector<at::Tensor*> floats() {
    return {&x, &delta_in, &delta_bias, &A, &Bm, &Cm, &Dskip, &z, &state_offset, &output_offset,
            &initial_state};
  }
  kernels::LayerAdapters adapters() const {
    return kernels::LayerAdapters{slots, state_offset, output_offset, initial_state};
  }
  kernels::ScanArgs args() const {
    return kernels::ScanArgs{x, delta_in, delta_bias, A, Bm, Cm, Dskip, z, lengths, adapters()};
  }
};

const char* const kNames[] = {"x", "delta_in", "delta_bias", "A", "Bm", "Cm", "Dskip", "z",
                              "state_offset", "output_offset", "initial_state"};

struct Shape {
  int64_t B, L, D, N, S;
  std::vector<int64_t> lengths;
  std::vector<int32_t> slots;  // empty: no slots tensor
  bool adapters = true, dskip = true, bias = true;
};

ScanInputs make_inputs(const Shape& s, at::ScalarType dtype, uint64_t seed) {
  at::manual_seed(seed);
  const auto o = at::TensorOptions().dtype(dtype);
  ScanInputs in;
  in.x = at::randn({s.B, s.L, s.D}, o);
  in.delta_in = at::randn({s.B, s.L, s.D}, o) * 0.7 - 1.0;
  // A few pre-activations above softplus' threshold (20): delta = identity there.
  in.delta_in.index_put_({0, 0, 0}, 21.0);
  in.delta_in.index_put_({s.B - 1, 1, s.D - 1}, 23.5);
  if (s.bias) in.delta_bias = at::randn({s.D}, o) * 0.3;
  in.A = -at::exp(at::randn({s.D, s.N}, o) * 0.5);
  in.Bm = at::randn({s.B, s.L, s.N}, o);
  in.Cm = at::randn({s.B, s.L, s.N}, o);
  if (s.dskip) in.Dskip = at::randn({s.D}, o);
  in.z = at::randn({s.B, s.L, s.D}, o);
  if (s.adapters) {
    in.state_offset = at::randn({s.S, s.D, s.N}, o) * 0.5;
    in.output_offset = at::randn({s.S, s.D}, o) * 0.5;
    in.initial_state = at::randn({s.S, s.D, s.N}, o) * 0.5;
  }
  in.lengths = at::tensor(s.lengths, at::kLong);
  if (!s.slots.empty()) in.slots = at::tensor(s.slots, at::kInt);
  return in;
}

// The scan written with differentiable LibTorch ops, straight from docs/adapter-math.md.
at::Tensor reference_scan(const ScanInputs& in) {
  const int64_t B = in.x.size(0), L = in.x.size(1), D = in.x.size(2), N = in.A.size(1);
  const auto o = in.x.options();
  const at::Tensor slots =
      in.slots.defined() ? in.slots.to(at::kLong) : at::zeros({B}, at::kLong);
  at::Tensor pre = in.delta_bias.defined() ? in.delta_in + in.delta_bias : in.delta_in;
  const at::Tensor delta = at::softplus(pre, 1, 20);
  at::Tensor h = in.initial_state.defined() ? in.initial_state.index_select(0, slots)
                                            : at::zeros({B, D, N}, o);
  std::vector<at::Tensor> outs;
  for (int64_t t = 0; t < L; ++t) {
    const at::Tensor m = in.lengths.gt(t).to(o.dtype()).view({B, 1, 1});
    const at::Tensor dt = delta.select(1, t).unsqueeze(2);  // [B, D, 1]
    const at::Tensor xt = in.x.select(1, t);
    const at::Tensor h_new = at::exp(dt * in.A) * h + dt * xt.unsqueeze(2) * in.Bm.select(1, t).unsqueeze(1);
    h = m * h_new + (1 - m) * h;
    at::Tensor read = h;
    if (in.state_offset.defined()) read = read + in.state_offset.index_select(0, slots);
    at::Tensor y = (read * in.Cm.select(1, t).unsqueeze(1)).sum(2);
    if (in.Dskip.defined()) y = y + in.Dskip * xt;
    if (in.output_offset.defined()) y = y + in.output_offset.index_select(0, slots);
    const at::Tensor zt = in.z.select(1, t);
    outs.push_back(y * zt * at::sigmoid(zt) * m.view({B, 1}));
  }
  return at::stack(outs, 1);
}

// Gradients of sum(reference_scan(in) * w) by autograd, one per floating input (undefined if absent).
std::vector<at::Tensor> autograd_grads(const ScanInputs& inputs, const at::Tensor& w) {
  ScanInputs in = inputs;
  std::vector<at::Tensor> leaves;
  for (at::Tensor* t : in.floats()) {
    if (t->defined()) *t = t->detach().clone().requires_grad_(true);
    leaves.push_back(*t);
  }
  const at::Tensor loss = (reference_scan(in) * w).sum();
  std::vector<at::Tensor> defined;
  for (const auto& l : leaves) if (l.defined()) defined.push_back(l);
  const auto g = torch::autograd::grad({loss}, defined);
  std::vector<at::Tensor> out;
  size_t k = 0;
  for (const auto& l : leaves) out.push_back(l.defined() ? g[k++] : at::Tensor());
  return out;
}

std::vector<at::Tensor> as_list(const kernels::ScanGrads& g) {
  return {g.dx, g.ddelta_in, g.ddelta_bias, g.dA, g.dBm, g.dCm, g.dDskip, g.dz,
          g.dstate_offset, g.doutput_offset, g.dinitial_state};
}

kernels::ScanGrads kernel_grads(const ScanInputs& in, const at::Tensor& w, int64_t chunk,
                                bool need_dA = true) {
  kernels::ScanBackwardOptions options;
  options.chunk = chunk;
  options.need_dA = need_dA;
  return kernels::selective_scan_backward(in.args(), w, options);
}

// max |a - b| <= atol + rtol * max |b|, elementwise worst case reported.
void expect_close(const at::Tensor& got, const at::Tensor& want, double rtol, double atol,
                  const std::string& what) {
  ASSERT_EQ(got.defined(), want.defined()) << what;
  if (!want.defined()) return;
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const at::Tensor g = got.to(at::kDouble), e = want.to(at::kDouble);
  const double err = (g - e).abs().max().item<double>();
  const double scale = e.abs().max().item<double>();
  EXPECT_LE(err, atol + rtol * scale) << what << ": max error " << err << ", max |want| " << scale;
}

const Shape kMixed{4, 11, 13, 5, 3, {11, 7, 1, 9}, {2, 0, 1, 2}};

TEST(ScanBackward, DoubleMatchesAutogradWithAllAdaptersMixedSlotsAndPadding) {
  const ScanInputs in = make_inputs(kMixed, at::kDouble, 1);
  const at::Tensor w = at::randn({4, 11, 13}, at::kDouble);
  const auto want = autograd_grads(in, w);
  for (int64_t chunk : {1, 4, 64}) {
    const auto got = as_list(kernel_grads(in, w, chunk));
    for (size_t i = 0; i < got.size(); ++i) {
      expect_close(got[i], want[i], 1e-11, 1e-12, std::string(kNames[i]) + " chunk " + std::to_string(chunk));
    }
  }
}

TEST(ScanBackward, PaddingPositionsGetZeroGradients) {
  Shape s = kMixed;
  s.lengths = {11, 0, 3, 6};  // a row with no tokens at all
  const ScanInputs in = make_inputs(s, at::kDouble, 2);
  const at::Tensor w = at::randn({4, 11, 13}, at::kDouble);
  const auto g = kernel_grads(in, w, 4);
  for (int64_t b = 0; b < s.B; ++b) {
    const int64_t len = s.lengths[b];
    for (const at::Tensor* t : {&g.dx, &g.ddelta_in, &g.dz, &g.dBm, &g.dCm}) {
      if (len < s.L) {
        EXPECT_EQ(t->select(0, b).narrow(0, len, s.L - len).abs().max().item<double>(), 0.0) << b;
      }
      if (len > 0) EXPECT_GT(t->select(0, b).narrow(0, 0, len).abs().max().item<double>(), 0.0) << b;
    }
  }
  // Slot 0 is read only by the empty row: no gradient reaches it.
  EXPECT_EQ(g.dstate_offset[0].abs().max().item<double>(), 0.0);
  EXPECT_EQ(g.doutput_offset[0].abs().max().item<double>(), 0.0);
  EXPECT_EQ(g.dinitial_state[0].abs().max().item<double>(), 0.0);
  const auto want = autograd_grads(in, w);
  const auto got = as_list(g);
  for (size_t i = 0; i < got.size(); ++i) expect_close(got[i], want[i], 1e-11, 1e-12, kNames[i]);
}

TEST(ScanBackward, AbsentOptionalInputsGiveUndefinedGradients) {
  Shape s{3, 9, 10, 4, 1, {9, 5, 8}, {}};
  s.adapters = false, s.dskip = false, s.bias = false;
  const ScanInputs in = make_inputs(s, at::kDouble, 3);
  const at::Tensor w = at::randn({3, 9, 10}, at::kDouble);
  const auto g = kernel_grads(in, w, 3, /*need_dA=*/false);
  EXPECT_FALSE(g.dA.defined());
  auto want = autograd_grads(in, w);
  want[3] = at::Tensor();  // dA was not asked for
  const auto got = as_list(g);
  for (size_t i = 0; i < got.size(); ++i) expect_close(got[i], want[i], 1e-11, 1e-12, kNames[i]);

  // One adapter kind alone, every row on slot 0 (no slots tensor).
  ScanInputs only = make_inputs(s, at::kDouble, 4);
  only.state_offset = at::randn({1, 10, 4}, at::kDouble);
  const auto g2 = as_list(kernel_grads(only, w, 64));
  const auto want2 = autograd_grads(only, w);
  for (size_t i = 0; i < g2.size(); ++i) expect_close(g2[i], want2[i], 1e-11, 1e-12, kNames[i]);
}

TEST(ScanBackward, MatchesCentralFiniteDifferencesInDouble) {
  // Also checks the reference scan of this test, independently of autograd.
  const Shape s{2, 5, 3, 2, 2, {5, 3}, {1, 0}};
  ScanInputs in = make_inputs(s, at::kDouble, 5);
  const at::Tensor w = at::randn({2, 5, 3}, at::kDouble);
  const auto got = as_list(kernel_grads(in, w, 2));
  auto floats = in.floats();
  const double eps = 1e-6;
  for (size_t i = 0; i < floats.size(); ++i) {
    at::Tensor& p = *floats[i];
    const at::Tensor flat = p.view({-1});
    at::Tensor fd = at::zeros_like(flat);
    for (int64_t k = 0; k < flat.numel(); ++k) {
      const double v = flat[k].item<double>();
      flat[k] = v + eps;
      const double up = (reference_scan(in) * w).sum().item<double>();
      flat[k] = v - eps;
      const double down = (reference_scan(in) * w).sum().item<double>();
      flat[k] = v;
      fd[k] = (up - down) / (2 * eps);
    }
    expect_close(got[i], fd.view(p.sizes()), 1e-6, 1e-7, kNames[i]);
  }
}

TEST(ScanBackward, FloatMatchesDoubleAutograd) {
  const ScanInputs in64 = make_inputs(kMixed, at::kDouble, 6);
  const at::Tensor w64 = at::randn({4, 11, 13}, at::kDouble);
  const auto want = autograd_grads(in64, w64);
  ScanInputs in32 = in64;
  for (at::Tensor* t : in32.floats()) {
    if (t->defined()) *t = t->to(at::kFloat);
  }
  const auto got = as_list(kernel_grads(in32, w64.to(at::kFloat), 4));
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].scalar_type(), at::kFloat) << kNames[i];
    expect_close(got[i], want[i], 1e-4, 1e-6, kNames[i]);
  }
}

TEST(ScanAutograd, ForwardIsTheKernelAndGradientsReachEveryInput) {
  const ScanInputs in64 = make_inputs(kMixed, at::kDouble, 7);
  const at::Tensor w64 = at::randn({4, 11, 13}, at::kDouble);
  const auto want = autograd_grads(in64, w64);
  ScanInputs in = in64;
  for (at::Tensor* t : in.floats()) {
    if (t->defined()) *t = t->to(at::kFloat).detach().requires_grad_(true);
  }
  in.A.requires_grad_(false);  // frozen base weight: no dA is computed
  ScanAutogradOptions options;
  options.chunk = 4;
  const at::Tensor out = selective_scan(in.args(), options);
  expect_close(out, reference_scan(in64), 1e-5, 1e-6, "out");
  (out * w64.to(at::kFloat)).sum().backward();
  const auto floats = in.floats();
  for (size_t i = 0; i < floats.size(); ++i) {
    if (i == 3) {
      EXPECT_FALSE(floats[i]->grad().defined());
      continue;
    }
    expect_close(floats[i]->grad(), want[i], 1e-4, 1e-6, kNames[i]);
  }
}

TEST(ScanAutograd, Bf16ActivationsGetBf16Gradients) {
  // bf16 activations, fp32 weights and adapters (the kernels' contract); compared with the fp64
  // reference on the same (bf16-rounded) values, within bf16 tolerances.
  ScanInputs in64 = make_inputs(kMixed, at::kDouble, 9);
  for (at::Tensor* t : {&in64.x, &in64.delta_in, &in64.Bm, &in64.Cm, &in64.z}) {
    *t = t->to(at::kBFloat16).to(at::kDouble);
  }
  const at::Tensor w64 = at::randn({4, 11, 13}, at::kDouble);
  const auto want = autograd_grads(in64, w64);
  ScanInputs in = in64;
  for (at::Tensor* t : in.floats()) {
    const bool activation = t == &in.x || t == &in.delta_in || t == &in.Bm || t == &in.Cm || t == &in.z;
    if (t->defined()) *t = t->to(activation ? at::kBFloat16 : at::kFloat).detach().requires_grad_(true);
  }
  const at::Tensor out = selective_scan(in.args());
  EXPECT_EQ(out.scalar_type(), at::kBFloat16);
  (out.to(at::kFloat) * w64.to(at::kFloat)).sum().backward();
  const auto floats = in.floats();
  for (size_t i = 0; i < floats.size(); ++i) {
    EXPECT_EQ(floats[i]->grad().scalar_type(), floats[i]->scalar_type()) << kNames[i];
    expect_close(floats[i]->grad(), want[i], 2e-2, 1e-3, kNames[i]);
  }
}

TEST(ScanAutograd, GradientsFlowThroughEarlierOps) {
  // The scan inside a larger graph: x and the state offset come from other differentiable ops.
  const ScanInputs base = make_inputs(kMixed, at::kFloat, 8);
  const at::Tensor u = at::randn({4, 11, 13}).requires_grad_(true);
  const at::Tensor so = (base.state_offset * 0.1).requires_grad_(true);
  kernels::ScanArgs args = base.args();
  args.adapters.state_offset = so * 2;
  args.x = at::tanh(u);
  const at::Tensor out = selective_scan(args);
  out.pow(2).sum().backward();

  ScanInputs ref = base;
  ref.x = at::tanh(u.detach().to(at::kDouble)).requires_grad_(true);
  for (at::Tensor* t : ref.floats()) {
    if (t->defined() && t != &ref.x) *t = t->to(at::kDouble);
  }
  ref.state_offset = (so.detach().to(at::kDouble) * 2).requires_grad_(true);
  const at::Tensor ref_out = reference_scan(ref);
  const auto g = torch::autograd::grad({ref_out.pow(2).sum()}, {ref.x, ref.state_offset});
  const at::Tensor tx = at::tanh(u.detach().to(at::kDouble));
  expect_close(u.grad(), g[0] * (1 - tx * tx), 1e-4, 1e-6, "u");
  expect_close(so.grad(), g[1] * 2, 1e-4, 1e-6, "state_offset");
}

}  // namespace
}  // namespace statetune::engine::trainer
