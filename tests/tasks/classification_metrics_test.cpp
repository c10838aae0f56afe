#include "server/engine/tasks/classification_metrics.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace statetune::tasks {
namespace {

// refs 1,1,1,1,0,0,0 against preds 1,1,1,0,1,0,0: tp = 3, fn = 1, fp = 1, tn = 2.
const std::vector<std::string> kRefs = {"1", "1", "1", "1", "0", "0", "0"};
const std::vector<std::string> kPreds = {"1", "1", "1", "0", "1", "0", "0"};

TEST(ClassificationMetrics, AccuracyTrimsWhitespace) {
  // 3 of 4 equal after trimming (" 0 " == "0").
  EXPECT_DOUBLE_EQ(accuracy({"1", "0", "1", " 0 "}, {"1", "1", "1", "0"}), 0.75);
  EXPECT_DOUBLE_EQ(accuracy(kPreds, kRefs), 5.0 / 7.0);
}

TEST(ClassificationMetrics, MatthewsCorrelationByHand) {
  // (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (6 - 1) / sqrt(4*4*3*3) = 5/12.
  EXPECT_NEAR(matthews_correlation(kPreds, kRefs), 5.0 / 12.0, 1e-12);
  EXPECT_NEAR(matthews_correlation(kRefs, kRefs), 1.0, 1e-12);
  EXPECT_NEAR(matthews_correlation({"0", "1"}, {"1", "0"}), -1.0, 1e-12);
  // A constant predictor has an undefined correlation, reported as 0 (sklearn).
  EXPECT_DOUBLE_EQ(matthews_correlation({"1", "1", "1"}, {"1", "0", "1"}), 0.0);
}

TEST(ClassificationMetrics, MatthewsCorrelationInvalidPredictionIsItsOwnClass) {
  // Classes {0, 1, x}: truth counts t = (0:1, 1:1), prediction counts p = (0:1, x:1), 1 correct of n = 2.
  // cov(y,p) = 1*2 - t.p = 2 - 1 = 1; cov(y,y) = 4 - 2 = 2; cov(p,p) = 4 - 2 = 2 -> 1 / sqrt(4) = 0.5.
  EXPECT_NEAR(matthews_correlation({"x", "0"}, {"1", "0"}), 0.5, 1e-12);
}

TEST(ClassificationMetrics, BinaryF1ByHand) {
  // 2tp / (2tp + fp + fn) = 6 / 8.
  EXPECT_DOUBLE_EQ(binary_f1(kPreds, kRefs), 0.75);
  // Positive class "0": tp = 2, fp = 1, fn = 1 -> 4 / 6.
  EXPECT_NEAR(binary_f1(kPreds, kRefs, "0"), 4.0 / 6.0, 1e-12);
  // No positives anywhere: 0 by convention.
  EXPECT_DOUBLE_EQ(binary_f1({"0"}, {"0"}), 0.0);
  // A garbage prediction counts as negative: tp = 0, fn = 1.
  EXPECT_DOUBLE_EQ(binary_f1({"yes"}, {"1"}), 0.0);
}

TEST(ClassificationMetrics, RejectsMismatchedSizes) {
  EXPECT_THROW(accuracy({"1"}, {"1", "0"}), std::invalid_argument);
  EXPECT_THROW(matthews_correlation({}, {}), std::invalid_argument);
}

}  // namespace
}  // namespace statetune::tasks
