// Token sampling for one request: greedy (temperature 0) or temperature / top-k / top-p (nucleus)
// sampling from the request's own seeded generator. Each request owns its sampler, so the tokens a
// request gets depend only on its logits, its parameters and its seed, never on the other rows of the
// batch it shares or on the order rows are sampled in.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace statetune::engine {

struct SamplingParams {
  // 0: greedy (argmax; top_k, top_p and seed are ignored). Otherwise logits are divided by it.
  double temperature = 1.0;
  // Keep only the k most likely tokens; 0 = no limit.
  int64_t top_k = 0;
  // Keep the smallest set of most likely tokens whose probability reaches top_p; 1 = no limit.
  double top_p = 1.0;
  uint64_t seed = 0;

  bool greedy() const { return temperature <= 0.0; }
  // Empty when the parameters are usable; otherwise a sentence naming the bad one.
  std::string invalid_reason() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  // Picks a token from `logits[0..vocab)` (fp32, one row). Ties in greedy mode go to the lowest id.
  // Non-finite logits are treated as impossible tokens; a row without any finite logit gives 0.
  int64_t sample(const float* logits, int64_t vocab);

  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  // Reused between calls: candidate ids and their probabilities.
  std::vector<int32_t> order_;
  std::vector<double> probs_;
};

// Index of the largest finite value (lowest index on ties); 0 when none is finite.
int64_t argmax(const float* logits, int64_t vocab);

}  // namespace statetune::engine
