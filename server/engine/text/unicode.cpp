#include "server/engine/text/unicode.h"

#include <algorithm>

#include "server/engine/text/unicode_tables.h"

namespace statetune::engine::unicode {
namespace {

uint8_t range_value(const Range* table, size_t size, char32_t cp) {
  const Range* end = table + size;
  const Range* it =
      std::upper_bound(table, end, cp, [](char32_t c, const Range& r) { return c < r.first; });
  if (it == table) return 0;
  --it;
  return cp <= it->last ? it->value : 0;
}

// Hangul syllables are composed and decomposed algorithmically (Unicode ch. 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

struct AsciiClasses {
  CharClass cls[128];
  AsciiClasses() {
    for (char32_t c = 0; c < 128; ++c) {
      cls[c] = static_cast<CharClass>(range_value(kCategoryRanges, kCategoryRangesSize, c));
    }
  }
};
const AsciiClasses& ascii_classes() {
  static const AsciiClasses table;
  return table;
}

void decompose_into(char32_t cp, std::vector<char32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const char32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  const Decomposition* end = kDecompositions + kDecompositionsSize;
  const Decomposition* it = std::lower_bound(
      kDecompositions, end, cp, [](const Decomposition& d, char32_t c) { return d.code_point < c; });
  if (it != end && it->code_point == cp) {
    out.insert(out.end(), kDecompositionData + it->offset,
               kDecompositionData + it->offset + it->length);
  } else {
    out.push_back(cp);
  }
}

// Primary composite of (a, b), or 0.
char32_t compose(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount) {
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  }
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount) {
    return a + (b - kTBase);
  }
  const Composition* end = kCompositions + kCompositionsSize;
  const Composition* it = std::lower_bound(kCompositions, end, std::make_pair(a, b),
                                           [](const Composition& c, std::pair<char32_t, char32_t> k) {
                                             return c.first != k.first ? c.first < k.first
                                                                       : c.second < k.second;
                                           });
  if (it != end && it->first == a && it->second == b) return it->composite;
  return 0;
}

}  // namespace

CharClass char_class(char32_t cp) {
  if (cp < 128) return ascii_classes().cls[cp];
  return static_cast<CharClass>(range_value(kCategoryRanges, kCategoryRangesSize, cp));
}

uint8_t combining_class(char32_t cp) {
  if (cp < 0x300) return 0;
  return range_value(kCombiningClasses, kCombiningClassesSize, cp);
}

Utf8Step decode_utf8_step(const unsigned char* p, size_t n) {
  const unsigned char b0 = p[0];
  if (b0 < 0x80) return {Utf8Status::kValid, 1, b0};
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  char32_t cp;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;  // no overlong forms
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;  // no overlong forms
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {Utf8Status::kInvalid, 1, 0};
  }
  for (size_t k = 1; k <= need; ++k) {
    if (k >= n) return {Utf8Status::kIncomplete, static_cast<uint8_t>(n), 0};
    const unsigned char b = p[k];
    const unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (b < l || b > h) return {Utf8Status::kInvalid, static_cast<uint8_t>(k), 0};
    cp = (cp << 6) | (b & 0x3F);
  }
  return {Utf8Status::kValid, static_cast<uint8_t>(need + 1), cp};
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool decode_utf8(std::string_view text, std::vector<char32_t>& out, size_t* error_offset) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  size_t i = 0;
  while (i < text.size()) {
    const Utf8Step step = decode_utf8_step(p + i, text.size() - i);
    if (step.status != Utf8Status::kValid) {
      if (error_offset) *error_offset = i;
      return false;
    }
    out.push_back(step.code_point);
    i += step.length;
  }
  return true;
}

size_t first_invalid_utf8(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  for (size_t i = 0; i < text.size();) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    const auto step = decode_utf8_step(p + i, text.size() - i);
    if (step.status != Utf8Status::kValid) return i;
    i += step.length;
  }
  return std::string_view::npos;
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t i = 0;
  while (i < bytes.size()) {
    if (p[i] < 0x80) {  // ASCII runs are copied without decoding
      size_t j = i + 1;
      while (j < bytes.size() && p[j] < 0x80) ++j;
      out.append(bytes.data() + i, j - i);
      i = j;
      continue;
    }
    const Utf8Step step = decode_utf8_step(p + i, bytes.size() - i);
    if (step.status == Utf8Status::kValid) {
      out.append(bytes.data() + i, step.length);
    } else {
      out.append("\xEF\xBF\xBD");  // U+FFFD
    }
    i += step.length;
  }
  return out;
}

bool is_nfc_quick(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  size_t i = 0;
  while (i < text.size()) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    const Utf8Step step = decode_utf8_step(p + i, text.size() - i);
    if (step.status != Utf8Status::kValid) return false;
    if (range_value(kNfcUnsafeRanges, kNfcUnsafeRangesSize, step.code_point)) return false;
    i += step.length;
  }
  return true;
}

namespace {

bool nfc_unsafe(char32_t cp) { return range_value(kNfcUnsafeRanges, kNfcUnsafeRangesSize, cp) != 0; }

// The full algorithm on one segment.
void nfc_segment(std::string_view text, std::string& result) {
  std::vector<char32_t> cps;
  decode_utf8(text, cps, nullptr);
  std::vector<char32_t> d;
  d.reserve(cps.size() + 8);
  for (char32_t c : cps) decompose_into(c, d);
  // Canonical ordering: stable sort of each run of non-starters by combining class.
  std::vector<uint8_t> ccc(d.size());
  for (size_t i = 0; i < d.size(); ++i) ccc[i] = combining_class(d[i]);
  for (size_t i = 0; i < d.size();) {
    if (ccc[i] == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.size() && ccc[j] != 0) ++j;
    if (j - i > 1) {
      std::vector<std::pair<uint8_t, char32_t>> run;
      for (size_t k = i; k < j; ++k) run.emplace_back(ccc[k], d[k]);
      std::stable_sort(run.begin(), run.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
      for (size_t k = i; k < j; ++k) {
        ccc[k] = run[k - i].first;
        d[k] = run[k - i].second;
      }
    }
    i = j;
  }
  // Canonical composition: a character composes with the last starter unless a character between
  // them blocks it (class 0, or a class >= its own).
  std::vector<char32_t> out;
  out.reserve(d.size());
  long starter = -1;
  uint8_t last_ccc = 0;
  for (size_t i = 0; i < d.size(); ++i) {
    const char32_t c = d[i];
    const uint8_t cc = ccc[i];
    if (starter >= 0) {
      const bool adjacent = static_cast<long>(out.size()) - 1 == starter;
      const bool blocked = !adjacent && (last_ccc == 0 || last_ccc >= cc);
      if (!blocked) {
        const char32_t composite = compose(out[starter], c);
        if (composite != 0) {
          out[starter] = composite;
          continue;
        }
      }
    }
    if (cc == 0) starter = static_cast<long>(out.size());
    last_ccc = cc;
    out.push_back(c);
  }
  for (char32_t c : out) append_utf8(result, c);
}

}  // namespace

// Only the segments around unsafe characters go through the full algorithm: a segment runs from the
// last safe character before an unsafe run to the next safe character. A safe character (a starter
// that NFC keeps and that composes with nothing before it) is a barrier: nothing reorders across it
// or composes over it, so normalizing segment by segment gives the NFC of the whole text.
std::string nfc(std::string_view text) {
  std::string result;
  result.reserve(text.size());
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  constexpr size_t kNone = static_cast<size_t>(-1);
  size_t copied = 0, last_safe = kNone, i = 0;
  while (i < n) {
    if (p[i] < 0x80) {
      last_safe = i++;
      continue;
    }
    const Utf8Step step = decode_utf8_step(p + i, n - i);
    if (!nfc_unsafe(step.code_point)) {
      last_safe = i;
      i += step.length;
      continue;
    }
    const size_t start = last_safe != kNone && last_safe >= copied ? last_safe : copied;
    size_t end = i + step.length;
    while (end < n && p[end] >= 0x80) {
      const Utf8Step next = decode_utf8_step(p + end, n - end);
      if (!nfc_unsafe(next.code_point)) break;
      end += next.length;
    }
    result.append(text.data() + copied, start - copied);
    nfc_segment(text.substr(start, end - start), result);
    copied = i = end;
    last_safe = kNone;
  }
  result.append(text.data() + copied, n - copied);
  return result;
}

}  // namespace statetune::engine::unicode
