// Metrics of the GLUE classification tasks over label strings ("0", "1", "2"): accuracy, Matthews
// correlation (CoLA) and binary F1 (MRPC, QQP), with scikit-learn's definitions. A prediction that is
// not a valid label (a model that generated "yes") simply counts as wrong.
#pragma once

#include <string>
#include <vector>

namespace statetune::tasks {

// Fraction of positions where the prediction equals the reference after trimming surrounding ASCII
// whitespace. Throws std::invalid_argument when the sizes differ or both are empty.
double accuracy(const std::vector<std::string>& predictions, const std::vector<std::string>& references);

// Matthews correlation coefficient, multi-class form (Gorodkin's R_K, as sklearn.metrics.matthews_corrcoef):
// every distinct string is a class, so an invalid prediction is its own class. 0 when undefined.
double matthews_correlation(const std::vector<std::string>& predictions,
                            const std::vector<std::string>& references);

// F1 of the positive class (sklearn f1_score(average="binary", pos_label)): a prediction other than
// positive_label counts as negative. 0 when there are no true positives, false positives or false negatives.
double binary_f1(const std::vector<std::string>& predictions, const std::vector<std::string>& references,
                 const std::string& positive_label = "1");

}  // namespace statetune::tasks
