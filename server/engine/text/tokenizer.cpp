#include "server/engine/text/tokenizer.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>
#include <utility>

#include "server/engine/text/unicode.h"
#include "server/engine/util/durable_file.h"

namespace statetune::engine {
namespace {

using json = nlohmann::json;
using unicode::CharClass;

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes are
// shifted to U+0100.. so that every byte has a visible, non-space character.
std::array<char32_t, 256> byte_to_char_table() {
  std::array<char32_t, 256> table{};
  std::array<bool, 256> direct{};
  for (int b = 0x21; b <= 0x7E; ++b) direct[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) table[b] = direct[b] ? static_cast<char32_t>(b) : next++;
  return table;
}

// Bytes of a token as the ByteLevel decoder sees it: every character mapped back to its byte when
// all of them belong to the byte-level alphabet, otherwise the token's own UTF-8 (added tokens such
// as runs of spaces are stored as plain text).
std::string token_to_bytes(const std::string& token, const std::array<int, 324>& char_to_byte) {
  std::vector<char32_t> cps;
  if (!unicode::decode_utf8(token, cps, nullptr)) return token;
  std::string out;
  for (char32_t c : cps) {
    if (c >= char_to_byte.size() || char_to_byte[c] < 0) return token;
    out.push_back(static_cast<char>(char_to_byte[c]));
  }
  return out;
}

// Merge ranks in an open-addressing table (linear probing): the merge loop looks pairs up several
// times per word, and std::unordered_map's node chasing dominated encode time.
class MergeTable {
 public:
  struct Value {
    uint32_t rank;
    int32_t id;
  };
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    slots_.assign(cap, Slot{kEmpty, {0, 0}});
    mask_ = cap - 1;
  }
  // Keeps the first value inserted for a key (the lowest rank).
  void insert(int32_t a, int32_t b, Value v) {
    const uint64_t key = make_key(a, b);
    for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == kEmpty) {
        slots_[i] = Slot{key, v};
        return;
      }
      if (slots_[i].key == key) return;
    }
  }
  const Value* find(int32_t a, int32_t b) const {
    const uint64_t key = make_key(a, b);
    for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key == key) return &s.value;
      if (s.key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~0ull;  // ids are >= 0, so no real key has all bits set
  struct Slot {
    uint64_t key;
    Value value;
  };
  static uint64_t make_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  static size_t hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return static_cast<size_t>(k);
  }
  std::vector<Slot> slots_{Slot{kEmpty, {0, 0}}};
  size_t mask_ = 0;
};

// Word -> ids cache: direct-mapped (a new word overwrites the slot its hash picks), one cache line
// per slot, no allocation; locked by shards so threads rarely wait on each other. Words that do not
// fit a slot are simply not cached.
class WordCache {
 public:
  static constexpr size_t kMaxWordBytes = 22;
  static constexpr size_t kMaxIds = 8;

  bool lookup(std::string_view word, size_t h, std::vector<int32_t>& out) const {
    const Slot& s = slots_[h & (kSlots - 1)];
    std::lock_guard<std::mutex> lock(shards_[h & (kShards - 1)]);
    if (s.hash != h || s.word_len != word.size() || s.word_len == 0 ||
        std::memcmp(s.word, word.data(), word.size()) != 0) {
      return false;
    }
    out.insert(out.end(), s.ids, s.ids + s.n_ids);
    return true;
  }
  void store(std::string_view word, size_t h, const int32_t* ids, size_t n) {
    if (word.size() > kMaxWordBytes || n > kMaxIds || word.empty()) return;
    Slot& s = slots_[h & (kSlots - 1)];
    std::lock_guard<std::mutex> lock(shards_[h & (kShards - 1)]);
    if (s.word_len == 0) used_.fetch_add(1, std::memory_order_relaxed);
    s.hash = h;
    s.word_len = static_cast<uint8_t>(word.size());
    s.n_ids = static_cast<uint8_t>(n);
    std::memcpy(s.word, word.data(), word.size());
    std::copy(ids, ids + n, s.ids);
  }
  size_t size() const { return used_.load(std::memory_order_relaxed); }

 private:
  static constexpr size_t kSlots = size_t{1} << 16;  // 4 MB
  static constexpr size_t kShards = 64;
  struct alignas(64) Slot {
    size_t hash = 0;
    uint8_t word_len = 0;
    uint8_t n_ids = 0;
    char word[kMaxWordBytes];
    int32_t ids[kMaxIds];
  };
  static_assert(sizeof(Slot) == 64, "one cache line per slot");
  std::vector<Slot> slots_ = std::vector<Slot>(kSlots);
  mutable std::array<std::mutex, kShards> shards_;
  std::atomic<size_t> used_{0};
};

// Leftmost-longest matching of added tokens: a byte trie walked from every candidate position.
class AddedMatcher {
 public:
  struct Match {
    size_t start, end;
    int token;  // index into Impl::added
  };

  void add(const std::string& pattern, int token) {
    if (pattern.empty()) return;
    if (nodes_.empty()) nodes_.emplace_back();
    int node = 0;
    for (unsigned char b : pattern) {
      int child = find_child(node, b);
      if (child < 0) {
        child = static_cast<int>(nodes_.size());
        nodes_.emplace_back();
        nodes_[node].children.emplace_back(b, child);
      }
      node = child;
    }
    if (nodes_[node].token < 0) nodes_[node].token = token;
    first_byte_[static_cast<unsigned char>(pattern[0])] = true;
  }
  bool empty() const { return nodes_.empty(); }

  // Non-overlapping matches, left to right; at each start the longest pattern wins.
  void find_all(std::string_view text, std::vector<Match>& out) const {
    out.clear();
    if (nodes_.empty()) return;
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    size_t i = 0;
    while (i < text.size()) {
      if (!first_byte_[p[i]]) {
        ++i;
        continue;
      }
      int node = 0, best = -1;
      size_t best_end = 0;
      for (size_t j = i; j < text.size(); ++j) {
        node = find_child(node, p[j]);
        if (node < 0) break;
        if (nodes_[node].token >= 0) {
          best = nodes_[node].token;
          best_end = j + 1;
        }
      }
      if (best >= 0) {
        out.push_back({i, best_end, best});
        i = best_end;
      } else {
        ++i;
      }
    }
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int>> children;
    int token = -1;
  };
  int find_child(int node, unsigned char b) const {
    for (const auto& [byte, child] : nodes_[node].children) {
      if (byte == b) return child;
    }
    return -1;
  }
  std::vector<Node> nodes_;
  std::array<bool, 256> first_byte_{};
};

// The code point that ends at `pos` (text[..pos] is valid UTF-8 and pos > 0).
char32_t char_before(std::string_view text, size_t pos, size_t* start) {
  size_t s = pos - 1;
  while (s > 0 && (static_cast<unsigned char>(text[s]) & 0xC0) == 0x80) --s;
  *start = s;
  const auto step =
      unicode::decode_utf8_step(reinterpret_cast<const unsigned char*>(text.data()) + s, pos - s);
  return step.code_point;
}

char32_t char_at(std::string_view text, size_t pos, size_t* length) {
  const auto step = unicode::decode_utf8_step(
      reinterpret_cast<const unsigned char*>(text.data()) + pos, text.size() - pos);
  *length = step.length;
  return step.code_point;
}

// The reference's single_word test is the regex \w (Unicode word character). Approximated by letters,
// numbers and '_': \w also takes combining marks and other connector punctuation and leaves out
// No numbers, a difference that matters only to single_word tokens next to such characters.
bool is_word_char(char32_t c) {
  const CharClass k = unicode::char_class(c);
  return k == CharClass::kLetter || k == CharClass::kNumber || c == '_';
}

}  // namespace

struct Tokenizer::Impl {
  std::string origin;
  // Vocabulary.
  std::unordered_map<std::string, int32_t> token_to_id;
  std::vector<std::string> id_to_token;
  std::vector<uint8_t> valid;  // id is in the vocabulary or an added token
  std::vector<std::string> bytes;
  std::vector<uint8_t> special;
  std::vector<AddedToken> added;
  int32_t eos = -1, bos = -1, pad = -1;
  // Model.
  std::array<int32_t, 256> byte_id{};
  int32_t unk_id = -1;
  std::unordered_map<std::string, int32_t> model_vocab;  // only filled when ignore_merges
  bool fuse_unk = false;
  bool ignore_merges = false;
  using MergeValue = MergeTable::Value;
  MergeTable merges;
  // Pipeline.
  bool nfc = false;
  bool has_pre_tokenizer = false;
  bool add_prefix_space = false;
  bool use_regex = true;
  AddedMatcher raw_matcher, normalized_matcher;
  // Word cache: raw word bytes -> ids (mutable: encode() is const and thread-safe).
  mutable WordCache cache;

  [[noreturn]] void fail(const std::string& what) const {
    throw TokenizerError("tokenizer " + origin + ": " + what);
  }

  const MergeValue* find_merge(int32_t a, int32_t b) const {
    return merges.find(a, b);
  }

  void load(const json& root);
  void load_model(const json& model);
  void load_added_tokens(const json& list);
  void check_pipeline(const json& root);

  void encode_into(std::string_view text, bool parse_special, std::vector<int32_t>& out) const;
  void split_added(const AddedMatcher& matcher, std::string_view text, bool parse_special,
                   std::vector<int32_t>& out, bool normalized_stage) const;
  void pre_tokenize_and_bpe(std::string_view piece, std::vector<int32_t>& out) const;
  void bpe_word(std::string_view word, std::vector<int32_t>& out) const;
  void bpe_compute(std::string_view word, std::vector<int32_t>& out) const;
};

void Tokenizer::Impl::load(const json& root) {
  if (!root.is_object()) fail("top level is not a JSON object");
  if (!root.contains("model") || !root["model"].is_object()) fail("no \"model\" object");
  load_model(root["model"]);
  if (root.contains("added_tokens") && !root["added_tokens"].is_null()) {
    load_added_tokens(root["added_tokens"]);
  }
  check_pipeline(root);

  // Decoding tables.
  const auto byte_to_char = byte_to_char_table();
  std::array<int, 324> char_to_byte;
  char_to_byte.fill(-1);
  for (int b = 0; b < 256; ++b) char_to_byte[byte_to_char[b]] = b;
  bytes.resize(id_to_token.size());
  for (size_t id = 0; id < id_to_token.size(); ++id) {
    if (valid[id]) bytes[id] = token_to_bytes(id_to_token[id], char_to_byte);
  }

  auto special_id = [&](std::initializer_list<const char*> names) {
    for (const char* name : names) {
      for (const AddedToken& t : added) {
        if (t.special && t.content == name) return t.id;
      }
    }
    return -1;
  };
  eos = special_id({"<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>"});
  bos = special_id({"<s>", "<|begin_of_text|>", "<bos>", "<|endoftext|>"});
  pad = special_id({"<|padding|>", "<pad>", "[PAD]"});
}

void Tokenizer::Impl::load_model(const json& model) {
  const std::string type = model.value("type", std::string("BPE"));
  if (type != "BPE") fail("model type \"" + type + "\" is not supported (only BPE)");
  if (!model.contains("vocab") || !model["vocab"].is_object()) fail("model.vocab is not an object");
  if (!model.contains("merges") || !model["merges"].is_array()) fail("model.merges is not an array");
  auto opt_string = [&](const char* key) {
    return model.contains(key) && !model[key].is_null();
  };
  if (opt_string("dropout") && model["dropout"].get<double>() > 0.0) {
    fail("BPE dropout is not supported");
  }
  if (opt_string("continuing_subword_prefix") || opt_string("end_of_word_suffix")) {
    fail("BPE continuing_subword_prefix / end_of_word_suffix are not supported");
  }
  if (model.value("byte_fallback", false)) fail("BPE byte_fallback is not supported");
  fuse_unk = model.value("fuse_unk", false);
  ignore_merges = model.value("ignore_merges", false);

  int64_t max_id = -1;
  for (const auto& [token, id_json] : model["vocab"].items()) {
    if (!id_json.is_number_integer()) fail("vocab entry \"" + token + "\" has no integer id");
    const int64_t id = id_json.get<int64_t>();
    if (id < 0 || id > 10'000'000) fail("vocab id out of range for \"" + token + "\"");
    token_to_id.emplace(token, static_cast<int32_t>(id));
    max_id = std::max(max_id, id);
  }
  id_to_token.assign(static_cast<size_t>(max_id + 1), std::string());
  valid.assign(id_to_token.size(), 0);
  for (const auto& [token, id] : token_to_id) {
    if (valid[id]) fail("vocab id " + std::to_string(id) + " is used twice");
    id_to_token[id] = token;
    valid[id] = 1;
  }
  if (opt_string("unk_token")) {
    const auto it = token_to_id.find(model["unk_token"].get<std::string>());
    if (it == token_to_id.end()) fail("unk_token is not in the vocabulary");
    unk_id = it->second;
  }

  // The model's own one-byte tokens (added tokens with the same text must not replace them).
  const auto byte_to_char = byte_to_char_table();
  for (int b = 0; b < 256; ++b) {
    std::string c;
    unicode::append_utf8(c, byte_to_char[b]);
    const auto it = token_to_id.find(c);
    byte_id[b] = it == token_to_id.end() ? -1 : it->second;
  }
  if (ignore_merges) model_vocab = token_to_id;

  const json& list = model["merges"];
  merges.reserve(list.size());
  uint32_t rank = 0;
  for (const json& m : list) {
    std::string left, right;
    if (m.is_string()) {  // "left right"
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        fail("merge #" + std::to_string(rank) + " \"" + s + "\" is not two tokens");
      }
      left = s.substr(0, sp);
      right = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      fail("merge #" + std::to_string(rank) + " is neither \"a b\" nor [\"a\", \"b\"]");
    }
    const auto a = token_to_id.find(left), b = token_to_id.find(right),
               c = token_to_id.find(left + right);
    if (a == token_to_id.end() || b == token_to_id.end() || c == token_to_id.end()) {
      fail("merge #" + std::to_string(rank) + " (" + left + " " + right +
           ") uses a token that is not in the vocabulary");
    }
    merges.insert(a->second, b->second, MergeValue{rank, c->second});  // lowest rank wins
    ++rank;
  }
}

void Tokenizer::Impl::load_added_tokens(const json& list) {
  if (!list.is_array()) fail("added_tokens is not an array");
  for (const json& t : list) {
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() ||
        !t.contains("content") || !t["content"].is_string()) {
      fail("an added token lacks an integer \"id\" or a string \"content\"");
    }
    AddedToken a;
    const int64_t id = t["id"].get<int64_t>();
    if (id < 0 || id > 10'000'000) fail("added token id out of range");
    a.id = static_cast<int32_t>(id);
    a.content = t["content"].get<std::string>();
    if (a.content.empty()) fail("an added token has empty content");
    a.special = t.value("special", false);
    a.single_word = t.value("single_word", false);
    a.lstrip = t.value("lstrip", false);
    a.rstrip = t.value("rstrip", false);
    // The reference's default: special tokens are matched on the raw text.
    a.normalized = t.value("normalized", !a.special);
    if (static_cast<size_t>(a.id) >= id_to_token.size()) {
      id_to_token.resize(a.id + 1);
      valid.resize(a.id + 1, 0);
    }
    // The reference gives an added token that the model already has the model's id (and new ones
    // the next free id); a file that says otherwise would encode differently there, so refuse it.
    const auto in_model = token_to_id.find(a.content);
    if (in_model != token_to_id.end() && in_model->second != a.id) {
      fail("added token \"" + a.content + "\" has id " + std::to_string(a.id) +
           " but the model's vocabulary has it as " + std::to_string(in_model->second));
    }
    if (valid[a.id] && id_to_token[a.id] != a.content) {
      fail("added token \"" + a.content + "\" reuses id " + std::to_string(a.id) + " of \"" +
           id_to_token[a.id] + "\"");
    }
    id_to_token[a.id] = a.content;
    valid[a.id] = 1;
    token_to_id[a.content] = a.id;
    added.push_back(a);
  }
  special.assign(id_to_token.size(), 0);
  for (const AddedToken& a : added) special[a.id] = a.special ? 1 : 0;
}

void Tokenizer::Impl::check_pipeline(const json& root) {
  special.resize(id_to_token.size(), 0);
  auto type_of = [&](const json& j, const char* what) {
    if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
      fail(std::string(what) + " has no \"type\"");
    }
    return j["type"].get<std::string>();
  };
  // Normalizer: none, NFC, or a sequence of NFC.
  if (root.contains("normalizer") && !root["normalizer"].is_null()) {
    const json& n = root["normalizer"];
    const std::string type = type_of(n, "normalizer");
    if (type == "NFC") {
      nfc = true;
    } else if (type == "Sequence" && n.contains("normalizers") && n["normalizers"].is_array()) {
      for (const json& sub : n["normalizers"]) {
        if (type_of(sub, "normalizer") != "NFC") {
          fail("normalizer \"" + sub["type"].get<std::string>() + "\" is not supported");
        }
        nfc = true;
      }
    } else {
      fail("normalizer \"" + type + "\" is not supported (only NFC)");
    }
  }
  if (root.contains("pre_tokenizer") && !root["pre_tokenizer"].is_null()) {
    const json& p = root["pre_tokenizer"];
    const std::string type = type_of(p, "pre_tokenizer");
    if (type != "ByteLevel") fail("pre_tokenizer \"" + type + "\" is not supported (only ByteLevel)");
    has_pre_tokenizer = true;
    add_prefix_space = p.value("add_prefix_space", false);
    use_regex = p.value("use_regex", true);
    // trim_offsets only changes offsets, which this tokenizer does not report.
  }
  if (root.contains("post_processor") && !root["post_processor"].is_null()) {
    const std::string type = type_of(root["post_processor"], "post_processor");
    if (type != "ByteLevel") {
      fail("post_processor \"" + type + "\" is not supported (only ByteLevel, which adds no ids)");
    }
  }
  if (root.contains("decoder") && !root["decoder"].is_null()) {
    const std::string type = type_of(root["decoder"], "decoder");
    if (type != "ByteLevel") fail("decoder \"" + type + "\" is not supported (only ByteLevel)");
  } else {
    fail("no decoder: only the ByteLevel decoder is supported");
  }
  for (size_t i = 0; i < added.size(); ++i) {
    const AddedToken& a = added[i];
    if (a.normalized) {
      normalized_matcher.add(nfc ? unicode::nfc(a.content) : a.content, static_cast<int>(i));
    } else {
      raw_matcher.add(a.content, static_cast<int>(i));
    }
  }
}

void Tokenizer::Impl::encode_into(std::string_view text, bool parse_special,
                                  std::vector<int32_t>& out) const {
  split_added(raw_matcher, text, parse_special, out, /*normalized_stage=*/false);
}

// Splits `text` around the added tokens of `matcher` (the reference's find_matches, with its
// lstrip / rstrip / single_word rules), emits their ids, and passes the text between them on:
// to normalization and the normalized-token split in the raw stage, to the pre-tokenizer after it.
void Tokenizer::Impl::split_added(const AddedMatcher& matcher, std::string_view text,
                                  bool parse_special, std::vector<int32_t>& out,
                                  bool normalized_stage) const {
  auto pass_on = [&](std::string_view piece) {
    if (piece.empty()) return;
    if (normalized_stage) {
      pre_tokenize_and_bpe(piece, out);
    } else if (nfc && !unicode::is_nfc_quick(piece)) {
      const std::string normalized = unicode::nfc(piece);
      split_added(normalized_matcher, normalized, parse_special, out, true);
    } else {
      split_added(normalized_matcher, piece, parse_special, out, true);
    }
  };
  if (matcher.empty()) {
    pass_on(text);
    return;
  }
  std::vector<AddedMatcher::Match> matches;
  matcher.find_all(text, matches);
  size_t done = 0;  // end of the last emitted match
  for (const auto& m : matches) {
    const AddedToken& token = added[m.token];
    size_t start = m.start, stop = m.end;
    if (start < done) continue;  // inside the whitespace an rstrip took
    if (token.special && !parse_special) continue;  // stays in the text around it
    if (token.single_word) {
      size_t pos = 0, len = 0;
      const bool start_ok = start == 0 || !is_word_char(char_before(text, start, &pos));
      const bool stop_ok = stop == text.size() || !is_word_char(char_at(text, stop, &len));
      if (!start_ok || !stop_ok) continue;
    }
    if (token.lstrip) {
      while (start > done) {
        size_t prev = 0;
        if (unicode::char_class(char_before(text, start, &prev)) != CharClass::kSpace) break;
        start = prev;
      }
    }
    if (token.rstrip) {
      while (stop < text.size()) {
        size_t len = 0;
        if (unicode::char_class(char_at(text, stop, &len)) != CharClass::kSpace) break;
        stop += len;
      }
    }
    pass_on(text.substr(done, start - done));
    out.push_back(token.id);
    done = stop;
  }
  pass_on(text.substr(done));
}

// The ByteLevel pre-tokenizer: GPT-2's regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// applied by hand. Every alternative is tried in order at the current position, as the regex engine
// does; the last two together take a whitespace run, leaving its last character to the next word
// when a non-space follows (so " world" keeps its space).
void Tokenizer::Impl::pre_tokenize_and_bpe(std::string_view piece, std::vector<int32_t>& out) const {
  std::string prefixed;
  if (has_pre_tokenizer && add_prefix_space && piece.front() != ' ') {
    prefixed.reserve(piece.size() + 1);
    prefixed.push_back(' ');
    prefixed.append(piece);
    piece = prefixed;
  }
  if (!has_pre_tokenizer || !use_regex) {
    bpe_word(piece, out);
    return;
  }
  const auto* p = reinterpret_cast<const unsigned char*>(piece.data());
  const size_t n = piece.size();
  struct Char {
    char32_t c;
    uint32_t len;  // 0 past the end
    CharClass cls;
  };
  auto at = [&](size_t pos) -> Char {
    if (pos >= n) return {0, 0, CharClass::kOther};
    if (p[pos] < 0x80) return {p[pos], 1, unicode::char_class(p[pos])};
    const auto step = unicode::decode_utf8_step(p + pos, n - pos);
    return {step.code_point, step.length, unicode::char_class(step.code_point)};
  };
  // End of the run of characters of class k that starts at `pos`.
  auto run_end = [&](size_t pos, CharClass k, size_t* last = nullptr, size_t* count = nullptr) {
    while (pos < n) {
      const Char e = at(pos);
      if (e.cls != k) break;
      if (last) *last = pos;
      if (count) ++*count;
      pos += e.len;
    }
    return pos;
  };

  size_t i = 0;
  while (i < n) {
    const Char c = at(i);
    size_t j = 0;
    if (c.c == '\'' && i + 1 < n) {
      const unsigned char d = p[i + 1];
      if (d == 's' || d == 't' || d == 'm' || d == 'd') {
        j = i + 2;
      } else if (i + 2 < n && ((d == 'r' && p[i + 2] == 'e') || (d == 'v' && p[i + 2] == 'e') ||
                               (d == 'l' && p[i + 2] == 'l'))) {
        j = i + 3;
      }
    }
    if (j == 0) {
      const Char next = c.c == ' ' ? at(i + 1) : Char{0, 0, CharClass::kOther};
      if (next.len != 0 && next.cls != CharClass::kSpace) {
        // ' ?\p{L}+', ' ?\p{N}+' or ' ?[^\s\p{L}\p{N}]+' with the space.
        j = run_end(i + 1, next.cls);
      } else if (c.cls != CharClass::kSpace) {
        j = run_end(i, c.cls);
      } else {
        size_t last = i, count = 0;
        j = run_end(i, CharClass::kSpace, &last, &count);
        // '\s+(?!\S)' backs off one character before a non-space; a single space then falls to
        // '\s+'.
        if (j < n && count > 1) j = last;
      }
    }
    bpe_word(piece.substr(i, j - i), out);
    i = j;
  }
}

void Tokenizer::Impl::bpe_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.size() == 1) {
    const int32_t id = byte_id[static_cast<unsigned char>(word[0])];
    if (id >= 0) {
      out.push_back(id);
    } else if (unk_id >= 0) {
      out.push_back(unk_id);
    }
    return;
  }
  if (ignore_merges) {
    const auto it = model_vocab.find(std::string(word));
    if (it != model_vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const size_t h = std::hash<std::string_view>()(word);
  if (cache.lookup(word, h, out)) return;
  const size_t before = out.size();
  bpe_compute(word, out);
  cache.store(word, h, out.data() + before, out.size() - before);
}

// The reference's merge loop: a heap of candidate merges ordered by (rank, position); a popped
// entry is applied when its pair is still adjacent and still merges to the same token, and the merged
// symbol's new pairs with its neighbours are pushed.
void Tokenizer::Impl::bpe_compute(std::string_view word, std::vector<int32_t>& out) const {
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    uint32_t len;
  };
  struct Entry {
    uint32_t rank;
    int32_t pos;
    int32_t id;
  };
  thread_local std::vector<Symbol> syms;
  thread_local std::vector<Entry> heap;
  syms.clear();
  heap.clear();
  for (unsigned char b : word) {
    int32_t id = byte_id[b];
    if (id < 0) {
      if (unk_id < 0) continue;  // no unk token: the reference drops the character
      if (fuse_unk && !syms.empty() && syms.back().id == unk_id) {
        ++syms.back().len;
        continue;
      }
      id = unk_id;
    }
    const int32_t idx = static_cast<int32_t>(syms.size());
    syms.push_back({id, idx - 1, idx + 1, 1});
  }
  if (syms.empty()) return;
  syms.back().next = -1;
  // Min-heap on (rank, pos).
  auto later = [](const Entry& a, const Entry& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  for (size_t i = 0; i + 1 < syms.size(); ++i) {
    if (const MergeValue* m = find_merge(syms[i].id, syms[i + 1].id)) {
      heap.push_back({m->rank, static_cast<int32_t>(i), m->id});
    }
  }
  std::make_heap(heap.begin(), heap.end(), later);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Entry top = heap.back();
    heap.pop_back();
    Symbol& s = syms[top.pos];
    if (s.len == 0 || s.next < 0) continue;
    Symbol& right = syms[s.next];
    const MergeValue* m = find_merge(s.id, right.id);
    if (m == nullptr || m->id != top.id) continue;  // stale entry
    s.id = top.id;
    s.len += right.len;
    right.len = 0;
    s.next = right.next;
    if (s.next >= 0) syms[s.next].prev = top.pos;
    if (s.prev >= 0) {
      if (const MergeValue* mp = find_merge(syms[s.prev].id, s.id)) {
        heap.push_back({mp->rank, s.prev, mp->id});
        std::push_heap(heap.begin(), heap.end(), later);
      }
    }
    if (s.next >= 0) {
      if (const MergeValue* mn = find_merge(s.id, syms[s.next].id)) {
        heap.push_back({mn->rank, top.pos, mn->id});
        std::push_heap(heap.begin(), heap.end(), later);
      }
    }
  }
  for (const Symbol& s : syms) {
    if (s.len > 0) out.push_back(s.id);
  }
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::string text;
  try {
    text = read_file(path);
  } catch (const std::runtime_error& e) {
    throw TokenizerError(std::string("tokenizer: ") + e.what());
  }
  return from_json(text, path);
}

Tokenizer Tokenizer::from_json(std::string_view text, const std::string& origin) {
  auto impl = std::make_shared<Impl>();
  impl->origin = origin;
  json root;
  try {
    root = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    impl->fail(std::string("not valid JSON: ") + e.what());
  }
  try {
    impl->load(root);
  } catch (const json::exception& e) {  // a field of the wrong type
    impl->fail(std::string("unexpected content: ") + e.what());
  }
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special_tokens) const {
  // Strict check up front: everything after it may assume valid UTF-8.
  if (const size_t bad = unicode::first_invalid_utf8(text); bad != std::string_view::npos) {
    throw std::invalid_argument("Tokenizer::encode: text is not valid UTF-8 at byte " + std::to_string(bad));
  }
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  impl_->encode_into(text, parse_special_tokens, out);
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::string raw;
  raw.reserve(ids.size() * 6);
  for (int32_t id : ids) {
    if (!is_valid_id(id)) continue;
    if (skip_special_tokens && impl_->special[id]) continue;
    raw += impl_->bytes[id];
  }
  return unicode::utf8_lossy(raw);
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  static const std::string kEmpty;
  return is_valid_id(id) ? impl_->bytes[id] : kEmpty;
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (!is_valid_id(id)) return std::nullopt;
  return impl_->id_to_token[id];
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  const auto it = impl_->token_to_id.find(std::string(token));
  if (it == impl_->token_to_id.end()) return std::nullopt;
  return it->second;
}

size_t Tokenizer::vocab_size() const { return impl_->id_to_token.size(); }

bool Tokenizer::is_valid_id(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->valid.size() && impl_->valid[id];
}

bool Tokenizer::is_special(int32_t id) const {
  return is_valid_id(id) && impl_->special[id];
}

const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }
int32_t Tokenizer::eos_id() const { return impl_->eos; }
int32_t Tokenizer::bos_id() const { return impl_->bos; }
int32_t Tokenizer::pad_id() const { return impl_->pad; }

size_t Tokenizer::cache_size() const {
  return impl_->cache.size();
}

}  // namespace statetune::engine
