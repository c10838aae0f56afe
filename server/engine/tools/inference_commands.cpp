// logits and generate: one sequence through the model, with or without an adapter.
#include <ATen/ATen.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "server/engine/model/default_model.h"
#include "server/engine/adapters/adapter.h"
#include "server/engine/adapters/adapter_pool.h"
#include "server/engine/model/mamba_model.h"
#include "server/engine/text/streaming_decoder.h"
#include "server/engine/text/tokenizer.h"
#include "server/engine/tools/commands.h"
#include "server/engine/util/durable_file.h"

namespace statetune::tools {

namespace fs = std::filesystem;

namespace {

// One adapter file resident in a one-slot pool, ready for prefill/decode. Member order matters: the
// lease is released before the pool it pins is destroyed.
struct BoundAdapter {
  std::unique_ptr<engine::AdapterPool> pool;
  engine::SlotLease lease;
  engine::AdapterPoolView view;  // empty when there is no adapter
  at::Tensor slots;              // [1] int32, undefined when there is no adapter
};

void bind_adapter(const std::string& file, const engine::MambaModel& model, BoundAdapter& out) {
  if (file.empty()) return;
  engine::Adapter adapter = engine::load_adapter(file);
  try {
    engine::check_compatible(adapter, model.fingerprint());
  } catch (const std::exception& e) {
    throw std::runtime_error("adapter " + file + " does not fit the model: " + e.what());
  }
  engine::AdapterPoolOptions options;
  options.device = model.device();
  options.methods = adapter.methods;
  options.max_slots = 2;  // slot 0 (base) + this adapter
  options.budget_bytes = 2 * engine::AdapterPool::bytes_per_slot(model.fingerprint(), adapter.methods);
  out.pool = std::make_unique<engine::AdapterPool>(model.fingerprint(), options);
  out.lease = out.pool->acquire(file, [&adapter] { return adapter; });
  out.view = out.pool->view();
  out.slots = at::full({1}, out.lease.slot(), at::TensorOptions().dtype(at::kInt).device(model.device()));
}

std::unique_ptr<engine::MambaModel> load_model(const std::string& dir, at::ScalarType dtype,
                                               at::Device device = at::kCPU) {
  engine::LoadOptions options;
  options.dtype = dtype;
  options.device = device;
  return engine::MambaModel::load(dir, options);
}

std::vector<int64_t> to_ids(const std::vector<int32_t>& v) {
  return std::vector<int64_t>(v.begin(), v.end());
}

void check_ids(const std::vector<int64_t>& ids, const engine::MambaConfig& config) {
  for (int64_t id : ids) {
    if (id >= config.vocab_size) {
      throw UsageError("token id " + std::to_string(id) + " is outside the model's vocabulary (" +
                       std::to_string(config.vocab_size) + ")");
    }
  }
}

}  // namespace

int run_logits(CliArgs& args) {
  const std::string model_dir = engine::model_dir_or_default(args.str("model", "")).string();
  const std::string adapter_file = args.str("adapter", "");
  const std::string tokens_flag = args.str("tokens", "");
  const std::string prompt = args.str("prompt", "");
  const std::string tokenizer_flag = args.str("tokenizer", "");
  const bool all_positions = args.boolean("all-positions");
  const fs::path out = args.required("out");
  const at::ScalarType dtype = parse_dtype("dtype", args.str("dtype", "f32"), "f32|bf16");
  const at::Device device = parse_device(args.str("device", "cpu"));
  apply_threads(args);
  args.finish();
  if (tokens_flag.empty() == prompt.empty()) {
    throw UsageError("give exactly one of --tokens or --prompt");
  }
  std::vector<int64_t> ids;
  if (!tokens_flag.empty()) {
    ids = parse_token_list("tokens", tokens_flag);
  } else {
    const fs::path tok_path =
        tokenizer_flag.empty() ? default_tokenizer_path(model_dir) : fs::path(tokenizer_flag);
    const auto tokenizer = engine::Tokenizer::from_file(tok_path.string());
    ids = to_ids(tokenizer.encode(prompt));
    if (ids.empty()) throw UsageError("--prompt encodes to no tokens");
  }

  auto model = load_model(model_dir, dtype, device);
  check_ids(ids, model->config());
  BoundAdapter adapter;
  bind_adapter(adapter_file, *model, adapter);

  const int64_t len = static_cast<int64_t>(ids.size());
  const at::Tensor tokens = at::tensor(ids, at::TensorOptions().dtype(at::kLong)).view({1, len});
  const at::Tensor lengths = at::full({1}, len, at::TensorOptions().dtype(at::kLong));
  const at::Tensor rows = at::zeros({1}, at::TensorOptions().dtype(at::kLong));
  engine::StateCache cache(model->config(), 1, model->device());
  at::Tensor logits = model->prefill(tokens, lengths, rows, adapter.slots, adapter.view, cache,
                                     /*resume=*/false, all_positions);
  logits = logits.select(0, 0).to(at::kCPU).to(at::kFloat).contiguous();  // [V] or [L, V]

  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
                "logits are written as the host's float32 bytes, which must be little-endian");
  if (out.has_parent_path()) fs::create_directories(out.parent_path());
  engine::write_file_durably(out, [&logits](engine::FileSink& f) {
    f.write(logits.data_ptr<float>(), static_cast<size_t>(logits.numel()) * sizeof(float));
  });

  std::string shape = "[";
  for (int64_t i = 0; i < logits.dim(); ++i) {
    shape += (i ? ", " : "") + std::to_string(logits.size(i));
  }
  shape += "]";
  std::printf("logits %s float32 little-endian -> %s (%lld tokens%s)\n", shape.c_str(),
              out.string().c_str(), static_cast<long long>(len),
              adapter_file.empty() ? "" : (", adapter " + adapter_file).c_str());
  return 0;
}

int run_generate(CliArgs& args) {
  const std::string model_dir = engine::model_dir_or_default(args.str("model", "")).string();
  const std::string adapter_file = args.str("adapter", "");
  const std::string prompt = args.required("prompt");
  const int64_t max_tokens = args.integer("max-tokens", 32);
  const std::string tokenizer_flag = args.str("tokenizer", "");
  const at::ScalarType dtype = parse_dtype("dtype", args.str("dtype", "f32"), "f32|bf16");
  const bool echo = args.boolean("echo");
  apply_threads(args);
  args.finish();
  if (max_tokens < 1) throw UsageError("--max-tokens must be >= 1");

  const fs::path tok_path =
      tokenizer_flag.empty() ? default_tokenizer_path(model_dir) : fs::path(tokenizer_flag);
  const auto tokenizer = engine::Tokenizer::from_file(tok_path.string());
  auto model = load_model(model_dir, dtype);
  const engine::MambaConfig& config = model->config();
  std::vector<int64_t> ids = to_ids(tokenizer.encode(prompt));
  if (ids.empty()) ids.push_back(config.bos_token_id);  // an empty prompt starts from <|endoftext|>
  check_ids(ids, config);
  BoundAdapter adapter;
  bind_adapter(adapter_file, *model, adapter);

  // The lm_head is padded past the tokenizer's vocabulary; those rows are not tokens.
  const int64_t usable_vocab = std::min<int64_t>(config.vocab_size, static_cast<int64_t>(tokenizer.vocab_size()));

  const int64_t len = static_cast<int64_t>(ids.size());
  const at::Tensor tokens = at::tensor(ids, at::TensorOptions().dtype(at::kLong)).view({1, len});
  const at::Tensor lengths = at::full({1}, len, at::TensorOptions().dtype(at::kLong));
  const at::Tensor rows = at::zeros({1}, at::TensorOptions().dtype(at::kLong));
  engine::StateCache cache(config, 1, model->device());

  if (echo) {
    std::fputs(prompt.c_str(), stdout);
    std::fflush(stdout);
  }
  engine::StreamingDecoder decoder(tokenizer);
  at::Tensor logits = model->prefill(tokens, lengths, rows, adapter.slots, adapter.view, cache);
  int64_t produced = 0;
  while (true) {
    const int64_t next = logits.narrow(-1, 0, usable_vocab).argmax(-1).item<int64_t>();
    if (next == config.eos_token_id) break;
    const std::string piece = decoder.push(static_cast<int32_t>(next));
    if (!piece.empty()) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
    if (++produced >= max_tokens) break;
    logits = model->decode(at::full({1}, next, at::TensorOptions().dtype(at::kLong)), rows,
                           adapter.slots, adapter.view, cache);
  }
  const std::string rest = decoder.flush();
  std::fwrite(rest.data(), 1, rest.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
  std::fprintf(stderr, "[%lld prompt tokens, %lld generated]\n", static_cast<long long>(len),
               static_cast<long long>(produced));
  return 0;
}

}  // namespace statetune::tools
