#include "server/engine/tools/train_step_bench.h"

#include <ATen/core/grad_mode.h>

#include <chrono>

#include "server/engine/trainer/trainable_mamba.h"

namespace statetune::tools {

TrainStepTimes measure_train_step(engine::MambaModel& model, const at::Tensor& tokens, int64_t rounds) {
  using Clock = std::chrono::steady_clock;
  const engine::MambaConfig& c = model.config();
  const int64_t B = tokens.size(0), L = tokens.size(1);
  const at::Tensor lengths = at::full({B}, L, at::kLong);
  const at::Tensor rows = at::arange(B, at::TensorOptions().dtype(at::kLong)).to(model.device());
  engine::StateCache cache(c, B, model.device());
  engine::trainer::TrainableMamba net(model);
  engine::trainer::AdapterTensors adapter;
  adapter.state_offset = at::zeros({c.n_layer, c.d_inner, c.d_state},
                                   at::TensorOptions().dtype(at::kFloat).device(model.device()));
  adapter.state_offset.set_requires_grad(true);
  const at::Tensor targets = tokens.roll(-1, 1).reshape({B * L}).to(model.device());

  auto forward = [&] {
    at::NoGradGuard no_grad;
    const auto t0 = Clock::now();
    const at::Tensor logits = model.prefill(tokens, lengths, rows, {}, {}, cache, false, /*all_logits=*/true);
    (void)logits.sum().item<double>();
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  auto step = [&] {
    const auto t0 = Clock::now();
    adapter.state_offset.mutable_grad() = at::Tensor();
    const at::Tensor hid = net.hidden(tokens, lengths, adapter);
    const at::Tensor loss = at::cross_entropy_loss(net.logits(hid.reshape({B * L, hid.size(2)})), targets);
    loss.backward();
    (void)adapter.state_offset.grad().sum().item<double>();
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  forward();
  step();
  TrainStepTimes t;
  for (int64_t r = 0; r < rounds; ++r) {
    if (r % 2 == 0) {
      t.forward_s.push_back(forward());
      t.step_s.push_back(step());
    } else {
      t.step_s.push_back(step());
      t.forward_s.push_back(forward());
    }
  }
  return t;
}

}  // namespace statetune::tools
