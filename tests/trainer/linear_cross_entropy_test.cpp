// The fused linear + cross-entropy (server/engine/trainer/linear_cross_entropy.h) against the plain
// composition at::cross_entropy_loss(at::mm(hidden, weight.t()), targets) through autograd: the loss and
// both gradients, on shapes where the chunk divides the rows and where it does not, with a non-unit
// incoming gradient, with only one input requiring grad, and without grad mode; bad input throws.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include "server/engine/trainer/linear_cross_entropy.h"

namespace statetune::engine::trainer {
namespace {

double rel_err(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(1e-12, b.abs().max().item<double>());
}

struct Case {
  int64_t rows, dim, vocab, chunk;
};

class LinearCrossEntropyTest : public ::testing::TestWithParam<Case> {};

TEST_P(LinearCrossEntropyTest, MatchesCrossEntropyOfTheLogits) {
  const Case c = GetParam();
  at::manual_seed(c.rows * 131 + c.chunk);
  const at::Tensor h0 = at::randn({c.rows, c.dim}) * 2.0, w0 = at::randn({c.vocab, c.dim});
  const at::Tensor targets = at::randint(c.vocab, {c.rows}, at::kLong);
  const double scale = 0.37;  // an incoming gradient other than 1

  at::Tensor h_ref = h0.clone().set_requires_grad(true), w_ref = w0.clone().set_requires_grad(true);
  const at::Tensor ref = at::cross_entropy_loss(at::mm(h_ref, w_ref.t()), targets);
  (ref * scale).backward();

  at::Tensor h = h0.clone().set_requires_grad(true), w = w0.clone().set_requires_grad(true);
  const at::Tensor loss = linear_cross_entropy(h, w, targets, c.chunk);
  (loss * scale).backward();

  EXPECT_LT(rel_err(loss, ref), 1e-5);
  EXPECT_LT(rel_err(h.grad(), h_ref.grad()), 1e-5);
  EXPECT_LT(rel_err(w.grad(), w_ref.grad()), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearCrossEntropyTest,
                         ::testing::Values(Case{12, 5, 17, 4}, Case{37, 8, 50, 7}, Case{64, 16, 101, 256},
                                           Case{1, 3, 9, 1}));

TEST(LinearCrossEntropy, GradientReachesOnlyTheInputsThatRequireIt) {
  at::manual_seed(3);
  const at::Tensor w0 = at::randn({23, 6});
  const at::Tensor targets = at::randint(23, {19}, at::kLong);
  at::Tensor h = at::randn({19, 6}).set_requires_grad(true);
  at::Tensor w = w0.clone();  // frozen output layer
  linear_cross_entropy(h, w, targets, 5).backward();
  ASSERT_TRUE(h.grad().defined());
  EXPECT_FALSE(w.grad().defined());

  at::Tensor h_ref = h.detach().clone().set_requires_grad(true);
  at::cross_entropy_loss(at::mm(h_ref, w0.t()), targets).backward();
  EXPECT_LT(rel_err(h.grad(), h_ref.grad()), 1e-5);
}

TEST(LinearCrossEntropy, WithoutGradModeIsTheLossOnly) {
  at::manual_seed(4);
  const at::Tensor h = at::randn({30, 4}).set_requires_grad(true), w = at::randn({11, 4}).set_requires_grad(true);
  const at::Tensor targets = at::randint(11, {30}, at::kLong);
  at::NoGradGuard no_grad;
  const at::Tensor loss = linear_cross_entropy(h, w, targets, 8);
  EXPECT_FALSE(loss.requires_grad());
  EXPECT_LT(rel_err(loss, at::cross_entropy_loss(at::mm(h, w.t()), targets)), 1e-5);
}

TEST(LinearCrossEntropy, RejectsBadInput) {
  const at::Tensor h = at::randn({4, 3}), w = at::randn({7, 3});
  EXPECT_THROW(linear_cross_entropy(h, w, at::tensor({0, 1, 2, 7}, at::kLong)), c10::Error);   // target >= V
  EXPECT_THROW(linear_cross_entropy(h, w, at::tensor({0, 1, -1, 2}, at::kLong)), c10::Error);  // negative
  EXPECT_THROW(linear_cross_entropy(h, w, at::tensor({0, 1, 2}, at::kLong)), c10::Error);      // count
  EXPECT_THROW(linear_cross_entropy(h, at::randn({7, 4}), at::zeros({4}, at::kLong)), c10::Error);
  EXPECT_THROW(linear_cross_entropy(h.to(at::kDouble), w.to(at::kDouble), at::zeros({4}, at::kLong)), c10::Error);
  EXPECT_THROW(linear_cross_entropy(h, w, at::zeros({4}, at::kLong), 0), c10::Error);
}

}  // namespace
}  // namespace statetune::engine::trainer
