// init-model and init-adapter: random checkpoints and adapters for tests, demos and benchmarks.
#include <ATen/ATen.h>

#include <cstdio>
#include <filesystem>
#include <system_error>

#include "server/engine/model/default_model.h"
#include "server/engine/adapters/adapter.h"
#include "server/engine/model/mamba_model.h"
#include "server/engine/model/model_init.h"
#include "server/engine/tools/commands.h"

namespace statetune::tools {

namespace fs = std::filesystem;

int run_init_model(CliArgs& args) {
  const fs::path out = args.required("out");
  const engine::MambaConfig config = config_from_shape(
      args.integer("d-model", 768), args.integer("n-layer", 24), args.integer("vocab", 50280),
      args.integer("d-state", 16), args.integer("expand", 2), args.integer("d-conv", 4),
      args.str("dt-rank", "auto"));
  const int64_t seed = args.integer("seed", 0);
  if (seed < 0) throw UsageError("--seed must be >= 0");
  const at::ScalarType dtype = parse_dtype("dtype", args.str("dtype", "f32"), "f32|bf16|f16");
  const std::string tokenizer = args.str("tokenizer", "");
  args.finish();
  if (!tokenizer.empty() && !fs::is_regular_file(tokenizer)) {
    throw std::runtime_error("--tokenizer: no such file " + tokenizer);
  }

  fs::create_directories(out);
  engine::write_random_checkpoint(out, config, static_cast<uint64_t>(seed), dtype);
  if (!tokenizer.empty()) {
    fs::copy_file(tokenizer, out / "tokenizer.json", fs::copy_options::overwrite_existing);
  }
  std::printf("wrote %s: d_model %lld, n_layer %lld, vocab %lld, d_state %lld, d_inner %lld, "
              "dt_rank %lld, %lld parameters (%s)%s\n",
              out.string().c_str(), static_cast<long long>(config.d_model),
              static_cast<long long>(config.n_layer), static_cast<long long>(config.vocab_size),
              static_cast<long long>(config.d_state), static_cast<long long>(config.d_inner),
              static_cast<long long>(config.dt_rank),
              static_cast<long long>(config.parameter_count()), c10::toString(dtype),
              tokenizer.empty() ? "" : ", tokenizer.json copied");
  return 0;
}

int run_init_adapter(CliArgs& args) {
  const fs::path model_dir = engine::model_dir_or_default(args.str("model", "")).string();
  const fs::path out = args.required("out");
  const std::vector<std::string> methods =
      engine::normalize_methods(args.list("methods", "state_offset,output_offset"));
  if (methods.empty()) throw UsageError("--methods is empty");
  const int64_t seed = args.integer("seed", 0);
  if (seed < 0) throw UsageError("--seed must be >= 0");
  const double scale = args.number("scale", 0.1);
  const bool zero = args.boolean("zero");
  if (!zero && !(scale > 0)) throw UsageError("--scale must be > 0 (use --zero for a zero adapter)");
  const std::string name = args.str("name", "random");
  const std::string version = args.str("version", "1");
  const at::ScalarType disk_dtype = parse_dtype("dtype", args.str("dtype", "f32"), "f32|bf16");
  apply_threads(args);
  args.finish();

  // Loading the model (not only its config.json) gives the weights hash the adapter is tied to.
  auto model = engine::MambaModel::load(model_dir, engine::LoadOptions{});
  engine::Adapter adapter =
      zero ? engine::zero_adapter(model->config(), model->fingerprint(), methods)
           : engine::random_adapter(model->config(), model->fingerprint(), methods,
                                    static_cast<uint64_t>(seed), scale);
  adapter.name = name;
  adapter.version = version;
  adapter.extra_metadata = {{"created_by", "statetune-engine init-adapter"},
                            {"seed", seed},
                            {"scale", zero ? 0.0 : scale}};
  if (out.has_parent_path()) fs::create_directories(out.parent_path());
  engine::save_adapter(adapter, out, disk_dtype);
  std::printf("wrote %s: %s@%s, methods %s, %lld parameters, base %s\n", out.string().c_str(),
              name.c_str(), version.c_str(), engine::join_methods(methods).c_str(),
              static_cast<long long>(adapter.parameter_count()),
              model->fingerprint().weights_sha256.substr(0, 16).c_str());
  return 0;
}

}  // namespace statetune::tools
