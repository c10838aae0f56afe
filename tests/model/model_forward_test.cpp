// The forward pass: prefill and decode against an independent float64 forward, and the identities
// batching, chunking and adapters must keep.
#include <gtest/gtest.h>

#include "tests/model/model_test_util.h"

namespace statetune::engine::testing {
namespace {

constexpr double kTol = 1e-4;

class ModelForward : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fresh_dir("forward"));
    write_random_checkpoint(*dir_, tiny_config(), 11);
  }
  static void TearDownTestSuite() { delete dir_; }
  void SetUp() override {
    model_ = load(*dir_);
    cache_ = std::make_unique<StateCache>(model_->config(), 8, at::kCPU);
  }
  // Prefill of one sequence at cache row `row`, every position: [T, V].
  at::Tensor prefill_all(const std::vector<int64_t>& toks, int64_t row = 0, const AdapterPoolView& pool = {},
                         int32_t slot = 0) {
    const int64_t T = static_cast<int64_t>(toks.size());
    return model_->prefill(t64(toks).view({1, T}), t64({T}), t64({row}), t32({slot}), pool, *cache_,
                           /*resume=*/false, /*all_positions=*/true)[0];
  }

  static fs::path* dir_;
  std::unique_ptr<MambaModel> model_;
  std::unique_ptr<StateCache> cache_;
};
fs::path* ModelForward::dir_ = nullptr;

const std::vector<int64_t> kPrompt = {3, 17, 5, 39, 0, 22, 8, 8, 31, 12, 1};

TEST_F(ModelForward, PrefillMatchesTheIndependentForwardAtEveryPosition) {
  const at::Tensor want = reference_logits(*dir_, kPrompt);
  const at::Tensor got = prefill_all(kPrompt);
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_EQ(got.scalar_type(), at::kFloat);
  EXPECT_LT(rel_err(got, want), kTol);
  // The last-position form returns the same row.
  const int64_t T = static_cast<int64_t>(kPrompt.size());
  const at::Tensor last = model_->prefill(t64(kPrompt).view({1, T}), t64({T}), t64({1}), {}, {}, *cache_);
  ASSERT_EQ(last.sizes(), (std::vector<int64_t>{1, 40}));
  EXPECT_TRUE(at::allclose(last[0], got[T - 1], 1e-6, 1e-6));
}

TEST_F(ModelForward, PrefillThenDecodeTokenByTokenEqualsFullPrefill) {
  const at::Tensor full = prefill_all(kPrompt);
  const int64_t P = 4;
  const std::vector<int64_t> head(kPrompt.begin(), kPrompt.begin() + P);
  model_->prefill(t64(head).view({1, P}), t64({P}), t64({5}), {}, {}, *cache_);
  at::Tensor buffer;
  for (size_t t = P; t < kPrompt.size(); ++t) {
    const at::Tensor logits = model_->decode(t64({kPrompt[t]}), t64({5}), {}, {}, *cache_, &buffer);
    EXPECT_LT(rel_err(logits[0], full[static_cast<int64_t>(t)]), kTol) << "position " << t;
    EXPECT_EQ(logits.data_ptr(), buffer.data_ptr());
  }
  // Decode from a single-token prompt (shorter than the conv window) as well.
  model_->prefill(t64({kPrompt[0]}).view({1, 1}), t64({1}), t64({2}), {}, {}, *cache_);
  for (size_t t = 1; t < kPrompt.size(); ++t) {
    const at::Tensor logits = model_->decode(t64({kPrompt[t]}), t64({2}), {}, {}, *cache_);
    EXPECT_LT(rel_err(logits[0], full[static_cast<int64_t>(t)]), kTol) << "position " << t;
  }
}

TEST_F(ModelForward, BatchedPromptsOfDifferentLengthsEqualEachAlone) {
  const std::vector<std::vector<int64_t>> prompts = {{1, 2, 3}, {9, 8, 7, 6, 5, 4, 3}, {33}, {5, 5, 5, 5, 5}};
  const int64_t B = 4, L = 7;
  at::Tensor tokens = at::zeros({B, L}, at::kLong);
  std::vector<int64_t> lens;
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[static_cast<size_t>(b)];
    for (size_t t = 0; t < p.size(); ++t) tokens[b][static_cast<int64_t>(t)] = p[t];
    lens.push_back(static_cast<int64_t>(p.size()));
  }
  const at::Tensor rows = t64({4, 1, 7, 0});
  const at::Tensor batched = model_->prefill(tokens, t64(lens), rows, {}, {}, *cache_, false, true);
  const at::Tensor last = model_->prefill(tokens, t64(lens), rows, {}, {}, *cache_);
  StateCache alone_cache(model_->config(), 8, at::kCPU);
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[static_cast<size_t>(b)];
    const int64_t T = lens[static_cast<size_t>(b)];
    const at::Tensor alone = model_->prefill(t64(p).view({1, T}), t64({T}), t64({3}), {}, {}, alone_cache,
                                             false, true)[0];
    EXPECT_LT(rel_err(batched[b].narrow(0, 0, T), alone), kTol) << "row " << b;
    EXPECT_LT(rel_err(last[b], alone[T - 1]), kTol) << "row " << b;
    // The cached state equals the one the row alone leaves.
    const int64_t r = rows[b].item<int64_t>();
    EXPECT_TRUE(at::allclose(cache_->ssm.select(1, r), alone_cache.ssm.select(1, 3), 1e-5, 1e-6));
    EXPECT_TRUE(at::allclose(cache_->conv.select(1, r), alone_cache.conv.select(1, 3), 1e-5, 1e-6));
  }
  // And batched decode continues each row as if alone.
  const at::Tensor next = t64({10, 11, 12, 13});
  const at::Tensor dec = model_->decode(next, rows, {}, {}, *cache_);
  for (int64_t b = 0; b < B; ++b) {
    auto p = prompts[static_cast<size_t>(b)];
    p.push_back(next[b].item<int64_t>());
    const at::Tensor want = reference_logits(*dir_, p);
    EXPECT_LT(rel_err(dec[b], want[static_cast<int64_t>(p.size()) - 1]), kTol) << "row " << b;
  }
}

TEST_F(ModelForward, ResumedChunkedPrefillEqualsOnePrefill) {
  const at::Tensor full = prefill_all(kPrompt);
  // Chunks of 2, 1 (shorter than the conv history), 5 and the rest.
  size_t pos = 0;
  bool resume = false;
  for (size_t n : {2, 1, 5, 3}) {
    const std::vector<int64_t> chunk(kPrompt.begin() + static_cast<long>(pos),
                                     kPrompt.begin() + static_cast<long>(pos + n));
    const int64_t T = static_cast<int64_t>(n);
    const at::Tensor out = model_->prefill(t64(chunk).view({1, T}), t64({T}), t64({6}), {}, {}, *cache_,
                                           resume, true)[0];
    EXPECT_LT(rel_err(out, full.narrow(0, static_cast<int64_t>(pos), T)), kTol) << "chunk at " << pos;
    pos += n;
    resume = true;
  }
  ASSERT_EQ(pos, kPrompt.size());
}

TEST_F(ModelForward, ZeroAdapterIsTheBaseModelBitForBit) {
  const int64_t T = static_cast<int64_t>(kPrompt.size());
  AdapterPoolView zero = random_pool(model_->config(), 2, true, true, true, 5);
  zero.state_offset.zero_();
  zero.output_offset.zero_();
  zero.initial_state.zero_();
  const at::Tensor base = model_->prefill(t64(kPrompt).view({1, T}), t64({T}), t64({0}), {}, {}, *cache_,
                                          false, true);
  const at::Tensor with_zero = model_->prefill(t64(kPrompt).view({1, T}), t64({T}), t64({1}), t32({1}), zero,
                                               *cache_, false, true);
  EXPECT_TRUE(at::equal(base, with_zero));
  const at::Tensor d0 = model_->decode(t64({4}), t64({0}), {}, {}, *cache_);
  const at::Tensor d1 = model_->decode(t64({4}), t64({1}), t32({1}), zero, *cache_);
  EXPECT_TRUE(at::equal(d0, d1));
}

TEST_F(ModelForward, AdaptersChangeLogitsAndMatchTheIndependentForward) {
  const MambaConfig& c = model_->config();
  const at::Tensor base = reference_logits(*dir_, kPrompt);
  struct Case {
    const char* name;
    bool so, oo, h0;
  };
  for (const Case& k : {Case{"state_offset", true, false, false}, Case{"output_offset", false, true, false},
                        Case{"initial_state", false, false, true}, Case{"all", true, true, true}}) {
    SCOPED_TRACE(k.name);
    const AdapterPoolView pool = random_pool(c, 3, k.so, k.oo, k.h0, 21);
    const at::Tensor want = reference_logits(*dir_, kPrompt, pool, 2);
    EXPECT_GT(rel_err(want, base), 1e-3);  // the adapter has a visible effect
    const at::Tensor got = prefill_all(kPrompt, 3, pool, 2);
    EXPECT_LT(rel_err(got, want), kTol);
    // Prefill a prefix with the adapter, decode the rest with it.
    const int64_t P = 5;
    const std::vector<int64_t> head(kPrompt.begin(), kPrompt.begin() + P);
    model_->prefill(t64(head).view({1, P}), t64({P}), t64({4}), t32({2}), pool, *cache_);
    for (size_t t = P; t < kPrompt.size(); ++t) {
      const at::Tensor d = model_->decode(t64({kPrompt[t]}), t64({4}), t32({2}), pool, *cache_);
      EXPECT_LT(rel_err(d[0], want[static_cast<int64_t>(t)]), kTol) << "position " << t;
    }
  }
}

TEST_F(ModelForward, MixedSlotsInOneBatchEqualEachRowAlone) {
  const MambaConfig& c = model_->config();
  const AdapterPoolView pool = random_pool(c, 4, true, true, true, 33);
  const std::vector<std::vector<int64_t>> prompts = {{1, 2, 3, 4, 5}, {7, 7}, {20, 19, 18, 17}};
  const std::vector<int32_t> slots = {3, 0, 1};
  const int64_t B = 3, L = 5;
  at::Tensor tokens = at::zeros({B, L}, at::kLong);
  std::vector<int64_t> lens;
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[static_cast<size_t>(b)];
    for (size_t t = 0; t < p.size(); ++t) tokens[b][static_cast<int64_t>(t)] = p[t];
    lens.push_back(static_cast<int64_t>(p.size()));
  }
  const at::Tensor rows = t64({0, 1, 2});
  const at::Tensor batched = model_->prefill(tokens, t64(lens), rows, t32(slots), pool, *cache_, false, true);
  const at::Tensor dec = model_->decode(t64({9, 9, 9}), rows, t32(slots), pool, *cache_);
  for (int64_t b = 0; b < B; ++b) {
    auto p = prompts[static_cast<size_t>(b)];
    const int64_t T = lens[static_cast<size_t>(b)];
    const int32_t s = slots[static_cast<size_t>(b)];
    StateCache alone(c, 1, at::kCPU);
    const at::Tensor one =
        model_->prefill(t64(p).view({1, T}), t64({T}), t64({0}), t32({s}), pool, alone, false, true)[0];
    EXPECT_LT(rel_err(batched[b].narrow(0, 0, T), one), kTol) << "row " << b;
    const at::Tensor one_dec = model_->decode(t64({9}), t64({0}), t32({s}), pool, alone);
    EXPECT_LT(rel_err(dec[b], one_dec[0]), kTol) << "row " << b;
    p.push_back(9);
    EXPECT_LT(rel_err(dec[b], reference_logits(*dir_, p, pool, s)[T]), kTol) << "row " << b;
  }
}

TEST_F(ModelForward, Bf16ComputeStaysCloseToFp32) {
  auto bf = load(*dir_, at::kBFloat16);
  EXPECT_EQ(bf->dtype(), at::kBFloat16);
  EXPECT_EQ(bf->fingerprint().weights_sha256, model_->fingerprint().weights_sha256);
  StateCache cache(bf->config(), 2, at::kCPU);
  const int64_t T = static_cast<int64_t>(kPrompt.size());
  const at::Tensor want = prefill_all(kPrompt);
  const at::Tensor got = bf->prefill(t64(kPrompt).view({1, T}), t64({T}), t64({0}), {}, {}, cache, false, true)[0];
  EXPECT_EQ(got.scalar_type(), at::kFloat);
  EXPECT_LT(rel_err(got, want), 1e-2);
  const at::Tensor d = bf->decode(t64({6}), t64({0}), {}, {}, cache);
  auto p = kPrompt;
  p.push_back(6);
  EXPECT_LT(rel_err(d[0], reference_logits(*dir_, p)[T]), 1e-2);
}

TEST_F(ModelForward, BadArgumentsAreRefused) {
  EXPECT_THROW(model_->prefill(t64({1, 2}).view({1, 2}), t64({3}), t64({0}), {}, {}, *cache_),
               std::invalid_argument);  // length beyond L
  EXPECT_THROW(model_->prefill(t64({1, 2}).view({1, 2}), t64({2}), t64({8}), {}, {}, *cache_),
               std::invalid_argument);  // row beyond capacity
  EXPECT_THROW(model_->prefill(t64({1, 40}).view({1, 2}), t64({2}), t64({0}), {}, {}, *cache_),
               std::invalid_argument);  // token beyond vocab
  EXPECT_THROW(model_->decode(t64({-1}), t64({0}), {}, {}, *cache_), std::invalid_argument);
}

}  // namespace
}  // namespace statetune::engine::testing
