// Full-parameter mode: the forward from trainable Hugging Face-named weights equals the inference
// model's, the gradient of every weight matches a central finite difference along a random direction,
// and training really fits: held-out loss on a patterned token stream falls far below its start.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "server/engine/model/mamba_model.h"
#include "server/engine/model/model_init.h"
#include "server/engine/trainer/full_trainer.h"
#include "server/engine/trainer/trainable_mamba.h"
#include "tests/model/model_test_util.h"

namespace statetune::engine::trainer {
namespace {

namespace fs = std::filesystem;

// The model suites' tiny shape, with a few more tokens (the patterned stream below uses ids up to 41)
// and the optional biases switchable.
MambaConfig small_config(bool tied, bool biases) {
  MambaConfig c = testing::tiny_config(tied);
  c.vocab_size = c.unpadded_vocab_size = 48;
  c.proj_bias = biases;
  c.conv_bias = true;
  return c;
}

std::map<std::string, at::Tensor> leaves(std::map<std::string, at::Tensor> w) {
  for (auto& [name, t] : w) {
    t = t.clone();
    t.set_requires_grad(true);
  }
  return w;
}

// Larger-than-init weights so the logits depend visibly on every tensor.
std::map<std::string, at::Tensor> lively_weights(const MambaConfig& c, uint64_t seed) {
  auto w = random_weights(c, seed);
  at::manual_seed(static_cast<uint64_t>(seed) + 100);
  for (auto& [name, t] : w) {
    if (name.find("embedding") != std::string::npos || name.find("lm_head") != std::string::npos) t = t * 20;
    if (name.find("proj.weight") != std::string::npos) t = t * 5;
    if (name.find("bias") != std::string::npos || name.find("norm") != std::string::npos) {
      t = t + 0.1 * at::randn_like(t);  // biases and norms start at 0 / 1: move them off the constant
    }
  }
  return w;
}

TEST(FullMode, ForwardEqualsInferenceModel) {
  for (const bool tied : {true, false}) {
    const MambaConfig c = small_config(tied, /*biases=*/!tied);
    const auto w = lively_weights(c, 7);
    const fs::path dir = testing::fresh_dir("full-forward");
    write_checkpoint(dir, c, w);
    auto model = testing::load(dir);
    TrainableMamba frozen(*model);
    TrainableMamba full(c, leaves(w));
    at::manual_seed(3);
    const at::Tensor tokens = at::randint(0, c.vocab_size, {2, 11}, at::kLong);
    const at::Tensor lengths = at::tensor(std::vector<int64_t>{11, 7}, at::kLong);
    at::NoGradGuard no_grad;
    const at::Tensor a = frozen.forward(tokens, lengths, {});
    const at::Tensor b = full.forward(tokens, lengths, {});
    EXPECT_LT(testing::rel_err(b, a), 1e-5) << "tied=" << tied;
  }
}

TEST(FullMode, RefusesMissingOrMisshapedWeights) {
  const MambaConfig c = small_config(true, false);
  auto w = random_weights(c, 1);
  auto missing = w;
  missing.erase("backbone.layers.1.mixer.A_log");
  EXPECT_THROW(TrainableMamba(c, missing), std::invalid_argument);
  auto wrong = w;
  wrong["backbone.layers.0.mixer.in_proj.weight"] = at::zeros({3, 3});
  EXPECT_THROW(TrainableMamba(c, wrong), std::invalid_argument);
}

// d loss / d w . v against (loss(w + e v) - loss(w - e v)) / 2e, one random direction per tensor, in
// float64 arithmetic on the parameters' side (the forward is fp32, so e is not tiny).
TEST(FullMode, EveryWeightGradientMatchesFiniteDifference) {
  const MambaConfig c = small_config(/*tied=*/false, /*biases=*/true);
  auto w = leaves(lively_weights(c, 11));
  at::manual_seed(5);
  const at::Tensor tokens = at::randint(0, c.vocab_size, {2, 9}, at::kLong);
  const at::Tensor lengths = at::tensor(std::vector<int64_t>{9, 6}, at::kLong);
  const at::Tensor targets = at::randint(0, c.vocab_size, {2 * 9}, at::kLong);
  auto loss_of = [&](const std::map<std::string, at::Tensor>& weights) {
    TrainableMamba net(c, weights);
    const at::Tensor logits = net.forward(tokens, lengths, {}).reshape({2 * 9, c.vocab_size});
    return at::cross_entropy_loss(logits, targets);
  };
  loss_of(w).backward();
  int checked = 0;
  for (const auto& [name, t] : w) {
    ASSERT_TRUE(t.grad().defined()) << name << " got no gradient";
    EXPECT_GT(t.grad().abs().max().item<double>(), 0.0) << name << " has an all-zero gradient";
    at::Tensor v = at::randn_like(t);
    v = v / v.norm();  // a unit direction: the step below moves the tensor by e in L2
    const double analytic = (t.grad().to(at::kDouble) * v.to(at::kDouble)).sum().item<double>();
    const double e = 1e-2;
    at::NoGradGuard no_grad;
    auto shifted = [&](double s) {
      auto m = w;
      m[name] = t.detach() + s * e * v;
      return loss_of(m).item<double>();
    };
    const double numeric = (shifted(1) - shifted(-1)) / (2 * e);
    EXPECT_NEAR(analytic, numeric, 2e-2 * std::abs(numeric) + 1e-4) << name;
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(w.size()));
}

TEST(FullMode, TrainingFitsAPatternedStream) {
  const MambaConfig c = small_config(true, false);
  // A stream with structure a model can learn: repeating phrases of 5 tokens from a small set.
  std::vector<int32_t> train, heldout;
  const std::vector<std::vector<int32_t>> phrases = {{3, 9, 4, 17, 2}, {8, 8, 30, 1, 5}, {12, 40, 41, 6, 0}};
  uint64_t x = 12345;
  auto next = [&x] { x = x * 6364136223846793005ull + 1442695040888963407ull; return x >> 33; };
  for (int i = 0; i < 400; ++i) {
    for (int32_t t : phrases[next() % 3]) train.push_back(t);
  }
  for (int i = 0; i < 120; ++i) {
    for (int32_t t : phrases[next() % 3]) heldout.push_back(t);
  }
  FullTrainOptions o;
  o.seq_len = 20;
  o.batch_size = 8;
  o.steps = 80;
  o.lr = 1e-2;
  o.warmup_steps = 5;
  o.eval_every = 40;
  o.eval_windows = 16;
  FullModelTrainer trainer(c, random_weights(c, 2), o);
  int reports = 0;
  std::vector<std::pair<int64_t, bool>> evaluations;  // (step, final)
  const auto r = trainer.train(train, heldout, [&](const FullTrainProgress& p, const auto&) {
    ++reports;
    if (p.evaluation) evaluations.emplace_back(p.step, p.final);
  });
  EXPECT_EQ(r.steps, 80);
  // The periodic evaluation, then the one after the last step, marked final (the CLI writes its
  // snapshot only for the others: the final model is written once, with the result).
  EXPECT_EQ(evaluations, (std::vector<std::pair<int64_t, bool>>{{40, false}, {80, true}}));
  EXPECT_EQ(r.tokens, 80 * 8 * 20);
  EXPECT_GT(reports, 3);
  ASSERT_EQ(r.heldout_curve.size(), 3u);  // before, step 40, end
  // Uniform guessing over 48 tokens is ln 48 = 3.87 nats; the phrases are ~deterministic after their
  // first token, which leaves about ln(3)/5 = 0.22 nats per token to learn down to.
  EXPECT_NEAR(r.initial_heldout_loss, std::log(48.0), 0.3);
  EXPECT_LT(r.heldout_loss, 1.2);
  EXPECT_NEAR(trainer.heldout_loss(heldout, 16), r.heldout_loss, 1e-9);
  EXPECT_EQ(trainer.weights().count("lm_head.weight"), 0u);  // tied: one tensor
}

// With a time budget the cosine runs over wall-clock time: the run stops when the budget is spent,
// having decayed to the floor, whatever the step time. The clock is the test's: each step takes
// exactly 1/16 s of it, so a 1 s budget is 16 steps on any machine, and every learning rate is known.
TEST(FullMode, TimeBudgetEndsAtTheFloorLearningRate) {
  const MambaConfig c = small_config(true, false);
  std::vector<int32_t> stream;
  for (int i = 0; i < 2000; ++i) stream.push_back(static_cast<int32_t>((i * 7) % c.vocab_size));
  double now = 1000.0;  // seconds on the test's clock
  const double step_s = 1.0 / 16;
  FullTrainOptions o;
  o.seq_len = 16;
  o.batch_size = 2;
  o.steps = 1000000;
  o.max_seconds = 1.0;
  o.warmup_steps = 3;
  o.lr = 1e-3;
  o.min_lr_ratio = 0.1;
  o.eval_every = 0;
  o.eval_windows = 4;
  o.log_every = 1;
  o.clock = [&now] { return now; };
  FullModelTrainer trainer(c, random_weights(c, 3), o);
  std::vector<double> lrs;
  const auto r = trainer.train(stream, stream, [&](const FullTrainProgress& p, const auto&) {
    if (p.evaluation) return;
    lrs.push_back(p.lr);
    EXPECT_DOUBLE_EQ(p.elapsed_s, static_cast<double>(p.step - 1) * step_s) << "step " << p.step;
    now += step_s;  // the step took 1/16 s
  });
  ASSERT_EQ(r.steps, 16);
  EXPECT_DOUBLE_EQ(r.seconds, 1.0);
  ASSERT_EQ(static_cast<int64_t>(lrs.size()), r.steps);
  // Warm-up over steps 1-3, then the cosine over the rest of the budget, from where the warm-up ended
  // (3/16 s) to 1 s: step s (1-based, s > 3) runs at time (s - 1) / 16.
  for (int64_t s = 1; s <= r.steps; ++s) {
    const double progress = s <= 3 ? 0.0 : ((s - 1) * step_s - 3 * step_s) / (1.0 - 3 * step_s);
    const double expected = s <= 3 ? 1e-3 * static_cast<double>(s) / 3.0
                                   : 1e-3 * (0.1 + 0.9 * 0.5 * (1.0 + std::cos(M_PI * progress)));
    EXPECT_NEAR(lrs[static_cast<size_t>(s - 1)], expected, 1e-15) << "step " << s;
  }
  for (size_t i = 4; i < lrs.size(); ++i) EXPECT_LT(lrs[i], lrs[i - 1]) << "step " << i + 1;
  EXPECT_LT(lrs.back(), 1e-3 * 0.12);  // at (nearly) the floor of 1e-4
  EXPECT_GE(lrs.back(), 1e-3 * 0.1 - 1e-12);
}

}  // namespace
}  // namespace statetune::engine::trainer
