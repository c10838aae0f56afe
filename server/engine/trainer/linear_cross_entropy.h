// Mean next-token cross-entropy of hidden rows through an output layer, without the [N, V] logits.
//
// Full-parameter training scores every position: for the default model 8 x 256 positions x 50,280
// vocabulary rows are 412 MB of fp32 logits, and log_softmax, its gradient and the logits' gradient
// are three more tensors of that size (16 x 2,048 tokens on a GPU: 6.6 GB each). This op walks the
// rows in chunks through one reused [chunk, V] workspace and, because the loss is the last op of the
// graph, computes the gradients of hidden and weight in the same pass (softmax minus one-hot, scaled
// by 1/N); backward only scales them by the incoming gradient. The gain is memory (peak RSS 1.62 ->
// 1.04 GB at 8 x 128 tokens), not time on a 2-core CPU (docs/benchmarks.md). Same numbers as
// at::cross_entropy_loss(at::mm(hidden, weight.t()), targets) (tests/trainer/linear_cross_entropy_test.cpp).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace statetune::engine::trainer {

// hidden [N, M] fp32, weight [V, M] fp32 (same device), targets [N] int64 in [0, V).
// Returns the mean loss (a 0-dim fp32 tensor); gradients flow to hidden and weight where they require
// them and grad mode is on. chunk_rows: rows per workspace pass (the workspace is chunk_rows x V fp32).
at::Tensor linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                int64_t chunk_rows = 256);

}  // namespace statetune::engine::trainer
