// The test binaries' main: gtest's, except that a run in which nothing passed and something was
// skipped (GTEST_SKIP, e.g. every CUDA test on a machine without a GPU) exits with
// kAllSkippedExitCode, which ctest reports as "Skipped" (SKIP_RETURN_CODE) instead of "Passed". A run
// with a failure still exits 1 and fails.
#include <gtest/gtest.h>

namespace {
constexpr int kAllSkippedExitCode = 77;  // tests/CMakeLists.txt sets SKIP_RETURN_CODE to it
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const int rc = RUN_ALL_TESTS();
  const ::testing::UnitTest& unit = *::testing::UnitTest::GetInstance();
  if (rc == 0 && unit.successful_test_count() == 0 && unit.skipped_test_count() > 0) {
    return kAllSkippedExitCode;
  }
  return rc;
}
