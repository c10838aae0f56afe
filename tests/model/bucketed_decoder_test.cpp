// The bucketed decode path (what a CUDA graph captures and replays) against MambaModel::decode, and
// the promises it makes to the rest of the cache: padding rows write only scratch rows, bad inputs
// are refused before anything is written. Runs eagerly on the CPU; a GPU replays the same step.
#include <gtest/gtest.h>

#include "server/engine/model/bucketed_decoder.h"
#include "tests/model/model_test_util.h"

namespace statetune::engine::testing {
namespace {

class BucketedDecode : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fresh_dir("bucketed"));
    write_random_checkpoint(*dir_, tiny_config(), 17);
  }
  static void TearDownTestSuite() { delete dir_; }

  // Prefills `B` prompts into rows `rows` of `cache`, with the given slots.
  static void prefill(MambaModel& m, StateCache& cache, const at::Tensor& rows, const at::Tensor& slots,
                      const AdapterPoolView& pool) {
    const int64_t B = rows.size(0), L = 6;
    at::Tensor tokens = at::arange(B * L, at::kLong).remainder(37).view({B, L}) + 1;
    at::Tensor lengths = at::arange(B, at::kLong).remainder(L) + 1;
    m.prefill(tokens, lengths, rows, slots, pool, cache);
  }

  static fs::path* dir_;
};
fs::path* BucketedDecode::dir_ = nullptr;

TEST(BucketedDecodeSizes, PowersOfTwoToEightThenStepsOfEightUpToTheMaximum) {
  EXPECT_EQ(BucketedDecoder::buckets_up_to(1), (std::vector<int64_t>{1}));
  EXPECT_EQ(BucketedDecoder::buckets_up_to(5), (std::vector<int64_t>{1, 2, 4, 5}));
  EXPECT_EQ(BucketedDecoder::buckets_up_to(8), (std::vector<int64_t>{1, 2, 4, 8}));
  EXPECT_EQ(BucketedDecoder::buckets_up_to(20), (std::vector<int64_t>{1, 2, 4, 8, 16, 20}));
  EXPECT_EQ(BucketedDecoder::buckets_up_to(32), (std::vector<int64_t>{1, 2, 4, 8, 16, 24, 32}));
  EXPECT_THROW(BucketedDecoder::buckets_up_to(0), std::invalid_argument);
  // The most padding a step can have: 5 rows in a bucket of 8, 9 in 16, ...
  EXPECT_EQ(BucketedDecoder::scratch_rows_needed(1), 0);
  EXPECT_EQ(BucketedDecoder::scratch_rows_needed(5), 1);
  EXPECT_EQ(BucketedDecoder::scratch_rows_needed(8), 3);
  EXPECT_EQ(BucketedDecoder::scratch_rows_needed(32), 7);
  EXPECT_EQ(BucketedDecoder::scratch_rows_needed(512), 7);
}

// Every batch size up to the maximum, several steps, mixed adapters (and rows on the base model):
// logits and the rows' states equal the direct decode's; fp32 and bf16 compute.
TEST_F(BucketedDecode, EqualsTheDirectDecodeAtEveryBatchSize) {
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    auto model = load(*dir_, dtype);
    const MambaConfig& c = model->config();
    const double tol = dtype == at::kFloat ? 1e-4 : 1e-2;
    const int64_t max_batch = 6, capacity = 8;
    const AdapterPoolView pool = random_pool(c, 4, true, true, true, 5);
    StateCache direct(c, capacity, at::kCPU);
    StateCache bucketed_cache(c, capacity, at::kCPU, BucketedDecoder::scratch_rows_needed(max_batch));
    BucketedDecoder bucketed(*model, bucketed_cache, max_batch, /*use_cuda_graphs=*/false);
    for (int64_t B = 1; B <= max_batch; ++B) {
      SCOPED_TRACE("B = " + std::to_string(B) + ", " + c10::toString(dtype));
      // Rows out of order and not from 0, slots mixed, slot 0 (base) included.
      const at::Tensor rows = (at::arange(B, at::kLong) * 3 + 1).remainder(capacity);
      const at::Tensor slots = at::arange(B, at::kInt).remainder(4);
      prefill(*model, direct, rows, slots, pool);
      prefill(*model, bucketed_cache, rows, slots, pool);
      at::Tensor tokens = at::arange(B, at::kLong) + 2;
      for (int step = 0; step < 3; ++step) {
        const at::Tensor want = model->decode(tokens, rows, slots, pool, direct);
        const at::Tensor got = bucketed.decode(tokens, rows, slots, pool);
        ASSERT_EQ(got.sizes(), want.sizes());
        EXPECT_LT(rel_err(got, want), tol) << "step " << step;
        tokens = want.argmax(-1);
      }
      for (int64_t b = 0; b < B; ++b) {
        const int64_t r = rows[b].item<int64_t>();
        EXPECT_LT(rel_err(bucketed_cache.ssm.select(1, r), direct.ssm.select(1, r)), tol) << "row " << r;
        EXPECT_LT(rel_err(bucketed_cache.conv.select(1, r), direct.conv.select(1, r)), tol) << "row " << r;
      }
      // Without slots every row is on the base model, as in decode().
      EXPECT_LT(rel_err(bucketed.decode(tokens, rows, {}, pool), model->decode(tokens, rows, {}, pool, direct)),
                tol);
    }
  }
}

// A batch of 3 runs as a bucket of 4: the padding row writes its own scratch row and nothing else;
// the rows of the cache no step named keep their state bit for bit. Logits come from the bucket's
// fixed buffer (the address a graph would write to).
TEST_F(BucketedDecode, PaddingRowsWriteOnlyScratchRows) {
  auto model = load(*dir_);
  const MambaConfig& c = model->config();
  const int64_t capacity = 8, max_batch = 4;
  StateCache cache(c, capacity, at::kCPU, BucketedDecoder::scratch_rows_needed(max_batch));
  EXPECT_EQ(cache.capacity(), capacity);
  EXPECT_EQ(cache.scratch_rows(), 1);
  at::manual_seed(3);
  cache.ssm.normal_();
  cache.conv.normal_();
  const at::Tensor ssm_before = cache.ssm.clone(), conv_before = cache.conv.clone();
  BucketedDecoder bucketed(*model, cache, max_batch, false);
  EXPECT_EQ(bucketed.bucket_for(3), 4);
  const at::Tensor rows = t64({6, 0, 3});
  const at::Tensor first = bucketed.decode(t64({1, 2, 3}), rows, {}, {});
  const at::Tensor second = bucketed.decode(t64({4, 5, 6}), rows, {}, {});
  EXPECT_EQ(first.data_ptr(), second.data_ptr());
  for (int64_t r = 0; r < capacity + 1; ++r) {
    const bool named = r == 6 || r == 0 || r == 3;
    const bool padding = r == capacity;  // the one padding row of the bucket of 4: the scratch row
    const bool same = at::equal(cache.ssm.select(1, r), ssm_before.select(1, r)) &&
                      at::equal(cache.conv.select(1, r), conv_before.select(1, r));
    EXPECT_EQ(same, !named && !padding) << "row " << r;
  }
}

// What decode() refuses, the bucketed path refuses too, before writing anything: a scratch row
// named by the caller, a row beyond the cache, the same row twice, a slot outside the pool, a token
// outside the vocabulary, more rows than the decoder was built for.
TEST_F(BucketedDecode, RefusesWhatDecodeRefusesAndWritesNothing) {
  auto model = load(*dir_);
  const MambaConfig& c = model->config();
  const AdapterPoolView pool = random_pool(c, 3, true, true, false, 9);
  StateCache cache(c, 4, at::kCPU, 1);
  at::manual_seed(4);
  cache.ssm.normal_();
  const at::Tensor before = cache.ssm.clone();
  BucketedDecoder bucketed(*model, cache, 4, false);
  EXPECT_THROW(bucketed.decode(t64({1}), t64({4}), {}, pool), std::invalid_argument);  // first scratch row
  EXPECT_THROW(bucketed.decode(t64({1}), t64({-1}), {}, pool), std::invalid_argument);
  EXPECT_THROW(bucketed.decode(t64({1, 2}), t64({1, 1}), {}, pool), std::invalid_argument);
  EXPECT_THROW(bucketed.decode(t64({1, 2}), t64({0, 1}), t32({0, 3}), pool), std::invalid_argument);
  EXPECT_THROW(bucketed.decode(t64({40}), t64({0}), {}, pool), std::invalid_argument);
  EXPECT_THROW(bucketed.decode(t64({1, 1, 1, 1, 1}), t64({0, 1, 2, 3, 4}), {}, pool), std::invalid_argument);
  EXPECT_TRUE(at::equal(cache.ssm, before));
}

TEST_F(BucketedDecode, NeedsScratchRowsAndRefusesGraphsWithoutCuda) {
  auto model = load(*dir_);
  StateCache no_scratch(model->config(), 4, at::kCPU);
  EXPECT_THROW(BucketedDecoder(*model, no_scratch, 4, false), std::invalid_argument);
  StateCache too_few(model->config(), 20, at::kCPU, 6);  // 9 rows run as 16: 7 padding rows
  EXPECT_THROW(BucketedDecoder(*model, too_few, 20, false), std::invalid_argument);
  StateCache enough(model->config(), 4, at::kCPU, 1);
  EXPECT_NO_THROW(BucketedDecoder(*model, enough, 4, false));
  EXPECT_THROW(BucketedDecoder(*model, enough, 4, /*use_cuda_graphs=*/true), std::invalid_argument);
  EXPECT_THROW(StateCache(model->config(), 4, at::kCPU, -1), std::invalid_argument);
}

}  // namespace
}  // namespace statetune::engine::testing
