// The decode step on fixed, batch-size-bucketed device buffers, optionally replayed as CUDA graphs.
//
// A CUDA graph bakes in every address and shape it launched with, so a graph-served decode needs
// (1) one graph per batch size, which bucketing bounds: B rows run as the next bucket up (1, 2, 4, 8,
// then multiples of 8), the extra rows being padding; (2) inputs copied into the bucket's own
// device buffers (tokens, cache rows, adapter slots) and logits read from its own buffer; (3) the
// step's workspaces owned per bucket, never resized by another batch size. Padding rows decode
// token 0 with the base model into the cache's scratch rows (StateCache's rows after capacity(); at
// most 7 are needed), one each, so they never touch a sequence's state and never share a row (rows
// must be unique).
//
// Without graphs (a CPU model, or graphs not asked for) the same buffers run eagerly: that is the
// path the tests compare with MambaModel::decode here, and what a graph replays on a GPU.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "server/engine/model/adapter_pool_view.h"
#include "server/engine/model/decode_graph.h"
#include "server/engine/model/mamba_model.h"

namespace statetune::engine {

class BucketedDecoder {
 public:
  // The batch sizes a step of B rows runs as, smallest first, up to max_batch (itself a bucket).
  static std::vector<int64_t> buckets_up_to(int64_t max_batch);

  // The most padding rows a step can have (at most 7): the scratch rows the cache needs.
  static int64_t scratch_rows_needed(int64_t max_batch);

  // `cache` must have scratch_rows_needed(max_batch) scratch rows; `model` and `cache`
  // must outlive this object. use_cuda_graphs needs a CUDA model and a build with CUDA graphs
  // (throws std::invalid_argument otherwise).
  BucketedDecoder(MambaModel& model, StateCache& cache, int64_t max_batch, bool use_cuda_graphs);

  // MambaModel::decode's contract with tokens, rows, slots on the CPU (slots may be undefined:
  // all rows on the base model) and B <= max_batch; everything is checked as decode() checks it.
  // Returns fp32 logits [B, V] on the model's device: a view of the bucket's buffer, valid until
  // the next call.
  at::Tensor decode(const at::Tensor& tokens, const at::Tensor& rows, const at::Tensor& slots,
                    const AdapterPoolView& adapters);

  int64_t bucket_for(int64_t B) const;
  bool uses_cuda_graphs() const { return use_graphs_; }
  int64_t graphs_captured() const { return graphs_captured_; }

 private:
  struct Bucket {
    int64_t size = 0;
    // On the model's device, at fixed addresses. inputs [3, size] int64 holds the step's tokens,
    // cache rows and slots, filled by one host-to-device copy; tokens and rows are views of it, and
    // the step converts the slots into the int32 tensor the kernels read.
    at::Tensor inputs, tokens, rows, slots, logits;
    at::Tensor staging;  // [3, size] int64 on the CPU (pinned on a GPU): what goes into inputs
    std::shared_ptr<MambaModel::Workspace> workspace;
    std::unique_ptr<CapturedStep> graph;
    std::vector<const void*> pool_addresses;  // the adapter tensors the graph was captured with
  };
  Bucket& bucket(int64_t size);
  void run_step(Bucket& b, const AdapterPoolView& adapters);
  static std::vector<const void*> addresses_of(const AdapterPoolView& adapters);

  MambaModel& model_;
  StateCache& cache_;
  int64_t max_batch_;
  bool use_graphs_;
  std::vector<int64_t> sizes_;
  std::map<int64_t, Bucket> buckets_;
  int64_t graphs_captured_ = 0;
};

}  // namespace statetune::engine
