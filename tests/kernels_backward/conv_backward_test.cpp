// The causal conv1d backward (kernels/cpu_scan_backward.cpp) and its autograd wrapper against autograd
// through a LibTorch conv written here, and against finite differences in double precision.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <string>
#include <tuple>
#include <vector>

#include "kernels/ssm_backward.h"
#include "server/engine/trainer/scan_autograd.h"

namespace statetune::engine::trainer {
namespace {

// silu(bias + sum_k w[:, k] * x shifted by K-1-k steps), zero before t = 0 and at padding.
at::Tensor reference_conv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                          const at::Tensor& lengths) {
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2), K = w.size(1);
  at::Tensor pre = bias.defined() ? bias.expand({B, L, D}) : at::zeros({B, L, D}, x.options());
  for (int64_t k = 0; k < K; ++k) {
    const int64_t shift = K - 1 - k;
    if (shift >= L) continue;
    const at::Tensor shifted =
        at::cat({at::zeros({B, shift, D}, x.options()), x.narrow(1, 0, L - shift)}, 1);
    pre = pre + shifted * w.select(1, k);
  }
  const at::Tensor mask = at::arange(L, at::kLong).unsqueeze(0).lt(lengths.unsqueeze(1));  // [B, L]
  return at::silu(pre) * mask.unsqueeze(2).to(x.scalar_type());
}

void expect_close(const at::Tensor& got, const at::Tensor& want, double rtol, double atol,
                  const std::string& what) {
  ASSERT_EQ(got.defined(), want.defined()) << what;
  if (!want.defined()) return;
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const double err = (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>();
  const double scale = want.to(at::kDouble).abs().max().item<double>();
  EXPECT_LE(err, atol + rtol * scale) << what << ": max error " << err << ", max |want| " << scale;
}

struct ConvCase {
  at::Tensor x, w, bias, lengths, gout;
};

ConvCase make_case(int64_t B, int64_t L, int64_t D, int64_t K, std::vector<int64_t> lengths,
                   at::ScalarType dtype, uint64_t seed) {
  at::manual_seed(seed);
  const auto o = at::TensorOptions().dtype(dtype);
  return {at::randn({B, L, D}, o), at::randn({D, K}, o) * 0.5, at::randn({D}, o) * 0.3,
          at::tensor(lengths, at::kLong), at::randn({B, L, D}, o)};
}

std::vector<at::Tensor> autograd_grads(const ConvCase& c) {
  const at::Tensor x = c.x.detach().clone().requires_grad_(true);
  const at::Tensor w = c.w.detach().clone().requires_grad_(true);
  const at::Tensor b = c.bias.detach().clone().requires_grad_(true);
  const at::Tensor loss = (reference_conv(x, w, b, c.lengths) * c.gout).sum();
  return torch::autograd::grad({loss}, {x, w, b});
}

TEST(ConvBackward, DoubleMatchesAutogradWithPadding) {
  // D = 70 spans two channel blocks; a row shorter than K-1 and an empty row.
  const ConvCase c = make_case(4, 9, 70, 4, {9, 2, 0, 6}, at::kDouble, 1);
  const auto want = autograd_grads(c);
  const auto g = kernels::causal_conv1d_backward(c.x, c.w, c.bias, c.lengths, c.gout, true);
  expect_close(g.dx, want[0], 1e-12, 1e-13, "dx");
  expect_close(g.dweight, want[1], 1e-12, 1e-13, "dweight");
  expect_close(g.dbias, want[2], 1e-12, 1e-13, "dbias");
  EXPECT_EQ(g.dx[1].narrow(0, 2, 7).abs().max().item<double>(), 0.0);
  EXPECT_EQ(g.dx[2].abs().max().item<double>(), 0.0);
  // Without weight gradients only dx comes back, unchanged.
  const auto only = kernels::causal_conv1d_backward(c.x, c.w, at::Tensor(), c.lengths, c.gout);
  EXPECT_FALSE(only.dweight.defined());
  EXPECT_FALSE(only.dbias.defined());
}

TEST(ConvBackward, NoBiasAndFiniteDifferences) {
  const ConvCase c = make_case(2, 5, 3, 3, {5, 3}, at::kDouble, 2);
  const auto g = kernels::causal_conv1d_backward(c.x, c.w, at::Tensor(), c.lengths, c.gout, true);
  EXPECT_FALSE(g.dbias.defined());
  const double eps = 1e-6;
  for (const auto& [param, grad, name] :
       {std::tuple<at::Tensor, at::Tensor, const char*>{c.x, g.dx, "dx"}, {c.w, g.dweight, "dweight"}}) {
    const at::Tensor flat = param.view({-1});
    at::Tensor fd = at::zeros_like(flat);
    for (int64_t k = 0; k < flat.numel(); ++k) {
      const double v = flat[k].item<double>();
      flat[k] = v + eps;
      const double up = (reference_conv(c.x, c.w, at::Tensor(), c.lengths) * c.gout).sum().item<double>();
      flat[k] = v - eps;
      const double down = (reference_conv(c.x, c.w, at::Tensor(), c.lengths) * c.gout).sum().item<double>();
      flat[k] = v;
      fd[k] = (up - down) / (2 * eps);
    }
    expect_close(grad, fd.view(param.sizes()), 1e-6, 1e-7, name);
  }
}

TEST(ConvAutograd, ForwardIsTheKernelAndGradientsMatch) {
  const ConvCase c64 = make_case(3, 12, 20, 4, {12, 5, 1}, at::kDouble, 3);
  const auto want = autograd_grads(c64);
  const at::Tensor x = c64.x.to(at::kFloat).requires_grad_(true);
  const at::Tensor w = c64.w.to(at::kFloat).requires_grad_(true);
  const at::Tensor b = c64.bias.to(at::kFloat);  // frozen: no gradient computed for it
  const at::Tensor out = causal_conv1d(x, w, b, c64.lengths);
  expect_close(out, reference_conv(c64.x, c64.w, c64.bias, c64.lengths), 1e-5, 1e-6, "out");
  (out * c64.gout.to(at::kFloat)).sum().backward();
  expect_close(x.grad(), want[0], 1e-5, 1e-6, "dx");
  expect_close(w.grad(), want[1], 1e-5, 1e-6, "dweight");
}

}  // namespace
}  // namespace statetune::engine::trainer
