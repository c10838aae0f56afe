// DART: the official train split is not available, so the dev json (2,768 triple sets) is split by triple
// set into train and validation with a seeded shuffle, and the WebNLG-style xml test file is the test
// split. Triples are linearised as "subject : predicate : object | ...".
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>
#include <unordered_map>

#include "server/engine/tasks/dataset_readers.h"
#include "server/engine/tasks/text_files.h"

namespace statetune::tasks::readers {
namespace {

struct TripleSet {
  std::vector<std::string> triples;     // already "s : p : o"
  std::vector<std::string> references;  // non-empty texts
};

std::string prompt_for(const TripleSet& set) {
  std::string linear;
  for (const auto& t : set.triples) linear += (linear.empty() ? "" : " | ") + t;
  return "Write a sentence that states these facts (subject : relation : object):\n" + linear;
}

// Some triple sets occur more than once in the dev file (2,768 entries, 2,721 distinct sets). They are
// merged, with the union of their distinct references, so that one set cannot land in both train and
// validation.
std::vector<TripleSet> read_dev_json(const std::string& path) {
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(read_text_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("'" + path + "' is not valid JSON: " + e.what());
  }
  if (!root.is_array()) throw std::runtime_error("'" + path + "' must hold [{tripleset, annotations}, ...]");
  std::vector<TripleSet> sets;
  std::unordered_map<std::string, size_t> index_of;  // prompt -> index into sets
  for (size_t i = 0; i < root.size(); ++i) {
    try {
      TripleSet set;
      for (const auto& t : root[i].at("tripleset")) {
        std::string joined;
        for (const auto& part : t) joined += (joined.empty() ? "" : " : ") + trim_ascii(part.get<std::string>());
        set.triples.push_back(std::move(joined));
      }
      for (const auto& a : root[i].at("annotations")) {
        std::string text = trim_ascii(a.at("text").get<std::string>());
        // Identical references of a set (some are listed twice) would only weigh it more in training.
        auto& refs = set.references;
        if (!text.empty() && std::find(refs.begin(), refs.end(), text) == refs.end()) {
          refs.push_back(std::move(text));
        }
      }
      const auto [it, inserted] = index_of.emplace(prompt_for(set), sets.size());
      if (inserted) {
        sets.push_back(std::move(set));
        continue;
      }
      auto& refs = sets[it->second].references;
      for (auto& text : set.references) {
        if (std::find(refs.begin(), refs.end(), text) == refs.end()) refs.push_back(std::move(text));
      }
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error("'" + path + "' entry " + std::to_string(i) + ": " + e.what());
    }
  }
  return sets;
}

// XML character data: the five named entities and numeric references.
std::string decode_xml_text(std::string_view s, const std::string& where) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '&') {
      out += s[i];
      continue;
    }
    const size_t semi = s.find(';', i);
    if (semi == std::string_view::npos) throw std::runtime_error(where + ": '&' without ';'");
    const std::string_view entity = s.substr(i + 1, semi - i - 1);
    if (entity == "amp") out += '&';
    else if (entity == "lt") out += '<';
    else if (entity == "gt") out += '>';
    else if (entity == "quot") out += '"';
    else if (entity == "apos") out += '\'';
    else if (entity.size() > 1 && entity[0] == '#') {
      const bool hex = entity[1] == 'x' || entity[1] == 'X';
      const unsigned long cp = std::stoul(std::string(entity.substr(hex ? 2 : 1)), nullptr, hex ? 16 : 10);
      if (cp < 0x80) {
        out += static_cast<char>(cp);
      } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      }
    } else {
      throw std::runtime_error(where + ": unknown XML entity '&" + std::string(entity) + ";'");
    }
    i = semi;
  }
  return out;
}

// The texts of every <tag ...>text</tag> in `body`; <tag .../> yields an empty text.
std::vector<std::string> element_texts(std::string_view body, std::string_view tag, const std::string& where) {
  std::vector<std::string> texts;
  const std::string open = "<" + std::string(tag);
  const std::string close = "</" + std::string(tag) + ">";
  size_t pos = 0;
  while ((pos = body.find(open, pos)) != std::string_view::npos) {
    const size_t after_name = pos + open.size();
    if (after_name < body.size() && body[after_name] != '>' && body[after_name] != ' ' && body[after_name] != '/') {
      pos = after_name;  // a longer tag name with the same prefix
      continue;
    }
    const size_t tag_end = body.find('>', pos);
    if (tag_end == std::string_view::npos) throw std::runtime_error(where + ": unterminated <" + std::string(tag));
    if (body[tag_end - 1] == '/') {
      texts.emplace_back();
      pos = tag_end + 1;
      continue;
    }
    const size_t end = body.find(close, tag_end);
    if (end == std::string_view::npos) throw std::runtime_error(where + ": <" + std::string(tag) + "> is not closed");
    texts.push_back(decode_xml_text(body.substr(tag_end + 1, end - tag_end - 1), where));
    pos = end + close.size();
  }
  return texts;
}

std::vector<TripleSet> read_test_xml(const std::string& path) {
  const std::string xml = read_text_file(path);
  std::vector<TripleSet> sets;
  size_t pos = 0;
  while ((pos = xml.find("<entry", pos)) != std::string::npos) {
    const size_t end = xml.find("</entry>", pos);
    const std::string where = "'" + path + "' entry " + std::to_string(sets.size() + 1);
    if (end == std::string::npos) throw std::runtime_error(where + ": <entry> is not closed");
    const std::string_view body(xml.data() + pos, end - pos);
    TripleSet set;
    for (const auto& triple : element_texts(body, "mtriple", where)) {
      // "s | p | o" -> "s : p : o", the same linearisation as the json file.
      std::string joined;
      size_t start = 0;
      while (true) {
        const size_t bar = triple.find(" | ", start);
        joined += (start == 0 ? "" : " : ") + trim_ascii(triple.substr(start, bar - start));
        if (bar == std::string::npos) break;
        start = bar + 3;
      }
      set.triples.push_back(std::move(joined));
    }
    for (const auto& lex : element_texts(body, "lex", where)) {
      std::string text = trim_ascii(lex);
      if (!text.empty()) set.references.push_back(std::move(text));
    }
    if (set.triples.empty()) throw std::runtime_error(where + ": no <mtriple>");
    sets.push_back(std::move(set));
    pos = end + 8;
  }
  if (sets.empty()) throw std::runtime_error("'" + path + "' has no <entry> elements");
  return sets;
}

// Indices 0..n-1 shuffled with a Fisher-Yates driven by mt19937_64 (whose output the standard fixes, unlike
// std::shuffle's use of it), so the split is the same on every platform.
std::vector<size_t> seeded_permutation(size_t n, uint64_t seed) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::mt19937_64 rng(seed);
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng() % i]);
  return order;
}

Example example_for(const TripleSet& set, const std::string& completion) {
  Example ex;
  ex.prompt = prompt_for(set);
  ex.completion = completion;
  ex.references = set.references;
  return ex;
}

}  // namespace

std::vector<Example> load_dart(Split split, const std::string& dart_dir, uint64_t seed, double validation_fraction) {
  std::vector<Example> examples;
  if (split == Split::kTest) {
    for (const auto& set : read_test_xml(dart_dir + "/dart-v1.1.1-full-test.xml")) {
      if (set.references.empty()) continue;  // nothing to score against
      examples.push_back(example_for(set, set.references.front()));
    }
    return examples;
  }
  if (!(validation_fraction > 0 && validation_fraction < 1)) {
    throw std::invalid_argument("DART validation_fraction must be in (0, 1), got " + std::to_string(validation_fraction));
  }
  const auto sets = read_dev_json(dart_dir + "/dart-v1.1.1-full-dev.json");
  const auto order = seeded_permutation(sets.size(), seed);
  const auto n_validation = static_cast<size_t>(std::llround(validation_fraction * static_cast<double>(sets.size())));
  std::vector<bool> in_validation(sets.size(), false);
  for (size_t i = 0; i < n_validation; ++i) in_validation[order[i]] = true;
  for (size_t i = 0; i < sets.size(); ++i) {
    if (in_validation[i] != (split == Split::kValidation) || sets[i].references.empty()) continue;
    if (split == Split::kTrain) {
      for (const auto& ref : sets[i].references) examples.push_back(example_for(sets[i], ref));  // one per reference
    } else {
      examples.push_back(example_for(sets[i], sets[i].references.front()));
    }
  }
  return examples;
}

}  // namespace statetune::tasks::readers
