// The choice of the CPU kernels' level (kernels/cpu_level.h), and, when ctest forces a level through
// STATETUNE_CPU_LEVEL (kernels_test_v2, _v3, _v4), that the whole kernels_test binary runs at it, or
// is skipped on a CPU that lacks it.
#include "kernels/cpu_level.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace statetune::kernels::cpu {
namespace {

// Skips every test of the binary when STATETUNE_CPU_LEVEL asks for more than this CPU has (the cap
// would quietly run a lower level, which another ctest entry covers already).
class ForcedLevelEnvironment : public testing::Environment {
 public:
  void SetUp() override {
    const char* forced = std::getenv("STATETUNE_CPU_LEVEL");
    if (forced == nullptr || *forced == '\0') return;
    const auto want = parse_cpu_level(forced);
    const auto have = detected_cpu_level();
    if (want && have && *have != CpuLevel::kGeneric && *want > *have) {
      std::printf("kernels_test: this CPU lacks x86-64-%s (it supports %s): skipped\n",
                  cpu_level_name(*want), cpu_level_name(*have));
      GTEST_SKIP();
    }
  }
};
[[maybe_unused]] testing::Environment* const forced_level_environment =
    testing::AddGlobalTestEnvironment(new ForcedLevelEnvironment);

TEST(CpuLevel, ForcedLevelIsTheOneThatRuns) {
  const char* forced = std::getenv("STATETUNE_CPU_LEVEL");
  if (forced == nullptr || *forced == '\0') {
    EXPECT_EQ(active_cpu_level().level, *detected_cpu_level());
    EXPECT_FALSE(active_cpu_level().cap.has_value());
  } else if (*detected_cpu_level() != CpuLevel::kGeneric) {
    ASSERT_TRUE(parse_cpu_level(forced).has_value()) << forced;
    EXPECT_EQ(active_cpu_level().level, *parse_cpu_level(forced));
  }
  std::printf("CPU kernels: %s\n", active_cpu_level().describe().c_str());
}

TEST(CpuLevel, ParsesLevelNames) {
  EXPECT_EQ(parse_cpu_level("v2"), CpuLevel::kV2);
  EXPECT_EQ(parse_cpu_level("x86-64-v3"), CpuLevel::kV3);
  EXPECT_EQ(parse_cpu_level("v4"), CpuLevel::kV4);
  for (const char* bad : {"", "v1", "v5", "V3", "avx2", "x86-64", "generic", "v3 "}) {
    EXPECT_FALSE(parse_cpu_level(bad).has_value()) << bad;
  }
}

TEST(CpuLevel, RunsTheBestLevelUnderTheCap) {
  EXPECT_EQ(choose_cpu_level(CpuLevel::kV4, nullptr).level, CpuLevel::kV4);
  EXPECT_EQ(choose_cpu_level(CpuLevel::kV3, "").level, CpuLevel::kV3);
  const CpuLevelChoice capped = choose_cpu_level(CpuLevel::kV4, "v2");
  EXPECT_EQ(capped.level, CpuLevel::kV2);
  EXPECT_EQ(capped.detected, CpuLevel::kV4);
  EXPECT_EQ(capped.describe(), "v2 (CPU supports v4, capped by STATETUNE_CPU_LEVEL=v2)");
  // A cap above the CPU changes nothing: it is a cap, not a request.
  const CpuLevelChoice above = choose_cpu_level(CpuLevel::kV3, "x86-64-v4");
  EXPECT_EQ(above.level, CpuLevel::kV3);
  EXPECT_EQ(above.describe(), "v3 (CPU supports v3, capped by STATETUNE_CPU_LEVEL=v4)");
  EXPECT_EQ(choose_cpu_level(CpuLevel::kGeneric, "v2").level, CpuLevel::kGeneric);
}

TEST(CpuLevel, RejectsABadCapAndACpuBelowV2) {
  const std::string huge(100000, 'x');
  try {
    choose_cpu_level(CpuLevel::kV3, huge.c_str());
    FAIL() << "a cap that names no level must throw";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("use v2, v3 or v4"), std::string::npos);
    EXPECT_LT(std::string(e.what()).size(), 200u);  // the value is not echoed in full
  }
  EXPECT_THROW(choose_cpu_level(CpuLevel::kV3, "avx512"), std::invalid_argument);
  try {
    choose_cpu_level(std::nullopt, nullptr);
    FAIL() << "a CPU below x86-64-v2 must be refused";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("x86-64-v2"), std::string::npos);
  }
}

}  // namespace
}  // namespace statetune::kernels::cpu
