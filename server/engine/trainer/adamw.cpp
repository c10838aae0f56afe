#include "server/engine/trainer/adamw.h"

#include <cmath>

namespace statetune::engine::trainer {

double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm) {
  double sq = 0;
  for (const at::Tensor& p : params) {
    if (!p.grad().defined()) continue;
    const double n = p.grad().norm().item<double>();
    sq += n * n;
  }
  const double norm = std::sqrt(sq);
  const double factor = max_norm > 0 ? max_norm / (norm + 1e-6) : 1.0;
  if (factor < 1.0) {
    for (const at::Tensor& p : params) {
      if (p.grad().defined()) p.grad().mul_(factor);  // callers clear the gradient before the next backward
    }
  }
  return norm;
}

AdamWMoments AdamWMoments::zeros_like(const at::Tensor& param) {
  return AdamWMoments{at::zeros_like(param), at::zeros_like(param), at::Tensor()};
}

void adamw_step(at::Tensor& param, AdamWMoments& m, const AdamWHyper& h, double lr, double weight_decay,
                int64_t step) {
  const at::Tensor& g = param.grad();
  if (!g.defined()) return;
  const double bc1 = 1.0 - std::pow(h.beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(h.beta2, static_cast<double>(step));
  if (weight_decay != 0) param.mul_(1.0 - lr * weight_decay);
  m.exp_avg.mul_(h.beta1).add_(g, 1.0 - h.beta1);
  m.exp_avg_sq.mul_(h.beta2).addcmul_(g, g, 1.0 - h.beta2);
  if (!m.denom.defined()) m.denom = at::empty_like(param);
  at::sqrt_out(m.denom, m.exp_avg_sq).div_(std::sqrt(bc2)).add_(h.eps);
  param.addcdiv_(m.exp_avg, m.denom, -lr / bc1);
}

}  // namespace statetune::engine::trainer
