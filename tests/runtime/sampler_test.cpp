// Sampler: greedy, temperature, top-k and top-p against the distributions they must produce, and
// per-request determinism from the seed.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <vector>

#include "server/engine/runtime/sampler.h"

namespace statetune::engine {
namespace {

std::vector<float> logits_of(const std::vector<double>& probs) {
  std::vector<float> out;
  for (double p : probs) out.push_back(static_cast<float>(std::log(p)));
  return out;
}

std::map<int64_t, double> frequencies(SamplingParams params, const std::vector<float>& logits, int draws) {
  Sampler s(params);
  std::map<int64_t, double> f;
  for (int i = 0; i < draws; ++i) f[s.sample(logits.data(), static_cast<int64_t>(logits.size()))] += 1.0 / draws;
  return f;
}

TEST(Sampler, GreedyIsArgmaxWithLowestIdOnTiesAndSkipsNonFinite) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> l = {0.5f, 2.0f, nan, 2.0f, -1.0f};
  SamplingParams p;
  p.temperature = 0;
  Sampler s(p);
  EXPECT_EQ(s.sample(l.data(), 5), 1);
  l[0] = std::numeric_limits<float>::infinity();  // +inf is not a usable logit either
  EXPECT_EQ(s.sample(l.data(), 5), 1);
  std::vector<float> none = {nan, nan};
  EXPECT_EQ(argmax(none.data(), 2), 0);
}

TEST(Sampler, TemperatureOneFollowsTheSoftmax) {
  SamplingParams p;
  p.seed = 7;
  auto f = frequencies(p, logits_of({0.5, 0.3, 0.2}), 40000);
  EXPECT_NEAR(f[0], 0.5, 0.015);
  EXPECT_NEAR(f[1], 0.3, 0.015);
  EXPECT_NEAR(f[2], 0.2, 0.015);
}

TEST(Sampler, TemperatureSharpens) {
  SamplingParams p;
  p.temperature = 0.5;  // p^2 renormalised: .25/.38, .09/.38, .04/.38
  p.seed = 3;
  auto f = frequencies(p, logits_of({0.5, 0.3, 0.2}), 40000);
  EXPECT_NEAR(f[0], 0.25 / 0.38, 0.015);
  EXPECT_NEAR(f[1], 0.09 / 0.38, 0.015);
  EXPECT_NEAR(f[2], 0.04 / 0.38, 0.015);
}

TEST(Sampler, TopKKeepsTheKMostLikely) {
  SamplingParams p;
  p.top_k = 2;
  p.seed = 11;
  auto f = frequencies(p, logits_of({0.2, 0.5, 0.1, 0.2}), 40000);
  EXPECT_EQ(f.count(2), 0u);
  // Ties between ids 0 and 3 (0.2 each) go to the lower id.
  EXPECT_EQ(f.count(3), 0u);
  EXPECT_NEAR(f[1], 0.5 / 0.7, 0.015);
  EXPECT_NEAR(f[0], 0.2 / 0.7, 0.015);
  p.top_k = 1;
  p.temperature = 5;
  auto g = frequencies(p, logits_of({0.2, 0.5, 0.1, 0.2}), 1000);
  EXPECT_DOUBLE_EQ(g[1], 1.0);
}

TEST(Sampler, TopPKeepsTheSmallestNucleus) {
  SamplingParams p;
  p.top_p = 0.6;  // 0.5 < 0.6 <= 0.8: ids 0 and 1
  p.seed = 5;
  auto f = frequencies(p, logits_of({0.5, 0.3, 0.2}), 40000);
  EXPECT_EQ(f.count(2), 0u);
  EXPECT_NEAR(f[0], 0.5 / 0.8, 0.015);
  EXPECT_NEAR(f[1], 0.3 / 0.8, 0.015);
  p.top_p = 0.4;  // the most likely token alone already reaches it
  auto g = frequencies(p, logits_of({0.5, 0.3, 0.2}), 1000);
  EXPECT_DOUBLE_EQ(g[0], 1.0);
}

TEST(Sampler, SameSeedSameTokensDifferentSeedDifferentTokens) {
  std::vector<float> l;
  for (int i = 0; i < 100; ++i) l.push_back(static_cast<float>(std::sin(i)));
  auto run = [&](uint64_t seed) {
    SamplingParams p;
    p.seed = seed;
    p.top_k = 50;
    p.top_p = 0.9;
    Sampler s(p);
    std::vector<int64_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(s.sample(l.data(), 100));
    return out;
  };
  EXPECT_EQ(run(42), run(42));
  EXPECT_NE(run(42), run(43));
}

TEST(Sampler, InvalidParametersAreNamed) {
  SamplingParams p;
  EXPECT_EQ(p.invalid_reason(), "");
  p.temperature = -1;
  EXPECT_NE(p.invalid_reason().find("temperature"), std::string::npos);
  p = SamplingParams{};
  p.top_p = 0;
  EXPECT_NE(p.invalid_reason().find("top_p"), std::string::npos);
  p = SamplingParams{};
  p.top_k = -2;
  EXPECT_NE(p.invalid_reason().find("top_k"), std::string::npos);
}

}  // namespace
}  // namespace statetune::engine
