// The subcommands of `statetune-engine` and the small helpers they share. Each command reads its
// flags from a CliArgs (so CliArgs::finish can refuse unknown ones) and returns the process exit code.
// Usage errors throw UsageError or std::invalid_argument (exit 2); anything else that goes wrong throws
// std::runtime_error or another std::exception (exit 1).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>

#include "server/engine/model/model_config.h"
#include "server/engine/tools/cli_args.h"

namespace statetune::tools {

class UsageError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

int run_init_model(CliArgs& args);
int run_init_adapter(CliArgs& args);
int run_logits(CliArgs& args);
int run_generate(CliArgs& args);
int run_bench(CliArgs& args);
int run_convert_dataset(CliArgs& args);  // dataset_commands.cpp
int run_train(CliArgs& args);  // train_command.cpp
int run_train_full(CliArgs& args);  // full_train_command.cpp: train --methods full
int run_eval(CliArgs& args);   // eval_command.cpp

// --threads N (default: hardware cores) -> at::set_num_threads. Returns the count in use.
int apply_threads(CliArgs& args);

// "f32" | "bf16" | "f16" (and the long spellings) -> dtype; `allowed` lists the accepted short names
// for the error message, e.g. "f32|bf16". Throws UsageError naming `flag`.
at::ScalarType parse_dtype(const std::string& flag, const std::string& value,
                           const std::string& allowed);

// "cpu" | "cuda" | "cuda:i" -> device. Throws UsageError naming --device.
at::Device parse_device(const std::string& value);

// A model config from the init-model / bench shape flags (HF dialect through MambaConfig::from_json,
// so vocab padding and dt_rank "auto" follow the loader's rules).
engine::MambaConfig config_from_shape(int64_t d_model, int64_t n_layer, int64_t vocab,
                                      int64_t d_state, int64_t expand, int64_t d_conv,
                                      const std::string& dt_rank);

// Where the tokenizer is when --tokenizer is not given: DIR/tokenizer.json when the model folder has
// one, else the shared GPT-NeoX tokenizer (STATETUNE_SHARED_DIR, or ../shared beside the checkout).
std::filesystem::path default_tokenizer_path(const std::filesystem::path& model_dir);

// "1,2,3" -> token ids; throws UsageError naming `flag` on anything that is not a non-negative integer.
std::vector<int64_t> parse_token_list(const std::string& flag, const std::string& value);

}  // namespace statetune::tools
