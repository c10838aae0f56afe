// statetune-engine train --methods full: trains every weight of a model on plain text (pretraining or
// full fine-tuning) and writes a Hugging Face checkpoint folder. scripts/pretrain/ uses it to make the
// project's default base model. The output folder is rewritten at every evaluation, so a run that is
// stopped (Ctrl-C, time budget) still leaves the latest model and its log.
#include <ATen/ATen.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <nlohmann/json.hpp>

#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "server/engine/model/model_config.h"
#include "server/engine/model/model_init.h"
#include "server/engine/text/tokenizer.h"
#include "server/engine/tools/commands.h"
#include "server/engine/trainer/full_trainer.h"
#include "server/engine/util/safetensors.h"

namespace statetune::tools {
namespace {

namespace fs = std::filesystem;

std::atomic<bool> g_stop{false};
void on_sigint(int) { g_stop = true; }

// The checkpoint's tensors in fp32 under Hugging Face names (mamba_ssm's embedding name renamed).
std::map<std::string, at::Tensor> read_weights(const fs::path& dir, engine::MambaConfig* config) {
  std::ifstream in(dir / "config.json");
  if (!in) throw std::runtime_error((dir / "config.json").string() + ": cannot open");
  *config = engine::MambaConfig::from_json(nlohmann::json::parse(in));
  const auto ckpt = engine::safetensors::Checkpoint::open(dir);
  std::map<std::string, at::Tensor> w;
  for (const std::string& name : ckpt.names()) {
    const std::string hf = name == "backbone.embedding.weight" ? "backbone.embeddings.weight" : name;
    w[hf] = ckpt.tensor(name, at::kFloat);
  }
  return w;
}

// Writes the model folder through a temporary sibling and a rename, so a reader never sees half of it.
void write_model(const fs::path& out, const engine::MambaConfig& config,
                 const std::map<std::string, at::Tensor>& weights, at::ScalarType dtype,
                 const fs::path& tokenizer, const nlohmann::json& log) {
  const fs::path tmp = out.string() + ".tmp";
  fs::remove_all(tmp);
  engine::CheckpointWriteOptions wo;
  wo.dtype = dtype;
  std::map<std::string, at::Tensor> detached;
  for (const auto& [name, t] : weights) detached[name] = t.detach().cpu();
  engine::write_checkpoint(tmp, config, detached, wo);
  fs::copy_file(tokenizer, tmp / "tokenizer.json");
  std::ofstream(tmp / "training_log.json") << log.dump(2) << "\n";
  // Files that are not ours (the model card, the reproduce script) stay where they are.
  fs::create_directories(out);
  for (const auto& entry : fs::directory_iterator(tmp)) {
    fs::rename(entry.path(), out / entry.path().filename());
  }
  fs::remove_all(tmp);
}

}  // namespace

int run_train_full(CliArgs& args) {
#if defined(__GLIBC__)
  // As in run_train: keep the per-step autograd buffers (the logits are rows x vocab floats) in the
  // heap instead of mmapping and page-faulting them in again every step.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 256 << 20);
#endif
  const fs::path model_dir = args.required("model");
  const fs::path data = args.required("data");
  const fs::path heldout = args.required("heldout-data");
  const fs::path out = args.required("out");
  const std::string tokenizer_flag = args.str("tokenizer", "");
  const int64_t max_tokens = args.integer("max-tokens", 0);
  const at::ScalarType disk_dtype = parse_dtype("save-dtype", args.str("save-dtype", "bf16"), "f32|bf16|f16");
  engine::trainer::FullTrainOptions o;
  o.seq_len = args.integer("max-length", o.seq_len);
  o.batch_size = args.integer("batch-size", o.batch_size);
  o.steps = args.integer("max-steps", o.steps);
  o.max_seconds = args.number("max-seconds", 0);
  o.lr = args.number("lr", o.lr);
  o.min_lr_ratio = args.number("min-lr-ratio", o.min_lr_ratio);
  o.warmup_steps = args.integer("warmup-steps", o.warmup_steps);
  o.weight_decay = args.number("weight-decay", o.weight_decay);
  o.grad_clip = args.number("grad-clip", o.grad_clip);
  o.seed = static_cast<uint64_t>(args.integer("seed", 0));
  o.eval_every = args.integer("eval-every", o.eval_every);
  o.eval_windows = args.integer("eval-windows", o.eval_windows);
  o.log_every = args.integer("log-every", o.log_every);
  const std::string device = args.str("device", "cpu");
  try {
    o.device = at::Device(device);
  } catch (const std::exception&) {
    throw UsageError("--device expects cpu or cuda[:i], got '" + device + "'");
  }
  const int threads = apply_threads(args);
  args.finish();

  engine::MambaConfig config;
  const auto initial = read_weights(model_dir, &config);
  const fs::path tok_path = tokenizer_flag.empty() ? default_tokenizer_path(model_dir) : fs::path(tokenizer_flag);
  const auto tokenizer = engine::Tokenizer::from_file(tok_path.string());
  auto encode = [&tokenizer](const std::string& s) { return tokenizer.encode(s, false); };
  const int32_t eos = static_cast<int32_t>(config.eos_token_id);
  const auto train_tokens = engine::trainer::tokenize_documents(data, encode, eos, max_tokens);
  const auto heldout_tokens = engine::trainer::tokenize_documents(
      heldout, encode, eos, (o.eval_windows + 1) * o.seq_len + 1);
  engine::trainer::FullModelTrainer trainer(config, initial, o);
  std::printf("train --methods full: %lld parameters (all trainable); %lld training tokens, %lld held-out; "
              "batch %lld x %lld tokens, lr %.3g, %lld steps%s, %d threads\n",
              static_cast<long long>(trainer.parameter_count()), static_cast<long long>(train_tokens.size()),
              static_cast<long long>(heldout_tokens.size()), static_cast<long long>(o.batch_size),
              static_cast<long long>(o.seq_len), o.lr, static_cast<long long>(o.steps),
              o.max_seconds > 0 ? " (or the time budget)" : "", threads);
  std::fflush(stdout);

  nlohmann::json log = {{"source_model", model_dir.string()}, {"data", data.string()},
                        {"heldout_data", heldout.string()}, {"train_stream_tokens", train_tokens.size()},
                        {"parameters", trainer.parameter_count()}, {"threads", threads},
                        {"options", {{"seq_len", o.seq_len}, {"batch_size", o.batch_size}, {"lr", o.lr},
                                     {"min_lr_ratio", o.min_lr_ratio}, {"warmup_steps", o.warmup_steps},
                                     {"weight_decay", o.weight_decay}, {"grad_clip", o.grad_clip},
                                     {"betas", {o.beta1, o.beta2}}, {"seed", o.seed},
                                     {"max_steps", o.steps}, {"max_seconds", o.max_seconds}}},
                        {"evaluations", nlohmann::json::array()}};
  g_stop = false;
  auto previous = std::signal(SIGINT, on_sigint);
  const auto result = trainer.train(
      train_tokens, heldout_tokens,
      [&](const engine::trainer::FullTrainProgress& p, const std::map<std::string, at::Tensor>& weights) {
        if (!p.evaluation) {
          std::printf("step %lld/%lld loss %.4f lr %.3g grad_norm %.3g tokens %lld tok/s %.0f elapsed %.0fs\n",
                      static_cast<long long>(p.step), static_cast<long long>(p.total_steps), p.loss, p.lr,
                      p.grad_norm, static_cast<long long>(p.tokens), p.tokens_per_s, p.elapsed_s);
        } else {
          std::printf("eval step %lld heldout_loss %.4f perplexity %.1f\n", static_cast<long long>(p.step),
                      p.heldout_loss, std::exp(p.heldout_loss));
          log["evaluations"].push_back({{"step", p.step}, {"tokens", p.tokens}, {"elapsed_s", p.elapsed_s},
                                        {"train_loss", p.loss}, {"heldout_loss", p.heldout_loss}});
          // A snapshot, so a long run that dies keeps its last evaluation; the final one is written
          // below with the result in its log.
          if (!p.final) write_model(out, config, weights, disk_dtype, tok_path, log);
        }
        std::fflush(stdout);
      },
      [] { return g_stop.load(); });
  std::signal(SIGINT, previous);
  log["result"] = {{"steps", result.steps}, {"tokens", result.tokens}, {"seconds", result.seconds},
                   {"final_train_loss", result.final_train_loss},
                   {"initial_heldout_loss", result.initial_heldout_loss},
                   {"heldout_loss", result.heldout_loss},
                   {"heldout_perplexity", std::exp(result.heldout_loss)}};
  write_model(out, config, trainer.weights(), disk_dtype, tok_path, log);
  std::printf("%s %s: %lld steps, %lld tokens, %.0f s; held-out loss %.4f -> %.4f (perplexity %.1f)\n",
              g_stop ? "stopped" : "done", out.c_str(), static_cast<long long>(result.steps),
              static_cast<long long>(result.tokens), result.seconds, result.initial_heldout_loss,
              result.heldout_loss, std::exp(result.heldout_loss));
  return 0;
}

}  // namespace statetune::tools
