// Where the tasks tests find the real data sets; tests that need them skip when the folder is absent.
#pragma once

#include <filesystem>
#include <string>

namespace statetune::tasks::testing {

inline std::string datasets_dir() { return std::string(STATETUNE_SHARED_DIR) + "/datasets"; }

inline bool have_datasets() { return std::filesystem::exists(datasets_dir() + "/README.md"); }

}  // namespace statetune::tasks::testing

#define STATETUNE_SKIP_WITHOUT_DATASETS()                                                            \
  do {                                                                                               \
    if (!statetune::tasks::testing::have_datasets()) {                                               \
      GTEST_SKIP() << "real data sets not found at " << statetune::tasks::testing::datasets_dir()    \
                   << " (set STATETUNE_SHARED_DIR at configure time to the shared/ folder)";         \
    }                                                                                                \
  } while (0)
