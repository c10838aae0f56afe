// StreamingDecoder: the text it emits piecewise equals Tokenizer::decode, for every split.
#include "server/engine/text/streaming_decoder.h"

#include <gtest/gtest.h>

#include "server/engine/text/unicode.h"
#include "tests/text/test_util.h"

namespace statetune::engine {
namespace {

using testing::read_jsonl;

bool valid_utf8(const std::string& s) {
  std::vector<char32_t> cps;
  return unicode::decode_utf8(s, cps, nullptr);
}

std::vector<std::vector<int32_t>> all_id_sequences() {
  std::vector<std::vector<int32_t>> out;
  for (const auto& f : read_jsonl("gpt_neox_encodings.jsonl")) {
    out.push_back(f["ids"].get<std::vector<int32_t>>());
  }
  for (const auto& f : read_jsonl("gpt_neox_decodings.jsonl")) {
    out.push_back(f["ids"].get<std::vector<int32_t>>());
  }
  return out;
}

TEST(StreamingDecoder, OneIdAtATimeEqualsDecode) {
  STATETUNE_REQUIRE_NEOX(tok);
  for (bool skip : {false, true}) {
    for (const auto& ids : all_id_sequences()) {
      const std::string whole = tok->decode(ids, skip);
      StreamingDecoder dec(*tok, skip);
      std::string streamed;
      for (int32_t id : ids) {
        const std::string piece = dec.push(id);
        EXPECT_TRUE(valid_utf8(piece));
        streamed += piece;
        // What was emitted is final: always a prefix of the whole decode.
        ASSERT_EQ(whole.compare(0, streamed.size(), streamed), 0) << nlohmann::json(ids).dump();
        EXPECT_LE(dec.pending_bytes(), 3u);
      }
      streamed += dec.flush();
      EXPECT_EQ(dec.pending_bytes(), 0u);
      EXPECT_EQ(streamed, whole) << nlohmann::json(ids).dump();
    }
  }
}

TEST(StreamingDecoder, EveryPrefixSplitEqualsDecode) {
  STATETUNE_REQUIRE_NEOX(tok);
  for (const auto& ids : all_id_sequences()) {
    const std::string whole = tok->decode(ids);
    for (size_t k = 0; k <= ids.size(); ++k) {
      StreamingDecoder dec(*tok);
      const std::vector<int32_t> head(ids.begin(), ids.begin() + k), tail(ids.begin() + k, ids.end());
      std::string streamed = dec.push(head);
      streamed += dec.push(tail);
      streamed += dec.flush();
      ASSERT_EQ(streamed, whole) << nlohmann::json(ids).dump() << " split at " << k;
    }
  }
}

TEST(StreamingDecoder, HoldsBackSplitCharacters) {
  STATETUNE_REQUIRE_NEOX(tok);
  // "😀" is F0 9F 98 80: the reference splits it into two tokens.
  const auto ids = tok->encode("😀!");
  ASSERT_GE(ids.size(), 3u);
  StreamingDecoder dec(*tok);
  EXPECT_EQ(dec.push(ids[0]), "");
  EXPECT_GT(dec.pending_bytes(), 0u);
  std::string rest;
  for (size_t i = 1; i < ids.size(); ++i) rest += dec.push(ids[i]);
  EXPECT_EQ(rest, "😀!");
  EXPECT_EQ(dec.flush(), "");
  // An unfinished character at the end becomes one U+FFFD, as in the whole decode.
  EXPECT_EQ(dec.push(ids[0]), "");
  EXPECT_EQ(dec.flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(tok->decode({ids[0]}), "\xEF\xBF\xBD");
  // After reset nothing is held.
  dec.push(ids[0]);
  dec.reset();
  EXPECT_EQ(dec.pending_bytes(), 0u);
  EXPECT_EQ(dec.flush(), "");
}

TEST(StreamingDecoder, SkipsSpecialTokensWhenAsked) {
  STATETUNE_REQUIRE_NEOX(tok);
  StreamingDecoder keep(*tok), skip(*tok, true);
  EXPECT_EQ(keep.push(0), "<|endoftext|>");
  EXPECT_EQ(skip.push(0), "");
  EXPECT_EQ(skip.push(50276), "  ");  // added but not special
  EXPECT_EQ(skip.push(99999), "");    // unknown id: nothing
}

}  // namespace
}  // namespace statetune::engine
