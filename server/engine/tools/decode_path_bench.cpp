#include "server/engine/tools/decode_path_bench.h"

#include <chrono>
#include <memory>

#include "server/engine/model/bucketed_decoder.h"

namespace statetune::tools {

DecodePathTimes measure_decode_paths(engine::MambaModel& model, const engine::AdapterPoolView& view,
                                     const at::Tensor& slots, const at::Tensor& prompt, int64_t steps,
                                     int64_t rounds) {
  const int64_t B = prompt.size(0), L = prompt.size(1);
  const at::Device device = model.device();
  const bool graphs = device.is_cuda();
  // Rows 0..B-1 for the sequences (B is a bucket: no padding rows, but the decoder asks for them).
  engine::StateCache cache(model.config(), B, device, engine::BucketedDecoder::scratch_rows_needed(B));
  engine::BucketedDecoder bucketed(model, cache, B, graphs);
  const at::Tensor rows = at::arange(B, at::TensorOptions().dtype(at::kLong));
  const at::Tensor lengths = at::full({B}, L, at::TensorOptions().dtype(at::kLong));
  const at::Tensor device_slots = slots.to(device);
  at::Tensor direct_logits;  // reused like the scheduler's

  // One round: prefill, then `steps` steps of one path; returns decode tokens/s and the last logits.
  auto run = [&](bool use_bucketed, at::Tensor& last) {
    at::Tensor logits = model.prefill(prompt.to(device), lengths, rows.to(device), device_slots, view, cache);
    at::Tensor next = logits.argmax(-1).to(at::kCPU);
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t s = 0; s < steps; ++s) {
      logits = use_bucketed ? bucketed.decode(next, rows, slots, view)
                            : model.decode(next, rows, slots, view, cache, &direct_logits);
      next = logits.argmax(-1).to(at::kCPU);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    last = logits.to(at::kCPU, at::kFloat);
    return static_cast<double>(B * steps) / seconds;
  };

  DecodePathTimes out;
  out.bucketed_name = graphs ? "cuda_graphs" : "bucketed";
  at::Tensor a, b;
  run(false, a);  // warm-up; the bucketed path captures its graph here
  run(true, b);
  out.max_logit_difference = (a - b).abs().max().item<double>();
  for (int64_t r = 0; r < rounds; ++r) {
    const bool bucketed_first = (r % 2) == 1;
    const double first = run(bucketed_first, a), second = run(!bucketed_first, b);
    out.direct_tps.push_back(bucketed_first ? second : first);
    out.bucketed_tps.push_back(bucketed_first ? first : second);
  }
  return out;
}

}  // namespace statetune::tools
