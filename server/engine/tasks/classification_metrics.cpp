#include "server/engine/tasks/classification_metrics.h"

#include <cmath>
#include <map>
#include <stdexcept>
#include <string_view>

namespace statetune::tasks {
namespace {

std::string_view trim(std::string_view s) {
  const char* ws = " \t\r\n\f\v";
  const auto b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  const auto e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

void check_sizes(const std::vector<std::string>& predictions, const std::vector<std::string>& references,
                 const char* metric) {
  if (predictions.size() != references.size()) {
    throw std::invalid_argument(std::string(metric) + ": " + std::to_string(predictions.size()) +
                                " predictions for " + std::to_string(references.size()) +
                                " references; pass one prediction per example");
  }
  if (predictions.empty()) throw std::invalid_argument(std::string(metric) + ": no examples to score");
}

}  // namespace

double accuracy(const std::vector<std::string>& predictions, const std::vector<std::string>& references) {
  check_sizes(predictions, references, "accuracy");
  size_t correct = 0;
  for (size_t i = 0; i < predictions.size(); ++i) correct += trim(predictions[i]) == trim(references[i]);
  return static_cast<double>(correct) / static_cast<double>(predictions.size());
}

double matthews_correlation(const std::vector<std::string>& predictions,
                            const std::vector<std::string>& references) {
  check_sizes(predictions, references, "matthews_correlation");
  // Per-class counts of the truth (t) and of the predictions (p); the formula only needs these and the
  // number of correct predictions: cov(y,p) = c*n - t.p, cov(y,y) = n^2 - t.t, cov(p,p) = n^2 - p.p.
  std::map<std::string_view, double> true_count, pred_count;
  double correct = 0;
  for (size_t i = 0; i < predictions.size(); ++i) {
    const auto p = trim(predictions[i]);
    const auto t = trim(references[i]);
    true_count[t] += 1;
    pred_count[p] += 1;
    correct += p == t;
  }
  const double n = static_cast<double>(predictions.size());
  double t_dot_p = 0, t_dot_t = 0, p_dot_p = 0;
  for (const auto& [label, count] : true_count) {
    t_dot_t += count * count;
    const auto it = pred_count.find(label);
    if (it != pred_count.end()) t_dot_p += count * it->second;
  }
  for (const auto& [label, count] : pred_count) p_dot_p += count * count;
  const double cov_yp = correct * n - t_dot_p;
  const double cov_yy = n * n - t_dot_t;
  const double cov_pp = n * n - p_dot_p;
  if (cov_yy * cov_pp == 0) return 0.0;
  return cov_yp / std::sqrt(cov_yy * cov_pp);
}

double binary_f1(const std::vector<std::string>& predictions, const std::vector<std::string>& references,
                 const std::string& positive_label) {
  check_sizes(predictions, references, "binary_f1");
  double tp = 0, fp = 0, fn = 0;
  for (size_t i = 0; i < predictions.size(); ++i) {
    const bool p = trim(predictions[i]) == positive_label;
    const bool t = trim(references[i]) == positive_label;
    tp += p && t;
    fp += p && !t;
    fn += !p && t;
  }
  const double denominator = 2 * tp + fp + fn;
  return denominator == 0 ? 0.0 : 2 * tp / denominator;
}

}  // namespace statetune::tasks
