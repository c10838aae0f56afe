// The Porter stemmer as NLTK's PorterStemmer() in its default NLTK_EXTENSIONS mode: the stemmer that
// rouge_score uses with use_stemmer=True, which is how SAMSum ROUGE is reported in the papers.
#pragma once

#include <string>
#include <string_view>

namespace statetune::tasks {

// word: lowercase ASCII letters/digits (rouge tokens). Words of one or two letters come back unchanged.
std::string porter_stem(std::string_view word);

}  // namespace statetune::tasks
