#include "server/engine/model/default_model.h"

#include <cstdlib>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace statetune::engine {

std::filesystem::path default_model_dir() {
  namespace fs = std::filesystem;
  std::vector<fs::path> candidates;
  if (const char* env = std::getenv("STATETUNE_MODEL"); env != nullptr && *env != '\0') {
    candidates.emplace_back(env);
  }
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    candidates.push_back(exe.parent_path() / ".." / "share" / "statetune" / "models" / "default");
    candidates.push_back(exe.parent_path() / ".." / "models" / "default");
  }
#ifdef STATETUNE_SOURCE_MODEL_DIR
  candidates.emplace_back(STATETUNE_SOURCE_MODEL_DIR);
#endif
  std::string looked;
  for (const fs::path& c : candidates) {
    if (fs::exists(c / "config.json", ec)) return fs::weakly_canonical(c, ec);
    looked += (looked.empty() ? "" : ", ") + c.string();
  }
  throw std::runtime_error("no model folder given and no default model found (looked in: " + looked +
                           "); pass --model DIR or set STATETUNE_MODEL");
}

std::filesystem::path model_dir_or_default(const std::filesystem::path& dir) {
  return dir.empty() ? default_model_dir() : dir;
}

}  // namespace statetune::engine
