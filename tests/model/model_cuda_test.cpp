// The model on a CUDA device (skips without one): the direct decode against the CPU model on the
// same checkpoint, and the bucketed decode replayed as CUDA graphs against the direct decode on the
// device, including what the graphs promise the rest of the cache (padding rows write only scratch
// rows). Built only with a LibTorch that has CUDA (scripts/gpu/run_on_gpu.sh), compile-checked
// elsewhere.
#include <gtest/gtest.h>

#include "server/engine/model/bucketed_decoder.h"
#include "server/engine/model/decode_graph.h"
#include "tests/model/model_test_util.h"

namespace statetune::engine::testing {
namespace {

// Wide enough that the kernels run several warps per block.
MambaConfig medium_config() {
  MambaConfig c = tiny_config();
  c.d_model = 256;
  c.d_inner = 512;
  c.n_layer = 3;
  c.d_state = 16;
  c.dt_rank = 16;
  c.vocab_size = 1000;
  c.unpadded_vocab_size = 1000;
  return c;
}

class ModelCuda : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fresh_dir("cuda"));
    write_random_checkpoint(*dir_, medium_config(), 23);
  }
  static void TearDownTestSuite() { delete dir_; }
  void SetUp() override {
    if (!cuda_graphs_available()) GTEST_SKIP() << "no CUDA device";
  }
  static std::unique_ptr<MambaModel> load_on(at::Device device, at::ScalarType dtype) {
    LoadOptions o;
    o.device = device;
    o.dtype = dtype;
    return MambaModel::load(*dir_, o);
  }
  static void prefill(MambaModel& m, StateCache& cache, const at::Tensor& rows, const at::Tensor& slots,
                      const AdapterPoolView& pool) {
    const int64_t B = rows.size(0), L = 9;
    const at::Tensor tokens = (at::arange(B * L, at::kLong) * 7).remainder(997).view({B, L}) + 1;
    const at::Tensor lengths = at::arange(B, at::kLong).remainder(L) + 1;
    m.prefill(tokens.to(m.device()), lengths, rows.to(m.device()), slots.to(m.device()), pool, cache);
  }
  static fs::path* dir_;
};
fs::path* ModelCuda::dir_ = nullptr;

AdapterPoolView on_device(const AdapterPoolView& p, at::Device d) {
  AdapterPoolView out;
  out.state_offset = p.state_offset.to(d);
  out.output_offset = p.output_offset.to(d);
  out.initial_state = p.initial_state.to(d);
  return out;
}

TEST_F(ModelCuda, DecodeOnTheDeviceMatchesTheCpuModel) {
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dtype));
    auto cpu = load_on(at::kCPU, dtype);
    auto gpu = load_on(at::Device(at::kCUDA, 0), dtype);
    const AdapterPoolView pool = random_pool(cpu->config(), 4, true, true, true, 7, 0.1);
    const AdapterPoolView pool_gpu = on_device(pool, gpu->device());
    const int64_t B = 5;
    const at::Tensor rows = t64({3, 0, 4, 1, 2}), slots = t32({0, 1, 2, 3, 1});
    StateCache cc(cpu->config(), B, at::kCPU), gc(gpu->config(), B, gpu->device());
    prefill(*cpu, cc, rows, slots, pool);
    prefill(*gpu, gc, rows, slots, pool_gpu);
    at::Tensor tokens = t64({5, 6, 7, 8, 9});
    for (int step = 0; step < 4; ++step) {
      const at::Tensor want = cpu->decode(tokens, rows, slots, pool, cc);
      const at::Tensor got = gpu->decode(tokens, rows, slots, pool_gpu, gc).cpu();
      EXPECT_LT(rel_err(got, want), dtype == at::kFloat ? 1e-4 : 1e-2) << "step " << step;
      tokens = want.argmax(-1);
    }
  }
}

TEST_F(ModelCuda, GraphReplayEqualsTheDirectDecodeAndTouchesOnlyItsRows) {
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dtype));
    auto gpu = load_on(at::Device(at::kCUDA, 0), dtype);
    const MambaConfig& c = gpu->config();
    const AdapterPoolView pool = on_device(random_pool(c, 4, true, true, true, 8, 0.1), gpu->device());
    const int64_t capacity = 12, max_batch = 10;  // buckets 1, 2, 4, 8, 10
    StateCache direct(c, capacity, gpu->device());
    StateCache graphed(c, capacity, gpu->device(), BucketedDecoder::scratch_rows_needed(max_batch));
    BucketedDecoder decoder(*gpu, graphed, max_batch, /*use_cuda_graphs=*/true);
    for (const int64_t B : {1, 3, 8, 9, 10}) {
      SCOPED_TRACE("B = " + std::to_string(B));
      const at::Tensor rows = (at::arange(B, at::kLong) * 5 + 2).remainder(capacity);
      const at::Tensor slots = at::arange(B, at::kInt).remainder(4);
      prefill(*gpu, direct, rows, slots, pool);
      prefill(*gpu, graphed, rows, slots, pool);
      // Rows no step names keep their state through capture and replay.
      const at::Tensor others = graphed.ssm.index_select(1, at::arange(capacity, at::kLong).to(gpu->device())).clone();
      at::Tensor tokens = at::arange(B, at::kLong) + 3;
      for (int step = 0; step < 3; ++step) {
        const at::Tensor want = gpu->decode(tokens, rows, slots, pool, direct).cpu();
        const at::Tensor got = decoder.decode(tokens, rows, slots, pool).cpu();
        EXPECT_LT(rel_err(got, want), dtype == at::kFloat ? 1e-4 : 1e-2) << "step " << step;
        tokens = want.argmax(-1);
      }
      const at::Tensor now = graphed.ssm.index_select(1, at::arange(capacity, at::kLong).to(gpu->device()));
      for (int64_t r = 0; r < capacity; ++r) {
        const bool named = (rows == r).any().item<bool>();
        EXPECT_EQ(at::equal(now.select(1, r), others.select(1, r)), !named) << "row " << r;
      }
      for (int64_t b = 0; b < B; ++b) {
        const int64_t r = rows[b].item<int64_t>();
        EXPECT_LT(rel_err(graphed.ssm.select(1, r).cpu(), direct.ssm.select(1, r).cpu()),
                  dtype == at::kFloat ? 1e-4 : 1e-2);
      }
    }
    EXPECT_EQ(decoder.graphs_captured(), 4);  // buckets 1, 4, 8, 10
  }
}

}  // namespace
}  // namespace statetune::engine::testing
