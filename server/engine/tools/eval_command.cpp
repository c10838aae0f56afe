// statetune-engine eval: greedy generation on a data set's split (or JSONL prompt/completion data) with
// or without an adapter, scored with the task's metrics; one "name value" line per metric.
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/engine/model/default_model.h"
#include "server/engine/adapters/adapter.h"
#include "server/engine/model/mamba_model.h"
#include "server/engine/tasks/datasets.h"
#include "server/engine/tasks/jsonl.h"
#include "server/engine/text/tokenizer.h"
#include "server/engine/tools/commands.h"
#include "server/engine/trainer/evaluation.h"

namespace statetune::tools {

namespace fs = std::filesystem;

int run_eval(CliArgs& args) {
  const std::string model_dir = engine::model_dir_or_default(args.str("model", "")).string();
  const std::string adapter_file = args.str("adapter", "");
  const std::string data = args.str("data", "");
  const std::string dataset = args.str("dataset", "");
  const std::string split = args.str("split", "validation");
  const std::string datasets_dir = args.str("datasets-dir", "");
  const int64_t max_examples = args.integer("max-examples", 0);
  const int64_t max_new = args.integer("max-new-tokens", 0);
  engine::trainer::GenerationOptions g;
  g.batch_size = args.integer("batch-size", 16);
  g.max_prompt_tokens = args.integer("max-prompt-tokens", 1024);
  g.separator = args.str("separator", "\n###\n");
  const int64_t show = args.integer("show", 0);
  const std::string json_out = args.str("json", "");
  const std::string tokenizer_flag = args.str("tokenizer", "");
  const at::ScalarType dtype = parse_dtype("dtype", args.str("dtype", "f32"), "f32|bf16");
  apply_threads(args);
  args.finish();
  if (data.empty() == dataset.empty()) throw UsageError("give exactly one of --data FILE.jsonl and --dataset NAME");
  if (max_examples < 0 || show < 0) throw UsageError("--max-examples and --show must be >= 0");

  std::string task;
  std::vector<tasks::Example> examples;
  if (!dataset.empty()) {
    const size_t slash = dataset.find('/');
    task = tasks::canonical_task_name(slash == std::string::npos ? dataset : dataset.substr(slash + 1));
    tasks::DatasetOptions options;
    options.datasets_dir = datasets_dir;
    examples = tasks::load_examples(task, tasks::parse_split(split), options);
  } else {
    for (auto& r : tasks::read_prompt_completion_jsonl(data)) {
      tasks::Example e;
      e.prompt = r.prompt;
      e.completion = r.completion;
      e.references = {r.completion};
      examples.push_back(std::move(e));
    }
  }
  // The first N (files keep their order), so runs with and without an adapter see the same examples.
  if (max_examples > 0 && static_cast<int64_t>(examples.size()) > max_examples) {
    examples.resize(static_cast<size_t>(max_examples));
  }
  if (examples.empty()) throw std::runtime_error("no examples to evaluate");
  g.max_new_tokens = max_new > 0 ? max_new : engine::trainer::default_max_new_tokens(task);

  const fs::path tok_path = tokenizer_flag.empty() ? default_tokenizer_path(model_dir) : fs::path(tokenizer_flag);
  const auto tokenizer = engine::Tokenizer::from_file(tok_path.string());
  engine::LoadOptions lo;
  lo.dtype = dtype;
  auto model = engine::MambaModel::load(model_dir, lo);
  engine::Adapter adapter;
  const engine::Adapter* ap = nullptr;
  if (!adapter_file.empty()) {
    adapter = engine::load_adapter(adapter_file);
    try {
      engine::check_compatible(adapter, model->fingerprint());
    } catch (const std::exception& e) {
      throw std::runtime_error("adapter " + adapter_file + " does not fit the model: " + e.what());
    }
    ap = &adapter;
  }
  const auto r = engine::trainer::evaluate_task(*model, tokenizer, ap, task, examples, g, datasets_dir);
  for (int64_t i = 0; i < std::min<int64_t>(show, r.examples); ++i) {
    std::printf("example %lld: reference %s | prediction %s\n", static_cast<long long>(i),
                nlohmann::json(examples[static_cast<size_t>(i)].completion).dump().c_str(),
                nlohmann::json(r.predictions[static_cast<size_t>(i)]).dump().c_str());
  }
  std::printf("eval %s split %s, %lld examples, adapter %s, %.1f s, %.0f generated tokens/s\n",
              task.empty() ? data.c_str() : task.c_str(), task.empty() ? "-" : split.c_str(),
              static_cast<long long>(r.examples), adapter_file.empty() ? "none" : adapter_file.c_str(),
              r.seconds, r.generated_tokens_per_s);
  for (const auto& [name, value] : r.metrics) std::printf("%s %.6f\n", name.c_str(), value);
  if (!json_out.empty()) {
    nlohmann::json j = {{"task", task.empty() ? data : task}, {"split", split}, {"examples", r.examples},
                        {"adapter", adapter_file}, {"metrics", r.metrics}, {"predictions", r.predictions},
                        {"seconds", r.seconds}};
    std::ofstream f(json_out);
    if (!(f << j.dump(2) << "\n")) throw std::runtime_error(json_out + ": cannot write");
  }
  return 0;
}

}  // namespace statetune::tools
