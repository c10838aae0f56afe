#include "server/engine/tasks/rouge.h"

#include <gtest/gtest.h>

#include "server/engine/tasks/porter_stemmer.h"

namespace statetune::tasks {
namespace {

TEST(PorterStemmer, MatchesNltkDefaultMode) {
  // Expected stems: the examples of Porter (1980) and NLTK's PorterStemmer() (NLTK_EXTENSIONS, the mode
  // rouge_score uses), e.g. "agreed" -> "agre" (step 5a drops the e), "dies" -> "die" and "spied" -> "spi"
  // (NLTK's 'ies'/'ied' rules), "skies" -> "sky" (irregular form), "quickly" -> "quickli" (y -> i, no
  // step-2 rule for "kli").
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"caresses", "caress"},  {"ponies", "poni"},         {"ties", "tie"},          {"cats", "cat"},
      {"feed", "feed"},        {"agreed", "agre"},         {"plastered", "plaster"}, {"motoring", "motor"},
      {"sing", "sing"},        {"conflated", "conflat"},   {"troubled", "troubl"},   {"sized", "size"},
      {"hopping", "hop"},      {"tanned", "tan"},          {"falling", "fall"},      {"hissing", "hiss"},
      {"fizzed", "fizz"},      {"failing", "fail"},        {"filing", "file"},       {"happy", "happi"},
      {"sky", "sky"},          {"skies", "sky"},           {"relational", "relat"},  {"conditional", "condit"},
      {"rational", "ration"},  {"generalization", "gener"}, {"hopefulness", "hope"}, {"dying", "die"},
      {"lying", "lie"},        {"running", "run"},         {"dies", "die"},          {"flies", "fli"},
      {"spied", "spi"},        {"died", "die"},            {"geology", "geolog"},    {"quickly", "quickli"},
      {"were", "were"},        {"cries", "cri"},           {"controlling", "control"}, {"roll", "roll"},
      {"electrical", "electr"}, {"formative", "form"},     {"goodness", "good"},     {"adjustable", "adjust"},
      {"dependent", "depend"}, {"adoption", "adopt"},      {"activate", "activ"},    {"effective", "effect"},
      {"bowdlerize", "bowdler"}, {"probate", "probat"},    {"rate", "rate"},         {"cease", "ceas"},
      {"enjoy", "enjoy"},      {"meetings", "meet"},       {"news", "news"},         {"proceed", "proceed"},
  };
  for (const auto& [word, stem] : cases) EXPECT_EQ(porter_stem(word), stem) << word;
}

TEST(Rouge, TokenizerLowercasesAndSplitsOnNonAlphanumerics) {
  EXPECT_EQ(rouge_tokenize("Hello, World! It's 3.5-km", false),
            (std::vector<std::string>{"hello", "world", "it", "s", "3", "5", "km"}));
  // Only tokens longer than three characters are stemmed ("runs" -> "run", "cats" stays "cat" via step 1a).
  EXPECT_EQ(rouge_tokenize("Cats runs was", true), (std::vector<std::string>{"cat", "run", "was"}));
}

TEST(Rouge, HandComputedNoStemming) {
  // pred: the cat sat on the mat / ref: the cat is on the mat (6 tokens each).
  // unigram overlap: the x2, cat, on, mat = 5 -> P = R = F = 5/6.
  // bigrams (5 each) shared: "the cat", "on the", "the mat" = 3 -> 3/5.
  // LCS: "the cat on the mat" = 5 -> 5/6.
  const RougeScores s = rouge_scores("the cat sat on the mat", "the cat is on the mat", false);
  EXPECT_NEAR(s.rouge1.fmeasure, 5.0 / 6.0, 1e-12);
  EXPECT_NEAR(s.rouge2.fmeasure, 0.6, 1e-12);
  EXPECT_NEAR(s.rougeL.fmeasure, 5.0 / 6.0, 1e-12);
}

TEST(Rouge, LcsDependsOnOrder) {
  // Same bag of words, different order: ROUGE-1 = 1, no shared bigram, LCS("b a c", "a b c") = 2 -> 2/3.
  const RougeScores s = rouge_scores("b a c", "a b c", false);
  EXPECT_NEAR(s.rouge1.fmeasure, 1.0, 1e-12);
  EXPECT_NEAR(s.rouge2.fmeasure, 0.0, 1e-12);
  EXPECT_NEAR(s.rougeL.fmeasure, 2.0 / 3.0, 1e-12);
  EXPECT_NEAR(s.rougeL.precision, 2.0 / 3.0, 1e-12);
}

TEST(Rouge, StemmingMakesInflectionsMatch) {
  // Stemmed: pred [the, cat, were, run, quickli], ref [a, cat, run, quick]: overlap {cat, run} = 2,
  // P = 2/5, R = 2/4, F = 2PR/(P+R) = 4/9; LCS "cat run" = 2 gives the same; no shared bigram.
  const RougeScores s = rouge_scores("The cats were running quickly", "A cat runs quick.", true);
  EXPECT_NEAR(s.rouge1.precision, 0.4, 1e-12);
  EXPECT_NEAR(s.rouge1.recall, 0.5, 1e-12);
  EXPECT_NEAR(s.rouge1.fmeasure, 4.0 / 9.0, 1e-12);
  EXPECT_NEAR(s.rouge2.fmeasure, 0.0, 1e-12);
  EXPECT_NEAR(s.rougeL.fmeasure, 4.0 / 9.0, 1e-12);
  // Without stemming nothing matches.
  EXPECT_NEAR(rouge_scores("The cats were running quickly", "A cat runs quick.", false).rouge1.fmeasure, 0.0, 1e-12);
}

TEST(Rouge, EmptyTextScoresZero) {
  const RougeScores s = rouge_scores("", "a b", true);
  EXPECT_EQ(s.rouge1.fmeasure, 0.0);
  EXPECT_EQ(s.rougeL.fmeasure, 0.0);
}

TEST(Rouge, MultiReferenceTakesBestAndCorpusAverages) {
  // Best of two references is the exact one; the corpus score is the mean over examples: (1 + 0) / 2.
  EXPECT_NEAR(rouge_scores_multi("a b", {"c d", "a b"}, false).rouge2.fmeasure, 1.0, 1e-12);
  const RougeScores corpus = corpus_rouge({"a b", "x y"}, {{"c d", "a b"}, {"a b"}}, false);
  EXPECT_NEAR(corpus.rouge1.fmeasure, 0.5, 1e-12);
  EXPECT_NEAR(corpus.rougeL.fmeasure, 0.5, 1e-12);
  EXPECT_THROW(corpus_rouge({"a"}, {}, false), std::invalid_argument);
}

}  // namespace
}  // namespace statetune::tasks
