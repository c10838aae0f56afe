// statetune-engine train: fits a state-based adapter on JSONL {"prompt", "completion"} data or a named
// data set and writes the adapter file. Progress goes to stdout one line per --log-every steps; Ctrl-C
// stops after the current step (writing a checkpoint when --checkpoint-dir is set).
#include <ATen/ATen.h>

#include <atomic>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "server/engine/model/default_model.h"
#include "server/engine/adapters/adapter.h"
#include "server/engine/model/mamba_model.h"
#include "server/engine/tasks/datasets.h"
#include "server/engine/tasks/jsonl.h"
#include "server/engine/text/tokenizer.h"
#include "server/engine/tools/commands.h"
#include "server/engine/trainer/adapter_trainer.h"

namespace statetune::tools {
namespace {

namespace fs = std::filesystem;
using engine::trainer::TextExample;

std::atomic<bool> g_stop{false};
void on_sigint(int) { g_stop = true; }

std::string clock_text(double s) {
  const long long t = static_cast<long long>(s + 0.5);
  char buf[32];
  if (t >= 3600) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm%02llds", t / 3600, t / 60 % 60, t % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", t / 60, t % 60);
  }
  return buf;
}

// "glue/rte", "RTE", "samsum" -> the tasks library's canonical name.
std::string dataset_task(const std::string& name) {
  const size_t slash = name.find('/');
  return tasks::canonical_task_name(slash == std::string::npos ? name : name.substr(slash + 1));
}

std::vector<TextExample> from_dataset(const std::string& name, const std::string& split,
                                      const std::string& datasets_dir) {
  tasks::DatasetOptions options;
  options.datasets_dir = datasets_dir;
  std::vector<TextExample> out;
  for (auto& e : tasks::load_examples(dataset_task(name), tasks::parse_split(split), options)) {
    out.push_back({e.prompt, e.completion});
  }
  return out;
}

void seeded_shuffle(std::vector<TextExample>& v, uint64_t seed) {
  std::mt19937_64 rng(seed ^ 0xD1B54A32D192ED03ull);
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng() % i]);
}

}  // namespace

int run_train(CliArgs& args) {
  const std::string methods = args.str("methods", "state_offset");
  if (methods == "full") return run_train_full(args);
#if defined(__GLIBC__)
  // Autograd allocates its activations and gradients afresh every step (tens of MB: the logits alone
  // are rows x 50k floats). glibc would mmap and unmap each of them, page-faulting the memory in again
  // every step; keeping freed memory in the heap instead makes a step about 15% faster here.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 256 << 20);
#endif
  const std::string model_dir = engine::model_dir_or_default(args.str("model", "")).string();
  const std::string data = args.str("data", "");
  const std::string dataset = args.str("dataset", "");
  const std::string split = args.str("split", "train");
  const std::string datasets_dir = args.str("datasets-dir", "");
  const std::string val_data = args.str("val-data", "");
  const std::string val_split = args.str("val-split", "");
  const double val_fraction = args.number("val-fraction", 0.0);
  const int64_t max_examples = args.integer("max-examples", 0);
  const int64_t max_val = args.integer("max-val-examples", 200);
  const std::string out = args.required("out");
  const std::string tokenizer_flag = args.str("tokenizer", "");
  const at::ScalarType dtype = parse_dtype("dtype", args.str("dtype", "f32"), "f32|bf16");
  const at::ScalarType disk_dtype = parse_dtype("adapter-dtype", args.str("adapter-dtype", "f32"), "f32|bf16");
  engine::trainer::TrainerOptions o;
  o.methods = engine::parse_methods(methods);
  const double lr_all = args.number("lr", 0.0);
  o.lr_state_offset = args.number("lr-state-offset", lr_all);
  o.lr_output_offset = args.number("lr-output-offset", lr_all);
  o.lr_initial_state = args.number("lr-initial-state", lr_all);
  o.epochs = args.integer("epochs", 10);
  o.batch_size = args.integer("batch-size", 4);
  o.max_length = args.integer("max-length", 512);
  o.max_steps = args.integer("max-steps", 0);
  o.warmup_steps = args.integer("warmup-steps", 0);
  o.grad_clip = args.number("grad-clip", 1.0);
  o.weight_decay = args.number("weight-decay", 0.0);
  o.seed = static_cast<uint64_t>(args.integer("seed", 0));
  o.shuffle = !args.boolean("no-shuffle");
  o.separator = args.str("separator", "\n###\n");
  o.eval_every = args.integer("eval-every", 0);
  o.early_stopping_patience = args.integer("patience", 0);
  o.checkpoint_dir = args.str("checkpoint-dir", "");
  o.checkpoint_every = args.integer("checkpoint-every", 0);
  o.log_every = args.integer("log-every", 10);
  o.adapter_name = args.str("name", fs::path(out).stem().string());
  o.adapter_version = args.str("version", "1");
  const bool resume = args.boolean("resume");
  apply_threads(args);
  args.finish();
  if (data.empty() == dataset.empty()) throw UsageError("give exactly one of --data FILE.jsonl and --dataset NAME");
  if (!val_data.empty() && (val_fraction > 0 || !val_split.empty())) {
    throw UsageError("--val-data, --val-fraction and --val-split exclude each other");
  }
  if (val_fraction < 0 || val_fraction >= 1) throw UsageError("--val-fraction must lie in [0, 1)");
  if (max_examples < 0 || max_val < 0) throw UsageError("--max-examples / --max-val-examples must be >= 0");
  if (resume && o.checkpoint_dir.empty()) throw UsageError("--resume needs --checkpoint-dir");

  std::vector<TextExample> train = data.empty() ? from_dataset(dataset, split, datasets_dir)
                                                : tasks::read_prompt_completion_jsonl(data);
  std::vector<TextExample> val;
  if (!val_data.empty()) {
    val = tasks::read_prompt_completion_jsonl(val_data);
  } else if (!val_split.empty()) {
    if (dataset.empty()) throw UsageError("--val-split needs --dataset");
    val = from_dataset(dataset, val_split, datasets_dir);
  }
  // The subset and the held-out part are drawn from a seeded shuffle, so runs are repeatable.
  seeded_shuffle(train, o.seed);
  if (val_fraction > 0) {
    const size_t held = std::max<size_t>(1, static_cast<size_t>(val_fraction * static_cast<double>(train.size())));
    if (held >= train.size()) throw UsageError("--val-fraction leaves no training examples");
    val.assign(train.end() - static_cast<std::ptrdiff_t>(held), train.end());
    train.resize(train.size() - held);
  }
  if (max_examples > 0 && static_cast<int64_t>(train.size()) > max_examples) train.resize(static_cast<size_t>(max_examples));
  if (max_val > 0 && static_cast<int64_t>(val.size()) > max_val) val.resize(static_cast<size_t>(max_val));
  if (train.empty()) throw std::runtime_error("no training examples");

  const fs::path tok_path = tokenizer_flag.empty() ? default_tokenizer_path(model_dir) : fs::path(tokenizer_flag);
  const auto tokenizer = engine::Tokenizer::from_file(tok_path.string());
  engine::LoadOptions lo;
  lo.dtype = dtype;
  auto model = engine::MambaModel::load(model_dir, lo);
  engine::trainer::AdapterTrainer trainer(*model, tokenizer, o);
  const auto& opts = trainer.options();
  std::printf("train: %zu examples, %zu validation; methods %s (%lld trainable parameters)", train.size(),
              val.size(), engine::join_methods(opts.methods).c_str(),
              static_cast<long long>(engine::trainable_parameter_count(opts.methods, model->config())));
  for (const auto& m : opts.methods) std::printf(", lr %s %.3g", m.c_str(), opts.lr_for(m));
  std::printf("; batch %lld, epochs %lld\n", static_cast<long long>(opts.batch_size),
              static_cast<long long>(opts.epochs));
  std::fflush(stdout);

  using Kind = engine::trainer::TrainProgress::Kind;
  g_stop = false;
  auto previous = std::signal(SIGINT, on_sigint);
  const auto result = trainer.train(
      train, val,
      [](const engine::trainer::TrainProgress& p) {
        if (p.kind == Kind::kStep) {
          std::printf("step %lld/%lld epoch %lld loss %.4f lr %.3g grad_norm %.3g tok/s %.0f elapsed %s eta %s\n",
                      static_cast<long long>(p.step), static_cast<long long>(p.total_steps),
                      static_cast<long long>(p.epoch + 1), p.loss, p.lr, p.grad_norm, p.tokens_per_s,
                      clock_text(p.elapsed_s).c_str(), clock_text(p.eta_s).c_str());
        } else if (p.kind == Kind::kValidation) {
          std::printf("eval step %lld val_loss %.4f val_token_accuracy %.4f%s\n", static_cast<long long>(p.step),
                      p.val_loss, p.val_token_accuracy, p.improved ? " (best)" : "");
        } else if (p.kind == Kind::kCheckpoint) {
          std::printf("checkpoint step %lld\n", static_cast<long long>(p.step));
        }
        std::fflush(stdout);
      },
      &g_stop, resume);
  std::signal(SIGINT, previous);
  engine::save_adapter(result.adapter, out, disk_dtype);
  std::printf("%s %s: %lld steps, %.1f s, %.0f tokens/s, final loss %.4f", result.cancelled ? "stopped" : "done",
              out.c_str(), static_cast<long long>(result.steps), result.seconds, result.tokens_per_s,
              result.final_train_loss);
  if (!val.empty()) {
    std::printf(", best val_loss %.4f at step %lld%s", result.best_val_loss,
                static_cast<long long>(result.best_step), result.early_stopped ? " (early stop)" : "");
  }
  std::printf("\n");
  return result.cancelled ? 1 : 0;
}

}  // namespace statetune::tools
