#include "server/engine/model/model_config.h"

#include <stdexcept>
#include <type_traits>

namespace statetune::engine {
namespace {

// nlohmann converts a JSON float to an integer with a plain cast, which is undefined behaviour when it
// does not fit (an adapter upload whose base says "n_layer": 1e300): integer fields take integers only.
template <typename T>
bool fits(const nlohmann::json& value) {
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) return value.is_number_integer();
  return true;
}

[[noreturn]] void bad(const std::string& field, const std::string& why) {
  throw std::runtime_error("model config: field '" + field + "' " + why);
}

// Reads an optional field, converting type errors into a message naming the field.
template <typename T>
bool read(const nlohmann::json& j, const std::string& field, T& out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return false;
  if (!fits<T>(*it)) bad(field, "must be an integer, not " + it->dump());
  try {
    out = it->get<T>();
  } catch (const nlohmann::json::exception&) {
    bad(field, "has the wrong type (" + std::string(it->type_name()) + "): " + it->dump());
  }
  return true;
}

int64_t round_up(int64_t v, int64_t multiple) {
  if (multiple <= 1) return v;
  return (v + multiple - 1) / multiple * multiple;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// "auto" or a positive integer.
int64_t read_dt_rank(const nlohmann::json& j, const std::string& field, int64_t d_model) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return ceil_div(d_model, 16);
  if (it->is_string()) {
    if (it->get<std::string>() == "auto") return ceil_div(d_model, 16);
    bad(field, "must be \"auto\" or an integer, not " + it->dump());
  }
  if (!it->is_number_integer()) bad(field, "must be \"auto\" or an integer, not " + it->dump());
  return it->get<int64_t>();
}

void require_positive(const std::string& field, int64_t v) {
  if (v <= 0) bad(field, "must be positive, got " + std::to_string(v));
}

}  // namespace

MambaConfig MambaConfig::from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw std::runtime_error("model config: not a JSON object");
  MambaConfig c;
  int64_t raw_vocab = 0;
  if (j.contains("hidden_size")) {
    // transformers' MambaConfig.
    std::string model_type = "mamba";
    read(j, "model_type", model_type);
    if (model_type != "mamba") bad("model_type", "is '" + model_type + "'; only 'mamba' (Mamba-1) is supported");
    std::string act = "silu";
    read(j, "hidden_act", act);
    if (act != "silu") bad("hidden_act", "is '" + act + "'; only silu is supported");
    read(j, "hidden_size", c.d_model);
    if (!read(j, "num_hidden_layers", c.n_layer)) bad("num_hidden_layers", "is missing");
    if (!read(j, "vocab_size", raw_vocab)) bad("vocab_size", "is missing");
    read(j, "pad_vocab_size_multiple", c.pad_vocab_size_multiple);
    read(j, "state_size", c.d_state);
    read(j, "expand", c.expand);
    read(j, "conv_kernel", c.d_conv);
    read(j, "use_bias", c.proj_bias);
    read(j, "use_conv_bias", c.conv_bias);
    read(j, "layer_norm_epsilon", c.norm_eps);
    read(j, "tie_word_embeddings", c.tie_embeddings);
    c.dt_rank = read_dt_rank(j, "time_step_rank", c.d_model);
    c.d_inner = c.expand * c.d_model;
    read(j, "intermediate_size", c.d_inner);
    read(j, "bos_token_id", c.bos_token_id);
    read(j, "eos_token_id", c.eos_token_id);
    read(j, "pad_token_id", c.pad_token_id);
  } else if (j.contains("d_model")) {
    // mamba_ssm's MambaConfig.
    if (!read(j, "d_model", c.d_model)) bad("d_model", "is missing");
    if (!read(j, "n_layer", c.n_layer)) bad("n_layer", "is missing");
    if (!read(j, "vocab_size", raw_vocab)) bad("vocab_size", "is missing");
    read(j, "pad_vocab_size_multiple", c.pad_vocab_size_multiple);
    read(j, "tie_embeddings", c.tie_embeddings);
    read(j, "norm_epsilon", c.norm_eps);
    bool rms_norm = true;
    read(j, "rms_norm", rms_norm);
    if (!rms_norm) bad("rms_norm", "is false; only RMSNorm Mamba models are supported");
    int64_t d_intermediate = 0;
    read(j, "d_intermediate", d_intermediate);
    if (d_intermediate != 0) bad("d_intermediate", "is non-zero (MLP blocks) which Mamba-1 models lack");
    if (j.contains("attn_layer_idx") && j["attn_layer_idx"].is_array() && !j["attn_layer_idx"].empty()) {
      bad("attn_layer_idx", "lists attention layers; only pure Mamba-1 models are supported");
    }
    nlohmann::json ssm = nlohmann::json::object();
    if (j.contains("ssm_cfg") && !j["ssm_cfg"].is_null()) {
      if (!j["ssm_cfg"].is_object()) bad("ssm_cfg", "is not an object");
      ssm = j["ssm_cfg"];
    }
    std::string layer = "Mamba1";
    read(ssm, "layer", layer);
    if (layer != "Mamba1") bad("ssm_cfg.layer", "is '" + layer + "'; only Mamba1 is supported");
    read(ssm, "d_state", c.d_state);
    read(ssm, "d_conv", c.d_conv);
    read(ssm, "expand", c.expand);
    read(ssm, "conv_bias", c.conv_bias);
    read(ssm, "bias", c.proj_bias);
    c.dt_rank = read_dt_rank(ssm, "dt_rank", c.d_model);
    c.d_inner = c.expand * c.d_model;
  } else {
    throw std::runtime_error(
        "model config: neither 'hidden_size' (Hugging Face MambaConfig) nor 'd_model' (mamba_ssm) is "
        "present");
  }
  require_positive("d_model", c.d_model);
  require_positive("n_layer", c.n_layer);
  require_positive("vocab_size", raw_vocab);
  require_positive("d_state", c.d_state);
  require_positive("expand", c.expand);
  require_positive("d_conv", c.d_conv);
  require_positive("dt_rank", c.dt_rank);
  require_positive("d_inner", c.d_inner);
  if (c.pad_vocab_size_multiple < 1) c.pad_vocab_size_multiple = 1;
  if (!(c.norm_eps > 0)) bad("layer_norm_epsilon", "must be positive");
  c.unpadded_vocab_size = raw_vocab;
  c.vocab_size = round_up(raw_vocab, c.pad_vocab_size_multiple);
  return c;
}

nlohmann::json MambaConfig::to_json() const {
  return {
      {"architectures", {"MambaForCausalLM"}},
      {"model_type", "mamba"},
      {"hidden_size", d_model},
      {"num_hidden_layers", n_layer},
      {"vocab_size", vocab_size},
      {"pad_vocab_size_multiple", pad_vocab_size_multiple},
      {"state_size", d_state},
      {"expand", expand},
      {"conv_kernel", d_conv},
      {"time_step_rank", dt_rank},
      {"intermediate_size", d_inner},
      {"use_bias", proj_bias},
      {"use_conv_bias", conv_bias},
      {"layer_norm_epsilon", norm_eps},
      {"tie_word_embeddings", tie_embeddings},
      {"hidden_act", "silu"},
      {"residual_in_fp32", true},
      {"bos_token_id", bos_token_id},
      {"eos_token_id", eos_token_id},
      {"pad_token_id", pad_token_id},
  };
}

int64_t MambaConfig::parameter_count() const {
  const int64_t M = d_model, D = d_inner, N = d_state, R = dt_rank, K = d_conv;
  int64_t layer = M;                                  // norm
  layer += 2 * D * M + (proj_bias ? 2 * D : 0);       // in_proj
  layer += D * K + (conv_bias ? D : 0);               // conv1d
  layer += (R + 2 * N) * D;                           // x_proj
  layer += R * D + D;                                 // dt_proj
  layer += D * N + D;                                 // A_log, D
  layer += M * D + (proj_bias ? M : 0);               // out_proj
  int64_t total = vocab_size * M + n_layer * layer + M;  // embeddings, layers, norm_f
  if (!tie_embeddings) total += vocab_size * M;
  return total;
}

// ---------------------------------------------------------------------------------------------
ModelFingerprint ModelFingerprint::of(const MambaConfig& c, std::string weights_sha256) {
  ModelFingerprint f;
  f.d_model = c.d_model;
  f.n_layer = c.n_layer;
  f.d_inner = c.d_inner;
  f.d_state = c.d_state;
  f.d_conv = c.d_conv;
  f.dt_rank = c.dt_rank;
  f.vocab_size = c.vocab_size;
  f.weights_sha256 = std::move(weights_sha256);
  return f;
}

nlohmann::json ModelFingerprint::to_json() const {
  return {{"architecture", architecture}, {"d_model", d_model},   {"n_layer", n_layer},
          {"d_inner", d_inner},           {"d_state", d_state},   {"d_conv", d_conv},
          {"dt_rank", dt_rank},           {"vocab_size", vocab_size}, {"weights_sha256", weights_sha256}};
}

ModelFingerprint ModelFingerprint::from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw std::runtime_error("model fingerprint: not a JSON object");
  ModelFingerprint f;
  auto need = [&](const char* field, auto& out) {
    auto it = j.find(field);
    if (it == j.end()) throw std::runtime_error(std::string("model fingerprint: field '") + field + "' is missing");
    try {
      using T = std::decay_t<decltype(out)>;
      if (!fits<T>(*it)) throw std::invalid_argument("not an integer");
      out = it->get<T>();
    } catch (const std::exception&) {
      throw std::runtime_error(std::string("model fingerprint: field '") + field + "' has the wrong type");
    }
  };
  need("architecture", f.architecture);
  need("d_model", f.d_model);
  need("n_layer", f.n_layer);
  need("d_inner", f.d_inner);
  need("d_state", f.d_state);
  need("d_conv", f.d_conv);
  need("dt_rank", f.dt_rank);
  need("vocab_size", f.vocab_size);
  need("weights_sha256", f.weights_sha256);
  return f;
}

std::string ModelFingerprint::mismatch(const ModelFingerprint& o) const {
  if (architecture != o.architecture) return "architecture " + architecture + " vs " + o.architecture;
  const std::pair<const char*, std::pair<int64_t, int64_t>> dims[] = {
      {"d_model", {d_model, o.d_model}}, {"n_layer", {n_layer, o.n_layer}},
      {"d_inner", {d_inner, o.d_inner}}, {"d_state", {d_state, o.d_state}},
      {"d_conv", {d_conv, o.d_conv}},    {"dt_rank", {dt_rank, o.dt_rank}},
      {"vocab_size", {vocab_size, o.vocab_size}}};
  for (const auto& [name, v] : dims) {
    if (v.first != v.second) {
      return std::string(name) + " " + std::to_string(v.first) + " vs " + std::to_string(v.second);
    }
  }
  if (weights_sha256 != o.weights_sha256) {
    return "weights sha256 " + weights_sha256.substr(0, 12) + "... vs " + o.weights_sha256.substr(0, 12) +
           "... (same shape, other weights)";
  }
  return "";
}

}  // namespace statetune::engine
