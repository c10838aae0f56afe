// BLEU as sacrebleu computes it: the 13a tokeniser (mteval-v13a), n-grams up to 4, clipped counts against
// the per-n-gram maximum over an example's references, brevity penalty from the closest reference
// length (the shorter one on ties). Scores are on sacrebleu's 0-100 scale.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace statetune::tasks {

enum class BleuSmoothing {
  kNone,   // a zero n-gram precision makes the score 0 (corpus default)
  kExp,    // mteval's: the k-th zero precision becomes 1 / (2^k * total) (sentence default)
  kFloor,  // zero precisions become smooth_value / total
  kAddK,   // add smooth_value to matches and totals of n >= 2
};

struct BleuOptions {
  int max_order = 4;
  BleuSmoothing smoothing = BleuSmoothing::kNone;
  double smooth_value = 0.0;     // kFloor: default 0.1; kAddK: default 1 (used when this is 0)
  bool effective_order = false;  // average only over the orders the hypothesis has n-grams for
  bool lowercase = false;

  // sacrebleu.sentence_bleu's defaults: exp smoothing with the effective order.
  static BleuOptions sentence_defaults();
};

struct BleuScore {
  double score = 0;                 // 0-100
  std::vector<double> precisions;   // 0-100, one per order
  double brevity_penalty = 0;
  int64_t hypothesis_length = 0;
  int64_t reference_length = 0;
  std::vector<double> matches;      // clipped matches per order
  std::vector<double> totals;       // hypothesis n-grams per order
};

// The 13a tokenisation: the tokens of `line` joined by single spaces.
std::string tokenize_13a(std::string_view line);

// hypotheses[i] is scored against references[i] (one or more strings). Throws on size mismatch, no
// examples, or an example without references.
BleuScore corpus_bleu(const std::vector<std::string>& hypotheses,
                      const std::vector<std::vector<std::string>>& references, const BleuOptions& options = {});

BleuScore sentence_bleu(const std::string& hypothesis, const std::vector<std::string>& references,
                        const BleuOptions& options = BleuOptions::sentence_defaults());

}  // namespace statetune::tasks
