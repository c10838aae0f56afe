// Unicode helpers for the tokenizer: UTF-8 decoding (strict and lossy), the character classes of the
// GPT-2 pre-tokenizer regex, and NFC normalization. Tables come from unicode_tables.cpp, generated
// from Python's unicodedata by gen_unicode_tables.py.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace statetune::engine::unicode {

// Classes of the ByteLevel regex: \p{L}, \p{N}, \s (White_Space) and everything else.
enum class CharClass : uint8_t { kOther = 0, kLetter = 1, kNumber = 2, kSpace = 3 };
CharClass char_class(char32_t cp);

uint8_t combining_class(char32_t cp);

// One step of UTF-8 decoding at `p` (n > 0 bytes available).
enum class Utf8Status : uint8_t {
  kValid,       // `length` bytes encode `code_point`
  kInvalid,     // the first `length` bytes are a maximal invalid subpart: one U+FFFD replaces them
  kIncomplete,  // all n bytes are a valid prefix of a longer sequence; more input may complete it
};
struct Utf8Step {
  Utf8Status status;
  uint8_t length;
  char32_t code_point;
};
// Maximal subparts are the ones of Unicode's "best practice" (ch. 3, U+FFFD substitution), the
// same as Rust's String::from_utf8_lossy, which Hugging Face decoders use.
Utf8Step decode_utf8_step(const unsigned char* p, size_t n);

void append_utf8(std::string& out, char32_t cp);

// Strict decoding; returns false and sets *error_offset at the first byte that is not valid UTF-8.
bool decode_utf8(std::string_view text, std::vector<char32_t>& out, size_t* error_offset);

// The offset of the first byte of `text` that does not start a complete, valid UTF-8 sequence;
// std::string_view::npos when all of it is valid. ASCII runs cost one comparison per byte.
size_t first_invalid_utf8(std::string_view text);

// Lossy decoding to valid UTF-8: each maximal invalid subpart (and an incomplete tail) becomes
// U+FFFD.
std::string utf8_lossy(std::string_view bytes);

// True when NFC leaves `text` (valid UTF-8) unchanged: no character that decomposes, reorders or
// composes with its neighbour. Cheap: ASCII bytes are skipped without a table lookup.
bool is_nfc_quick(std::string_view text);

// NFC of valid UTF-8 (decompose canonically, order marks, compose primary composites).
std::string nfc(std::string_view text);

}  // namespace statetune::engine::unicode
