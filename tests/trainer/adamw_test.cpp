// The optimizer step both trainers share (server/engine/trainer/adamw.h) against the formulas of
// torch.nn.utils.clip_grad_norm_ and torch.optim.AdamW, written out here in double precision.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "server/engine/trainer/adamw.h"

namespace statetune::engine::trainer {
namespace {

at::Tensor param_with_grad(std::vector<float> value, std::vector<float> grad) {
  at::Tensor p = at::tensor(value);
  p.set_requires_grad(true);
  p.mutable_grad() = at::tensor(grad);
  return p;
}

TEST(ClipGradNorm, ReturnsTheGlobalNormAndScalesOnlyAboveTheLimit) {
  at::NoGradGuard no_grad;
  at::Tensor a = param_with_grad({0, 0}, {3, 0});
  at::Tensor b = param_with_grad({0}, {4});
  at::Tensor no_grad_param = at::zeros({3});  // no gradient: ignored
  EXPECT_DOUBLE_EQ(clip_grad_norm({a, b, no_grad_param}, 10.0), 5.0);
  EXPECT_FLOAT_EQ(a.grad()[0].item<float>(), 3.0f);  // below the limit: untouched

  EXPECT_DOUBLE_EQ(clip_grad_norm({a, b}, 1.0), 5.0);  // the norm before clipping
  const double factor = 1.0 / (5.0 + 1e-6);
  EXPECT_NEAR(a.grad()[0].item<float>(), 3.0 * factor, 1e-7);
  EXPECT_NEAR(b.grad()[0].item<float>(), 4.0 * factor, 1e-7);

  at::Tensor c = param_with_grad({0}, {7});
  EXPECT_DOUBLE_EQ(clip_grad_norm({c}, 0.0), 7.0);  // max_norm <= 0: no clipping
  EXPECT_FLOAT_EQ(c.grad()[0].item<float>(), 7.0f);
}

// torch's factor is clamp(max / (norm + 1e-6), max=1): a norm just at the limit is still scaled by a
// hair (the full trainer's old "norm > max" test skipped it).
TEST(ClipGradNorm, ANormAtTheLimitIsScaledAsTorchDoes) {
  at::NoGradGuard no_grad;
  at::Tensor a = param_with_grad({0}, {2});
  clip_grad_norm({a}, 2.0);
  EXPECT_LT(a.grad()[0].item<float>(), 2.0f);
  EXPECT_NEAR(a.grad()[0].item<float>(), 2.0 * 2.0 / (2.0 + 1e-6), 1e-7);
}

TEST(AdamWStep, MatchesTorchOptimAdamWOverSeveralSteps) {
  at::NoGradGuard no_grad;
  const AdamWHyper h{0.9, 0.95, 1e-8};
  const double lr = 0.01, wd = 0.1;
  at::Tensor p = param_with_grad({0.5f, -1.0f, 2.0f}, {0, 0, 0});
  AdamWMoments m = AdamWMoments::zeros_like(p);
  std::vector<double> x = {0.5, -1.0, 2.0}, m1(3, 0), m2(3, 0);
  const std::vector<std::vector<double>> grads = {{0.1, -0.2, 0.3}, {-0.5, 0.05, 0.0}, {0.2, 0.2, -1.0}};
  for (size_t s = 0; s < grads.size(); ++s) {
    const int64_t step = static_cast<int64_t>(s) + 1;
    p.mutable_grad() = at::tensor(std::vector<float>(grads[s].begin(), grads[s].end()));
    adamw_step(p, m, h, lr, wd, step);
    for (size_t i = 0; i < 3; ++i) {  // torch.optim.AdamW, written out
      const double g = grads[s][i];
      x[i] *= 1 - lr * wd;
      m1[i] = h.beta1 * m1[i] + (1 - h.beta1) * g;
      m2[i] = h.beta2 * m2[i] + (1 - h.beta2) * g * g;
      const double bc1 = 1 - std::pow(h.beta1, step), bc2 = 1 - std::pow(h.beta2, step);
      x[i] -= lr / bc1 * m1[i] / (std::sqrt(m2[i]) / std::sqrt(bc2) + h.eps);
    }
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_NEAR(p[static_cast<int64_t>(i)].item<float>(), x[i], 1e-6) << "step " << step << " entry " << i;
    }
  }
}

TEST(AdamWStep, AParameterWithoutAGradientIsLeftAlone) {
  at::NoGradGuard no_grad;
  at::Tensor p = at::ones({2});
  AdamWMoments m = AdamWMoments::zeros_like(p);
  adamw_step(p, m, AdamWHyper{}, 0.1, 0.5, 1);
  EXPECT_TRUE(at::equal(p, at::ones({2})));
  EXPECT_TRUE(at::equal(m.exp_avg, at::zeros({2})));
}

}  // namespace
}  // namespace statetune::engine::trainer
