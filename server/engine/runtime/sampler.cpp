#include "server/engine/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace statetune::engine {

std::string SamplingParams::invalid_reason() const {
  if (!std::isfinite(temperature) || temperature < 0) return "temperature must be a finite number >= 0";
  if (top_k < 0) return "top_k must be >= 0";
  if (!(top_p > 0.0 && top_p <= 1.0)) return "top_p must be in (0, 1]";
  return "";
}

int64_t argmax(const float* logits, int64_t vocab) {
  int64_t best = -1;
  float best_value = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    const float v = logits[i];
    if (!std::isfinite(v)) continue;
    if (best < 0 || v > best_value) {
      best = i;
      best_value = v;
    }
  }
  return best < 0 ? 0 : best;
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

int64_t Sampler::sample(const float* logits, int64_t vocab) {
  if (params_.greedy() || vocab <= 1) return argmax(logits, vocab);

  // Candidates: finite logits only, as int32 ids (vocabularies are far below 2^31).
  order_.clear();
  for (int64_t i = 0; i < vocab; ++i) {
    if (std::isfinite(logits[i])) order_.push_back(static_cast<int32_t>(i));
  }
  if (order_.empty()) return 0;
  // Most likely first; equal logits by id so the order (and so the draw) is fully determined.
  auto more_likely = [logits](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  size_t keep = order_.size();
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < keep) {
    keep = static_cast<size_t>(params_.top_k);
    std::nth_element(order_.begin(), order_.begin() + keep, order_.end(), more_likely);
    order_.resize(keep);
  }
  const bool nucleus = params_.top_p < 1.0;
  if (nucleus) std::sort(order_.begin(), order_.end(), more_likely);

  // Softmax over the kept candidates at the request's temperature, in double for a stable cumsum.
  float max_logit = logits[order_[0]];
  for (int32_t id : order_) max_logit = std::max(max_logit, logits[id]);
  probs_.resize(order_.size());
  double total = 0;
  for (size_t j = 0; j < order_.size(); ++j) {
    probs_[j] = std::exp((static_cast<double>(logits[order_[j]]) - max_logit) / params_.temperature);
    total += probs_[j];
  }
  if (nucleus) {
    // Smallest prefix (most likely first) whose mass reaches top_p; at least one token.
    double mass = 0;
    size_t cut = 0;
    while (cut < order_.size()) {
      mass += probs_[cut] / total;
      ++cut;
      if (mass >= params_.top_p) break;
    }
    total = 0;
    for (size_t j = 0; j < cut; ++j) total += probs_[j];
    probs_.resize(cut);
    order_.resize(cut);
  }
  // One uniform draw in [0, total) from the request's generator (53 random bits).
  const double u = static_cast<double>(rng_() >> 11) * (1.0 / 9007199254740992.0) * total;
  double acc = 0;
  for (size_t j = 0; j < probs_.size(); ++j) {
    acc += probs_[j];
    if (u < acc) return order_[j];
  }
  return order_[probs_.size() - 1];
}

}  // namespace statetune::engine
