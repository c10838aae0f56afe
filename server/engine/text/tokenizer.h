// Byte-level BPE tokenizer that reads a Hugging Face `tokenizers` JSON file (the GPT-2 family:
// GPT-NeoX-20B, which the public Mamba checkpoints use). It reproduces the reference pipeline:
//   1. added tokens whose "normalized" flag is false are split out of the raw text
//      (leftmost-longest, honouring lstrip / rstrip / single_word);
//   2. the normalizer (NFC, or none) runs on the text between them;
//   3. added tokens whose "normalized" flag is true are split out of the normalized text;
//   4. the ByteLevel pre-tokenizer splits the rest with the GPT-2 regex (implemented by hand over
//      code points; add_prefix_space and use_regex as the file says);
//   5. BPE merges every word's bytes by merge rank (the byte-level alphabet is implicit: words stay
//      raw bytes and the 256 one-byte tokens are looked up once).
// The ByteLevel post-processor adds no tokens, so encode() returns exactly the model's ids.
// Decoding maps every token back to its bytes (ByteLevel decoder) and replaces invalid UTF-8 the way
// Rust's from_utf8_lossy does; StreamingDecoder does the same incrementally.
//
// A Tokenizer is immutable after loading and safe to use from many threads; copies share the
// vocabulary and the word cache.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace statetune::engine {

// Thrown for a tokenizer file that is missing, unreadable, malformed or of an unsupported kind.
class TokenizerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

class Tokenizer {
 public:
  static Tokenizer from_file(const std::string& path);
  // `origin` names the source in error messages.
  static Tokenizer from_json(std::string_view json, const std::string& origin = "<json>");

  // Token ids of `text` (UTF-8; throws std::invalid_argument naming the byte offset if it is not
  // valid UTF-8). No special tokens are added around it. Special tokens written in the text
  // ("<|endoftext|>") become their ids unless parse_special_tokens is false, which encodes them as
  // ordinary text (the reference's encode_special_tokens), e.g. for untrusted user input.
  std::vector<int32_t> encode(std::string_view text, bool parse_special_tokens = true) const;

  // Text of `ids`; invalid UTF-8 from tokens that split a character becomes U+FFFD. Ids outside
  // the vocabulary are skipped, as the reference does (models pad their embedding past the
  // vocabulary, so a sampler can produce them). With skip_special_tokens, added tokens marked
  // "special" are left out.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  // Raw bytes a token decodes to (not necessarily valid UTF-8); empty for an unknown id.
  const std::string& token_bytes(int32_t id) const;

  // Token string as stored in the file (byte-level alphabet, e.g. "Ġworld"), or nullopt.
  std::optional<std::string> id_to_token(int32_t id) const;
  std::optional<int32_t> token_to_id(std::string_view token) const;

  // Number of ids, added tokens included (largest id + 1).
  size_t vocab_size() const;
  bool is_valid_id(int32_t id) const;
  bool is_special(int32_t id) const;
  const std::vector<AddedToken>& added_tokens() const;

  // Ids of the usual special tokens, or -1 where the file has none. For GPT-NeoX: eos = bos =
  // "<|endoftext|>" (0), pad = "<|padding|>" (1).
  int32_t eos_id() const;
  int32_t bos_id() const;
  int32_t pad_id() const;

  // Words encoded so far that sit in the cache (for tests and diagnostics).
  size_t cache_size() const;

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace statetune::engine
