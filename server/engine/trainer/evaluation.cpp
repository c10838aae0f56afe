#include "server/engine/trainer/evaluation.h"

#include <algorithm>
#include <chrono>
#include <numeric>
#include <stdexcept>

#include "server/engine/tasks/classification_metrics.h"
#include "server/engine/tasks/task_metric.h"

namespace statetune::engine::trainer {
namespace {

// [2, ...] = [zero adapter, the adapter], so every row reads slot 1.
AdapterPoolView two_slot_view(const Adapter& a, at::Device device) {
  AdapterPoolView v;
  auto pair = [&](const at::Tensor& t) {
    if (!t.defined()) return at::Tensor();
    return at::stack({at::zeros_like(t), t}).to(device).contiguous();
  };
  v.state_offset = pair(a.state_offset);
  v.output_offset = pair(a.output_offset);
  v.initial_state = pair(a.initial_state);
  return v;
}

std::vector<std::string> generate_impl(MambaModel& model, const Tokenizer& tokenizer, const Adapter* adapter,
                                       const std::vector<std::string>& prompts, const GenerationOptions& o,
                                       int64_t* generated) {
  if (o.batch_size < 1) throw std::invalid_argument("generation: batch_size must be >= 1");
  if (o.max_new_tokens < 1) throw std::invalid_argument("generation: max_new_tokens must be >= 1");
  if (o.max_prompt_tokens < 1) throw std::invalid_argument("generation: max_prompt_tokens must be >= 1");
  const MambaConfig& c = model.config();
  const at::Device dev = model.device();
  AdapterPoolView view;
  if (adapter != nullptr) {
    check_compatible(*adapter, model.fingerprint());
    view = two_slot_view(*adapter, dev);
  }
  // The lm_head is padded past the tokenizer's vocabulary; those rows are not tokens.
  const int64_t usable = std::min<int64_t>(c.vocab_size, static_cast<int64_t>(tokenizer.vocab_size()));
  const int64_t n = static_cast<int64_t>(prompts.size());
  std::vector<std::vector<int64_t>> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const std::vector<int32_t> e = tokenizer.encode(prompts[static_cast<size_t>(i)] + o.separator, false);
    auto& v = ids[static_cast<size_t>(i)];
    const int64_t keep = std::min<int64_t>(static_cast<int64_t>(e.size()), o.max_prompt_tokens);
    v.assign(e.end() - keep, e.end());
    if (v.empty()) v.push_back(c.bos_token_id);
  }
  // Similar lengths share a batch, so little of the prefill is padding.
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return ids[static_cast<size_t>(a)].size() < ids[static_cast<size_t>(b)].size();
  });
  std::vector<std::string> out(static_cast<size_t>(n));
  int64_t produced_total = 0;
  for (int64_t start = 0; start < n; start += o.batch_size) {
    const int64_t B = std::min(o.batch_size, n - start);
    int64_t L = 0;
    for (int64_t b = 0; b < B; ++b) L = std::max<int64_t>(L, ids[static_cast<size_t>(order[start + b])].size());
    at::Tensor tokens = at::full({B, L}, c.pad_token_id, at::TensorOptions().dtype(at::kLong));
    at::Tensor lengths = at::empty({B}, at::TensorOptions().dtype(at::kLong));
    for (int64_t b = 0; b < B; ++b) {
      const auto& v = ids[static_cast<size_t>(order[start + b])];
      std::copy(v.begin(), v.end(), tokens.data_ptr<int64_t>() + b * L);
      lengths.data_ptr<int64_t>()[b] = static_cast<int64_t>(v.size());
    }
    const at::Tensor rows = at::arange(B, at::TensorOptions().dtype(at::kLong));
    const at::Tensor slots =
        adapter != nullptr ? at::ones({B}, at::TensorOptions().dtype(at::kInt).device(dev)) : at::Tensor();
    StateCache cache(c, B, dev);
    at::Tensor logits = model.prefill(tokens, lengths, rows, slots, view, cache);
    std::vector<std::vector<int32_t>> gen(static_cast<size_t>(B));
    std::vector<bool> done(static_cast<size_t>(B), false);
    at::Tensor step_logits;
    for (int64_t s = 0; s < o.max_new_tokens; ++s) {
      const at::Tensor next = logits.narrow(-1, 0, usable).argmax(-1).to(at::kCPU).contiguous();
      const int64_t* nx = next.data_ptr<int64_t>();
      bool all_done = true;
      for (int64_t b = 0; b < B; ++b) {
        if (done[static_cast<size_t>(b)]) continue;
        if (nx[b] == c.eos_token_id) {
          done[static_cast<size_t>(b)] = true;
          continue;
        }
        gen[static_cast<size_t>(b)].push_back(static_cast<int32_t>(nx[b]));
        ++produced_total;
        all_done = false;
      }
      if (all_done || s + 1 == o.max_new_tokens) break;
      // Finished rows keep decoding (their outputs are ignored) so the batch stays rectangular.
      logits = model.decode(next, rows, slots, view, cache, &step_logits);
    }
    for (int64_t b = 0; b < B; ++b) {
      out[static_cast<size_t>(order[start + b])] =
          tokenizer.decode(gen[static_cast<size_t>(b)], /*skip_special_tokens=*/true);
    }
  }
  if (generated != nullptr) *generated = produced_total;
  return out;
}

}  // namespace

std::vector<std::string> generate_completions(MambaModel& model, const Tokenizer& tokenizer,
                                              const Adapter* adapter, const std::vector<std::string>& prompts,
                                              const GenerationOptions& options) {
  return generate_impl(model, tokenizer, adapter, prompts, options, nullptr);
}

int64_t default_max_new_tokens(const std::string& task) {
  if (task.empty()) return 64;
  const std::string t = tasks::canonical_task_name(task);
  if (tasks::is_glue_task(t)) return 3;
  if (t == "samsum") return 96;
  if (t == "dart") return 96;
  if (t == "spider") return 160;
  return 64;
}

TaskEvalResult evaluate_task(MambaModel& model, const Tokenizer& tokenizer, const Adapter* adapter,
                             const std::string& task, const std::vector<tasks::Example>& examples,
                             const GenerationOptions& options, const std::string& datasets_dir) {
  if (examples.empty()) throw std::invalid_argument("evaluate_task: no examples");
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> prompts;
  prompts.reserve(examples.size());
  for (const auto& ex : examples) prompts.push_back(ex.prompt);
  TaskEvalResult r;
  int64_t generated = 0;
  r.predictions = generate_impl(model, tokenizer, adapter, prompts, options, &generated);
  r.examples = static_cast<int64_t>(examples.size());
  if (task.empty()) {
    std::vector<std::string> refs;
    for (const auto& ex : examples) refs.push_back(ex.completion);
    r.metrics["exact_match"] = tasks::accuracy(r.predictions, refs);
  } else {
    r.metrics = tasks::task_metric(task, r.predictions, examples, datasets_dir);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.generated_tokens_per_s = r.seconds > 0 ? static_cast<double>(generated) / r.seconds : 0;
  return r;
}

}  // namespace statetune::engine::trainer
