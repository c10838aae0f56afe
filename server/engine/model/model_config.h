// The dimensions of a Mamba-1 model, read from either config.json dialect, and the fingerprint that
// ties an adapter file to the exact base model it was trained on.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

namespace statetune::engine {

struct MambaConfig {
  int64_t d_model = 768;
  int64_t n_layer = 24;
  int64_t vocab_size = 50280;  // already padded to pad_vocab_size_multiple (the lm_head rows)
  int64_t d_state = 16;
  int64_t expand = 2;
  int64_t d_conv = 4;
  int64_t dt_rank = 48;  // "auto" = ceil(d_model / 16)
  int64_t d_inner = 1536;
  int64_t pad_vocab_size_multiple = 8;
  double norm_eps = 1e-5;
  bool conv_bias = true;
  bool proj_bias = false;  // in_proj / out_proj bias (HF use_bias)
  bool tie_embeddings = true;
  int64_t bos_token_id = 0;
  int64_t eos_token_id = 0;
  int64_t pad_token_id = 0;
  // vocab_size as config.json states it, before padding; the loader accepts an embedding of either
  // size (some checkpoints store the unpadded one).
  int64_t unpadded_vocab_size = 50280;

  // Accepts HF MambaConfig (hidden_size, num_hidden_layers, state_size, conv_kernel, time_step_rank,
  // intermediate_size, use_bias, use_conv_bias, layer_norm_epsilon, tie_word_embeddings) and the
  // mamba_ssm dialect (d_model, n_layer, ssm_cfg, tie_embeddings). vocab_size is rounded up to
  // pad_vocab_size_multiple. Throws std::runtime_error naming the offending field.
  static MambaConfig from_json(const nlohmann::json& j);
  // Writes the HF dialect (model_type "mamba", architectures ["MambaForCausalLM"]).
  nlohmann::json to_json() const;
  // Total parameter count of the base model.
  int64_t parameter_count() const;
};

// Architecture + dimensions + a hash of the weights. Adapters record it; loading one into a model with
// another fingerprint is refused with a message saying what differs.
struct ModelFingerprint {
  std::string architecture = "MambaForCausalLM";
  int64_t d_model = 0, n_layer = 0, d_inner = 0, d_state = 0, d_conv = 0, dt_rank = 0, vocab_size = 0;
  std::string weights_sha256;  // hex SHA-256 over every tensor: name, dtype, shape and bytes, in name order

  static ModelFingerprint of(const MambaConfig& config, std::string weights_sha256);
  nlohmann::json to_json() const;
  static ModelFingerprint from_json(const nlohmann::json& j);  // throws std::runtime_error
  // Empty when `other` is the same base model; otherwise a human sentence naming the first difference.
  std::string mismatch(const ModelFingerprint& other) const;
};

}  // namespace statetune::engine
