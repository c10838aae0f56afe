#include "server/engine/tasks/bleu.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <stdexcept>

#include "server/engine/tasks/text_files.h"

namespace statetune::tasks {
namespace {

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// The character class [\{-\~\[-\` -\&\(-\+\:-\@\/] of 13a: ASCII symbols split off as tokens.
bool is_13a_symbol(char c) {
  const auto u = static_cast<unsigned char>(c);
  return (u >= 0x7B && u <= 0x7E) || (u >= 0x5B && u <= 0x60) || (u >= 0x20 && u <= 0x26) ||
         (u >= 0x28 && u <= 0x2B) || (u >= 0x3A && u <= 0x40) || u == 0x2F;
}

// re.sub of a two-character pattern (first, second) -> insert spaces, scanning left to right without
// overlapping matches, as Python does. The predicate pair decides a match at position i.
template <typename First, typename Second>
std::string substitute_pairs(const std::string& s, First first, Second second, bool space_before,
                             bool space_between, bool space_after) {
  std::string out;
  out.reserve(s.size() + s.size() / 4);
  size_t i = 0;
  while (i < s.size()) {
    if (i + 1 < s.size() && first(s[i]) && second(s[i + 1])) {
      if (space_before) out += ' ';
      out += s[i];
      if (space_between) out += ' ';
      out += s[i + 1];
      if (space_after) out += ' ';
      i += 2;
    } else {
      out += s[i++];
    }
  }
  return out;
}

std::map<std::vector<std::string>, double> ngram_counts(const std::vector<std::string>& tokens, int max_order) {
  std::map<std::vector<std::string>, double> counts;
  for (int n = 1; n <= max_order; ++n) {
    for (size_t i = 0; i + n <= tokens.size(); ++i) {
      counts[std::vector<std::string>(tokens.begin() + i, tokens.begin() + i + n)] += 1;
    }
  }
  return counts;
}

struct BleuStats {
  double hyp_len = 0, ref_len = 0;
  std::vector<double> matches, totals;
};

void accumulate(const std::string& hypothesis, const std::vector<std::string>& references,
                const BleuOptions& options, BleuStats& stats) {
  if (references.empty()) throw std::invalid_argument("bleu: an example has no reference; give at least one");
  // sacrebleu's _preprocess_segment: lowercase, strip trailing whitespace, tokenise.
  auto tokens_of = [&](const std::string& text) {
    std::string t = text;
    if (options.lowercase) {
      for (char& c : t)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    const auto end = t.find_last_not_of(" \t\r\n\f\v");
    t.erase(end == std::string::npos ? 0 : end + 1);
    return split_whitespace(tokenize_13a(t));
  };
  const auto hyp = tokens_of(hypothesis);
  const auto hyp_len = static_cast<double>(hyp.size());
  std::map<std::vector<std::string>, double> max_ref_counts;
  double closest_len = -1, closest_diff = 0;
  for (const auto& ref_text : references) {
    const auto ref = tokens_of(ref_text);
    const auto len = static_cast<double>(ref.size());
    const double diff = std::abs(hyp_len - len);
    if (closest_len < 0 || diff < closest_diff || (diff == closest_diff && len < closest_len)) {
      closest_len = len;
      closest_diff = diff;
    }
    for (const auto& [gram, count] : ngram_counts(ref, options.max_order)) {
      double& slot = max_ref_counts[gram];
      slot = std::max(slot, count);
    }
  }
  stats.hyp_len += hyp_len;
  stats.ref_len += closest_len;
  for (const auto& [gram, count] : ngram_counts(hyp, options.max_order)) {
    const size_t order = gram.size() - 1;
    stats.totals[order] += count;
    if (const auto it = max_ref_counts.find(gram); it != max_ref_counts.end()) {
      stats.matches[order] += std::min(count, it->second);
    }
  }
}

// sacrebleu's BLEU.compute_bleu.
BleuScore score_from_stats(BleuStats stats, const BleuOptions& options) {
  const int max_order = options.max_order;
  BleuScore s;
  s.hypothesis_length = static_cast<int64_t>(stats.hyp_len);
  s.reference_length = static_cast<int64_t>(stats.ref_len);
  s.precisions.assign(max_order, 0.0);
  if (stats.hyp_len < stats.ref_len) {
    s.brevity_penalty = stats.hyp_len > 0 ? std::exp(1.0 - stats.ref_len / stats.hyp_len) : 0.0;
  } else {
    s.brevity_penalty = 1.0;
  }
  s.matches = stats.matches;
  s.totals = stats.totals;
  const bool any_match = std::any_of(stats.matches.begin(), stats.matches.end(), [](double m) { return m > 0; });
  if (!any_match) return s;

  double smooth_value = options.smooth_value;
  if (smooth_value == 0.0) {
    if (options.smoothing == BleuSmoothing::kFloor) smooth_value = 0.1;
    if (options.smoothing == BleuSmoothing::kAddK) smooth_value = 1.0;
  }
  double smooth_mteval = 1.0;
  int effective_order = max_order;
  for (int n = 1; n <= max_order; ++n) {
    double& matches = stats.matches[n - 1];
    double& totals = stats.totals[n - 1];
    if (options.smoothing == BleuSmoothing::kAddK && n > 1) {
      matches += smooth_value;
      totals += smooth_value;
    }
    if (totals == 0) break;
    if (options.effective_order) effective_order = n;
    if (matches == 0) {
      if (options.smoothing == BleuSmoothing::kExp) {
        smooth_mteval *= 2;
        s.precisions[n - 1] = 100.0 / (smooth_mteval * totals);
      } else if (options.smoothing == BleuSmoothing::kFloor) {
        s.precisions[n - 1] = 100.0 * smooth_value / totals;
      }
    } else {
      s.precisions[n - 1] = 100.0 * matches / totals;
    }
  }
  double log_sum = 0;
  for (int n = 0; n < effective_order; ++n) {
    log_sum += s.precisions[n] == 0.0 ? -9999999999.0 : std::log(s.precisions[n]);
  }
  s.score = s.brevity_penalty * std::exp(log_sum / effective_order);
  return s;
}

}  // namespace

BleuOptions BleuOptions::sentence_defaults() {
  BleuOptions o;
  o.smoothing = BleuSmoothing::kExp;
  o.effective_order = true;
  return o;
}

std::string tokenize_13a(std::string_view line_view) {
  std::string line(line_view);
  replace_all(line, "<skipped>", "");
  replace_all(line, "-\n", "");
  replace_all(line, "\n", " ");
  if (line.find('&') != std::string::npos) {
    replace_all(line, "&quot;", "\"");
    replace_all(line, "&amp;", "&");
    replace_all(line, "&lt;", "<");
    replace_all(line, "&gt;", ">");
  }
  std::string padded;
  padded.reserve(line.size() * 2 + 2);
  padded += ' ';
  for (const char c : line) {
    if (is_13a_symbol(c)) {
      padded += ' ';
      padded += c;
      padded += ' ';
    } else {
      padded += c;
    }
  }
  padded += ' ';
  auto period_or_comma = [](char c) { return c == '.' || c == ','; };
  auto not_digit = [](char c) { return !is_digit(c); };
  // ([^0-9])([\.,]) -> "\1 \2 "
  std::string s = substitute_pairs(padded, not_digit, period_or_comma, false, true, true);
  // ([\.,])([^0-9]) -> " \1 \2"
  s = substitute_pairs(s, period_or_comma, not_digit, true, true, false);
  // ([0-9])(-) -> "\1 \2 "
  s = substitute_pairs(s, is_digit, [](char c) { return c == '-'; }, false, true, true);
  const auto tokens = split_whitespace(s);
  std::string out;
  for (const auto& t : tokens) {
    if (!out.empty()) out += ' ';
    out += t;
  }
  return out;
}

BleuScore corpus_bleu(const std::vector<std::string>& hypotheses,
                      const std::vector<std::vector<std::string>>& references, const BleuOptions& options) {
  if (hypotheses.size() != references.size()) {
    throw std::invalid_argument("corpus_bleu: " + std::to_string(hypotheses.size()) + " hypotheses for " +
                                std::to_string(references.size()) + " reference lists");
  }
  if (hypotheses.empty()) throw std::invalid_argument("corpus_bleu: no examples to score");
  if (options.max_order < 1) throw std::invalid_argument("corpus_bleu: max_order must be at least 1");
  BleuStats stats;
  stats.matches.assign(options.max_order, 0.0);
  stats.totals.assign(options.max_order, 0.0);
  for (size_t i = 0; i < hypotheses.size(); ++i) accumulate(hypotheses[i], references[i], options, stats);
  return score_from_stats(std::move(stats), options);
}

BleuScore sentence_bleu(const std::string& hypothesis, const std::vector<std::string>& references,
                        const BleuOptions& options) {
  return corpus_bleu({hypothesis}, {references}, options);
}

}  // namespace statetune::tasks
