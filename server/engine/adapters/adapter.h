// A state-based adapter (docs/adapter-math.md): per-layer tensors that shift what the
// frozen Mamba-1 base reads out of its SSM state, plus the metadata that ties it to that base.
//
// On disk an adapter is one safetensors file:
//   tensors   layers.{i}.state_offset  [D, N]   (for every layer i in [0, n_layer))
//             layers.{i}.output_offset [D]
//             layers.{i}.initial_state [D, N]
//             stored as F32 or BF16; loading always gives fp32.
//   metadata  format "statetune-adapter", format_version "1", methods "state_offset,output_offset",
//             base (ModelFingerprint JSON), created_unix, created_iso (UTC), name, version,
//             extra (JSON object: training configuration, eval results, ...).
// Loading validates all of it and refuses, with a message naming the file and the problem, anything
// that would make the model silently compute something else.
#pragma once

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "server/engine/model/model_config.h"

namespace statetune::engine {

// The method ids of the doc's table, in their canonical order.
inline constexpr const char* kStateOffset = "state_offset";
inline constexpr const char* kOutputOffset = "output_offset";
inline constexpr const char* kInitialState = "initial_state";
inline constexpr const char* kAdapterFormatTag = "statetune-adapter";
inline constexpr int kAdapterFormatVersion = 1;

// Checks every name is a known method id, drops duplicates and returns them in canonical order.
// Throws std::invalid_argument naming the unknown id and the valid ones.
std::vector<std::string> normalize_methods(const std::vector<std::string>& methods);
// "a,b" <-> {"a", "b"}; parse_methods normalizes (and so validates).
std::vector<std::string> parse_methods(const std::string& comma_list);
std::string join_methods(const std::vector<std::string>& methods);

struct Adapter {
  std::string name;
  std::string version;
  std::vector<std::string> methods;  // canonical order; says which tensors below are defined
  ModelFingerprint base;             // the base model it was trained on
  at::Tensor state_offset;           // [n_layer, D, N] fp32 CPU, or undefined
  at::Tensor output_offset;          // [n_layer, D] fp32 CPU, or undefined
  at::Tensor initial_state;          // [n_layer, D, N] fp32 CPU, or undefined
  nlohmann::json extra_metadata = nlohmann::json::object();  // training config, eval results, ...
  int64_t created_unix = 0;

  bool has(const std::string& method) const;
  // Trainable parameters the adapter carries (sum of its tensors' sizes).
  int64_t parameter_count() const;
};

// Checks an in-memory adapter: methods known and matching exactly the defined tensors, shapes against
// adapter.base's dims, fp32, finite. Throws std::runtime_error naming `source` and the problem.
void validate_adapter(const Adapter& adapter, const std::string& source = "adapter");

// Throws std::runtime_error when `adapter` was trained on a different base model than `base`, with a
// message saying what differs (e.g. "d_inner 1536 vs 2048" or the weights hash).
void check_compatible(const Adapter& adapter, const ModelFingerprint& base);

// The adapter's file bytes (validated first). disk_dtype: at::kFloat or at::kBFloat16.
std::string encode_adapter(const Adapter& adapter, at::ScalarType disk_dtype = at::kFloat);
// Writes encode_adapter's bytes atomically (temp file + fsync + rename), so an invalid adapter never
// reaches the disk.
void save_adapter(const Adapter& adapter, const std::filesystem::path& path,
                  at::ScalarType disk_dtype = at::kFloat);

// Reads and fully validates a file (format tag and version, method names, every layer present with
// the shape the recorded base implies, no stray tensors, finite values). Tensors come back fp32 CPU.
// Throws std::runtime_error naming the file and the problem.
Adapter load_adapter(const std::filesystem::path& path);
// The same checks for file bytes already in memory (an upload), read in place without a copy;
// `source` names them in errors.
Adapter parse_adapter(std::string_view bytes, const std::string& source);

// All-zero tensors for `methods`: reproduces the base model exactly.
Adapter zero_adapter(const MambaConfig& config, const ModelFingerprint& base,
                     const std::vector<std::string>& methods);
// Normal(0, scale) tensors from a seeded generator (same seed -> same adapter), for `init-adapter`
// and for tests that need an adapter with a visible effect.
Adapter random_adapter(const MambaConfig& config, const ModelFingerprint& base,
                       const std::vector<std::string>& methods, uint64_t seed, double scale);

// Trainable parameters of `methods` for a model of `config`: n_layer * (D*N | D | D*N) summed.
// Mamba-130M: state_offset 589,824, output_offset 36,864.
int64_t trainable_parameter_count(const std::vector<std::string>& methods, const MambaConfig& config);

}  // namespace statetune::engine
