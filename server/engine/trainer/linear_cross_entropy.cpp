#include "server/engine/trainer/linear_cross_entropy.h"

#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

namespace statetune::engine::trainer {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct LossAndGrads {
  at::Tensor loss;     // 0-dim mean
  at::Tensor d_hidden;  // [N, M] or undefined
  at::Tensor d_weight;  // [V, M] or undefined
};

void check_inputs(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets, int64_t chunk) {
  TORCH_CHECK(hidden.dim() == 2 && weight.dim() == 2 && hidden.size(1) == weight.size(1),
              "linear_cross_entropy: hidden [N, M] and weight [V, M] expected, got ", hidden.sizes(), " and ",
              weight.sizes());
  TORCH_CHECK(hidden.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat,
              "linear_cross_entropy: fp32 hidden and weight expected");
  TORCH_CHECK(hidden.device() == weight.device(), "linear_cross_entropy: hidden and weight on different devices");
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == hidden.size(0) && targets.scalar_type() == at::kLong,
              "linear_cross_entropy: targets must be int64 [N] with N = ", hidden.size(0));
  TORCH_CHECK(hidden.size(0) >= 1, "linear_cross_entropy: no rows");
  TORCH_CHECK(chunk >= 1, "linear_cross_entropy: chunk_rows must be >= 1");
  const auto [lo, hi] = at::aminmax(targets);
  TORCH_CHECK(lo.item<int64_t>() >= 0 && hi.item<int64_t>() < weight.size(0),
              "linear_cross_entropy: a target is outside [0, ", weight.size(0), ")");
}

LossAndGrads compute(const at::Tensor& hidden_in, const at::Tensor& weight_in, const at::Tensor& targets_in,
                     int64_t chunk, bool want_d_hidden, bool want_d_weight) {
  const at::Tensor hidden = hidden_in.contiguous(), weight = weight_in.contiguous();
  const at::Tensor targets = targets_in.to(hidden.device()).contiguous();
  const int64_t N = hidden.size(0), V = weight.size(0);
  const int64_t C = std::min(chunk, N);
  const bool grads = want_d_hidden || want_d_weight;
  LossAndGrads r;
  if (want_d_hidden) r.d_hidden = at::empty_like(hidden);
  if (want_d_weight) r.d_weight = at::zeros_like(weight);
  at::Tensor work = at::empty({C, V}, hidden.options());
  at::Tensor total = at::zeros({}, hidden.options().dtype(at::kDouble));
  for (int64_t r0 = 0; r0 < N; r0 += C) {
    const int64_t n = std::min(C, N - r0);
    const at::Tensor h = hidden.narrow(0, r0, n);
    const at::Tensor t = targets.narrow(0, r0, n).unsqueeze(1);
    at::Tensor logits = work.narrow(0, 0, n);
    at::mm_out(logits, h, weight.t());
    const at::Tensor lse = at::logsumexp(logits, {1}, /*keepdim=*/true);  // [n, 1]
    total.add_((lse - logits.gather(1, t)).sum());
    if (!grads) continue;
    // d loss / d logits = (softmax - one_hot) / N, built in the workspace in place.
    logits.sub_(lse).exp_();
    logits.scatter_add_(1, t, at::full({n, 1}, -1.0, logits.options()));
    logits.mul_(1.0 / static_cast<double>(N));
    if (want_d_hidden) {
      at::Tensor dh = r.d_hidden.narrow(0, r0, n);
      at::mm_out(dh, logits, weight);
    }
    if (want_d_weight) r.d_weight.addmm_(logits.t(), h);
  }
  r.loss = total.div_(static_cast<double>(N)).to(at::kFloat);
  return r;
}

class LinearCrossEntropyFunction : public torch::autograd::Function<LinearCrossEntropyFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, at::Tensor hidden, at::Tensor weight, at::Tensor targets,
                            int64_t chunk, bool want_d_hidden, bool want_d_weight) {
    LossAndGrads r = compute(hidden, weight, targets, chunk, want_d_hidden, want_d_weight);
    // Kept as plain data, not saved variables: backward scales them in place, and nothing else holds them.
    ctx->saved_data["d_hidden"] = r.d_hidden;
    ctx->saved_data["d_weight"] = r.d_weight;
    return r.loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    variable_list grads(6);
    const at::Tensor& g = grad_outputs[0];
    if (!g.defined()) return grads;
    at::Tensor dh = ctx->saved_data["d_hidden"].toTensor();
    at::Tensor dw = ctx->saved_data["d_weight"].toTensor();
    // The usual caller is loss.backward(): g == 1, and the gradients are handed over as they are.
    const bool unit = g.device().is_cpu() && g.item<float>() == 1.0f;
    if (dh.defined()) grads[0] = unit ? dh : dh.mul_(g);
    if (dw.defined()) grads[1] = unit ? dw : dw.mul_(g);
    ctx->saved_data.clear();
    return grads;
  }
};

}  // namespace

at::Tensor linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                int64_t chunk_rows) {
  check_inputs(hidden, weight, targets, chunk_rows);
  const bool track = at::GradMode::is_enabled();
  const bool want_d_hidden = track && hidden.requires_grad();
  const bool want_d_weight = track && weight.requires_grad();
  if (!want_d_hidden && !want_d_weight) {
    return compute(hidden, weight, targets, chunk_rows, false, false).loss;
  }
  return LinearCrossEntropyFunction::apply(hidden, weight, targets, chunk_rows, want_d_hidden, want_d_weight);
}

}  // namespace statetune::engine::trainer
