// bench: what serving many tenants in one batch costs. Decode (and prefill) throughput of a batch whose
// every row reads a DIFFERENT resident adapter from the pool, against the same batch with no adapter
// at all (empty pool view: the kernels skip the adapter terms), measured in one process with the modes
// alternated round by round (A B B A A B ...) so that clock, thermal and neighbour-load drift hits
// both modes alike. The ratio is taken per round (paired) and summarised by min and median.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/cpu_level.h"
#include "server/engine/adapters/adapter.h"
#include "server/engine/adapters/adapter_pool.h"
#include "server/engine/model/mamba_model.h"
#include "server/engine/model/model_init.h"
#include "server/engine/tools/commands.h"
#include "server/engine/tools/decode_path_bench.h"
#include "server/engine/tools/train_step_bench.h"
#include "server/engine/util/durable_file.h"

namespace statetune::tools {

namespace fs = std::filesystem;
using engine::AdapterPool;
using engine::AdapterPoolView;
using engine::MambaModel;

namespace {

// Removes the random checkpoint the bench wrote, whatever way the command ends.
struct TempDir {
  fs::path path;
  ~TempDir() {
    if (path.empty()) return;
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

struct Summary {
  double min = 0, median = 0, max = 0;
};

Summary summarize(std::vector<double> v) {
  Summary s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.max = v.back();
  const size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  return s;
}

nlohmann::json to_json(const Summary& s) {
  return {{"min", s.min}, {"median", s.median}, {"max", s.max}};
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct RoundTimes {
  double prefill_s = 0;
  double decode_s = 0;
};

}  // namespace

int run_bench(CliArgs& args) {
  const std::string model_dir = args.str("model", "");
  const int64_t d_model = args.integer("d-model", 768);
  const int64_t n_layer = args.integer("n-layer", 24);
  const int64_t vocab = args.integer("vocab", 50280);
  const int64_t d_state = args.integer("d-state", 16);
  const int64_t expand = args.integer("expand", 2);
  const int64_t d_conv = args.integer("d-conv", 4);
  const std::string dt_rank = args.str("dt-rank", "auto");
  const int64_t batch = args.integer("batch", 16);
  const int64_t prompt_len = args.integer("prompt-len", 64);
  const int64_t steps = args.integer("decode-steps", 32);
  const int64_t rounds = args.integer("rounds", 5);
  const std::vector<std::string> methods =
      engine::normalize_methods(args.list("methods", "state_offset,output_offset"));
  const at::ScalarType dtype = parse_dtype("dtype", args.str("dtype", "f32"), "f32|bf16");
  const std::string device_name = args.str("device", "cpu");
  const int64_t seed = args.integer("seed", 0);
  const std::string json_to = args.str("json", "");
  const int64_t train_rounds = args.integer("train-rounds", 3);
  const int64_t path_rounds = args.integer("decode-path-rounds", 3);
  const int threads = apply_threads(args);
  args.finish();

  if (batch < 1) throw UsageError("--batch must be >= 1");
  if (prompt_len < 1) throw UsageError("--prompt-len must be >= 1");
  if (steps < 1) throw UsageError("--decode-steps must be >= 1");
  if (rounds < 1) throw UsageError("--rounds must be >= 1");
  if (train_rounds < 0) throw UsageError("--train-rounds must be >= 0");
  if (path_rounds < 0) throw UsageError("--decode-path-rounds must be >= 0");
  if (methods.empty()) throw UsageError("--methods is empty");
  if (seed < 0) throw UsageError("--seed must be >= 0");
  const at::Device device = parse_device(device_name);
  engine::MambaConfig shape;
  if (model_dir.empty()) {
    shape = config_from_shape(d_model, n_layer, vocab, d_state, expand, d_conv, dt_rank);
  }

  // --- the model -----------------------------------------------------------------------------
  TempDir temp;
  fs::path dir = model_dir;
  double init_s = 0;
  if (model_dir.empty()) {
    const auto t0 = std::chrono::steady_clock::now();
    temp.path = fs::temp_directory_path() /
                ("statetune-bench-" + std::to_string(::getpid()) + "-" + std::to_string(seed));
    fs::remove_all(temp.path);
    fs::create_directories(temp.path);
    engine::write_random_checkpoint(temp.path, shape, static_cast<uint64_t>(seed),
                                    dtype == at::kBFloat16 ? at::kBFloat16 : at::kFloat);
    dir = temp.path;
    init_s = seconds_since(t0);
  }
  engine::LoadOptions load_options;
  load_options.device = device;
  load_options.dtype = dtype;
  const auto t_load = std::chrono::steady_clock::now();
  std::unique_ptr<MambaModel> model = MambaModel::load(dir, load_options);
  const double load_s = seconds_since(t_load);
  const engine::MambaConfig& config = model->config();

  // --- B distinct resident adapters in slots 1..B --------------------------------------------
  engine::AdapterPoolOptions pool_options;
  pool_options.device = device;
  pool_options.methods = methods;
  pool_options.max_slots = batch + 1;
  pool_options.budget_bytes =
      (batch + 1) * AdapterPool::bytes_per_slot(model->fingerprint(), methods);
  AdapterPool pool(model->fingerprint(), pool_options);
  std::vector<engine::SlotLease> leases;
  std::vector<int32_t> slot_ids;
  for (int64_t i = 0; i < batch; ++i) {
    engine::Adapter a = engine::random_adapter(config, model->fingerprint(), methods,
                                               static_cast<uint64_t>(seed) * 100003 + 1 + i, 0.1);
    a.name = "bench-" + std::to_string(i);
    a.version = "1";
    leases.push_back(pool.acquire(a.name, [&a] { return a; }));
    slot_ids.push_back(leases.back().slot());
  }
  {
    std::vector<int32_t> sorted = slot_ids;
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end() || sorted.front() < 1) {
      throw std::runtime_error("bench: adapters did not land in distinct non-zero slots");
    }
  }
  const at::Tensor mixed_slots =
      at::tensor(slot_ids, at::TensorOptions().dtype(at::kInt)).to(device);
  const AdapterPoolView mixed_view = pool.view();
  const AdapterPoolView no_view;  // no adapter tensors at all: the base model's cost
  const at::Tensor no_slots;      // undefined: every row is slot 0

  // --- inputs --------------------------------------------------------------------------------
  engine::StateCache cache(config, batch, device);
  const at::Tensor rows = at::arange(batch, at::TensorOptions().dtype(at::kLong)).to(device);
  at::Generator gen = at::detail::createCPUGenerator(static_cast<uint64_t>(seed) + 7);
  // Real token ids stay below the tokenizer's 50277 for the default vocab; any id < vocab is valid.
  const at::Tensor prompt =
      at::randint(0, std::min<int64_t>(config.vocab_size, 50277), {batch, prompt_len}, gen,
                  at::TensorOptions().dtype(at::kLong))
          .to(device);
  const at::Tensor lengths = at::full({batch}, prompt_len, at::TensorOptions().dtype(at::kLong));

  // One round of one mode: prefill the whole batch, then `steps` greedy decode steps (model step +
  // argmax, what a server's step costs before sampling). Copying the tokens to the CPU waits for an
  // asynchronous device.
  at::Tensor last_prefill_logits;
  auto run_mode = [&](bool adapters) {
    const AdapterPoolView& view = adapters ? mixed_view : no_view;
    const at::Tensor& slots = adapters ? mixed_slots : no_slots;
    RoundTimes t;
    auto t0 = std::chrono::steady_clock::now();
    at::Tensor logits = model->prefill(prompt, lengths, rows, slots, view, cache);
    at::Tensor next = logits.argmax(-1);
    (void)next.to(at::kCPU);
    t.prefill_s = seconds_since(t0);
    last_prefill_logits = logits;
    t0 = std::chrono::steady_clock::now();
    for (int64_t s = 0; s < steps; ++s) {
      logits = model->decode(next, rows, slots, view, cache);
      next = logits.argmax(-1);
    }
    (void)next.to(at::kCPU);
    t.decode_s = seconds_since(t0);
    return t;
  };

  // Warm-up (workspaces, allocator, caches), and a check that the adapters change the output: a
  // bench whose adapters were silently ignored would report a perfect ratio.
  run_mode(false);
  const at::Tensor base_logits = last_prefill_logits.to(at::kCPU).to(at::kFloat).clone();
  run_mode(true);
  const at::Tensor mixed_logits = last_prefill_logits.to(at::kCPU).to(at::kFloat);
  const double adapter_effect = (mixed_logits - base_logits).abs().max().item<double>();
  if (!(adapter_effect > 0)) {
    throw std::runtime_error("bench: the adapters did not change the logits; nothing to measure");
  }

  std::vector<double> dec_base, dec_mixed, pre_base, pre_mixed, dec_ratio, pre_ratio;
  std::string order;
  for (int64_t r = 0; r < rounds; ++r) {
    const bool mixed_first = (r % 2) == 1;  // A B | B A | A B ...
    RoundTimes first = run_mode(mixed_first);
    RoundTimes second = run_mode(!mixed_first);
    const RoundTimes& base = mixed_first ? second : first;
    const RoundTimes& mixed = mixed_first ? first : second;
    order += mixed_first ? "BA" : "AB";
    const double decode_tokens = static_cast<double>(batch * steps);
    const double prefill_tokens = static_cast<double>(batch * prompt_len);
    dec_base.push_back(decode_tokens / base.decode_s);
    dec_mixed.push_back(decode_tokens / mixed.decode_s);
    pre_base.push_back(prefill_tokens / base.prefill_s);
    pre_mixed.push_back(prefill_tokens / mixed.prefill_s);
    dec_ratio.push_back(dec_mixed.back() / dec_base.back());
    pre_ratio.push_back(pre_mixed.back() / pre_base.back());
  }
  const Summary db = summarize(dec_base), dm = summarize(dec_mixed), dr = summarize(dec_ratio);
  const Summary pb = summarize(pre_base), pm = summarize(pre_mixed), pr = summarize(pre_ratio);

  // --- training step / forward (state_offset adapter, loss on every position) -------------------
  std::vector<double> train_fwd, train_step, train_ratio;
  if (train_rounds > 0) {
    const TrainStepTimes tt = measure_train_step(*model, prompt, train_rounds);
    train_fwd = tt.forward_s;
    train_step = tt.step_s;
    for (size_t i = 0; i < train_fwd.size(); ++i) train_ratio.push_back(train_step[i] / train_fwd[i]);
  }

  // --- decode paths: direct vs bucketed (CUDA graphs on a GPU), mixed adapters ----------------
  DecodePathTimes paths;
  if (path_rounds > 0) {
    paths = measure_decode_paths(*model, mixed_view, at::tensor(slot_ids, at::TensorOptions().dtype(at::kInt)),
                                 prompt.to(at::kCPU), steps, path_rounds);
  }

  // --- report --------------------------------------------------------------------------------
  std::printf("statetune-engine bench\n");
  std::printf("  model    %s: d_model %lld, n_layer %lld, vocab %lld, d_state %lld, d_inner %lld, "
              "%.1fM parameters\n",
              model_dir.empty() ? "random weights" : model_dir.c_str(),
              static_cast<long long>(config.d_model), static_cast<long long>(config.n_layer),
              static_cast<long long>(config.vocab_size), static_cast<long long>(config.d_state),
              static_cast<long long>(config.d_inner), config.parameter_count() / 1e6);
  std::printf("  compute  %s on %s, %d threads (model %s in %.1f s, loaded in %.1f s)\n",
              c10::toString(dtype), device.str().c_str(), threads,
              model_dir.empty() ? "written" : "given", init_s, load_s);
  std::printf("  kernels  CPU %s\n", kernels::cpu::active_cpu_level().describe().c_str());
  std::printf("  batch    %lld rows, prompt %lld tokens, %lld decode steps/round, %lld rounds "
              "(+1 warm-up), order %s\n",
              static_cast<long long>(batch), static_cast<long long>(prompt_len),
              static_cast<long long>(steps), static_cast<long long>(rounds), order.c_str());
  std::printf("  adapters %lld distinct (%s) in slots 1..%lld; A = no adapter (empty pool view), "
              "B = mixed; max |logit change| %.3g\n\n",
              static_cast<long long>(batch), engine::join_methods(methods).c_str(),
              static_cast<long long>(batch), adapter_effect);
  std::printf("  %-22s %14s %14s %14s\n", "tokens/s", "no adapter", "mixed", "mixed/none");
  std::printf("  %-22s %14.1f %14.1f %14.4f\n", "decode median", db.median, dm.median, dr.median);
  std::printf("  %-22s %14.1f %14.1f %14.4f\n", "decode min", db.min, dm.min, dr.min);
  std::printf("  %-22s %14.1f %14.1f %14.4f\n", "decode max", db.max, dm.max, dr.max);
  std::printf("  %-22s %14.1f %14.1f %14.4f\n", "prefill median", pb.median, pm.median, pr.median);
  std::printf("  %-22s %14.1f %14.1f %14.4f\n", "prefill min", pb.min, pm.min, pr.min);
  std::printf("\n  decode ratio mixed/no-adapter (paired per round): min %.4f, median %.4f\n", dr.min,
              dr.median);
  std::printf("  prefill ratio mixed/no-adapter (paired per round): min %.4f, median %.4f\n", pr.min,
              pr.median);
  if (!train_ratio.empty()) {
    const Summary tf = summarize(train_fwd), ts = summarize(train_step), tr = summarize(train_ratio);
    std::printf("\n  training step (state_offset, %lld x %lld tokens, forward + backward, loss on every "
                "position) vs inference forward (prefill, all-position logits), %zu rounds:\n",
                static_cast<long long>(batch), static_cast<long long>(prompt_len), train_ratio.size());
    std::printf("  forward median %.3f s, training step median %.3f s, step/forward median %.2f (min %.2f, "
                "max %.2f)\n", tf.median, ts.median, tr.median, tr.min, tr.max);
  }
  std::vector<double> path_ratio;
  for (size_t i = 0; i < paths.direct_tps.size(); ++i) path_ratio.push_back(paths.bucketed_tps[i] / paths.direct_tps[i]);
  if (!path_ratio.empty()) {
    const Summary pd = summarize(paths.direct_tps), pg = summarize(paths.bucketed_tps), rr = summarize(path_ratio);
    std::printf("\n  decode step as the scheduler runs it (tokens from the host, argmax back), mixed adapters, "
                "%zu rounds:\n", path_ratio.size());
    std::printf("  direct %.1f tokens/s, %s %.1f tokens/s (medians); %s/direct median %.4f (min %.4f, max %.4f); "
                "max |logit difference| %.3g\n", pd.median, paths.bucketed_name.c_str(), pg.median,
                paths.bucketed_name.c_str(), rr.median, rr.min, rr.max, paths.max_logit_difference);
  }
  std::fflush(stdout);

  if (!json_to.empty()) {
    nlohmann::json j = {
        {"model", model_dir.empty() ? "random" : model_dir},
        {"config", config.to_json()},
        {"dtype", c10::toString(dtype)},
        {"device", device.str()},
        {"threads", threads},
        {"cpu_kernels", kernels::cpu::active_cpu_level().describe()},
        {"batch", batch},
        {"prompt_len", prompt_len},
        {"decode_steps", steps},
        {"rounds", rounds},
        {"order", order},
        {"methods", engine::join_methods(methods)},
        {"adapter_max_logit_change", adapter_effect},
        {"decode_tokens_per_s", {{"no_adapter", to_json(db)}, {"mixed", to_json(dm)}}},
        {"prefill_tokens_per_s", {{"no_adapter", to_json(pb)}, {"mixed", to_json(pm)}}},
        {"decode_ratio", to_json(dr)},
        {"prefill_ratio", to_json(pr)},
        {"per_round",
         {{"decode_no_adapter", dec_base},
          {"decode_mixed", dec_mixed},
          {"prefill_no_adapter", pre_base},
          {"prefill_mixed", pre_mixed}}},
    };
    if (!train_ratio.empty()) {
      j["train_step"] = {{"forward_s", to_json(summarize(train_fwd))}, {"step_s", to_json(summarize(train_step))},
                         {"step_over_forward", to_json(summarize(train_ratio))}};
    }
    if (!path_ratio.empty()) {
      j["decode_paths"] = {{"bucketed_path", paths.bucketed_name},
                           {"direct_tokens_per_s", to_json(summarize(paths.direct_tps))},
                           {"bucketed_tokens_per_s", to_json(summarize(paths.bucketed_tps))},
                           {"bucketed_over_direct", to_json(summarize(path_ratio))},
                           {"max_logit_difference", paths.max_logit_difference}};
    }
    if (json_to == "true" || json_to == "-") {
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      engine::write_file_durably(json_to, j.dump(2) + "\n");
    }
  }
  return 0;
}

}  // namespace statetune::tools
