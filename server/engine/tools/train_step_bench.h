// The training-step part of `statetune-engine bench`: how much a state_offset training step (forward
// with autograd + backward, loss on every position) costs next to a plain inference forward of the same
// tokens.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "server/engine/model/mamba_model.h"

namespace statetune::tools {

struct TrainStepTimes {
  std::vector<double> forward_s;  // MambaModel::prefill of the batch (inference path), per round
  std::vector<double> step_s;     // TrainableMamba forward + cross-entropy + backward, per round
};

// `rounds` alternated measurements (forward, step | step, forward | ...) after one warm-up of each, on
// `tokens` [B, L] (every row full length).
TrainStepTimes measure_train_step(engine::MambaModel& model, const at::Tensor& tokens, int64_t rounds);

}  // namespace statetune::tools
