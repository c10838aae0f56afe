#include "server/engine/tasks/bleu.h"

#include <gtest/gtest.h>

#include <cmath>

namespace statetune::tasks {
namespace {

TEST(Bleu, Tokenize13a) {
  // 13a splits ASCII symbols (not ' or -), periods and commas unless between digits, and "-" after a digit.
  EXPECT_EQ(tokenize_13a("Hello, world! It's 3.5 km-long (approx.)"),
            "Hello , world ! It's 3.5 km-long ( approx . )");
  EXPECT_EQ(tokenize_13a("1-2 a_b &quot;x&quot; 1,000."), "1 - 2 a _ b \" x \" 1,000 .");
  EXPECT_EQ(tokenize_13a("  spaced\tout \n"), "spaced out");
}

TEST(Bleu, HandComputedWithoutSmoothingIsZeroWhenNoFourGramMatches) {
  // hyp "the cat is on the mat" vs ref "the cat sat on the mat": precisions 5/6, 3/5, 1/4, 0/3.
  const BleuScore s = corpus_bleu({"the cat is on the mat"}, {{"the cat sat on the mat"}});
  ASSERT_EQ(s.precisions.size(), 4u);
  EXPECT_NEAR(s.precisions[0], 100.0 * 5 / 6, 1e-9);
  EXPECT_NEAR(s.precisions[1], 100.0 * 3 / 5, 1e-9);
  EXPECT_NEAR(s.precisions[2], 100.0 * 1 / 4, 1e-9);
  EXPECT_EQ(s.precisions[3], 0.0);
  EXPECT_EQ(s.brevity_penalty, 1.0);
  EXPECT_NEAR(s.score, 0.0, 1e-9);
}

TEST(Bleu, SentenceBleuUsesExpSmoothing) {
  // exp smoothing: the first zero precision becomes 1 / (2 * 3 four-grams) = 1/6, so
  // BLEU = 100 * (5/6 * 3/5 * 1/4 * 1/6)^(1/4) = 100 * (1/48)^(1/4) = 37.9918...
  const BleuScore s = sentence_bleu("the cat is on the mat", {"the cat sat on the mat"});
  EXPECT_NEAR(s.score, 100.0 * std::pow(1.0 / 48.0, 0.25), 1e-9);
}

TEST(Bleu, BrevityPenaltyUsesClosestReference) {
  // All n-grams of the 5-token hypothesis occur in the first reference (p_n = 1). Reference lengths 6
  // and 8: the closest is 6, so BP = exp(1 - 6/5) and BLEU = 100 * exp(-0.2) = 81.873...
  const BleuScore s = corpus_bleu({"the quick brown fox jumps"},
                                  {{"the quick brown fox jumps over", "a quick brown fox jumps high today ok"}});
  EXPECT_EQ(s.reference_length, 6);
  EXPECT_EQ(s.hypothesis_length, 5);
  EXPECT_NEAR(s.brevity_penalty, std::exp(-0.2), 1e-12);
  EXPECT_NEAR(s.score, 100.0 * std::exp(-0.2), 1e-9);
  // Lengths 4 and 6 are equally close to 5: the shorter wins and there is no penalty.
  const BleuScore tie = corpus_bleu({"a b c d e"}, {{"a b c d", "a b c d e f"}});
  EXPECT_EQ(tie.reference_length, 4);
  EXPECT_EQ(tie.brevity_penalty, 1.0);
}

TEST(Bleu, CountsAreClippedAndCorpusStatisticsAreSummed) {
  // "the the the the" vs "the cat": the unigram matches are clipped to 1 of 4.
  const BleuScore clipped = corpus_bleu({"the the the the"}, {{"the cat"}});
  EXPECT_NEAR(clipped.precisions[0], 25.0, 1e-9);
  // Corpus BLEU sums statistics before the geometric mean: two 4-token exact matches give 100,
  // a mix of an exact and a disjoint hypothesis gives the geometric mean of summed precisions:
  // p1 = 4/8, p2 = 3/6, p3 = 2/4, p4 = 1/2, lengths equal -> 100 * 0.5 = 50.
  EXPECT_NEAR(corpus_bleu({"a b c d", "e f g h"}, {{"a b c d"}, {"e f g h"}}).score, 100.0, 1e-9);
  EXPECT_NEAR(corpus_bleu({"a b c d", "w x y z"}, {{"a b c d"}, {"e f g h"}}).score, 50.0, 1e-9);
}

TEST(Bleu, RejectsMissingReferences) {
  EXPECT_THROW(corpus_bleu({"a"}, {{}}), std::invalid_argument);
  EXPECT_THROW(corpus_bleu({"a"}, {}), std::invalid_argument);
}

}  // namespace
}  // namespace statetune::tasks
