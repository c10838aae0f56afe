#include "server/engine/trainer/full_trainer.h"

#include <ATen/core/grad_mode.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <random>
#include <stdexcept>

#include "server/engine/trainer/adamw.h"
#include "server/engine/trainer/linear_cross_entropy.h"
#include "server/engine/trainer/trainable_mamba.h"

namespace statetune::engine::trainer {
namespace {

constexpr double kPi = 3.14159265358979323846;

// Cosine from 1 down to `floor` as `progress` goes from 0 to 1.
double cosine(double progress, double floor) {
  return floor + (1.0 - floor) * 0.5 * (1.0 + std::cos(kPi * std::clamp(progress, 0.0, 1.0)));
}

// Matrices and the embedding decay; norms, biases, A_log and D do not (mamba_ssm's _no_weight_decay).
bool decays(const std::string& name, const at::Tensor& t) {
  const auto ends_with = [&name](const std::string& s) {
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  return t.dim() >= 2 && !ends_with("A_log");
}

// Windows [B, L] of inputs and their next-token targets, starting at `offsets`.
std::pair<at::Tensor, at::Tensor> windows(const std::vector<int32_t>& stream, const std::vector<int64_t>& offsets,
                                          int64_t L) {
  const int64_t B = static_cast<int64_t>(offsets.size());
  at::Tensor in = at::empty({B, L}, at::kLong), tg = at::empty({B, L}, at::kLong);
  int64_t* pi = in.data_ptr<int64_t>();
  int64_t* pt = tg.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    const int32_t* s = stream.data() + offsets[static_cast<size_t>(b)];
    for (int64_t t = 0; t < L; ++t) {
      pi[b * L + t] = s[t];
      pt[b * L + t] = s[t + 1];
    }
  }
  return {in, tg};
}

at::Tensor window_loss(const TrainableMamba& net, const at::Tensor& in, const at::Tensor& tg) {
  const int64_t B = in.size(0), L = in.size(1);
  const at::Tensor lengths = at::full({B}, L, at::kLong);
  const at::Tensor hid = net.hidden(in, lengths, AdapterTensors{});
  // Every position is scored: the fused op never builds the [B * L, V] logits (linear_cross_entropy.h).
  return linear_cross_entropy(hid.reshape({B * L, hid.size(2)}), net.lm_head(), tg.reshape({B * L}));
}

}  // namespace

FullModelTrainer::FullModelTrainer(const MambaConfig& config, const std::map<std::string, at::Tensor>& weights,
                                   FullTrainOptions options)
    : config_(config), options_(options) {
  if (options_.seq_len < 2 || options_.batch_size < 1 || options_.steps < 1) {
    throw std::invalid_argument("full trainer: seq_len >= 2, batch_size >= 1 and steps >= 1 are required");
  }
  if (!(options_.lr > 0) || options_.warmup_steps < 0 || options_.min_lr_ratio < 0 || options_.min_lr_ratio > 1) {
    throw std::invalid_argument("full trainer: lr > 0, warmup_steps >= 0 and min_lr_ratio in [0, 1] are required");
  }
  if (options_.log_every < 1) options_.log_every = 1;
  for (const auto& [name, t] : weights) {
    // A tied lm_head is the embedding itself; a separate copy would train two tensors.
    if (config_.tie_embeddings && name == "lm_head.weight") continue;
    at::Tensor leaf = t.to(options_.device, at::kFloat, false, /*copy=*/true).contiguous();
    leaf.set_requires_grad(true);
    params_[name] = leaf;
  }
  TrainableMamba check(config_, params_, options_.scan_chunk);  // refuses missing or mis-shaped weights
}

int64_t FullModelTrainer::parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, t] : params_) n += t.numel();
  return n;
}

std::map<std::string, at::Tensor> FullModelTrainer::weights() const {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, t] : params_) out[name] = t.detach().to(at::kCPU, /*non_blocking=*/false, /*copy=*/true);
  return out;
}

double FullModelTrainer::heldout_loss(const std::vector<int32_t>& tokens, int64_t windows_wanted) const {
  at::NoGradGuard no_grad;
  const int64_t L = options_.seq_len;
  const int64_t available = (static_cast<int64_t>(tokens.size()) - 1) / L;
  const int64_t n = std::min(windows_wanted, available);
  if (n < 1) throw std::invalid_argument("full trainer: the held-out stream is shorter than one window");
  TrainableMamba net(config_, params_, options_.scan_chunk);
  double sum = 0;
  for (int64_t i = 0; i < n; i += options_.batch_size) {
    std::vector<int64_t> offsets;
    for (int64_t j = i; j < std::min(n, i + options_.batch_size); ++j) offsets.push_back(j * L);
    const auto [in, tg] = windows(tokens, offsets, L);
    sum += window_loss(net, in, tg).item<double>() * static_cast<double>(offsets.size());
  }
  return sum / static_cast<double>(n);
}

FullTrainResult FullModelTrainer::train(const std::vector<int32_t>& train_tokens,
                                        const std::vector<int32_t>& heldout_tokens,
                                        const FullTrainCallback& callback, const std::function<bool()>& stop) {
  using Clock = std::chrono::steady_clock;
  const FullTrainOptions& o = options_;
  const int64_t L = o.seq_len, B = o.batch_size;
  const int64_t span = static_cast<int64_t>(train_tokens.size()) - L - 1;
  if (span < 1) throw std::invalid_argument("full trainer: the training stream is shorter than one window");
  for (int32_t t : train_tokens) {
    if (t < 0 || t >= config_.vocab_size) throw std::invalid_argument("full trainer: token id outside the vocabulary");
  }
  TrainableMamba net(config_, params_, o.scan_chunk);
  std::map<std::string, AdamWMoments> moments;
  std::vector<at::Tensor> all_params;
  for (const auto& [name, p] : params_) {
    moments[name] = AdamWMoments::zeros_like(p);
    all_params.push_back(p);
  }
  FullTrainResult result;
  result.initial_heldout_loss = heldout_loss(heldout_tokens, o.eval_windows);
  result.heldout_curve.emplace_back(0, result.initial_heldout_loss);
  auto now_s = [&] {
    return o.clock ? o.clock() : std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
  };
  const double t0 = now_s();
  auto elapsed = [&] { return now_s() - t0; };
  const int64_t total = o.steps;
  std::vector<double> recent;
  FullTrainProgress p;

  auto evaluate = [&](int64_t step, bool final) {
    const double h = heldout_loss(heldout_tokens, o.eval_windows);
    result.heldout_curve.emplace_back(step, h);
    result.heldout_loss = h;
    if (callback) {
      FullTrainProgress e = p;
      e.evaluation = true;
      e.final = final;
      e.heldout_loss = h;
      e.elapsed_s = elapsed();
      callback(e, params_);
    }
  };

  // Linear warm-up over warmup_steps, then a cosine to the floor over the remaining steps or, with a
  // time budget, over the remaining wall-clock time: the run then ends at the floor learning rate
  // however fast the machine turns out to be (on a shared machine the step time can change threefold
  // during a run), at the price of step counts that depend on the machine.
  double warmup_end_s = 0;
  auto multiplier = [&](int64_t step) {
    if (step < o.warmup_steps) return static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
    if (o.max_seconds > 0) {
      if (warmup_end_s == 0) warmup_end_s = elapsed();
      return cosine((elapsed() - warmup_end_s) / std::max(1e-9, o.max_seconds - warmup_end_s), o.min_lr_ratio);
    }
    if (total <= o.warmup_steps) return 1.0;
    return cosine(static_cast<double>(step - o.warmup_steps) / static_cast<double>(total - o.warmup_steps),
                  o.min_lr_ratio);
  };
  int64_t step = 0;
  for (; step < total; ++step) {
    if (stop && stop()) break;
    if (o.max_seconds > 0 && elapsed() >= o.max_seconds) break;
    std::mt19937_64 rng(o.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(step) + 1);
    std::vector<int64_t> offsets(static_cast<size_t>(B));
    for (auto& off : offsets) off = static_cast<int64_t>(rng() % static_cast<uint64_t>(span + 1));
    const auto [in, tg] = windows(train_tokens, offsets, L);
    for (auto& [name, prm] : params_) prm.mutable_grad() = at::Tensor();
    const at::Tensor loss = window_loss(net, in, tg);
    loss.backward();
    const double l = loss.item<double>();
    if (!std::isfinite(l)) {
      throw std::runtime_error("full trainer: the loss became " + std::to_string(l) + " at step " +
                               std::to_string(step + 1) + " (learning rate too high?)");
    }
    double grad_norm = 0;
    const double mult = multiplier(step);
    {
      at::NoGradGuard no_grad;
      grad_norm = clip_grad_norm(all_params, o.grad_clip);
      const double lr = o.lr * mult;
      const AdamWHyper hyper{o.beta1, o.beta2, o.eps};
      for (auto& [name, prm] : params_) {
        adamw_step(prm, moments[name], hyper, lr, decays(name, prm) ? o.weight_decay : 0.0, step + 1);
      }
    }
    result.tokens += B * L;
    recent.push_back(l);
    if (recent.size() > 50) recent.erase(recent.begin());
    p.step = step + 1;
    // With a time budget the length is an estimate from the mean step time so far.
    p.total_steps = o.max_seconds > 0 ? std::min<int64_t>(total, static_cast<int64_t>(o.max_seconds / (elapsed() / (step + 1))))
                                      : total;
    p.loss = l;
    p.lr = o.lr * mult;
    p.grad_norm = grad_norm;
    p.tokens = result.tokens;
    p.elapsed_s = elapsed();
    p.tokens_per_s = p.elapsed_s > 0 ? static_cast<double>(result.tokens) / p.elapsed_s : 0;
    if (callback && (p.step % o.log_every == 0 || p.step == total)) callback(p, params_);
    if (o.eval_every > 0 && p.step % o.eval_every == 0 && p.step != total) evaluate(p.step, false);
  }
  result.steps = step;
  result.seconds = elapsed();
  double s = 0;
  for (double v : recent) s += v;
  result.final_train_loss = recent.empty() ? 0 : s / static_cast<double>(recent.size());
  evaluate(step, true);
  return result;
}

std::vector<int32_t> tokenize_documents(const std::filesystem::path& jsonl,
                                        const std::function<std::vector<int32_t>(const std::string&)>& encode,
                                        int32_t eos_id, int64_t max_tokens) {
  std::ifstream in(jsonl);
  if (!in) throw std::runtime_error(jsonl.string() + ": cannot open");
  std::vector<int32_t> out;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      throw std::runtime_error(jsonl.string() + ":" + std::to_string(line_no) + ": not JSON: " + e.what());
    }
    std::string text;
    if (j.is_object() && j.contains("text") && j["text"].is_string()) {
      text = j["text"].get<std::string>();
    } else if (j.is_object() && j.contains("prompt") && j.contains("completion")) {
      text = j["prompt"].get<std::string>() + "\n" + j["completion"].get<std::string>();
    } else {
      throw std::runtime_error(jsonl.string() + ":" + std::to_string(line_no) +
                               ": expected {\"text\": ...} or {\"prompt\", \"completion\"}");
    }
    const std::vector<int32_t> ids = encode(text);
    out.insert(out.end(), ids.begin(), ids.end());
    out.push_back(eos_id);
    if (max_tokens > 0 && static_cast<int64_t>(out.size()) >= max_tokens) break;
  }
  return out;
}

}  // namespace statetune::engine::trainer
