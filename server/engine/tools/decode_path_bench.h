// The decode-path part of `statetune-engine bench`: the scheduler's decode step (tokens from the host,
// logits' argmax back to it) straight through MambaModel::decode against the bucketed decoder on
// fixed buffers, replayed as CUDA graphs on a CUDA model (eager elsewhere, where it measures what
// bucketing alone costs). Both run the same mixed-adapter batch, alternated round by round.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "server/engine/model/adapter_pool_view.h"
#include "server/engine/model/mamba_model.h"

namespace statetune::tools {

struct DecodePathTimes {
  std::string bucketed_name;         // "cuda_graphs" or "bucketed"
  std::vector<double> direct_tps;    // decode tokens/s per round, MambaModel::decode
  std::vector<double> bucketed_tps;  // the same through BucketedDecoder
  double max_logit_difference = 0;   // between the two paths' logits after the same steps
};

// prompt: [B, L] on the CPU; slots: [B] int32 on the CPU (adapters of `view`).
DecodePathTimes measure_decode_paths(engine::MambaModel& model, const engine::AdapterPoolView& view,
                                     const at::Tensor& slots, const at::Tensor& prompt, int64_t steps,
                                     int64_t rounds);

}  // namespace statetune::tools
