// The optimizer step both trainers take (the adapter trainer and the full-parameter trainer): global
// gradient-norm clipping and AdamW, with torch.nn.utils.clip_grad_norm_'s and torch.optim.AdamW's
// arithmetic, so a run here can be checked against the same recipe in PyTorch.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace statetune::engine::trainer {

// Global L2 norm over the defined gradients of `params`, before clipping. When max_norm > 0 the
// gradients are then scaled in place by max_norm / (norm + 1e-6) whenever that factor is below 1: the
// rule of torch.nn.utils.clip_grad_norm_ (which clamps the factor at 1). max_norm <= 0: no clipping.
// Call under at::NoGradGuard.
double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm);

struct AdamWHyper {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
};

// One parameter's optimizer state. `denom` is a workspace for the update's denominator, allocated on
// first use and kept: for the full model's embedding (51 MB) a fresh tensor every step costs its page
// faults again.
struct AdamWMoments {
  at::Tensor exp_avg, exp_avg_sq, denom;

  static AdamWMoments zeros_like(const at::Tensor& param);
};

// One AdamW step on `param` in place, from its current gradient (skipped when it has none): decoupled
// weight decay, then the bias-corrected Adam update. `step` counts from 1. Call under at::NoGradGuard.
void adamw_step(at::Tensor& param, AdamWMoments& moments, const AdamWHyper& hyper, double lr,
                double weight_decay, int64_t step);

}  // namespace statetune::engine::trainer
