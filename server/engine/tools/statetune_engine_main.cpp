// statetune-engine: the offline tool that runs every engine feature without a server.
//   statetune-engine <subcommand> [--flags]   (statetune-engine <subcommand> --help for its flags)
// Exit codes: 0 success, 1 failure (bad file, model error, ...), 2 usage error (unknown or bad flag).
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <string>
#include <thread>

#include "server/engine/tools/commands.h"

namespace statetune::tools {
namespace {

struct Command {
  int (*run)(CliArgs&);
  const char* summary;
  const char* help;
};

const std::map<std::string, Command>& commands() {
  static const std::map<std::string, Command> table = {
      {"convert-dataset",
       {run_convert_dataset, "write a data set task split (GLUE, SAMSum, ...) as prompt/completion JSONL",
        R"(statetune-engine convert-dataset --dataset NAME --out FILE.jsonl [--split S] [...]
Writes {"prompt": ..., "completion": ...} lines (the format of `train --data` and of the training
service's dataset upload) from a real data set (its folder holds glue/, samsum/, spider/, dart/),
with the experiments' prompt templates. Tasks: cola mrpc rte sst2 mnli qnli qqp samsum spider dart.
  --split train|validation|test (default train)   --max-examples N (default all)
  --datasets-dir DIR (default: $STATETUNE_DATASETS_DIR; without it, shared/datasets beside the
                      checkout the binary was built from; the container image sets
                      STATETUNE_DATASETS_DIR=/var/lib/statetune/datasets: mount them there)
  --seed S               DART's train/validation split of its dev file (default 42)
)"}},
      {"init-model",
       {run_init_model, "write a random Hugging Face format Mamba checkpoint",
        R"(statetune-engine init-model --out DIR [shape flags] [--seed S] [--dtype f32|bf16|f16]
Writes config.json + model.safetensors with seeded random weights (same seed -> identical files).
  --out DIR          folder to create (files in it are overwritten)
  --d-model M        hidden size (default 768)
  --n-layer L        layers (default 24)
  --vocab V          vocabulary, padded up to a multiple of 8 (default 50280)
  --d-state N        SSM state size (default 16)
  --expand E         d_inner = E * d_model (default 2)
  --d-conv K         conv kernel width (default 4)
  --dt-rank R|auto   rank of the dt projection (default auto = ceil(d_model / 16))
  --seed S           weight seed (default 0)
  --dtype T          on-disk dtype f32|bf16|f16 (default f32)
  --tokenizer PATH   copy this tokenizer.json into DIR
)"}},
      {"init-adapter",
       {run_init_adapter, "write a random non-zero adapter for a model",
        R"(statetune-engine init-adapter [--model DIR] --out FILE [--methods LIST] [--seed S] [--scale X]
Writes an adapter with Normal(0, scale) tensors (or zeros with --zero: exactly the base model),
tied to the loaded model's fingerprint, so another base model refuses it.
  --model DIR        checkpoint folder (config.json + safetensors) (default: the shipped models/default, or $STATETUNE_MODEL)
  --out FILE         adapter file (.safetensors) to write
  --methods LIST     comma list of state_offset,output_offset,initial_state
                     (default state_offset,output_offset)
  --seed S           (default 0)
  --scale X          standard deviation (default 0.1)
  --zero             all-zero tensors instead of random ones
  --name NAME        (default "random")
  --version V        (default "1")
  --dtype T          on-disk dtype f32|bf16 (default f32)
  --threads N        compute threads (default: hardware cores)
)"}},
      {"logits",
       {run_logits, "write the logits of one sequence as raw little-endian float32",
        R"(statetune-engine logits [--model DIR] (--tokens 1,2,3 | --prompt TEXT) --out FILE
Runs one prefill and writes float32 logits: the last position [V], or every position [L, V].
  --model DIR        checkpoint folder (default: the shipped models/default, or $STATETUNE_MODEL)
  --adapter FILE     adapter file (default: none, the base model)
  --tokens LIST      comma list of token ids
  --prompt TEXT      text, encoded with --tokenizer (default DIR/tokenizer.json or the shared one)
  --tokenizer PATH   tokenizer.json for --prompt
  --all-positions    write [L, V] instead of [V]
  --out FILE         raw little-endian float32 output
  --dtype T          compute dtype f32|bf16 (default f32)
  --device D         cpu or cuda[:i] (default cpu)
  --threads N        compute threads (default: hardware cores)
)"}},
      {"generate",
       {run_generate, "greedy generation, streamed to stdout",
        R"(statetune-engine generate [--model DIR] --prompt TEXT [--max-tokens N] [--adapter FILE]
Greedy decoding; the text is streamed to stdout as it is produced, stopping at end-of-text.
  --model DIR        checkpoint folder (default: the shipped models/default, or $STATETUNE_MODEL)
  --adapter FILE     adapter file (default: none)
  --prompt TEXT      prompt text
  --max-tokens N     most new tokens (default 32)
  --tokenizer PATH   tokenizer.json (default DIR/tokenizer.json, else the shared GPT-NeoX one)
  --dtype T          compute dtype f32|bf16 (default f32)
  --echo             print the prompt before the generated text
  --threads N        compute threads (default: hardware cores)
)"}},
      {"bench",
       {run_bench, "decode/prefill throughput with distinct per-row adapters vs none",
        R"(statetune-engine bench [--model DIR] [--batch B] [--decode-steps N] [--rounds R] ...
Decode throughput of a batch of B rows where every row reads a DIFFERENT resident adapter (pool
slots 1..B) against the same batch with no adapter, alternated round by round (A B B A ...) in one
process so drift cancels; plus prefill throughput (B x prompt-len tokens) for both.
  --model DIR        checkpoint folder (default: random weights of the Mamba-130M shape, built in a
                     temp folder; the shape flags below change it)
  --d-model, --n-layer, --vocab, --d-state, --expand, --d-conv, --dt-rank   random-model shape
  --batch B          rows (default 16)
  --prompt-len L     prefill tokens per row (default 64)
  --decode-steps N   decode steps timed per round (default 32)
  --rounds R         measured rounds per mode (default 5), after one warm-up round
  --methods LIST     adapter kinds the pool and adapters use (default state_offset,output_offset)
  --dtype T          compute dtype f32|bf16 (default f32)
  --device D         cpu or cuda[:i] (default cpu)
  --seed S           (default 0)
  --train-rounds N   also time a state_offset training step (forward + backward) against an
                     inference forward of the same batch, N alternated rounds (default 3; 0 = skip)
  --decode-path-rounds N   also time the scheduler's decode step straight through the model against
                     the bucketed decoder (replayed as CUDA graphs on --device cuda, eager on the
                     CPU), N alternated rounds with mixed adapters (default 3; 0 = skip)
  --json [FILE]      also print JSON to stdout, or write it to FILE
  --threads N        compute threads (default: hardware cores)
)"}},
      {"train",
       {run_train, "train an adapter (or, --methods full, every weight) on JSONL or a named data set",
        R"(statetune-engine train [--model DIR] (--data FILE.jsonl | --dataset NAME) --out ADAPTER [...]
Trains an adapter of the frozen model: loss on the completion tokens of prompt + separator +
completion + <|endoftext|>; AdamW, linear decay, gradient clipping 1.0. Ctrl-C stops after a step.
  --model DIR            checkpoint folder (default: the shipped models/default, or $STATETUNE_MODEL)
  --data FILE.jsonl      {"prompt": ..., "completion": ...} lines
  --dataset NAME         a named set: glue/rte (or rte), sst2, cola, mrpc, qnli, qqp, mnli, samsum, dart,
                         spider (read from --datasets-dir, default shared/datasets); --split (train)
  --val-data FILE        validation JSONL, or --val-split NAME (named sets), or
  --val-fraction F       hold out F of the training examples (default 0: no validation)
  --max-examples N       train on N examples of a seeded shuffle (default all)
  --max-val-examples N   (default 200)
  --out FILE             adapter file to write
  --methods LIST         state_offset,output_offset,initial_state (default state_offset)
  --lr X                 learning rate of every method, or per method: --lr-state-offset (4e-4),
                         --lr-output-offset (2e-3), --lr-initial-state (1e-3)
  --epochs N (10)  --batch-size B (4)  --max-length L (512)  --max-steps N  --warmup-steps N (0)
  --grad-clip X (1.0)  --weight-decay X (0)  --seed S (0)  --no-shuffle  --separator TEXT ("\n###\n")
  --eval-every N         validate every N steps (default: every epoch)
  --patience N           early stopping after N validations without improvement (default off)
  --checkpoint-dir DIR   checkpoints (adapter + optimizer + step); --checkpoint-every N; --resume
  --log-every N          progress line every N steps (default 10)
  --name, --version      adapter metadata;  --adapter-dtype f32|bf16 on disk (default f32)
  --dtype T              base compute dtype f32|bf16 (default f32)
  --tokenizer PATH  --threads N

statetune-engine train --methods full --model DIR --data TEXT.jsonl --heldout-data TEXT.jsonl --out DIR
Trains EVERY weight (pretraining / full fine-tuning) on {"text": ...} lines (documents joined by
<|endoftext|>), next-token loss on random windows; AdamW (betas 0.9/0.95, decay on matrices), warm-up
then cosine; writes a Hugging Face folder (config.json, model.safetensors, tokenizer.json,
training_log.json), rewritten at every evaluation. --model is the starting point (e.g. init-model).
  --max-length L (128)  --batch-size B (8)  --max-steps N (1000)  --max-seconds S (wall-clock budget:
  the cosine runs over time and training stops when it is spent)  --lr X (2e-3)  --min-lr-ratio X (0.1)
  --warmup-steps N (100)  --weight-decay X (0.1)  --grad-clip X (1.0)  --seed S (0)
  --eval-every N (100)  --eval-windows N (64)  --log-every N (10)  --max-tokens N (training stream cap)
  --save-dtype bf16|f16|f32 (bf16)  --device cpu|cuda[:i] (cpu)  --tokenizer PATH  --threads N
)"}},
      {"eval",
       {run_eval, "generate on a data set and print the task metric",
        R"(statetune-engine eval [--model DIR] [--adapter FILE] (--dataset NAME | --data FILE.jsonl) [...]
Greedy generation (prompt + separator), scored with the task's metrics (GLUE accuracy / MCC / F1,
SAMSum ROUGE, DART BLEU, Spider exact match; JSONL data: exact match).
  --model DIR (default: models/default or $STATETUNE_MODEL)  --adapter FILE (default none: the base model)
  --dataset NAME  --split S (validation)  --datasets-dir DIR  |  --data FILE.jsonl
  --max-examples N       the first N examples (default all)
  --max-new-tokens N     (default: per task)   --batch-size B (16)   --max-prompt-tokens N (1024)
  --separator TEXT  --show N (print N predictions)  --json FILE  --dtype f32|bf16  --tokenizer PATH
  --threads N
)"}},
  };
  return table;
}

void print_usage(std::FILE* to) {
  std::fprintf(to, "usage: statetune-engine <subcommand> [--flags]\n\nsubcommands:\n");
  for (const auto& [name, cmd] : commands()) {
    std::fprintf(to, "  %-14s %s\n", name.c_str(), cmd.summary);
  }
  std::fprintf(to, "\nstatetune-engine <subcommand> --help shows its flags.\n");
}

}  // namespace

int apply_threads(CliArgs& args) {
  const unsigned hw = std::thread::hardware_concurrency();
  const int64_t n = args.integer("threads", hw == 0 ? 1 : static_cast<int64_t>(hw));
  if (n < 1 || n > 1024) throw UsageError("--threads expects 1..1024, got " + std::to_string(n));
  at::set_num_threads(static_cast<int>(n));
  return static_cast<int>(n);
}

at::Device parse_device(const std::string& value) {
  try {
    return at::Device(value);
  } catch (const std::exception&) {
    throw UsageError("--device expects cpu or cuda[:i], got '" + value + "'");
  }
}

at::ScalarType parse_dtype(const std::string& flag, const std::string& value,
                           const std::string& allowed) {
  at::ScalarType t;
  std::string shortname;
  if (value == "f32" || value == "fp32" || value == "float32") {
    t = at::kFloat, shortname = "f32";
  } else if (value == "bf16" || value == "bfloat16") {
    t = at::kBFloat16, shortname = "bf16";
  } else if (value == "f16" || value == "fp16" || value == "float16") {
    t = at::kHalf, shortname = "f16";
  } else {
    throw UsageError("--" + flag + " expects " + allowed + ", got '" + value + "'");
  }
  const std::string bar = "|" + allowed + "|";
  if (bar.find("|" + shortname + "|") == std::string::npos) {
    throw UsageError("--" + flag + " expects " + allowed + ", got '" + value + "'");
  }
  return t;
}

engine::MambaConfig config_from_shape(int64_t d_model, int64_t n_layer, int64_t vocab,
                                      int64_t d_state, int64_t expand, int64_t d_conv,
                                      const std::string& dt_rank) {
  auto positive = [](const char* flag, int64_t v) {
    if (v < 1) throw UsageError(std::string("--") + flag + " must be >= 1, got " + std::to_string(v));
  };
  positive("d-model", d_model);
  positive("n-layer", n_layer);
  positive("vocab", vocab);
  positive("d-state", d_state);
  positive("expand", expand);
  positive("d-conv", d_conv);
  nlohmann::json j = {
      {"model_type", "mamba"},
      {"architectures", {"MambaForCausalLM"}},
      {"hidden_size", d_model},
      {"num_hidden_layers", n_layer},
      {"vocab_size", vocab},
      {"state_size", d_state},
      {"expand", expand},
      {"intermediate_size", expand * d_model},
      {"conv_kernel", d_conv},
      {"pad_vocab_size_multiple", 8},
      {"use_bias", false},
      {"use_conv_bias", true},
      {"tie_word_embeddings", true},
      {"layer_norm_epsilon", 1e-5},
      {"bos_token_id", 0},
      {"eos_token_id", 0},
      {"pad_token_id", 0},
  };
  if (dt_rank == "auto") {
    j["time_step_rank"] = (d_model + 15) / 16;
  } else {
    int64_t r = 0;
    try {
      size_t used = 0;
      r = std::stoll(dt_rank, &used);
      if (used != dt_rank.size()) throw std::invalid_argument(dt_rank);
    } catch (const std::exception&) {
      throw UsageError("--dt-rank expects an integer or auto, got '" + dt_rank + "'");
    }
    positive("dt-rank", r);
    j["time_step_rank"] = r;
  }
  return engine::MambaConfig::from_json(j);
}

std::filesystem::path default_tokenizer_path(const std::filesystem::path& model_dir) {
  if (!model_dir.empty() && std::filesystem::exists(model_dir / "tokenizer.json")) {
    return model_dir / "tokenizer.json";
  }
  if (const char* env = std::getenv("STATETUNE_SHARED_DIR"); env != nullptr && *env != '\0') {
    return std::filesystem::path(env) / "models" / "gpt-neox-20b-tokenizer.json";
  }
#ifdef STATETUNE_SHARED_DIR
  return std::filesystem::path(STATETUNE_SHARED_DIR) / "models" / "gpt-neox-20b-tokenizer.json";
#else
  return std::filesystem::path("../shared/models/gpt-neox-20b-tokenizer.json");
#endif
}

std::vector<int64_t> parse_token_list(const std::string& flag, const std::string& value) {
  std::vector<int64_t> out;
  size_t start = 0;
  while (start <= value.size()) {
    size_t comma = value.find(',', start);
    if (comma == std::string::npos) comma = value.size();
    const std::string item = value.substr(start, comma - start);
    if (!item.empty()) {
      try {
        size_t used = 0;
        const long long v = std::stoll(item, &used);
        if (used != item.size() || v < 0) throw std::invalid_argument(item);
        out.push_back(v);
      } catch (const std::exception&) {
        throw UsageError("--" + flag + " expects comma-separated token ids, got '" + item + "'");
      }
    }
    start = comma + 1;
  }
  if (out.empty()) throw UsageError("--" + flag + " is empty");
  return out;
}

}  // namespace statetune::tools

int main(int argc, char** argv) {
  using namespace statetune::tools;
  if (argc < 2) {
    print_usage(stderr);
    return 2;
  }
  const std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    print_usage(stdout);
    return 0;
  }
  const auto it = commands().find(name);
  if (it == commands().end()) {
    std::fprintf(stderr, "statetune-engine: unknown subcommand '%s'\n\n", name.c_str());
    print_usage(stderr);
    return 2;
  }
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::fputs(it->second.help, stdout);
      return 0;
    }
  }
  try {
    CliArgs args(argc - 2, argv + 2);
    if (!args.positional().empty()) {
      throw UsageError("unexpected argument '" + args.positional().front() + "' (flags are --name value)");
    }
    return it->second.run(args);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "statetune-engine %s: %s\n(see statetune-engine %s --help)\n", name.c_str(),
                 e.what(), name.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "statetune-engine %s: error: %s\n", name.c_str(), e.what());
    return 1;
  }
}
