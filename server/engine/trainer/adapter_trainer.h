// The adapter trainer: fits state-based adapters (state_offset, output_offset, initial_state and any
// combination) of a frozen Mamba-1 base on (prompt, completion) examples, the way the published
// experiments did (docs/adapter-math.md):
//   - an example is  prompt + separator ("\n###\n")  +  completion + <|endoftext|>,  right-padded;
//     the loss is the mean cross-entropy over the completion tokens (and the end-of-text) only;
//   - AdamW (beta 0.9/0.999, eps 1e-8, weight decay 0) with one learning rate per method, linear decay
//     to 0 after an optional linear warm-up, gradient clipping to global norm 1.0;
//   - fp32 adapter tensors whatever the base's compute dtype (fp32 or bf16).
// Also: periodic validation (loss and token accuracy) with early stopping on the validation loss,
// checkpoints (adapter + optimizer state + step) that a later run resumes exactly, a progress callback
// and a cancellation flag checked every step. No gRPC; the training service is a thin layer on top.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "server/engine/adapters/adapter.h"
#include "server/engine/model/mamba_model.h"
#include "server/engine/tasks/jsonl.h"
#include "server/engine/text/chat_template.h"
#include "server/engine/text/tokenizer.h"
#include "server/engine/trainer/trainable_mamba.h"

namespace statetune::engine::trainer {

// A training example: the one prompt/completion type of the data-set readers and the validator.
using TextExample = tasks::PromptCompletion;

// One example as token ids: ids = prompt+separator tokens, then completion tokens, then eos.
// Loss positions are the completion tokens and the eos: ids[prompt_tokens .. size).
struct TokenizedExample {
  std::vector<int64_t> ids;
  int64_t prompt_tokens = 0;  // tokens of prompt + separator (after truncation), >= 1
};

// The learning rate of an adapter method when a job gives none (4e-4, 2e-3, 1e-3); throws
// std::invalid_argument for an unknown method.
double default_learning_rate(const std::string& method);

struct TrainerOptions {
  std::vector<std::string> methods = {"state_offset"};
  // Learning rate per method group; <= 0 means the method's default (4e-4, 2e-3, 1e-3).
  double lr_state_offset = 0, lr_output_offset = 0, lr_initial_state = 0;
  int64_t epochs = 10;
  int64_t batch_size = 4;
  int64_t max_length = 512;       // tokens per example after truncation (the prompt loses its start)
  int64_t max_steps = 0;          // > 0: stop after this many optimizer steps (total for the schedule
                                  // stays epochs x batches unless schedule_steps is set)
  int64_t schedule_steps = 0;     // > 0: the length of the linear decay instead of epochs x batches
  int64_t warmup_steps = 0;       // linear warm-up from 0 over this many steps
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  double grad_clip = 1.0;         // global L2 norm; <= 0 disables clipping
  uint64_t seed = 0;              // shuffling order (and nothing else: adapters start at zero)
  bool shuffle = true;
  std::string separator = kPromptCompletionSeparator;
  int64_t eval_every = 0;         // validation every N steps; 0 = at the end of every epoch
  int64_t early_stopping_patience = 0;  // stop after N validations without improvement; 0 = never
  double early_stopping_min_delta = 0.0;
  bool keep_best = true;          // with validation data: return the adapter of the best validation loss
  int64_t eval_batch_size = 8;
  std::string checkpoint_dir;     // empty: no checkpoints
  int64_t checkpoint_every = 0;   // steps between checkpoints; 0 = at the end of every epoch
  int64_t log_every = 1;          // steps between progress callbacks
  int64_t scan_chunk = 64;        // the scan backward's recompute chunk
  std::string adapter_name = "adapter";
  std::string adapter_version = "1";

  // The learning rate `method` trains with (the default when its field is <= 0).
  double lr_for(const std::string& method) const;
};

struct TrainProgress {
  enum class Kind { kStep, kValidation, kCheckpoint, kDone } kind = Kind::kStep;
  int64_t step = 0;         // optimizer steps done
  int64_t total_steps = 0;  // the schedule's length (or max_steps if smaller)
  int64_t epoch = 0;        // 0-based epoch of the last step
  double loss = 0;          // training loss of the last step (mean over its completion tokens)
  double lr = 0;            // learning-rate multiplier x the first method's rate
  double tokens_per_s = 0;  // non-padding tokens forward+backward per second since start
  double eta_s = 0;         // estimated seconds to total_steps
  double elapsed_s = 0;
  double grad_norm = 0;     // before clipping
  // kValidation only:
  double val_loss = 0, val_token_accuracy = 0;
  bool improved = false;
};

struct LossStats {
  double loss = 0;            // mean cross-entropy per completion token
  double token_accuracy = 0;  // share of completion tokens whose argmax is the target
  int64_t tokens = 0;         // completion tokens scored
};

struct TrainResult {
  Adapter adapter;  // the trained (or best-validation) adapter, ready for save_adapter
  int64_t steps = 0;
  int64_t epochs_completed = 0;
  double final_train_loss = 0;
  double best_val_loss = 0;   // 0 without validation data
  int64_t best_step = 0;
  bool early_stopped = false;
  bool cancelled = false;
  int64_t train_tokens = 0;   // non-padding tokens processed (this run, not counting resumed steps)
  double seconds = 0;
  double tokens_per_s = 0;
  std::vector<LossStats> validations;
};

using ProgressCallback = std::function<void(const TrainProgress&)>;

class AdapterTrainer {
 public:
  // The model (and the tokenizer) must outlive the trainer.
  AdapterTrainer(const MambaModel& model, const Tokenizer& tokenizer, TrainerOptions options);

  const TrainerOptions& options() const { return options_; }

  // Tokenizes and truncates one example (see TokenizedExample). Throws std::invalid_argument for an
  // empty completion.
  TokenizedExample tokenize(const TextExample& example) const;
  std::vector<TokenizedExample> tokenize(const std::vector<TextExample>& examples) const;

  // Trains from zero (or from the checkpoint in options.checkpoint_dir when `resume` and one exists).
  // `validation` may be empty (no validation, no early stopping). `cancel`: checked before every step;
  // when set, training stops, writes a checkpoint if checkpoints are on and returns cancelled = true.
  TrainResult train(const std::vector<TextExample>& train_examples,
                    const std::vector<TextExample>& validation, const ProgressCallback& progress = {},
                    const std::atomic<bool>* cancel = nullptr, bool resume = false);

  // Loss and token accuracy of `adapter` (nullptr: the base model) on examples, no gradients.
  LossStats evaluate_loss(const std::vector<TokenizedExample>& examples, const Adapter* adapter) const;

  // Mean completion-token loss of one batch with gradients flowing into `tensors` (for tests and for
  // the trainer itself). Returns the loss tensor (scalar) and fills token counts.
  at::Tensor batch_loss(const std::vector<const TokenizedExample*>& batch, const AdapterTensors& tensors,
                        int64_t* tokens_in_batch = nullptr, int64_t* correct = nullptr,
                        int64_t* scored = nullptr) const;

  // The model this trainer's adapters are for.
  const MambaModel& model() const { return model_; }

 private:
  const MambaModel& model_;
  const Tokenizer& tokenizer_;
  TrainerOptions options_;
  TrainableMamba net_;
};

// An Adapter's tensors as fresh fp32 leaves on `device` that require grad (copies), and back.
AdapterTensors to_trainable(const Adapter& adapter, at::Device device);
void copy_into(const AdapterTensors& tensors, Adapter& adapter);

}  // namespace statetune::engine::trainer
