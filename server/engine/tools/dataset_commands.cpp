// statetune-engine convert-dataset: a real task split (from --datasets-dir / STATETUNE_DATASETS_DIR)
// as the {"prompt", "completion"} JSON lines that `train --data` and the training service's dataset
// upload take.
#include <cstdio>
#include <string>

#include "server/engine/tasks/convert_dataset.h"
#include "server/engine/tasks/datasets.h"
#include "server/engine/tools/commands.h"

namespace statetune::tools {

int run_convert_dataset(CliArgs& args) {
  const std::string task = args.required("dataset");
  const std::string split = args.str("split", "train");
  const std::string out = args.required("out");
  const int64_t limit = args.integer("max-examples", 0);
  tasks::DatasetOptions options;
  options.datasets_dir = args.str("datasets-dir", "");
  options.seed = static_cast<uint64_t>(args.integer("seed", 42));
  args.finish();
  if (limit < 0) throw UsageError("--max-examples must be >= 0, got " + std::to_string(limit));

  const std::string canonical = tasks::canonical_task_name(task);  // throws for an unknown task
  options.datasets_dir = tasks::existing_datasets_dir(
      options.datasets_dir, tasks::is_glue_task(canonical) ? "glue" : canonical);  // where data goes
  const size_t n = tasks::convert_dataset(canonical, split, out, static_cast<size_t>(limit), options);
  std::printf("wrote %zu examples of %s/%s (from %s) to %s\n", n, canonical.c_str(), split.c_str(),
              options.datasets_dir.c_str(), out.c_str());
  return 0;
}

}  // namespace statetune::tools
