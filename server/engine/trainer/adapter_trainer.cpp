#include "server/engine/trainer/adapter_trainer.h"

#include <ATen/core/grad_mode.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <stdexcept>

#include "server/engine/trainer/adamw.h"
#include "server/engine/util/safetensors.h"

namespace statetune::engine::trainer {
namespace fs = std::filesystem;

namespace {

constexpr const char* kStateFile = "trainer_state.safetensors";
constexpr const char* kAdapterFile = "adapter.safetensors";


at::Tensor& field(AdapterTensors& t, const std::string& method) {
  if (method == kStateOffset) return t.state_offset;
  if (method == kOutputOffset) return t.output_offset;
  return t.initial_state;
}
const at::Tensor& field(const AdapterTensors& t, const std::string& method) {
  return field(const_cast<AdapterTensors&>(t), method);
}
at::Tensor& field(Adapter& a, const std::string& method) {
  if (method == kStateOffset) return a.state_offset;
  if (method == kOutputOffset) return a.output_offset;
  return a.initial_state;
}

// The example order of one epoch: a Fisher-Yates shuffle from a generator seeded by (seed, epoch), so
// a resumed run recomputes the same order without storing it.
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  if (!shuffle) return order;
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(epoch) + 1);
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

// Linear warm-up then linear decay to 0 at `total` (the HF get_linear_schedule_with_warmup rule);
// `step` is the 0-based index of the update about to be made.
double lr_multiplier(int64_t step, int64_t warmup, int64_t total) {
  if (step < warmup) return static_cast<double>(step + 1) / static_cast<double>(warmup + 1);
  if (total <= warmup) return 1.0;
  return std::max(0.0, static_cast<double>(total - step) / static_cast<double>(total - warmup));
}

// AdamW moments per method.
using OptimState = std::map<std::string, AdamWMoments>;

}  // namespace

double TrainerOptions::lr_for(const std::string& method) const {
  double v = 0;
  if (method == kStateOffset) v = lr_state_offset;
  if (method == kOutputOffset) v = lr_output_offset;
  if (method == kInitialState) v = lr_initial_state;
  return v > 0 ? v : default_learning_rate(method);
}

AdapterTensors to_trainable(const Adapter& adapter, at::Device device) {
  AdapterTensors t;
  for (const std::string& m : adapter.methods) {
    const at::Tensor& src = m == kStateOffset ? adapter.state_offset
                            : m == kOutputOffset ? adapter.output_offset
                                                 : adapter.initial_state;
    at::Tensor leaf = src.to(device, at::kFloat, /*non_blocking=*/false, /*copy=*/true).contiguous();
    leaf.set_requires_grad(true);
    field(t, m) = leaf;
  }
  return t;
}

void copy_into(const AdapterTensors& tensors, Adapter& adapter) {
  at::NoGradGuard no_grad;
  for (const std::string& m : adapter.methods) {
    field(adapter, m) = field(tensors, m).detach().to(at::kCPU, at::kFloat, false, true).contiguous();
  }
}

AdapterTrainer::AdapterTrainer(const MambaModel& model, const Tokenizer& tokenizer, TrainerOptions options)
    : model_(model), tokenizer_(tokenizer), options_(std::move(options)), net_(model, options_.scan_chunk) {
  options_.methods = normalize_methods(options_.methods);
  if (options_.methods.empty()) throw std::invalid_argument("trainer: no methods to train");
  if (options_.batch_size < 1) throw std::invalid_argument("trainer: batch_size must be >= 1");
  if (options_.eval_batch_size < 1) throw std::invalid_argument("trainer: eval_batch_size must be >= 1");
  if (options_.epochs < 1 && options_.max_steps < 1 && options_.schedule_steps < 1) {
    throw std::invalid_argument("trainer: epochs must be >= 1");
  }
  if (options_.max_length < 2) throw std::invalid_argument("trainer: max_length must be >= 2");
  if (options_.warmup_steps < 0) throw std::invalid_argument("trainer: warmup_steps must be >= 0");
  if (options_.log_every < 1) options_.log_every = 1;
  for (const auto& m : options_.methods) {
    if (!(options_.lr_for(m) > 0) || !std::isfinite(options_.lr_for(m))) {
      throw std::invalid_argument("trainer: learning rate of " + m + " must be positive");
    }
  }
}

TokenizedExample AdapterTrainer::tokenize(const TextExample& example) const {
  // User data is encoded with special tokens as plain text: an "<|endoftext|>" inside a prompt must
  // not end the sequence early.
  const std::vector<int32_t> p = tokenizer_.encode(example.prompt + options_.separator, false);
  const std::vector<int32_t> c = tokenizer_.encode(example.completion, false);
  if (c.empty()) throw std::invalid_argument("trainer: an example has an empty completion");
  const int64_t L = options_.max_length;
  const int64_t comp = static_cast<int64_t>(c.size()) + 1;  // + end-of-text
  std::vector<int64_t> prompt(p.begin(), p.end());
  // An empty prompt (and separator) starts from the end-of-text token, as generation does.
  if (prompt.empty()) prompt.push_back(model_.config().bos_token_id);
  int64_t keep = static_cast<int64_t>(prompt.size());
  if (keep + comp > L) {
    // The prompt loses tokens from its start (its end and the separator stay, they matter most) but
    // keeps at least half the budget; what still does not fit is cut from the completion's end.
    const int64_t floor_keep = std::min<int64_t>(keep, std::max<int64_t>(1, L / 2));
    keep = std::max(floor_keep, L - comp);
  }
  TokenizedExample out;
  out.ids.assign(prompt.end() - keep, prompt.end());
  out.prompt_tokens = keep;
  const int64_t room = std::min(comp, L - keep);
  for (int64_t i = 0; i < room; ++i) {
    out.ids.push_back(i < static_cast<int64_t>(c.size()) ? c[static_cast<size_t>(i)]
                                                         : model_.config().eos_token_id);
  }
  return out;
}

std::vector<TokenizedExample> AdapterTrainer::tokenize(const std::vector<TextExample>& examples) const {
  std::vector<TokenizedExample> out;
  out.reserve(examples.size());
  for (size_t i = 0; i < examples.size(); ++i) {
    try {
      out.push_back(tokenize(examples[i]));
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string(e.what()) + " (example " + std::to_string(i + 1) + ")");
    }
  }
  return out;
}

at::Tensor AdapterTrainer::batch_loss(const std::vector<const TokenizedExample*>& batch,
                                      const AdapterTensors& tensors, int64_t* tokens_in_batch,
                                      int64_t* correct, int64_t* scored) const {
  const int64_t B = static_cast<int64_t>(batch.size());
  if (B == 0) throw std::invalid_argument("trainer: empty batch");
  int64_t L = 0, P = 0, total = 0;
  for (const TokenizedExample* ex : batch) {
    const int64_t n = static_cast<int64_t>(ex->ids.size());
    if (ex->prompt_tokens < 1 || ex->prompt_tokens >= n) {
      throw std::invalid_argument("trainer: an example has no completion tokens to learn");
    }
    L = std::max(L, n);
    P += n - ex->prompt_tokens;
    total += n;
  }
  const MambaConfig& c = model_.config();
  at::Tensor tokens = at::full({B, L}, c.pad_token_id, at::TensorOptions().dtype(at::kLong));
  at::Tensor lengths = at::empty({B}, at::TensorOptions().dtype(at::kLong));
  at::Tensor pos = at::empty({P}, at::TensorOptions().dtype(at::kLong));
  at::Tensor target = at::empty({P}, at::TensorOptions().dtype(at::kLong));
  int64_t* tk = tokens.data_ptr<int64_t>();
  int64_t* pp = pos.data_ptr<int64_t>();
  int64_t* tg = target.data_ptr<int64_t>();
  int64_t k = 0;
  for (int64_t b = 0; b < B; ++b) {
    const TokenizedExample& ex = *batch[static_cast<size_t>(b)];
    const int64_t n = static_cast<int64_t>(ex.ids.size());
    std::copy(ex.ids.begin(), ex.ids.end(), tk + b * L);
    lengths.data_ptr<int64_t>()[b] = n;
    // Position t predicts token t + 1: the completion starts at prompt_tokens.
    for (int64_t t = ex.prompt_tokens - 1; t + 1 < n; ++t, ++k) {
      pp[k] = b * L + t;
      tg[k] = ex.ids[static_cast<size_t>(t + 1)];
    }
  }
  const at::Device dev = net_.device();
  const at::Tensor hid = net_.hidden(tokens, lengths, tensors);
  const at::Tensor rows = hid.reshape({B * L, hid.size(2)}).index_select(0, pos.to(dev));
  const at::Tensor logits = net_.logits(rows);
  const at::Tensor tgt = target.to(dev);
  const at::Tensor loss = at::cross_entropy_loss(logits, tgt);  // mean over the P completion tokens
  if (tokens_in_batch) *tokens_in_batch = total;
  if (scored) *scored = P;
  if (correct) {
    at::NoGradGuard no_grad;
    *correct = logits.argmax(-1).eq(tgt).sum().item<int64_t>();
  }
  return loss;
}

LossStats AdapterTrainer::evaluate_loss(const std::vector<TokenizedExample>& examples,
                                        const Adapter* adapter) const {
  at::NoGradGuard no_grad;
  AdapterTensors tensors;
  if (adapter != nullptr) {
    check_compatible(*adapter, model_.fingerprint());
    tensors = to_trainable(*adapter, net_.device());
    for (const at::Tensor& t : tensors.defined()) t.set_requires_grad(false);
  }
  return [&] {
    LossStats s;
    double sum = 0;
    int64_t correct_total = 0;
    const int64_t n = static_cast<int64_t>(examples.size());
    for (int64_t i = 0; i < n; i += options_.eval_batch_size) {
      std::vector<const TokenizedExample*> batch;
      for (int64_t j = i; j < std::min(n, i + options_.eval_batch_size); ++j) {
        batch.push_back(&examples[static_cast<size_t>(j)]);
      }
      int64_t correct = 0, scored = 0;
      const double l = batch_loss(batch, tensors, nullptr, &correct, &scored).item<double>();
      sum += l * static_cast<double>(scored);
      s.tokens += scored;
      correct_total += correct;
    }
    if (s.tokens > 0) {
      s.loss = sum / static_cast<double>(s.tokens);
      s.token_accuracy = static_cast<double>(correct_total) / static_cast<double>(s.tokens);
    }
    return s;
  }();
}

TrainResult AdapterTrainer::train(const std::vector<TextExample>& train_examples,
                                  const std::vector<TextExample>& validation, const ProgressCallback& progress,
                                  const std::atomic<bool>* cancel, bool resume) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  const TrainerOptions& o = options_;
  if (train_examples.empty()) throw std::invalid_argument("trainer: no training examples");
  const std::vector<TokenizedExample> train_tok = tokenize(train_examples);
  const std::vector<TokenizedExample> val_tok = tokenize(validation);
  const int64_t n = static_cast<int64_t>(train_tok.size());
  const int64_t per_epoch = (n + o.batch_size - 1) / o.batch_size;
  const int64_t schedule = o.schedule_steps > 0 ? o.schedule_steps : std::max<int64_t>(1, o.epochs) * per_epoch;
  const int64_t stop_at = o.max_steps > 0 ? std::min(schedule, o.max_steps) : schedule;

  Adapter adapter = zero_adapter(model_.config(), model_.fingerprint(), o.methods);
  adapter.name = o.adapter_name;
  adapter.version = o.adapter_version;
  AdapterTensors params = to_trainable(adapter, net_.device());
  OptimState opt;
  for (const auto& m : o.methods) opt[m] = AdamWMoments::zeros_like(field(params, m));
  AdapterTensors best;  // detached copies of the best-validation tensors
  double best_val = std::numeric_limits<double>::infinity();
  int64_t best_step = 0, bad_evals = 0, step = 0;
  bool validated_at_step = false;

  nlohmann::json identity = {{"methods", join_methods(o.methods)}, {"examples", n},
                             {"batch_size", o.batch_size}, {"schedule_steps", schedule},
                             {"seed", o.seed}, {"shuffle", o.shuffle},
                             {"base", model_.fingerprint().weights_sha256}};
  const fs::path ckdir = o.checkpoint_dir;
  if (resume && !ckdir.empty() && fs::exists(ckdir / kStateFile)) {
    const safetensors::File f = safetensors::File::open(ckdir / kStateFile);
    const auto& meta = f.metadata();
    const auto it = meta.find("trainer_state");
    if (it == meta.end()) throw std::runtime_error(f.source() + ": no trainer_state metadata");
    const nlohmann::json st = nlohmann::json::parse(it->second);
    if (st.at("identity") != identity) {
      throw std::runtime_error(f.source() + ": the checkpoint belongs to another run (" +
                               st.at("identity").dump() + " vs " + identity.dump() + ")");
    }
    at::NoGradGuard no_grad;
    for (const auto& m : o.methods) {
      field(params, m).copy_(f.tensor("param." + m, at::kFloat));
      opt[m].exp_avg.copy_(f.tensor("exp_avg." + m, at::kFloat));
      opt[m].exp_avg_sq.copy_(f.tensor("exp_avg_sq." + m, at::kFloat));
      if (f.contains("best." + m)) field(best, m) = f.tensor("best." + m, at::kFloat).to(net_.device());
    }
    step = st.at("step").get<int64_t>();
    best_val = st.at("best_val").is_null() ? std::numeric_limits<double>::infinity()
                                            : st.at("best_val").get<double>();
    best_step = st.at("best_step").get<int64_t>();
    bad_evals = st.at("bad_evals").get<int64_t>();
  }
  const int64_t start_step = step;

  auto save_checkpoint = [&]() {
    if (ckdir.empty()) return;
    fs::create_directories(ckdir);
    std::map<std::string, at::Tensor> tensors;
    for (const auto& m : o.methods) {
      tensors["param." + m] = field(params, m).detach().cpu();
      tensors["exp_avg." + m] = opt[m].exp_avg.cpu();
      tensors["exp_avg_sq." + m] = opt[m].exp_avg_sq.cpu();
      if (field(best, m).defined()) tensors["best." + m] = field(best, m).cpu();
    }
    nlohmann::json st = {{"identity", identity}, {"step", step}, {"best_step", best_step},
                         {"bad_evals", bad_evals}};
    st["best_val"] = std::isfinite(best_val) ? nlohmann::json(best_val) : nlohmann::json(nullptr);
    // The adapter file first: the state file is what resume reads, so it is written last.
    Adapter current = adapter;
    copy_into(params, current);
    current.extra_metadata["checkpoint_step"] = step;
    save_adapter(current, ckdir / kAdapterFile);
    safetensors::write_file(ckdir / kStateFile, tensors, {{"trainer_state", st.dump()}});
  };

  TrainResult result;
  std::vector<int64_t> order;
  int64_t order_epoch = -1;
  double last_loss = 0, last_grad_norm = 0;
  int64_t tokens_done = 0;
  const double lr0 = o.lr_for(o.methods.front());

  auto report = [&](TrainProgress p) {
    if (!progress) return;
    const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    p.step = step;
    p.total_steps = stop_at;
    p.epoch = step > 0 ? (step - 1) / per_epoch : 0;
    p.loss = last_loss;
    p.lr = lr0 * lr_multiplier(std::max<int64_t>(0, step - 1), o.warmup_steps, schedule);
    p.elapsed_s = elapsed;
    p.tokens_per_s = elapsed > 0 ? static_cast<double>(tokens_done) / elapsed : 0;
    const int64_t done = step - start_step;
    p.eta_s = done > 0 ? elapsed / static_cast<double>(done) * static_cast<double>(stop_at - step) : 0;
    p.grad_norm = last_grad_norm;
    progress(p);
  };

  auto validate = [&]() -> bool {  // returns true when training should stop early
    validated_at_step = true;
    Adapter current = adapter;
    copy_into(params, current);
    const LossStats s = evaluate_loss(val_tok, &current);
    result.validations.push_back(s);
    const bool improved = s.loss < best_val - o.early_stopping_min_delta;
    if (improved) {
      best_val = s.loss;
      best_step = step;
      bad_evals = 0;
      for (const auto& m : o.methods) field(best, m) = field(params, m).detach().clone();
    } else {
      ++bad_evals;
    }
    TrainProgress p;
    p.kind = TrainProgress::Kind::kValidation;
    p.val_loss = s.loss;
    p.val_token_accuracy = s.token_accuracy;
    p.improved = improved;
    report(p);
    return o.early_stopping_patience > 0 && bad_evals >= o.early_stopping_patience;
  };

  while (step < stop_at) {
    if (cancel != nullptr && cancel->load()) {
      result.cancelled = true;
      break;
    }
    validated_at_step = false;
    const int64_t epoch = step / per_epoch;
    const int64_t within = step % per_epoch;
    if (epoch != order_epoch) {
      order = epoch_order(n, o.seed, epoch, o.shuffle);
      order_epoch = epoch;
    }
    std::vector<const TokenizedExample*> batch;
    for (int64_t j = within * o.batch_size; j < std::min(n, (within + 1) * o.batch_size); ++j) {
      batch.push_back(&train_tok[static_cast<size_t>(order[static_cast<size_t>(j)])]);
    }
    for (at::Tensor& p : params.defined()) p.mutable_grad() = at::Tensor();
    int64_t batch_tokens = 0;
    const at::Tensor loss = batch_loss(batch, params, &batch_tokens);
    loss.backward();
    last_loss = loss.item<double>();
    if (!std::isfinite(last_loss)) {
      throw std::runtime_error("trainer: the loss became " + std::to_string(last_loss) + " at step " +
                               std::to_string(step + 1) + " (learning rate too high?)");
    }
    {
      at::NoGradGuard no_grad;
      last_grad_norm = clip_grad_norm(params.defined(), o.grad_clip);
      const double mult = lr_multiplier(step, o.warmup_steps, schedule);
      const AdamWHyper hyper{o.beta1, o.beta2, o.eps};
      for (const auto& m : o.methods) {
        adamw_step(field(params, m), opt[m], hyper, o.lr_for(m) * mult, o.weight_decay, step + 1);
      }
    }
    ++step;
    tokens_done += batch_tokens;
    if (step % o.log_every == 0 || step == stop_at) report(TrainProgress{});
    const bool epoch_end = step % per_epoch == 0;
    if (!val_tok.empty() && (o.eval_every > 0 ? step % o.eval_every == 0 : epoch_end)) {
      if (validate()) {
        result.early_stopped = true;
        break;
      }
    }
    if (!ckdir.empty() && (o.checkpoint_every > 0 ? step % o.checkpoint_every == 0 : epoch_end)) {
      save_checkpoint();
      TrainProgress p;
      p.kind = TrainProgress::Kind::kCheckpoint;
      report(p);
    }
  }
  // A last validation when the run ended between validations, so the best adapter sees the end.
  if (!val_tok.empty() && !validated_at_step && !result.cancelled && !result.early_stopped &&
      step > start_step) {
    validate();
  }
  save_checkpoint();

  result.steps = step;
  result.epochs_completed = step / per_epoch;
  result.final_train_loss = last_loss;
  result.best_val_loss = std::isfinite(best_val) ? best_val : 0;
  result.best_step = best_step;
  result.train_tokens = tokens_done;
  result.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  result.tokens_per_s = result.seconds > 0 ? static_cast<double>(tokens_done) / result.seconds : 0;
  const bool use_best = o.keep_best && !val_tok.empty() && field(best, o.methods.front()).defined();
  copy_into(use_best ? best : params, adapter);
  adapter.extra_metadata["training"] = {
      {"methods", join_methods(o.methods)}, {"steps", step}, {"epochs", o.epochs},
      {"batch_size", o.batch_size}, {"max_length", o.max_length}, {"warmup_steps", o.warmup_steps},
      {"seed", o.seed}, {"separator", o.separator}, {"examples", n},
      {"final_train_loss", last_loss}, {"best_step", use_best ? best_step : step}};
  for (const auto& m : o.methods) adapter.extra_metadata["training"]["lr_" + m] = o.lr_for(m);
  if (std::isfinite(best_val)) adapter.extra_metadata["training"]["best_val_loss"] = best_val;
  result.adapter = std::move(adapter);
  TrainProgress done;
  done.kind = TrainProgress::Kind::kDone;
  report(done);
  return result;
}

double default_learning_rate(const std::string& method) {
  if (method == kStateOffset) return 4e-4;
  if (method == kOutputOffset) return 2e-3;
  if (method == kInitialState) return 1e-3;
  throw std::invalid_argument("no learning rate for unknown method '" + method + "'");
}

}  // namespace statetune::engine::trainer
