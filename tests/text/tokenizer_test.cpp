// The tokenizer against Hugging Face `tokenizers` (fixtures from
// scripts/tokenizer_fixtures/generate.js) and its error handling.
#include "server/engine/text/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <thread>

#include "tests/text/test_util.h"

namespace statetune::engine {
namespace {

using testing::read_jsonl;

std::vector<int32_t> ids_of(const nlohmann::json& j) { return j.get<std::vector<int32_t>>(); }

TEST(Tokenizer, VocabularyAndSpecialTokens) {
  STATETUNE_REQUIRE_NEOX(tok);
  EXPECT_EQ(tok->vocab_size(), 50277u);
  EXPECT_EQ(tok->eos_id(), 0);
  EXPECT_EQ(tok->bos_id(), 0);
  EXPECT_EQ(tok->pad_id(), 1);
  EXPECT_EQ(tok->token_to_id("<|endoftext|>"), 0);
  EXPECT_EQ(tok->token_to_id("<|padding|>"), 1);
  EXPECT_EQ(tok->token_to_id("Ġworld"), 1533);
  EXPECT_EQ(tok->id_to_token(1533), "Ġworld");
  EXPECT_EQ(tok->id_to_token(50276), "  ");
  EXPECT_FALSE(tok->id_to_token(50277).has_value());
  EXPECT_FALSE(tok->id_to_token(-1).has_value());
  EXPECT_FALSE(tok->token_to_id("no such token").has_value());
  EXPECT_TRUE(tok->is_special(0));
  EXPECT_TRUE(tok->is_special(1));
  EXPECT_FALSE(tok->is_special(50276));  // runs of spaces are added but not special
  EXPECT_FALSE(tok->is_special(1533));
  EXPECT_EQ(tok->added_tokens().size(), 25u);
  EXPECT_EQ(tok->token_bytes(1533), " world");
  EXPECT_EQ(tok->token_bytes(50276), "  ");
  EXPECT_EQ(tok->token_bytes(123456), "");
}

TEST(Tokenizer, MatchesReferenceEncodings) {
  STATETUNE_REQUIRE_NEOX(tok);
  const auto fixtures = read_jsonl("gpt_neox_encodings.jsonl");
  ASSERT_GE(fixtures.size(), 300u);
  size_t mismatches = 0;
  for (const auto& f : fixtures) {
    const std::string text = f["text"];
    const auto expected = ids_of(f["ids"]);
    const auto ids = tok->encode(text);
    if (ids != expected && ++mismatches <= 10) {
      ADD_FAILURE() << "encode mismatch for " << nlohmann::json(text).dump() << "\n  got "
                    << nlohmann::json(ids).dump() << "\n want " << nlohmann::json(expected).dump();
    }
    EXPECT_EQ(tok->decode(expected), f["decoded"].get<std::string>())
        << nlohmann::json(text).dump();
  }
  EXPECT_EQ(mismatches, 0u);
}

TEST(Tokenizer, RoundTripsWhereTextIsNfc) {
  STATETUNE_REQUIRE_NEOX(tok);
  size_t round_trips = 0;
  for (const auto& f : read_jsonl("gpt_neox_encodings.jsonl")) {
    const std::string text = f["text"];
    if (f["decoded"] != text) continue;  // NFD input comes back composed, as in the reference
    EXPECT_EQ(tok->decode(tok->encode(text)), text);
    ++round_trips;
  }
  EXPECT_GT(round_trips, 400u);
}

TEST(Tokenizer, MatchesReferenceDecodings) {
  STATETUNE_REQUIRE_NEOX(tok);
  const auto fixtures = read_jsonl("gpt_neox_decodings.jsonl");
  ASSERT_GE(fixtures.size(), 50u);
  for (const auto& f : fixtures) {
    const auto ids = ids_of(f["ids"]);
    EXPECT_EQ(tok->decode(ids), f["decoded"].get<std::string>()) << f["ids"].dump();
    EXPECT_EQ(tok->decode(ids, /*skip_special_tokens=*/true), f["decoded_skip"].get<std::string>())
        << f["ids"].dump();
  }
}

TEST(Tokenizer, SpecialTokensInText) {
  STATETUNE_REQUIRE_NEOX(tok);
  const auto ids = tok->encode("Hello world<|endoftext|>x");
  EXPECT_EQ(ids, (std::vector<int32_t>{12092, 1533, 0, 89}));
  EXPECT_EQ(tok->decode(ids), "Hello world<|endoftext|>x");
  EXPECT_EQ(tok->decode(ids, true), "Hello worldx");
  // Ids past the vocabulary (the model's padded embedding rows) are skipped like the reference.
  EXPECT_EQ(tok->decode({12092, 50277, 50279, 1533}), "Hello world");
}

TEST(Tokenizer, SpecialTokensAsPlainText) {
  STATETUNE_REQUIRE_NEOX(tok);
  const std::string text = "a<|endoftext|>b  <|padding|>";
  const auto parsed = tok->encode(text);
  EXPECT_NE(std::find(parsed.begin(), parsed.end(), 0), parsed.end());
  const auto plain = tok->encode(text, /*parse_special_tokens=*/false);
  for (int32_t id : plain) EXPECT_FALSE(tok->is_special(id)) << id;
  EXPECT_EQ(tok->decode(plain), text);
  // Without the special tokens the text is pre-tokenized like any other: "<|", "endoftext", "|>".
  std::vector<int32_t> expected;
  for (const char* piece : {"<|", "endoftext", "|>"}) {
    const auto ids = tok->encode(piece);
    expected.insert(expected.end(), ids.begin(), ids.end());
  }
  EXPECT_EQ(tok->encode("<|endoftext|>", false), expected);
  EXPECT_EQ(tok->encode("<|endoftext|>"), std::vector<int32_t>{0});
}

TEST(Tokenizer, EmptyAndWhitespace) {
  STATETUNE_REQUIRE_NEOX(tok);
  EXPECT_TRUE(tok->encode("").empty());
  EXPECT_EQ(tok->decode({}), "");
  EXPECT_EQ(tok->encode("hello   world"), (std::vector<int32_t>{25521, 50275, 10186}));
}

TEST(Tokenizer, RejectsInvalidUtf8) {
  STATETUNE_REQUIRE_NEOX(tok);
  EXPECT_THROW(tok->encode(std::string("ab\xC3", 3)), std::invalid_argument);
  EXPECT_THROW(tok->encode(std::string("\xED\xA0\x80")), std::invalid_argument);  // surrogate
  EXPECT_THROW(tok->encode(std::string("x\xFFy")), std::invalid_argument);
  try {
    tok->encode(std::string("abc\x80"));
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("byte 3"), std::string::npos) << e.what();
  }
}

TEST(Tokenizer, CacheDoesNotChangeResults) {
  STATETUNE_REQUIRE_NEOX(tok);
  const std::string text = "The quick brown fox jumps over the lazy dog. Extraordinarily long words!";
  const auto first = tok->encode(text);
  EXPECT_GT(tok->cache_size(), 0u);
  EXPECT_EQ(tok->encode(text), first);
  // A word longer than the cache limit takes the uncached path.
  const std::string long_word(300, 'z');
  const auto ids = tok->encode(long_word);
  EXPECT_EQ(tok->decode(ids), long_word);
  EXPECT_EQ(tok->encode(long_word), ids);
}

TEST(Tokenizer, ConcurrentEncodeAgrees) {
  STATETUNE_REQUIRE_NEOX(tok);
  const auto fixtures = read_jsonl("gpt_neox_encodings.jsonl");
  std::vector<int> failures(2, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (size_t k = 0; k < fixtures.size(); ++k) {
        const auto& f = fixtures[(k * 7 + t * 13) % fixtures.size()];
        if (tok->encode(f["text"].get<std::string>()) != ids_of(f["ids"])) ++failures[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures[0] + failures[1], 0);
}

// --- loading errors -------------------------------------------------------------------------

std::string minimal_json(const std::string& model_extra = "", const std::string& top_extra = "") {
  // Byte-level alphabet for "a", "b" and "Ġ" only: enough for a working tokenizer.
  return std::string(R"({"added_tokens":[{"id":4,"content":"<eos>","special":true}],)") +
         R"("normalizer":null,"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false},)" +
         R"("post_processor":null,"decoder":{"type":"ByteLevel"},)" + top_extra +
         R"("model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2,"Ġ":3},"merges":["a b"])" +
         model_extra + "}}";
}

TEST(TokenizerLoad, MinimalTokenizerWorks) {
  const Tokenizer tok = Tokenizer::from_json(minimal_json());
  EXPECT_EQ(tok.vocab_size(), 5u);
  EXPECT_EQ(tok.encode("abab a<eos>"), (std::vector<int32_t>{2, 2, 3, 0, 4}));
  EXPECT_EQ(tok.eos_id(), 4);
  EXPECT_EQ(tok.pad_id(), -1);
  EXPECT_EQ(tok.decode({2, 3, 0, 4}), "ab a<eos>");
  // Characters outside the vocabulary are dropped (no unk token), as the reference does.
  EXPECT_EQ(tok.encode("abc"), (std::vector<int32_t>{2}));
}

TEST(TokenizerLoad, MergesAsPairs) {
  std::string j = minimal_json();
  j.replace(j.find(R"(["a b"])"), 7, R"([["a","b"]])");
  EXPECT_EQ(Tokenizer::from_json(j).encode("ab"), (std::vector<int32_t>{2}));
}

void expect_error(const std::string& json, const std::string& needle) {
  try {
    Tokenizer::from_json(json, "test.json");
    ADD_FAILURE() << "no error; wanted one mentioning \"" << needle << "\"";
  } catch (const TokenizerError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("test.json"), std::string::npos) << what;
    EXPECT_NE(what.find(needle), std::string::npos) << what;
  }
}

TEST(TokenizerLoad, ClearErrors) {
  expect_error("", "not valid JSON");
  expect_error("{\"model\": ", "not valid JSON");
  expect_error("[1, 2]", "not a JSON object");
  expect_error("{}", "no \"model\"");
  expect_error(R"({"model":{"type":"WordPiece","vocab":{}}})", "WordPiece");
  expect_error(R"({"model":{"type":"BPE","vocab":[],"merges":[]}})", "vocab");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":"x"},"merges":[]}})", "integer id");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":["a c"]},"decoder":{"type":"ByteLevel"}})",
               "not in the vocabulary");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":["a"]}})", "not two tokens");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0,"b":0},"merges":[]}})", "used twice");
  expect_error(minimal_json("", R"("normalizer":{"type":"Lowercase"},)"), "Lowercase");
  std::string bad_pre = minimal_json();
  bad_pre.replace(bad_pre.find("\"ByteLevel\",\"add_prefix_space\""), 11, "\"Metaspace\"");
  expect_error(bad_pre, "Metaspace");
  std::string bad_added = minimal_json();
  bad_added.replace(bad_added.find("\"id\":4"), 6, "\"id\":\"4\"");
  expect_error(bad_added, "added token");
  expect_error(minimal_json(R"(,"dropout":0.1)"), "dropout");
}

TEST(TokenizerLoad, MissingFile) {
  const std::string path = std::string(STATETUNE_BINARY_DIR) + "/no/such/tokenizer.json";
  try {
    Tokenizer::from_file(path);
    FAIL();
  } catch (const TokenizerError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("cannot open"), std::string::npos);
  }
}

TEST(TokenizerLoad, DirectoryInsteadOfFile) {
  EXPECT_THROW(Tokenizer::from_file(STATETUNE_SOURCE_DIR), TokenizerError);
}

TEST(TokenizerLoad, TruncatedFile) {
  if (!testing::file_exists(testing::neox_tokenizer_path())) GTEST_SKIP() << "no tokenizer";
  std::ifstream in(testing::neox_tokenizer_path());
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string path = std::string(STATETUNE_BINARY_DIR) + "/truncated_tokenizer.json";
  std::ofstream(path) << text.substr(0, text.size() / 2);
  EXPECT_THROW(Tokenizer::from_file(path), TokenizerError);
  std::remove(path.c_str());
}

// Expected ids below are what Hugging Face tokenizers 0.23.2 (npm) returns for the same JSON.
Tokenizer with_added_token(const std::string& content, const std::string& flags) {
  return Tokenizer::from_json(
      R"({"decoder":{"type":"ByteLevel"},"pre_tokenizer":{"type":"ByteLevel"},)"
      R"("model":{"type":"BPE","vocab":{"a":0,"Ġ":1,"x":2,"<":3,">":4},"merges":[]},)"
      R"("added_tokens":[{"id":5,"content":")" + content + R"(","special":true,"normalized":false)" +
      flags + "}]}");
}

TEST(TokenizerLoad, AddedTokenSingleWord) {
  using V = std::vector<int32_t>;
  const Tokenizer angle = with_added_token("<x>", R"(,"single_word":true)");
  EXPECT_EQ(angle.encode("a <x>"), (V{0, 1, 5}));
  EXPECT_EQ(angle.encode("a<x>a"), (V{0, 3, 2, 4, 0}));
  EXPECT_EQ(angle.encode("<x>"), (V{5}));
  EXPECT_EQ(angle.encode("x<x>x"), (V{2, 3, 2, 4, 2}));
  EXPECT_EQ(angle.encode("<x>a"), (V{3, 2, 4, 0}));
  const Tokenizer word = with_added_token("xx", R"(,"single_word":true)");
  EXPECT_EQ(word.encode("a xx"), (V{0, 1, 5}));
  EXPECT_EQ(word.encode("axxa"), (V{0, 2, 2, 0}));
  EXPECT_EQ(word.encode("xx"), (V{5}));
  EXPECT_EQ(word.encode("axx"), (V{0, 2, 2}));
  EXPECT_EQ(word.encode("xxa"), (V{2, 2, 0}));
  EXPECT_EQ(word.encode("<xx>"), (V{3, 5, 4}));
  EXPECT_EQ(word.encode("a xx a"), (V{0, 1, 5, 1, 0}));
  EXPECT_EQ(word.encode("xxx"), (V{2, 2, 2}));
}

TEST(TokenizerLoad, AddedTokenStrip) {
  using V = std::vector<int32_t>;
  const Tokenizer l = with_added_token("<x>", R"(,"lstrip":true)");
  EXPECT_EQ(l.encode("a  <x>  a"), (V{0, 5, 1, 1, 0}));
  EXPECT_EQ(l.encode("\t\n<x>"), (V{5}));
  EXPECT_EQ(l.encode("a<x>"), (V{0, 5}));
  const Tokenizer r = with_added_token("<x>", R"(,"rstrip":true)");
  EXPECT_EQ(r.encode("a  <x>  a"), (V{0, 1, 1, 5, 0}));
  EXPECT_EQ(r.encode("<x>\u3000a"), (V{5, 0}));
  EXPECT_EQ(r.encode("<x><x>"), (V{5, 5}));
  const Tokenizer lr = with_added_token("<x>", R"(,"lstrip":true,"rstrip":true)");
  EXPECT_EQ(lr.encode("a  <x>  <x>  a"), (V{0, 5, 5, 0}));
  const Tokenizer plain = with_added_token("<x>", "");
  EXPECT_EQ(plain.encode("a <x> a"), (V{0, 1, 5, 1, 0}));
}

TEST(TokenizerLoad, AddedTokenIdMustMatchModel) {
  expect_error(R"({"decoder":{"type":"ByteLevel"},"model":{"type":"BPE","vocab":{"a":0,"x":1},)"
               R"("merges":[]},"added_tokens":[{"id":2,"content":"x","special":true}]})",
               "the model's vocabulary has it as 1");
}

TEST(TokenizerLoad, AddPrefixSpace) {
  const std::string j =
      R"({"decoder":{"type":"ByteLevel"},"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":true},)"
      R"("model":{"type":"BPE","vocab":{"a":0,"Ġ":1,"Ġa":2},"merges":["Ġ a"]}})";
  const Tokenizer tok = Tokenizer::from_json(j);
  EXPECT_EQ(tok.encode("a a"), (std::vector<int32_t>{2, 2}));
  EXPECT_EQ(tok.decode({2, 2}), " a a");
}

}  // namespace
}  // namespace statetune::engine
