// ROUGE-1, ROUGE-2 and ROUGE-L (sentence-level LCS) F-measures as Google's rouge_score package computes
// them: lowercase, every run of characters outside [a-z0-9] is a separator, optional Porter stemming of
// tokens longer than three characters. SAMSum results are reported with use_stemmer=True.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace statetune::tasks {

struct RougeScore {
  double precision = 0;
  double recall = 0;
  double fmeasure = 0;
};

struct RougeScores {
  RougeScore rouge1;
  RougeScore rouge2;
  RougeScore rougeL;
};

// rouge_score's tokenizer. Non-ASCII characters are separators (they are removed by [^a-z0-9] there too).
std::vector<std::string> rouge_tokenize(std::string_view text, bool use_stemmer);

// One prediction against one reference.
RougeScores rouge_scores(std::string_view prediction, std::string_view reference, bool use_stemmer = true);

// One prediction against several references: for each ROUGE type, the reference with the highest
// F-measure (the first on ties), as rouge_score's score_multi. Throws when references is empty.
RougeScores rouge_scores_multi(std::string_view prediction, const std::vector<std::string>& references,
                               bool use_stemmer = true);

// Mean of the per-example scores (what the bootstrap aggregator of `evaluate`'s rouge estimates).
// references[i]: all references of example i. Throws on size mismatch or no examples.
RougeScores corpus_rouge(const std::vector<std::string>& predictions,
                         const std::vector<std::vector<std::string>>& references, bool use_stemmer = true);

}  // namespace statetune::tasks
