// AdapterId: the one key format of a stored adapter version, and the one name rule.
#include "server/engine/adapters/adapter_id.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace statetune::engine {
namespace {

TEST(AdapterId, KeyAndParseAreInverses) {
  const AdapterId id{"acme", "sst2.v-1_b", "12"};
  EXPECT_EQ(id.key(), "acme/sst2.v-1_b@12");
  const auto back = AdapterId::parse(id.key());
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, id);
}

TEST(AdapterId, ParseRefusesWhatKeyCannotProduce) {
  for (const char* key : {"", "acme", "acme/sst2", "sst2@1", "acme@1/sst2", "/sst2@1", "acme/@1", "acme/sst2@",
                          "a/b/c@1", ".hidden/a@1", "acme/a b@1"}) {
    EXPECT_FALSE(AdapterId::parse(key).has_value()) << key;
  }
}

TEST(AdapterName, OneRuleForEveryName) {
  EXPECT_TRUE(is_valid_name("a"));
  EXPECT_TRUE(is_valid_name(std::string(64, 'x')));
  EXPECT_FALSE(is_valid_name(std::string(65, 'x')));
  EXPECT_FALSE(is_valid_name(".."));
  EXPECT_FALSE(is_valid_name("a/b"));
  EXPECT_FALSE(is_valid_name(std::string("a\0b", 3)));
  try {
    validate_name("tenant", "bad name");
    ADD_FAILURE() << "an invalid name passed";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("tenant name 'bad name' is invalid"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace statetune::engine
