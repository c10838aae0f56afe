// Full-parameter training of a Mamba-1 language model on plain text: every weight is trainable (the
// differentiable forward is TrainableMamba's full mode, the same scan/conv autograd the adapter
// trainer uses). This is how the project's default base model is pretrained (scripts/pretrain/).
//
// The objective is next-token cross-entropy on every position of fixed-length windows cut from one
// token stream (documents joined by <|endoftext|>), the usual pretraining recipe: AdamW (weight decay
// on matrices and the embedding only, not on norms, biases, A_log, D — as mamba_ssm excludes them),
// linear warm-up then cosine decay to a floor, gradient clipping. Held-out loss on fixed windows of a
// separate stream gives the perplexity. No gRPC.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "server/engine/model/model_config.h"

namespace statetune::engine::trainer {

struct FullTrainOptions {
  int64_t seq_len = 128;      // tokens per window (the loss scores seq_len positions)
  int64_t batch_size = 8;     // windows per step
  int64_t steps = 1000;       // optimizer steps (the schedule's length)
  double max_seconds = 0;     // > 0: a wall-clock budget: the cosine runs over time instead of steps
                              // and training stops (with a final evaluation) when the budget is spent
  double lr = 2e-3;
  double min_lr_ratio = 0.1;  // cosine decays to lr x this
  int64_t warmup_steps = 100;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
  double grad_clip = 1.0;
  uint64_t seed = 0;          // window sampling
  int64_t eval_every = 100;   // held-out evaluation every N steps (and at the end)
  int64_t eval_windows = 64;  // held-out windows scored per evaluation (fixed, non-overlapping)
  int64_t log_every = 10;
  int64_t scan_chunk = 64;
  at::Device device = at::kCPU;  // where the weights, optimizer state and activations live
  // Seconds on a monotonic clock, read for the time budget and the reported elapsed time; empty: the
  // steady clock. Tests drive a budget run with a clock they advance per step, so the run is the same
  // however fast the machine is.
  std::function<double()> clock;
};

struct FullTrainProgress {
  bool evaluation = false;  // false: a training step report; true: a held-out evaluation
  bool final = false;       // evaluation only: the one after the last step (train() returns next)
  int64_t step = 0, total_steps = 0;
  double loss = 0;          // training loss of the last step (nats per token)
  double lr = 0, grad_norm = 0, tokens_per_s = 0, elapsed_s = 0;
  int64_t tokens = 0;       // training tokens processed so far
  double heldout_loss = 0;  // evaluation only: nats per token; perplexity = exp(heldout_loss)
};

struct FullTrainResult {
  int64_t steps = 0;
  int64_t tokens = 0;
  double seconds = 0;
  double final_train_loss = 0;     // mean of the last min(50, steps) steps
  double initial_heldout_loss = 0; // before the first step
  double heldout_loss = 0;         // after the last step
  std::vector<std::pair<int64_t, double>> heldout_curve;  // (step, held-out loss)
};

// Called for every report; `weights` are the current parameters (e.g. to write a snapshot).
using FullTrainCallback =
    std::function<void(const FullTrainProgress&, const std::map<std::string, at::Tensor>& weights)>;

class FullModelTrainer {
 public:
  // `weights`: Hugging Face-named tensors of a model of `config` (e.g. random_weights(config, seed));
  // they are copied into fp32 trainable leaves on options.device.
  FullModelTrainer(const MambaConfig& config, const std::map<std::string, at::Tensor>& weights,
                   FullTrainOptions options);

  // train_tokens / heldout_tokens: token streams. Each must hold more than seq_len + 1 tokens
  // (heldout: at least one window). `stop`: checked before every step.
  FullTrainResult train(const std::vector<int32_t>& train_tokens, const std::vector<int32_t>& heldout_tokens,
                        const FullTrainCallback& callback = {}, const std::function<bool()>& stop = {});

  // Mean next-token loss (nats) over the first `windows` non-overlapping windows of `tokens`.
  double heldout_loss(const std::vector<int32_t>& tokens, int64_t windows) const;

  // The current weights (fp32, detached), Hugging Face names: write them with write_checkpoint.
  std::map<std::string, at::Tensor> weights() const;

  int64_t parameter_count() const;

 private:
  MambaConfig config_;
  FullTrainOptions options_;
  std::map<std::string, at::Tensor> params_;
};

// A document stream for pretraining: each document tokenized, followed by <|endoftext|> (eos_id).
// Reads JSONL lines {"text": ...} (or {"prompt", "completion"}, joined by a newline).
std::vector<int32_t> tokenize_documents(const std::filesystem::path& jsonl,
                                        const std::function<std::vector<int32_t>(const std::string&)>& encode,
                                        int32_t eos_id, int64_t max_tokens = 0);

}  // namespace statetune::engine::trainer
