// Service flags: command line over environment over default, typed getters that name the flag and
// where its value came from, byte sizes, and the thread count a --threads value resolves to.
#include <gtest/gtest.h>

#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

#include "server/common/config.h"
#include "server/common/service_options.h"

namespace statetune::common {
namespace {

FlagSet make_flags() {
  FlagSet f("prog", "a test program", "STATETUNE_TEST_");
  f.add("max-batch", "8", "rows");
  f.add("pool", "64MiB", "bytes");
  f.add("name", "", "a name");
  return f;
}

TEST(FlagSet, CommandLineBeatsEnvironmentBeatsDefault) {
  ::setenv("STATETUNE_TEST_MAX_BATCH", "16", 1);
  ::setenv("STATETUNE_TEST_NAME", "from-env", 1);
  FlagSet f = make_flags();
  const char* argv[] = {"prog", "--name", "from-cli"};
  ASSERT_TRUE(f.parse(3, argv));
  EXPECT_EQ(f.integer("max-batch"), 16);
  EXPECT_EQ(f.source("max-batch"), "environment variable STATETUNE_TEST_MAX_BATCH");
  EXPECT_EQ(f.str("name"), "from-cli");
  EXPECT_EQ(f.source("name"), "command line");
  EXPECT_EQ(f.bytes("pool"), 64ll << 20);
  EXPECT_EQ(f.source("pool"), "default");
  ::unsetenv("STATETUNE_TEST_MAX_BATCH");
  ::unsetenv("STATETUNE_TEST_NAME");
}

TEST(FlagSet, BadValuesAndUnknownFlagsAreRefusedByName) {
  FlagSet f = make_flags();
  const char* unknown[] = {"prog", "--max-bacth", "3"};
  EXPECT_THROW(f.parse(3, unknown), std::invalid_argument);
  FlagSet g = make_flags();
  const char* bad[] = {"prog", "--max-batch", "eight"};
  ASSERT_TRUE(g.parse(3, bad));
  try {
    g.integer("max-batch");
    FAIL() << "a non-integer was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("max-batch"), std::string::npos) << e.what();
  }
}

// Both services declare the shared mode's database flags through one function: same names, same
// checks.
TEST(DatabaseFlags, ReadWithTheirDefaultsAndRefusedOutOfRangeByName) {
  FlagSet f("prog", "a test program", "STATETUNE_TEST_");
  add_database_flags(f, "everything");
  const char* argv[] = {"prog", "--database", "postgresql://u@h/db", "--database-start-seconds", "2.5"};
  ASSERT_TRUE(f.parse(5, argv));
  const DatabaseFlags d = read_database_flags(f);
  EXPECT_EQ(d.url, "postgresql://u@h/db");
  EXPECT_EQ(d.pool_size, 4);
  EXPECT_EQ(d.start_timeout, std::chrono::milliseconds(2500));
  for (const char* bad : {"--database-pool-size=0", "--database-start-seconds=-1", "--database-start-seconds=nan"}) {
    FlagSet g("prog", "a test program", "STATETUNE_TEST_");
    add_database_flags(g, "everything");
    const std::string arg = bad;
    const std::string flag = arg.substr(0, arg.find('=')), value = arg.substr(arg.find('=') + 1);
    const std::string name = flag.substr(2);
    const char* args[] = {"prog", flag.c_str(), value.c_str()};
    ASSERT_TRUE(g.parse(3, args));
    try {
      read_database_flags(g);
      FAIL() << bad << " was accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
}

TEST(ParseByteSize, SuffixesArePowersOf1024) {
  EXPECT_EQ(parse_byte_size("123"), 123);
  EXPECT_EQ(parse_byte_size("4KiB"), 4096);
  EXPECT_EQ(parse_byte_size("2M"), 2ll << 20);
  EXPECT_EQ(parse_byte_size("1GiB"), 1ll << 30);
  EXPECT_THROW(parse_byte_size("12 parsecs"), std::invalid_argument);
  EXPECT_THROW(parse_byte_size(""), std::invalid_argument);
}

TEST(ResolveThreadCount, ZeroMeansOnePerCore) {
  const unsigned cores = std::thread::hardware_concurrency();
  EXPECT_EQ(resolve_thread_count(0), cores == 0 ? 1 : static_cast<int>(cores));
  EXPECT_EQ(resolve_thread_count(3), 3);
  EXPECT_THROW(resolve_thread_count(-1), std::invalid_argument);
}

}  // namespace
}  // namespace statetune::common
