#include "server/engine/model/bucketed_decoder.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace statetune::engine {

std::vector<int64_t> BucketedDecoder::buckets_up_to(int64_t max_batch) {
  if (max_batch < 1) throw std::invalid_argument("BucketedDecoder: max_batch must be at least 1");
  // Small batches are common and cheap to pad to a power of two; above 8, steps of 8 keep the
  // padding under 8 rows (at most 1/2 at 9 rows, under 1/9 beyond 64) with max_batch/8 graphs.
  std::vector<int64_t> sizes;
  for (int64_t s = 1; s < 8 && s < max_batch; s *= 2) sizes.push_back(s);
  for (int64_t s = 8; s < max_batch; s += 8) sizes.push_back(s);
  sizes.push_back(max_batch);
  return sizes;
}

int64_t BucketedDecoder::scratch_rows_needed(int64_t max_batch) {
  int64_t most = 0, previous = 0;
  for (const int64_t size : buckets_up_to(max_batch)) {
    most = std::max(most, size - (previous + 1));  // the smallest batch this bucket runs
    previous = size;
  }
  return most;
}

BucketedDecoder::BucketedDecoder(MambaModel& model, StateCache& cache, int64_t max_batch, bool use_cuda_graphs)
    : model_(model), cache_(cache), max_batch_(max_batch), use_graphs_(use_cuda_graphs),
      sizes_(buckets_up_to(max_batch)) {
  if (cache.scratch_rows() < scratch_rows_needed(max_batch)) {
    throw std::invalid_argument("BucketedDecoder: the state cache needs " +
                                std::to_string(scratch_rows_needed(max_batch)) +
                                " scratch rows for the padding rows, it has " +
                                std::to_string(cache.scratch_rows()));
  }
  if (use_graphs_ && !model.device().is_cuda()) {
    throw std::invalid_argument("CUDA graphs need the model on a CUDA device, not " + model.device().str());
  }
  if (use_graphs_ && !cuda_graphs_available()) {
    throw std::invalid_argument("CUDA graphs are not available in this build (no LibTorch with CUDA or no device)");
  }
}

int64_t BucketedDecoder::bucket_for(int64_t B) const {
  if (B < 1 || B > max_batch_) {
    throw std::invalid_argument("BucketedDecoder: batch of " + std::to_string(B) + " rows outside [1, " +
                                std::to_string(max_batch_) + "]");
  }
  return *std::lower_bound(sizes_.begin(), sizes_.end(), B);
}

BucketedDecoder::Bucket& BucketedDecoder::bucket(int64_t size) {
  auto it = buckets_.find(size);
  if (it != buckets_.end()) return it->second;
  Bucket& b = buckets_[size];
  b.size = size;
  const at::Device dev = model_.device();
  const auto on_dev = at::TensorOptions().device(dev);
  b.inputs = at::zeros({3, size}, on_dev.dtype(at::kLong));
  b.tokens = b.inputs[0];
  b.rows = b.inputs[1];
  b.slots = at::zeros({size}, on_dev.dtype(at::kInt));
  // Pinned on a GPU, so the per-step copy to the device is plain DMA.
  b.staging = at::empty({3, size}, at::TensorOptions().dtype(at::kLong).pinned_memory(dev.is_cuda()));
  b.logits = at::empty({size, model_.config().vocab_size}, on_dev.dtype(at::kFloat));
  b.workspace = MambaModel::new_workspace();
  return b;
}

std::vector<const void*> BucketedDecoder::addresses_of(const AdapterPoolView& adapters) {
  auto address = [](const at::Tensor& t) -> const void* { return t.defined() ? t.data_ptr() : nullptr; };
  return {address(adapters.state_offset), address(adapters.output_offset), address(adapters.initial_state)};
}

void BucketedDecoder::run_step(Bucket& b, const AdapterPoolView& adapters) {
  b.slots.copy_(b.inputs[2]);
  model_.decode_into(b.tokens, b.rows, b.slots, adapters, cache_, *b.workspace, b.logits);
}

at::Tensor BucketedDecoder::decode(const at::Tensor& tokens, const at::Tensor& rows, const at::Tensor& slots,
                                   const AdapterPoolView& adapters) {
  model_.check_decode_inputs(tokens, rows, slots, adapters, cache_);
  if (!tokens.device().is_cpu() || !rows.device().is_cpu() || (slots.defined() && !slots.device().is_cpu())) {
    throw std::invalid_argument("BucketedDecoder: tokens, rows and slots must be on the CPU");
  }
  const int64_t B = tokens.size(0);
  Bucket& b = bucket(bucket_for(B));
  const int64_t S = b.size, first_scratch = cache_.capacity();

  // Padding rows decode token 0 on the base model, each in its own scratch row.
  int64_t* tok = b.staging.data_ptr<int64_t>();
  int64_t* row = tok + S;
  int64_t* slot = row + S;
  const at::Tensor t = tokens.contiguous(), r = rows.contiguous();
  const at::Tensor s = slots.defined() ? slots.to(at::kInt).contiguous() : at::Tensor();
  for (int64_t i = 0; i < S; ++i) {
    const bool real = i < B;
    tok[i] = real ? t.data_ptr<int64_t>()[i] : 0;
    row[i] = real ? r.data_ptr<int64_t>()[i] : first_scratch + (i - B);
    slot[i] = real && s.defined() ? s.data_ptr<int32_t>()[i] : 0;
  }
  b.inputs.copy_(b.staging);  // blocking: the staging buffer is rewritten at the next call

  if (use_graphs_ && (!b.graph || b.pool_addresses != addresses_of(adapters))) {
    // The capture's warm-up runs execute the step, advancing the rows it names: their states are
    // put back afterwards, so the replay below is this call's only effect on the cache.
    // A failed capture puts them back too, and leaves no graph for this bucket.
    const at::Tensor conv = cache_.conv.index_select(1, b.rows), ssm = cache_.ssm.index_select(1, b.rows);
    auto restore = [&] {
      cache_.conv.index_copy_(1, b.rows, conv);
      cache_.ssm.index_copy_(1, b.rows, ssm);
    };
    b.graph.reset();
    try {
      b.graph = capture_step([this, &b, &adapters] { run_step(b, adapters); }, model_.device());
    } catch (...) {
      restore();
      throw;
    }
    restore();
    b.pool_addresses = addresses_of(adapters);
    ++graphs_captured_;
  }
  if (use_graphs_) {
    b.graph->replay();
  } else {
    run_step(b, adapters);
  }
  return b.logits.narrow(0, 0, B);
}

}  // namespace statetune::engine
