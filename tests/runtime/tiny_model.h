// The tiny random Mamba the runtime tests serve: vocabulary 256 (in the GPT-NeoX tokenizer, two
// special tokens and then single bytes), small enough that a test generates hundreds of tokens in milliseconds.
#pragma once

#include <cstdint>

#include "server/engine/model/model_config.h"

namespace statetune::engine {

inline MambaConfig tiny_model_config(int64_t eos_token_id = 0) {
  MambaConfig c;
  c.d_model = 64;
  c.n_layer = 2;
  c.vocab_size = 256;
  c.d_state = 16;
  c.expand = 2;
  c.d_inner = 128;
  c.d_conv = 4;
  c.dt_rank = 4;
  c.eos_token_id = eos_token_id;
  return c;
}

}  // namespace statetune::engine
