#include "server/engine/tasks/rouge.h"

#include <algorithm>
#include <map>
#include <stdexcept>

#include "server/engine/tasks/porter_stemmer.h"

namespace statetune::tasks {
namespace {

double fmeasure(double precision, double recall) {
  return precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0.0;
}

RougeScore ngram_overlap(const std::vector<std::string>& prediction, const std::vector<std::string>& target,
                         size_t n) {
  // N-grams are joined with a separator that cannot occur inside a token ([a-z0-9] only).
  auto count = [n](const std::vector<std::string>& tokens) {
    std::map<std::string, int> counts;
    for (size_t i = 0; i + n <= tokens.size(); ++i) {
      std::string gram = tokens[i];
      for (size_t k = 1; k < n; ++k) gram += ' ' + tokens[i + k];
      ++counts[gram];
    }
    return counts;
  };
  const auto pred_counts = count(prediction);
  const auto target_counts = count(target);
  double overlap = 0, pred_total = 0, target_total = 0;
  for (const auto& [gram, c] : pred_counts) {
    pred_total += c;
    if (const auto it = target_counts.find(gram); it != target_counts.end()) overlap += std::min(c, it->second);
  }
  for (const auto& [gram, c] : target_counts) target_total += c;
  RougeScore s;
  s.precision = overlap / std::max(pred_total, 1.0);
  s.recall = overlap / std::max(target_total, 1.0);
  s.fmeasure = fmeasure(s.precision, s.recall);
  return s;
}

size_t lcs_length(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::vector<size_t> prev(b.size() + 1, 0), cur(b.size() + 1, 0);
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

RougeScore lcs_score(const std::vector<std::string>& prediction, const std::vector<std::string>& target) {
  if (prediction.empty() || target.empty()) return {};
  const double lcs = static_cast<double>(lcs_length(target, prediction));
  RougeScore s;
  s.precision = lcs / static_cast<double>(prediction.size());
  s.recall = lcs / static_cast<double>(target.size());
  s.fmeasure = fmeasure(s.precision, s.recall);
  return s;
}

RougeScores score_tokens(const std::vector<std::string>& prediction, const std::vector<std::string>& target) {
  return {ngram_overlap(prediction, target, 1), ngram_overlap(prediction, target, 2),
          lcs_score(prediction, target)};
}

}  // namespace

std::vector<std::string> rouge_tokenize(std::string_view text, bool use_stemmer) {
  std::vector<std::string> tokens;
  std::string current;
  auto flush = [&] {
    if (current.empty()) return;
    tokens.push_back(use_stemmer && current.size() > 3 ? porter_stem(current) : current);
    current.clear();
  };
  for (const char ch : text) {
    const char c = (ch >= 'A' && ch <= 'Z') ? static_cast<char>(ch - 'A' + 'a') : ch;
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
      current += c;
    } else {
      flush();
    }
  }
  flush();
  return tokens;
}

RougeScores rouge_scores(std::string_view prediction, std::string_view reference, bool use_stemmer) {
  return score_tokens(rouge_tokenize(prediction, use_stemmer), rouge_tokenize(reference, use_stemmer));
}

RougeScores rouge_scores_multi(std::string_view prediction, const std::vector<std::string>& references,
                               bool use_stemmer) {
  if (references.empty()) throw std::invalid_argument("rouge_scores_multi: an example has no reference");
  const auto pred_tokens = rouge_tokenize(prediction, use_stemmer);
  RougeScores best;
  for (size_t r = 0; r < references.size(); ++r) {
    const RougeScores s = score_tokens(pred_tokens, rouge_tokenize(references[r], use_stemmer));
    if (r == 0 || s.rouge1.fmeasure > best.rouge1.fmeasure) best.rouge1 = s.rouge1;
    if (r == 0 || s.rouge2.fmeasure > best.rouge2.fmeasure) best.rouge2 = s.rouge2;
    if (r == 0 || s.rougeL.fmeasure > best.rougeL.fmeasure) best.rougeL = s.rougeL;
  }
  return best;
}

RougeScores corpus_rouge(const std::vector<std::string>& predictions,
                         const std::vector<std::vector<std::string>>& references, bool use_stemmer) {
  if (predictions.size() != references.size()) {
    throw std::invalid_argument("corpus_rouge: " + std::to_string(predictions.size()) + " predictions for " +
                                std::to_string(references.size()) + " reference lists");
  }
  if (predictions.empty()) throw std::invalid_argument("corpus_rouge: no examples to score");
  RougeScores mean;
  auto add = [](RougeScore& total, const RougeScore& s) {
    total.precision += s.precision;
    total.recall += s.recall;
    total.fmeasure += s.fmeasure;
  };
  for (size_t i = 0; i < predictions.size(); ++i) {
    const RougeScores s = rouge_scores_multi(predictions[i], references[i], use_stemmer);
    add(mean.rouge1, s.rouge1);
    add(mean.rouge2, s.rouge2);
    add(mean.rougeL, s.rougeL);
  }
  const double n = static_cast<double>(predictions.size());
  for (RougeScore* s : {&mean.rouge1, &mean.rouge2, &mean.rougeL}) {
    s->precision /= n;
    s->recall /= n;
    s->fmeasure /= n;
  }
  return mean;
}

}  // namespace statetune::tasks
