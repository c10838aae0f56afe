// Steps 1a-5b of Porter (1980) with the NLTK_EXTENSIONS departures (irregular forms, 'ies'/'ied' on
// four-letter words, the y->i rule, 'alli' before 'bli', 'fulli', 'logi'), rule for rule, so that the
// stems and therefore the ROUGE numbers agree with rouge_score.
#include "server/engine/tasks/porter_stemmer.h"

#include <functional>
#include <initializer_list>
#include <string>
#include <unordered_map>

namespace statetune::tasks {
namespace {

bool is_vowel_letter(char c) { return c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u'; }

// A consonant is a letter other than a, e, i, o, u, and other than y preceded by a consonant.
bool is_consonant(const std::string& w, size_t i) {
  if (is_vowel_letter(w[i])) return false;
  if (w[i] == 'y') return i == 0 ? true : !is_consonant(w, i - 1);
  return true;
}

// m in [C](VC){m}[V]: the number of vowel->consonant transitions.
int measure(const std::string& stem) {
  int m = 0;
  for (size_t i = 1; i < stem.size(); ++i) m += !is_consonant(stem, i - 1) && is_consonant(stem, i);
  return m;
}

bool contains_vowel(const std::string& stem) {
  for (size_t i = 0; i < stem.size(); ++i)
    if (!is_consonant(stem, i)) return true;
  return false;
}

bool ends_with(const std::string& w, std::string_view suffix) {
  return w.size() >= suffix.size() && w.compare(w.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool ends_double_consonant(const std::string& w) {
  const size_t n = w.size();
  return n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1);
}

// *o: the stem ends consonant-vowel-consonant, the last not w, x or y; NLTK also accepts a two-letter
// vowel-consonant stem.
bool ends_cvc(const std::string& w) {
  const size_t n = w.size();
  if (n >= 3 && is_consonant(w, n - 3) && !is_consonant(w, n - 2) && is_consonant(w, n - 1) &&
      w[n - 1] != 'w' && w[n - 1] != 'x' && w[n - 1] != 'y')
    return true;
  return n == 2 && !is_consonant(w, 0) && is_consonant(w, 1);
}

using Condition = std::function<bool(const std::string& stem)>;

struct Rule {
  std::string_view suffix;  // "*d" stands for "ends with a double consonant"
  std::string replacement;
  Condition condition;      // empty: unconditional
};

// The first rule whose suffix matches decides: its replacement if the condition holds, else the word
// unchanged (later rules are not tried).
std::string apply_rules(const std::string& word, std::initializer_list<Rule> rules) {
  for (const Rule& rule : rules) {
    if (rule.suffix == "*d") {
      if (!ends_double_consonant(word)) continue;
      const std::string stem = word.substr(0, word.size() - 2);
      return !rule.condition || rule.condition(stem) ? stem + rule.replacement : word;
    }
    if (ends_with(word, rule.suffix)) {
      const std::string stem = word.substr(0, word.size() - rule.suffix.size());
      return !rule.condition || rule.condition(stem) ? stem + rule.replacement : word;
    }
  }
  return word;
}

bool positive_measure(const std::string& stem) { return measure(stem) > 0; }
bool measure_above_one(const std::string& stem) { return measure(stem) > 1; }

std::string step1a(const std::string& word) {
  if (ends_with(word, "ies") && word.size() == 4) return word.substr(0, 1) + "ie";  // dies -> die
  return apply_rules(word, {{"sses", "ss", {}}, {"ies", "i", {}}, {"ss", "ss", {}}, {"s", "", {}}});
}

std::string step1b(const std::string& word) {
  if (ends_with(word, "ied")) {  // died -> die, spied -> spi
    return word.substr(0, word.size() - 3) + (word.size() == 4 ? "ie" : "i");
  }
  if (ends_with(word, "eed")) {
    const std::string stem = word.substr(0, word.size() - 3);
    return measure(stem) > 0 ? stem + "ee" : word;
  }
  std::string stem;
  bool removed = false;
  for (std::string_view suffix : {std::string_view("ed"), std::string_view("ing")}) {
    if (ends_with(word, suffix)) {
      stem = word.substr(0, word.size() - suffix.size());
      if (contains_vowel(stem)) {
        removed = true;
        break;
      }
    }
  }
  if (!removed) return word;
  const char last = stem.back();
  return apply_rules(stem, {{"at", "ate", {}},
                            {"bl", "ble", {}},
                            {"iz", "ize", {}},
                            {"*d", std::string(1, last),
                             [last](const std::string&) { return last != 'l' && last != 's' && last != 'z'; }},
                            {"", "e", [](const std::string& s) { return measure(s) == 1 && ends_cvc(s); }}});
}

std::string step1c(const std::string& word) {
  return apply_rules(word, {{"y", "i", [](const std::string& stem) {
                               return stem.size() > 1 && is_consonant(stem, stem.size() - 1);
                             }}});
}

std::string step2(const std::string& word) {
  if (ends_with(word, "alli") && positive_measure(word.substr(0, word.size() - 4))) {
    return step2(word.substr(0, word.size() - 4) + "al");
  }
  const std::string before_logi = word.size() >= 3 ? word.substr(0, word.size() - 3) : std::string();
  return apply_rules(word, {{"ational", "ate", positive_measure},
                            {"tional", "tion", positive_measure},
                            {"enci", "ence", positive_measure},
                            {"anci", "ance", positive_measure},
                            {"izer", "ize", positive_measure},
                            {"bli", "ble", positive_measure},
                            {"alli", "al", positive_measure},
                            {"entli", "ent", positive_measure},
                            {"eli", "e", positive_measure},
                            {"ousli", "ous", positive_measure},
                            {"ization", "ize", positive_measure},
                            {"ation", "ate", positive_measure},
                            {"ator", "ate", positive_measure},
                            {"alism", "al", positive_measure},
                            {"iveness", "ive", positive_measure},
                            {"fulness", "ful", positive_measure},
                            {"ousness", "ous", positive_measure},
                            {"aliti", "al", positive_measure},
                            {"iviti", "ive", positive_measure},
                            {"biliti", "ble", positive_measure},
                            {"fulli", "ful", positive_measure},
                            // The 'l' of 'logi' stays with the stem for the measure (geo-logi).
                            {"logi", "log", [&before_logi](const std::string&) { return positive_measure(before_logi); }}});
}

std::string step3(const std::string& word) {
  return apply_rules(word, {{"icate", "ic", positive_measure},
                            {"ative", "", positive_measure},
                            {"alize", "al", positive_measure},
                            {"iciti", "ic", positive_measure},
                            {"ical", "ic", positive_measure},
                            {"ful", "", positive_measure},
                            {"ness", "", positive_measure}});
}

std::string step4(const std::string& word) {
  return apply_rules(word, {{"al", "", measure_above_one},
                            {"ance", "", measure_above_one},
                            {"ence", "", measure_above_one},
                            {"er", "", measure_above_one},
                            {"ic", "", measure_above_one},
                            {"able", "", measure_above_one},
                            {"ible", "", measure_above_one},
                            {"ant", "", measure_above_one},
                            {"ement", "", measure_above_one},
                            {"ment", "", measure_above_one},
                            {"ent", "", measure_above_one},
                            {"ion", "", [](const std::string& s) {
                               return measure(s) > 1 && !s.empty() && (s.back() == 's' || s.back() == 't');
                             }},
                            {"ou", "", measure_above_one},
                            {"ism", "", measure_above_one},
                            {"ate", "", measure_above_one},
                            {"iti", "", measure_above_one},
                            {"ous", "", measure_above_one},
                            {"ive", "", measure_above_one},
                            {"ize", "", measure_above_one}});
}

// Both e-rules are tried here (unlike apply_rules): (m>1) E -> ; (m=1 and not *o) E -> .
std::string step5a(const std::string& word) {
  if (!ends_with(word, "e")) return word;
  const std::string stem = word.substr(0, word.size() - 1);
  const int m = measure(stem);
  if (m > 1 || (m == 1 && !ends_cvc(stem))) return stem;
  return word;
}

std::string step5b(const std::string& word) {
  const std::string without_last = word.empty() ? word : word.substr(0, word.size() - 1);
  return apply_rules(word, {{"ll", "l", [&without_last](const std::string&) { return measure(without_last) > 1; }}});
}

const std::unordered_map<std::string, std::string>& irregular_forms() {
  static const std::unordered_map<std::string, std::string> forms = {
      {"sky", "sky"},         {"skies", "sky"},        {"dying", "die"},        {"lying", "lie"},
      {"tying", "tie"},       {"news", "news"},        {"innings", "inning"},   {"inning", "inning"},
      {"outings", "outing"},  {"outing", "outing"},    {"cannings", "canning"}, {"canning", "canning"},
      {"howe", "howe"},       {"proceed", "proceed"},  {"exceed", "exceed"},    {"succeed", "succeed"}};
  return forms;
}

}  // namespace

std::string porter_stem(std::string_view word_view) {
  std::string word(word_view);
  const auto& forms = irregular_forms();
  if (const auto it = forms.find(word); it != forms.end()) return it->second;
  if (word.size() <= 2) return word;
  word = step1a(word);
  word = step1b(word);
  word = step1c(word);
  word = step2(word);
  word = step3(word);
  word = step4(word);
  word = step5a(word);
  word = step5b(word);
  return word;
}

}  // namespace statetune::tasks
