#include "server/engine/util/bounded_json.h"

#include <gtest/gtest.h>

#include <string>

namespace statetune::engine {
namespace {

std::string nested_array(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

TEST(BoundedJson, ParsesOrdinaryDocuments) {
  const auto j = parse_bounded_json(R"({"a": [1, {"b": "x"}], "c": null})", {}, "doc");
  EXPECT_EQ(j["a"][1]["b"], "x");
  EXPECT_TRUE(j["c"].is_null());
}

TEST(BoundedJson, DepthCountsBracketsOutsideStringsOnly) {
  EXPECT_EQ(json_nesting_depth(R"({"a": "[[[[{{{{", "b": [[1]]})", 100), 3);
  EXPECT_EQ(json_nesting_depth(R"(["\"[[[", ["\\"]])", 100), 2);
  EXPECT_EQ(json_nesting_depth("42", 100), 0);
}

TEST(BoundedJson, RefusesDeepNestingWithoutRecursing) {
  JsonLimits limits;
  limits.max_bytes = size_t{1} << 24;
  limits.max_depth = 64;
  EXPECT_NO_THROW(parse_bounded_json(nested_array(64), limits, "doc"));
  // 1,000,000 levels would overflow the stack of a recursive parser many times over.
  try {
    parse_bounded_json(nested_array(1000000), limits, "the header");
    FAIL() << "accepted a document nested 1,000,000 deep";
  } catch (const JsonInputError& e) {
    EXPECT_EQ(std::string(e.what()), "the header nests deeper than 64 levels");
  }
}

TEST(BoundedJson, RefusesOversizedInputWithoutEchoingIt) {
  JsonLimits limits;
  limits.max_bytes = 100;
  const std::string big = "\"" + std::string(1000, 'x') + "\"";
  try {
    parse_bounded_json(big, limits, "the line");
    FAIL();
  } catch (const JsonInputError& e) {
    EXPECT_EQ(std::string(e.what()), "the line is 1002 bytes; at most 100 are accepted");
  }
}

TEST(BoundedJson, MalformedJsonIsAnInputErrorWithAShortMessage) {
  const std::string bad = "{\"a\": " + std::string(5000, '1') + "x}";
  try {
    parse_bounded_json(bad, {}, "doc");
    FAIL();
  } catch (const JsonInputError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind("doc is not valid JSON: ", 0), 0u) << msg;
    EXPECT_LT(msg.size(), 300u);
  }
}

// nlohmann's get<integer>() on 7.8e127 is undefined behaviour (a fuzzing finding in tensor offsets);
// the checked readers take only integers that fit.
TEST(BoundedJson, IntegerReadersRefuseFloatsAndOutOfRangeValues) {
  const auto j = nlohmann::json::parse(R"([7.77778e127, -1e300, 1.5, 3, -3, 18446744073709551615, "4"])");
  EXPECT_THROW(json_uint64(j[0], "x"), JsonInputError);
  EXPECT_THROW(json_int64(j[1], "x"), JsonInputError);
  EXPECT_THROW(json_int64(j[2], "x"), JsonInputError);
  EXPECT_EQ(json_int64(j[3], "x"), 3);
  EXPECT_EQ(json_uint64(j[3], "x"), 3u);
  EXPECT_EQ(json_int64(j[4], "x"), -3);
  EXPECT_THROW(json_uint64(j[4], "x"), JsonInputError);
  EXPECT_EQ(json_uint64(j[5], "x"), 18446744073709551615u);
  EXPECT_THROW(json_int64(j[5], "x"), JsonInputError);
  EXPECT_THROW(json_int64(j[6], "x"), JsonInputError);
  try {
    json_uint64(j[0], "data_offsets[0]");
    FAIL();
  } catch (const JsonInputError& e) {
    EXPECT_EQ(std::string(e.what()), "data_offsets[0] must be a non-negative integer");
  }
}

}  // namespace
}  // namespace statetune::engine
