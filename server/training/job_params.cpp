#include "server/training/job_params.h"

#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "server/engine/adapters/adapter.h"

namespace statetune::training {
namespace {

// Protobuf's JSON mapping writes 64-bit integers as strings (and may write doubles as strings:
// "NaN", "Infinity"). A value that does not fit is the caller's error, named by its field.
template <typename T>
T get_number(const nlohmann::json& j, const char* key, T fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    if (it->is_string()) {
      const std::string& text = it->get_ref<const std::string&>();
      size_t used = 0;
      T value;
      if constexpr (std::is_same_v<T, double>) {
        value = std::stod(text, &used);
      } else if constexpr (std::is_same_v<T, uint64_t>) {
        if (text.empty() || text[0] == '-') throw std::out_of_range(key);
        value = std::stoull(text, &used);
      } else {
        value = std::stoll(text, &used);
      }
      if (used == text.size()) return value;
    } else if (it->is_number()) {
      if constexpr (std::is_same_v<T, double>) return it->get<double>();
      if (it->is_number_float()) throw std::out_of_range(key);
      if constexpr (std::is_same_v<T, uint64_t>) {
        if (it->is_number_unsigned()) return it->get<uint64_t>();
        if (it->get<int64_t>() >= 0) return static_cast<uint64_t>(it->get<int64_t>());
      } else {
        if (!it->is_number_unsigned() ||
            it->get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          return it->get<int64_t>();
        }
      }
    }
  } catch (const std::logic_error&) {
    // std::stoll's out_of_range / invalid_argument: reported below by field name.
  }
  throw std::invalid_argument(std::string(key) + " is not a number in range");
}
int64_t get_i64(const nlohmann::json& j, const char* key, int64_t fallback) {
  return get_number<int64_t>(j, key, fallback);
}
double get_f64(const nlohmann::json& j, const char* key, double fallback) {
  return get_number<double>(j, key, fallback);
}

}  // namespace

static JobParams parse_job_params_checked(const nlohmann::json& spec);

JobParams parse_job_params(const nlohmann::json& spec) {
  try {
    return parse_job_params_checked(spec);
  } catch (const nlohmann::json::exception& e) {
    // A field of the wrong JSON type (a stored spec edited by hand): the caller's error.
    throw std::invalid_argument(std::string("the job request has a field of the wrong type: ") +
                                e.what());
  }
}

static JobParams parse_job_params_checked(const nlohmann::json& spec) {
  JobParams p;
  p.dataset_id = spec.value("dataset_id", "");
  p.validation_dataset_id = spec.value("validation_dataset_id", "");
  p.adapter_name = spec.value("adapter_name", "");
  p.validation_split = get_f64(spec, "validation_split", 0);
  if (auto it = spec.find("methods"); it != spec.end()) {
    for (const auto& m : *it) p.methods.push_back(m.get<std::string>());
  }
  if (p.methods.empty()) p.methods = {engine::kStateOffset};
  p.methods = engine::normalize_methods(p.methods);  // throws on an unknown method
  const nlohmann::json hp = spec.value("hyperparameters", nlohmann::json::object());
  p.learning_rate = get_f64(hp, "learning_rate", 0);
  p.epochs = get_i64(hp, "epochs", 0);
  p.batch_size = get_i64(hp, "batch_size", 0);
  p.max_steps = get_i64(hp, "max_steps", 0);
  p.max_length = get_i64(hp, "max_length", 0);
  p.warmup_steps = get_i64(hp, "warmup_steps", 0);
  p.eval_every = get_i64(hp, "eval_every", 0);
  p.seed = get_number<uint64_t>(hp, "seed", 0);  // a uint64 in the proto: all 64 bits are valid
  p.early_stopping_patience = get_i64(hp, "early_stopping_patience", 0);
  p.checkpoint_every = get_i64(hp, "checkpoint_every", 0);
  if (p.epochs == 0) p.epochs = 3;
  if (p.batch_size == 0) p.batch_size = 4;
  if (p.max_length == 0) p.max_length = 512;
  auto range = [](bool ok, const std::string& what) {
    if (!ok) throw std::invalid_argument(what);
  };
  range(p.learning_rate >= 0 && p.learning_rate <= 1,
        "hyperparameters.learning_rate must be in [0, 1]");
  range(p.epochs >= 1 && p.epochs <= 1000, "hyperparameters.epochs must be in [1, 1000]");
  range(p.batch_size >= 1 && p.batch_size <= 256, "hyperparameters.batch_size must be in [1, 256]");
  range(p.max_steps >= 0, "hyperparameters.max_steps must be >= 0");
  range(p.max_length >= 8 && p.max_length <= 8192,
        "hyperparameters.max_length must be in [8, 8192]");
  range(p.warmup_steps >= 0 && p.eval_every >= 0 && p.early_stopping_patience >= 0 &&
            p.checkpoint_every >= 0,
        "hyperparameters.warmup_steps, eval_every, early_stopping_patience and checkpoint_every "
        "must be >= 0");
  range(p.validation_split >= 0 && p.validation_split <= 0.5,
        "validation_split must be in [0, 0.5]");
  range(p.validation_split == 0 || p.validation_dataset_id.empty(),
        "give either validation_dataset_id or validation_split, not both");
  return p;
}

}  // namespace statetune::training
