// Unicode helpers: NFC against Python's unicodedata, character classes, UTF-8 decoding.
#include "server/engine/text/unicode.h"

#include <gtest/gtest.h>

#include "tests/text/test_util.h"

namespace statetune::engine::unicode {
namespace {

TEST(Unicode, NfcMatchesPython) {
  const auto cases = statetune::engine::testing::read_jsonl("nfc_cases.jsonl");
  ASSERT_GT(cases.size(), 300u);
  for (const auto& c : cases) {
    const std::string text = c["text"], expected = c["nfc"];
    EXPECT_EQ(nfc(text), expected) << c["text"].dump();
    EXPECT_EQ(nfc(expected), expected) << c["nfc"].dump();  // idempotent
    if (is_nfc_quick(text)) EXPECT_EQ(text, expected) << c["text"].dump();
  }
}

TEST(Unicode, NfcBasics) {
  EXPECT_EQ(nfc("cafe\xCC\x81"), "caf\xC3\xA9");                  // e + U+0301 -> é
  EXPECT_EQ(nfc("\xE2\x84\xAB"), "\xC3\x85");                     // U+212B ANGSTROM -> Å
  EXPECT_EQ(nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "각");  // Hangul jamo L V T
  EXPECT_EQ(nfc("plain ascii"), "plain ascii");
  EXPECT_TRUE(is_nfc_quick("plain ascii, caf\xC3\xA0 \xE4\xB8\xAD"));
  EXPECT_FALSE(is_nfc_quick("e\xCC\x81"));
}

TEST(Unicode, CharClasses) {
  EXPECT_EQ(char_class('a'), CharClass::kLetter);
  EXPECT_EQ(char_class(U'中'), CharClass::kLetter);
  EXPECT_EQ(char_class(U'é'), CharClass::kLetter);
  EXPECT_EQ(char_class('7'), CharClass::kNumber);
  EXPECT_EQ(char_class(U'½'), CharClass::kNumber);
  EXPECT_EQ(char_class(U'Ⅻ'), CharClass::kNumber);
  EXPECT_EQ(char_class(U'١'), CharClass::kNumber);
  for (char32_t s : {U' ', U'\t', U'\n', U'\r', U'\v', U'\f', U'\u0085', U'\u00A0', U'\u1680',
                     U'\u2003', U'\u2028', U'\u2029', U'\u202F', U'\u3000'}) {
    EXPECT_EQ(char_class(s), CharClass::kSpace) << std::hex << static_cast<uint32_t>(s);
  }
  EXPECT_EQ(char_class(U'\u200B'), CharClass::kOther);  // zero width space is not White_Space
  EXPECT_EQ(char_class(U'\u180E'), CharClass::kOther);
  EXPECT_EQ(char_class('\''), CharClass::kOther);
  EXPECT_EQ(char_class(U'\U0001F600'), CharClass::kOther);
  EXPECT_EQ(char_class(U'\u0301'), CharClass::kOther);  // marks are neither L nor N
  EXPECT_EQ(char_class(0x10FFFF), CharClass::kOther);
}

TEST(Unicode, LossyDecodingUsesMaximalSubparts) {
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(utf8_lossy("abc"), "abc");
  EXPECT_EQ(utf8_lossy("\x80"), r);
  EXPECT_EQ(utf8_lossy("\xF0\x9F\x98"), r);                  // truncated: one replacement
  EXPECT_EQ(utf8_lossy("\xF0\x9F\x41"), r + "A");            // broken: the A survives
  EXPECT_EQ(utf8_lossy("\xC0\xAF"), r + r);                  // overlong lead is invalid alone
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), r + r + r);          // surrogate
  EXPECT_EQ(utf8_lossy("\xF4\x90\x80\x80"), r + r + r + r);  // above U+10FFFF
  EXPECT_EQ(utf8_lossy("\xE2\x82\xAC"), "\xE2\x82\xAC");
}

TEST(Unicode, StrictDecoding) {
  std::vector<char32_t> cps;
  size_t bad = 99;
  EXPECT_TRUE(decode_utf8("a\xC3\xA9\xF0\x9F\x98\x80", cps, &bad));
  EXPECT_EQ(cps, (std::vector<char32_t>{U'a', U'é', U'\U0001F600'}));
  cps.clear();
  EXPECT_FALSE(decode_utf8("ab\xE2\x82", cps, &bad));
  EXPECT_EQ(bad, 2u);
  std::string out;
  for (char32_t c : {U'a', U'é', U'中', U'\U0001F600'}) append_utf8(out, c);
  EXPECT_EQ(out, "a\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80");
}

}  // namespace
}  // namespace statetune::engine::unicode
