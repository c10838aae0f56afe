// The adapter trainer on small random models: the differentiable forward against the inference model
// and against an independent float64 forward (values and adapter gradients), loss masking and padding,
// that training actually fits a tiny task, checkpoint/resume and cancellation, and greedy evaluation.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "server/engine/adapters/adapter.h"
#include "server/engine/model/mamba_model.h"
#include "server/engine/model/model_init.h"
#include "server/engine/text/tokenizer.h"
#include "server/engine/trainer/adapter_trainer.h"
#include "server/engine/trainer/evaluation.h"
#include "server/engine/trainer/trainable_mamba.h"

namespace statetune::engine::trainer {
namespace {

namespace fs = std::filesystem;

MambaConfig small_config(int64_t d_model, int64_t n_layer, int64_t vocab) {
  MambaConfig c;
  c.d_model = d_model;
  c.n_layer = n_layer;
  c.vocab_size = vocab;
  c.unpadded_vocab_size = vocab;
  c.d_state = 4;
  c.expand = 2;
  c.d_inner = 2 * d_model;
  c.d_conv = 4;
  c.dt_rank = (d_model + 15) / 16;
  c.tie_embeddings = true;
  return c;
}

fs::path fresh_dir(const std::string& name) {
  static int counter = 0;
  const fs::path dir = fs::path(STATETUNE_BINARY_DIR) / "test-tmp" / "trainer" /
                       (name + "-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// sharpen: mamba_ssm's initialisation gives near-uniform logits (embeddings of std 0.02, tied head),
// which no adapter can move far; scaled-up embeddings and projections make a random base whose
// outputs an adapter can actually steer, as a pretrained one's are.
std::unique_ptr<MambaModel> make_model(const MambaConfig& c, uint64_t seed, const std::string& name,
                                       bool sharpen = false) {
  const fs::path dir = fresh_dir(name);
  std::map<std::string, at::Tensor> w = random_weights(c, seed);
  if (sharpen) {
    const double fe = 20, fi = 5, fx = 5, fo = 50;
    for (auto& [n, t] : w) {
      if (n.find("embedding") != std::string::npos) t = t * fe;
      if (n.find("in_proj") != std::string::npos) t = t * fi;
      if (n.find("x_proj") != std::string::npos) t = t * fx;
      if (n.find("out_proj") != std::string::npos) t = t * fo;
    }
  }
  write_checkpoint(dir, c, w);
  return MambaModel::load(dir, LoadOptions{});
}

const Tokenizer& tokenizer() {
  static const Tokenizer tok =
      Tokenizer::from_file(std::string(STATETUNE_SHARED_DIR) + "/models/gpt-neox-20b-tokenizer.json");
  return tok;
}

double rel_err(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor g = got.to(at::kDouble), w = want.to(at::kDouble);
  return (g - w).abs().max().item<double>() / std::max(1e-12, w.abs().max().item<double>());
}

at::Tensor leaf(at::Tensor t) {
  t.set_requires_grad(true);
  return t;
}

AdapterTensors random_tensors(const MambaConfig& c, bool so, bool oo, bool h0, uint64_t seed, double scale) {
  at::manual_seed(seed);
  AdapterTensors t;
  if (so) t.state_offset = leaf(at::randn({c.n_layer, c.d_inner, c.d_state}) * scale);
  if (oo) t.output_offset = leaf(at::randn({c.n_layer, c.d_inner}) * scale);
  if (h0) t.initial_state = leaf(at::randn({c.n_layer, c.d_inner, c.d_state}) * scale);
  return t;
}

// An independent forward of ONE sequence written from docs/adapter-math.md in float64
// LibTorch ops (a plain loop over time for the conv and the scan), differentiable in the adapter
// tensors through ordinary autograd. Returns logits [T, V].
at::Tensor reference_logits(const MambaModel& model, const std::vector<int64_t>& tokens,
                            const at::Tensor& so, const at::Tensor& oo, const at::Tensor& h0) {
  const MambaConfig& c = model.config();
  const auto w = model.weight_views();
  auto W = [&](const std::string& n) { return w.at(n).to(at::kDouble); };
  const int64_t T = static_cast<int64_t>(tokens.size()), D = c.d_inner, N = c.d_state, K = c.d_conv;
  auto rmsnorm = [&](const at::Tensor& x, const at::Tensor& g) {
    return x * at::rsqrt(x.pow(2).mean(-1, true) + c.norm_eps) * g;
  };
  const at::Tensor emb = W("embedding");
  at::Tensor h = emb.index_select(0, at::tensor(tokens, at::kLong));
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    const at::Tensor u = rmsnorm(h, W(p + "norm"));
    const at::Tensor x = at::matmul(u, W(p + "in_x").t()), z = at::matmul(u, W(p + "in_z").t());
    const at::Tensor cw = W(p + "conv_w");
    const at::Tensor xp = at::cat({at::zeros({K - 1, D}, x.options()), x}, 0);
    std::vector<at::Tensor> xcs;
    for (int64_t t = 0; t < T; ++t) xcs.push_back(at::silu((xp.narrow(0, t, K).t() * cw).sum(1) + W(p + "conv_b")));
    const at::Tensor xc = at::stack(xcs);
    const at::Tensor Bm = at::matmul(xc, W(p + "x_B").t()), Cm = at::matmul(xc, W(p + "x_C").t());
    const at::Tensor delta =
        at::softplus(at::matmul(at::matmul(xc, W(p + "x_dt").t()), W(p + "dt_w").t()) + W(p + "dt_b"));
    const at::Tensor A = W(p + "A");
    at::Tensor hs = h0.defined() ? h0[i].to(at::kDouble) : at::zeros({D, N}, x.options());
    std::vector<at::Tensor> ys;
    for (int64_t t = 0; t < T; ++t) {
      hs = at::exp(delta[t].unsqueeze(1) * A) * hs + (delta[t] * xc[t]).unsqueeze(1) * Bm[t].unsqueeze(0);
      at::Tensor read = so.defined() ? hs + so[i].to(at::kDouble) : hs;
      at::Tensor yt = at::matmul(read, Cm[t]) + W(p + "Dskip") * xc[t];
      if (oo.defined()) yt = yt + oo[i].to(at::kDouble);
      ys.push_back(yt);
    }
    h = h + at::matmul(at::stack(ys) * at::silu(z), W(p + "out_w").t());
  }
  return at::matmul(rmsnorm(h, W("norm_f")), emb.t());
}

// -------------------------------------------------------------------------------------------------
TEST(TrainableMamba, ZeroAdapterMatchesInferencePrefill) {
  const MambaConfig c = small_config(16, 2, 64);
  auto model = make_model(c, 3, "zero");
  TrainableMamba net(*model);
  at::manual_seed(1);
  const at::Tensor tokens = at::randint(0, 64, {2, 9}, at::kLong);
  const at::Tensor lengths = at::tensor(std::vector<int64_t>{9, 6}, at::kLong);
  AdapterTensors zero;
  zero.state_offset = at::zeros({c.n_layer, c.d_inner, c.d_state});
  zero.output_offset = at::zeros({c.n_layer, c.d_inner});
  zero.initial_state = at::zeros({c.n_layer, c.d_inner, c.d_state});
  StateCache cache(c, 2, at::kCPU);
  const at::Tensor rows = at::arange(2, at::kLong);
  const at::Tensor base = model->prefill(tokens, lengths, rows, {}, {}, cache, false, true);
  for (const AdapterTensors& a : {AdapterTensors{}, zero}) {
    at::NoGradGuard g;
    const at::Tensor got = net.forward(tokens, lengths, a);
    EXPECT_LT(rel_err(got[0], base[0]), 1e-5);
    EXPECT_LT(rel_err(got[1].narrow(0, 0, 6), base[1].narrow(0, 0, 6)), 1e-5);
  }
}

// A base with in_proj and out_proj biases (config.proj_bias): the trainer's forward over the frozen
// model must use every bias inference uses. (It once missed out_proj's, which random_weights' zero
// biases hid.)
TEST(TrainableMamba, ZeroAdapterMatchesInferencePrefillWithProjectionBiases) {
  MambaConfig c = small_config(16, 2, 64);
  c.proj_bias = true;
  const fs::path dir = fresh_dir("proj-bias");
  std::map<std::string, at::Tensor> w = random_weights(c, 5);
  at::manual_seed(6);
  for (auto& [n, t] : w) {
    if (n.find("proj.bias") != std::string::npos) t = at::randn_like(t) * 0.5;
  }
  write_checkpoint(dir, c, w);
  auto model = MambaModel::load(dir, LoadOptions{});
  TrainableMamba net(*model);
  const at::Tensor tokens = at::randint(0, 64, {2, 8}, at::kLong);
  const at::Tensor lengths = at::tensor(std::vector<int64_t>{8, 5}, at::kLong);
  StateCache cache(c, 2, at::kCPU);
  const at::Tensor base = model->prefill(tokens, lengths, at::arange(2, at::kLong), {}, {}, cache, false, true);
  at::NoGradGuard g;
  const at::Tensor got = net.forward(tokens, lengths, AdapterTensors{});
  EXPECT_LT(rel_err(got[0], base[0]), 1e-5);
  EXPECT_LT(rel_err(got[1].narrow(0, 0, 5), base[1].narrow(0, 0, 5)), 1e-5);
}

TEST(TrainableMamba, AdapterForwardMatchesInferencePool) {
  const MambaConfig c = small_config(16, 2, 64);
  auto model = make_model(c, 4, "pool");
  TrainableMamba net(*model);
  const AdapterTensors a = random_tensors(c, true, true, true, 7, 0.3);
  AdapterPoolView view;
  view.state_offset = at::stack({at::zeros_like(a.state_offset), a.state_offset.detach()});
  view.output_offset = at::stack({at::zeros_like(a.output_offset), a.output_offset.detach()});
  view.initial_state = at::stack({at::zeros_like(a.initial_state), a.initial_state.detach()});
  at::manual_seed(2);
  const at::Tensor tokens = at::randint(0, 64, {2, 7}, at::kLong);
  const at::Tensor lengths = at::tensor(std::vector<int64_t>{7, 7}, at::kLong);
  StateCache cache(c, 2, at::kCPU);
  const at::Tensor want = model->prefill(tokens, lengths, at::arange(2, at::kLong),
                                         at::ones({2}, at::kInt), view, cache, false, true);
  at::NoGradGuard g;
  EXPECT_LT(rel_err(net.forward(tokens, lengths, a), want), 1e-5);
}

TEST(TrainableMamba, AdapterGradientsMatchFloat64Reference) {
  const MambaConfig c = small_config(16, 2, 64);
  auto model = make_model(c, 5, "grad");
  TrainableMamba net(*model, /*scan_chunk=*/3);  // several backward chunks over 8 steps
  const AdapterTensors a = random_tensors(c, true, true, true, 11, 0.2);
  const std::vector<int64_t> seq = {5, 17, 3, 40, 22, 9, 63, 1};
  const int64_t T = static_cast<int64_t>(seq.size());
  at::manual_seed(3);
  const at::Tensor weights = at::randn({T, c.vocab_size}, at::kDouble);
  // fp32 trainable forward, batch of two rows (the second one padded) to exercise padding too.
  std::vector<int64_t> padded = seq;
  const at::Tensor tokens = at::stack({at::tensor(seq, at::kLong), at::tensor(padded, at::kLong)});
  const at::Tensor lengths = at::tensor(std::vector<int64_t>{T, 5}, at::kLong);
  const at::Tensor logits = net.forward(tokens, lengths, a);
  const at::Tensor loss = (logits[0].to(at::kDouble) * weights).sum() +
                          (logits[1].narrow(0, 0, 5).to(at::kDouble) * weights.narrow(0, 0, 5)).sum();
  loss.backward();
  // The reference: the same two sequences one at a time in float64.
  const at::Tensor so = leaf(a.state_offset.detach().to(at::kDouble));
  const at::Tensor oo = leaf(a.output_offset.detach().to(at::kDouble));
  const at::Tensor h0 = leaf(a.initial_state.detach().to(at::kDouble));
  const at::Tensor ref0 = reference_logits(*model, seq, so, oo, h0);
  const at::Tensor ref1 = reference_logits(*model, std::vector<int64_t>(seq.begin(), seq.begin() + 5), so, oo, h0);
  EXPECT_LT(rel_err(logits[0], ref0), 1e-4);
  const at::Tensor ref_loss = (ref0 * weights).sum() + (ref1 * weights.narrow(0, 0, 5)).sum();
  ref_loss.backward();
  EXPECT_LT(rel_err(a.state_offset.grad(), so.grad()), 1e-4);
  EXPECT_LT(rel_err(a.output_offset.grad(), oo.grad()), 1e-4);
  EXPECT_LT(rel_err(a.initial_state.grad(), h0.grad()), 1e-4);
  EXPECT_GT(so.grad().abs().max().item<double>(), 0.0);

  // And a central finite difference of the float64 reference for one entry of each tensor.
  at::NoGradGuard g;
  auto ref_value = [&](const at::Tensor& s, const at::Tensor& o, const at::Tensor& h) {
    return ((reference_logits(*model, seq, s, o, h) * weights).sum() +
            (reference_logits(*model, std::vector<int64_t>(seq.begin(), seq.begin() + 5), s, o, h) *
             weights.narrow(0, 0, 5)).sum()).item<double>();
  };
  const double eps = 1e-6;
  for (int which = 0; which < 3; ++which) {
    at::Tensor s = so.detach().clone(), o = oo.detach().clone(), h = h0.detach().clone();
    at::Tensor& t = which == 0 ? s : which == 1 ? o : h;
    const at::Tensor& grad = which == 0 ? a.state_offset.grad() : which == 1 ? a.output_offset.grad()
                                                                             : a.initial_state.grad();
    at::Tensor flat = t.view(-1);
    const int64_t k = flat.numel() / 3;
    flat[k] += eps;
    const double up = ref_value(s, o, h);
    flat[k] -= 2 * eps;
    const double down = ref_value(s, o, h);
    const double fd = (up - down) / (2 * eps);
    const double an = grad.view(-1)[k].item<double>();
    EXPECT_NEAR(an, fd, 1e-3 * std::max(1.0, std::abs(fd))) << "tensor " << which;
  }
}

TEST(TrainableMamba, Bf16BaseWithFp32AdapterMatchesInferenceAndFp32Gradients) {
  const MambaConfig c = small_config(16, 2, 64);
  const fs::path dir = fresh_dir("bf16");
  write_random_checkpoint(dir, c, 21);
  LoadOptions lo;
  lo.dtype = at::kBFloat16;
  auto bf = MambaModel::load(dir, lo);
  auto f32 = MambaModel::load(dir, LoadOptions{});
  at::manual_seed(4);
  const at::Tensor tokens = at::randint(0, 64, {2, 8}, at::kLong);
  const at::Tensor lengths = at::tensor(std::vector<int64_t>{8, 8}, at::kLong);
  StateCache cache(c, 2, at::kCPU);
  const at::Tensor want = bf->prefill(tokens, lengths, at::arange(2, at::kLong), {}, {}, cache, false, true);
  const AdapterTensors a = random_tensors(c, true, true, false, 5, 0.2);
  const AdapterTensors b = random_tensors(c, true, true, false, 5, 0.2);
  {
    at::NoGradGuard g;
    EXPECT_LT(rel_err(TrainableMamba(*bf).forward(tokens, lengths, AdapterTensors{}), want), 1e-2);
  }
  const at::Tensor w = at::randn({2, 8, c.vocab_size});
  (TrainableMamba(*bf).forward(tokens, lengths, a) * w).sum().backward();
  (TrainableMamba(*f32).forward(tokens, lengths, b) * w).sum().backward();
  EXPECT_EQ(a.state_offset.grad().scalar_type(), at::kFloat);
  EXPECT_LT(rel_err(a.state_offset.grad(), b.state_offset.grad()), 5e-2);
  EXPECT_LT(rel_err(a.output_offset.grad(), b.output_offset.grad()), 5e-2);
}

// -------------------------------------------------------------------------------------------------
TrainerOptions quick_options() {
  TrainerOptions o;
  o.methods = {kStateOffset};
  o.batch_size = 4;
  o.epochs = 1;
  o.max_length = 64;
  return o;
}

TEST(AdapterTrainer, TokenizesWithSeparatorAndEndOfText) {
  const MambaConfig c = small_config(16, 1, 50280);
  auto model = make_model(c, 6, "tok");
  AdapterTrainer trainer(*model, tokenizer(), quick_options());
  const TokenizedExample ex = trainer.tokenize(TextExample{"Is the sky blue?", " yes"});
  std::vector<int32_t> want = tokenizer().encode("Is the sky blue?\n###\n");
  const std::vector<int32_t> comp = tokenizer().encode(" yes");
  EXPECT_EQ(ex.prompt_tokens, static_cast<int64_t>(want.size()));
  want.insert(want.end(), comp.begin(), comp.end());
  want.push_back(0);  // <|endoftext|>
  EXPECT_EQ(ex.ids, std::vector<int64_t>(want.begin(), want.end()));
  // "<|endoftext|>" typed inside a prompt is text, not the special token.
  const TokenizedExample tricky = trainer.tokenize(TextExample{"a <|endoftext|> b", "c"});
  for (int64_t i = 0; i < tricky.prompt_tokens; ++i) EXPECT_NE(tricky.ids[static_cast<size_t>(i)], 0);
  // Truncation keeps the end of the prompt and the whole completion.
  TrainerOptions o = quick_options();
  o.max_length = 12;
  AdapterTrainer short_trainer(*model, tokenizer(), o);
  std::string long_prompt;
  for (int i = 0; i < 40; ++i) long_prompt += " word" + std::to_string(i);
  const TokenizedExample cut = short_trainer.tokenize(TextExample{long_prompt, " ok"});
  EXPECT_EQ(static_cast<int64_t>(cut.ids.size()), 12);
  EXPECT_EQ(cut.ids.back(), 0);
  const std::vector<int32_t> sep = tokenizer().encode(long_prompt + "\n###\n");
  EXPECT_EQ(cut.ids[static_cast<size_t>(cut.prompt_tokens - 1)], sep.back());
}

TEST(AdapterTrainer, LossCoversCompletionTokensOnlyAndIgnoresPadding) {
  const MambaConfig c = small_config(16, 2, 128);
  auto model = make_model(c, 8, "mask");
  AdapterTrainer trainer(*model, tokenizer(), quick_options());
  TrainableMamba net(*model);
  const TokenizedExample a{{3, 9, 14, 7, 21, 0}, 3};       // completion 7, 21, eos
  const TokenizedExample b{{5, 6, 99, 100, 45, 2, 0, 8, 0}, 6};  // completion 8, eos
  const AdapterTensors t = random_tensors(c, true, false, false, 1, 0.2);
  at::NoGradGuard g;
  auto by_hand = [&](const TokenizedExample& ex) {
    const int64_t n = static_cast<int64_t>(ex.ids.size());
    const at::Tensor logits = net.forward(at::tensor(ex.ids, at::kLong).view({1, n}),
                                          at::tensor(std::vector<int64_t>{n}, at::kLong), t)[0];
    double sum = 0;
    for (int64_t p = ex.prompt_tokens - 1; p + 1 < n; ++p) {
      sum -= at::log_softmax(logits[p], -1)[ex.ids[static_cast<size_t>(p + 1)]].item<double>();
    }
    return std::make_pair(sum, n - ex.prompt_tokens);
  };
  int64_t scored = 0, total = 0;
  const double la = trainer.batch_loss({&a}, t, &total, nullptr, &scored).item<double>();
  EXPECT_EQ(scored, 3);
  EXPECT_EQ(total, 6);
  const auto [sa, na] = by_hand(a);
  EXPECT_NEAR(la, sa / na, 1e-5 * std::abs(la));
  // Batched with padding: the mean over both examples' completion tokens, nothing else.
  const auto [sb, nb] = by_hand(b);
  const double lab = trainer.batch_loss({&a, &b}, t, &total, nullptr, &scored).item<double>();
  EXPECT_EQ(scored, na + nb);
  EXPECT_NEAR(lab, (sa + sb) / (na + nb), 1e-5 * std::abs(lab));
  // Changing a prompt token changes the loss only through the context, never as a target: a prompt
  // token swapped for one the model finds impossible leaves the loss finite and the count unchanged.
  TokenizedExample a2 = a;
  a2.ids[1] = 127;
  const double la2 = trainer.batch_loss({&a2}, t, nullptr, nullptr, &scored).item<double>();
  EXPECT_EQ(scored, 3);
  EXPECT_TRUE(std::isfinite(la2)) << la2;
  EXPECT_NE(la2, la) << "the prompt token is context: changing it changes the completion's loss";
  const auto [sa2, na2] = by_hand(a2);
  EXPECT_EQ(na2, na);
  EXPECT_NEAR(la2, sa2 / na2, 1e-5 * std::abs(la2));
}

// A fixed completion after varied prompts: a state_offset adapter must learn it.
std::vector<TextExample> fixed_completion_task(int n, int offset = 0) {
  static const char* kWords[] = {"apple", "river", "stone", "cloud", "green", "music", "table", "light"};
  std::vector<TextExample> out;
  for (int i = 0; i < n; ++i) {
    const int k = i + offset;
    out.push_back({std::string("Tell me about the ") + kWords[k % 8] + " and the " + kWords[(k * 3 + 1) % 8] + ".",
                   " The answer is always forty two."});
  }
  return out;
}

TEST(AdapterTrainer, StateOffsetTrainingFitsAFixedCompletion) {
  MambaConfig c = small_config(32, 2, 50280);
  c.d_state = 16;
  auto model = make_model(c, 9, "fit", true);
  TrainerOptions o = quick_options();
  o.lr_state_offset = 3e-2;  // a random tiny base needs a bigger step than a pretrained one
  o.epochs = 8;
  o.eval_every = 8;
  int64_t callbacks = 0, validations = 0;
  AdapterTrainer trainer(*model, tokenizer(), o);
  const auto train = fixed_completion_task(16);
  const auto val = fixed_completion_task(4, 100);
  const LossStats before = trainer.evaluate_loss(trainer.tokenize(val), nullptr);
  const TrainResult r = trainer.train(train, val, [&](const TrainProgress& p) {
    if (p.kind == TrainProgress::Kind::kStep) {
      ++callbacks;
      EXPECT_GT(p.tokens_per_s, 0);
      EXPECT_EQ(p.total_steps, 32);
    }
    if (p.kind == TrainProgress::Kind::kValidation) ++validations;
  });
  EXPECT_EQ(r.steps, 32);
  EXPECT_EQ(callbacks, 32);
  EXPECT_EQ(validations, 4);
  const LossStats after = trainer.evaluate_loss(trainer.tokenize(val), &r.adapter);
  EXPECT_LT(after.loss, 0.5 * before.loss) << before.loss << " -> " << after.loss;
  EXPECT_NEAR(after.loss, r.best_val_loss, 1e-4 * after.loss);
  EXPECT_TRUE(r.adapter.has(kStateOffset));
  EXPECT_FALSE(r.adapter.has(kOutputOffset));
  // A zero adapter is the base model.
  const Adapter zero = zero_adapter(c, model->fingerprint(), {kStateOffset});
  EXPECT_NEAR(trainer.evaluate_loss(trainer.tokenize(val), &zero).loss, before.loss, 1e-6 * before.loss);
}

TEST(AdapterTrainer, ResumeFromCheckpointEqualsUninterruptedRun) {
  const MambaConfig c = small_config(16, 2, 50280);
  auto model = make_model(c, 10, "resume");
  TrainerOptions o = quick_options();
  o.methods = {kStateOffset, kOutputOffset};
  o.batch_size = 3;
  o.epochs = 3;
  o.warmup_steps = 2;
  o.lr_state_offset = 1e-2;
  o.lr_output_offset = 3e-2;
  o.checkpoint_every = 2;
  const auto train = fixed_completion_task(7);  // 3 steps an epoch, the last one short
  o.checkpoint_dir = fresh_dir("full").string();
  const TrainResult full = AdapterTrainer(*model, tokenizer(), o).train(train, {});
  EXPECT_EQ(full.steps, 9);

  o.checkpoint_dir = fresh_dir("parts").string();
  std::atomic<bool> cancel{false};
  const TrainResult first = AdapterTrainer(*model, tokenizer(), o).train(
      train, {}, [&](const TrainProgress& p) {
        if (p.kind == TrainProgress::Kind::kStep && p.step == 5) cancel = true;
      },
      &cancel);
  EXPECT_TRUE(first.cancelled);
  EXPECT_EQ(first.steps, 5);
  const TrainResult second = AdapterTrainer(*model, tokenizer(), o).train(train, {}, {}, nullptr, /*resume=*/true);
  EXPECT_EQ(second.steps, 9);
  EXPECT_LT(rel_err(second.adapter.state_offset, full.adapter.state_offset), 1e-6);
  EXPECT_LT(rel_err(second.adapter.output_offset, full.adapter.output_offset), 1e-6);
  EXPECT_GT(full.adapter.output_offset.abs().max().item<double>(), 0.0);
  // The checkpoint folder holds a loadable adapter too.
  const Adapter saved = load_adapter(fs::path(o.checkpoint_dir) / "adapter.safetensors");
  EXPECT_LT(rel_err(saved.state_offset, full.adapter.state_offset), 1e-6);
  // A checkpoint from another configuration is refused.
  o.batch_size = 2;
  EXPECT_THROW(AdapterTrainer(*model, tokenizer(), o).train(train, {}, {}, nullptr, true), std::runtime_error);
}

TEST(AdapterTrainer, EarlyStoppingKeepsTheBestValidationAdapter) {
  MambaConfig c = small_config(32, 2, 50280);
  c.d_state = 16;
  auto model = make_model(c, 12, "early", true);
  TrainerOptions o = quick_options();
  o.lr_state_offset = 3e-2;
  o.epochs = 20;
  o.eval_every = 2;
  o.early_stopping_patience = 2;
  AdapterTrainer trainer(*model, tokenizer(), o);
  // Validation asks for another completion than training teaches: fitting the training set makes
  // the validation loss worse, so training must stop early and hand back the early adapter.
  std::vector<TextExample> val = fixed_completion_task(4, 50);
  for (auto& e : val) e.completion = " Blue cats sing loudly tonight.";
  const TrainResult r = trainer.train(fixed_completion_task(16), val);
  ASSERT_TRUE(r.early_stopped);
  EXPECT_LT(r.steps, 80);
  ASSERT_GE(r.validations.size(), 3u);
  double best = 1e300;
  for (const auto& v : r.validations) best = std::min(best, v.loss);
  EXPECT_DOUBLE_EQ(r.best_val_loss, best);
  EXPECT_NEAR(trainer.evaluate_loss(trainer.tokenize(val), &r.adapter).loss, best, 1e-4 * best);
  EXPECT_LT(best, r.validations.back().loss);
}

TEST(Evaluation, GreedyGenerationWithAndWithoutAdapter) {
  MambaConfig c = small_config(32, 2, 50280);
  c.d_state = 16;
  auto model = make_model(c, 13, "eval", true);
  const std::vector<std::string> prompts = {"Tell me about the stone.", "Hi", "Tell me about the cloud and more."};
  GenerationOptions g;
  g.max_new_tokens = 6;
  g.batch_size = 2;
  const auto base = generate_completions(*model, tokenizer(), nullptr, prompts, g);
  const Adapter zero = zero_adapter(c, model->fingerprint(), {kStateOffset, kOutputOffset});
  EXPECT_EQ(generate_completions(*model, tokenizer(), &zero, prompts, g), base);
  // Batched equals one at a time.
  g.batch_size = 1;
  EXPECT_EQ(generate_completions(*model, tokenizer(), nullptr, prompts, g), base);

  // An adapter trained on a fixed completion generates it.
  TrainerOptions o = quick_options();
  o.methods = {kStateOffset, kOutputOffset};
  o.lr_state_offset = 0.1;
  o.lr_output_offset = 0.1;
  o.epochs = 25;
  AdapterTrainer trainer(*model, tokenizer(), o);
  const TrainResult r = trainer.train(fixed_completion_task(8), {});
  std::vector<tasks::Example> examples;
  for (const auto& e : fixed_completion_task(4, 200)) {
    tasks::Example x;
    x.prompt = e.prompt;
    x.completion = e.completion;
    examples.push_back(x);
  }
  GenerationOptions ge;
  ge.max_new_tokens = 12;
  const TaskEvalResult with = evaluate_task(*model, tokenizer(), &r.adapter, "", examples, ge);
  const TaskEvalResult without = evaluate_task(*model, tokenizer(), nullptr, "", examples, ge);
  EXPECT_EQ(without.metrics.at("exact_match"), 0.0);
  EXPECT_GT(with.metrics.at("exact_match"), 0.5) << with.predictions[0];
  // A GLUE-style task goes through the task metrics.
  tasks::Example rte;
  rte.prompt = "premise";
  rte.completion = "1";
  rte.label = "not_entailment";
  const TaskEvalResult glue = evaluate_task(*model, tokenizer(), nullptr, "rte", {rte}, ge);
  ASSERT_EQ(glue.predictions.size(), 1u);
  ASSERT_EQ(glue.metrics.count("accuracy"), 1u);
  // Scored against the completion (the label's digit), after trimming: 1 or 0 for one example.
  std::string p = glue.predictions[0];
  p.erase(0, p.find_first_not_of(" \t\r\n\f\v"));
  p.erase(p.find_last_not_of(" \t\r\n\f\v") + 1);
  EXPECT_EQ(glue.metrics.at("accuracy"), p == "1" ? 1.0 : 0.0) << "prediction \"" << glue.predictions[0] << "\"";
  // The same prediction scored as the other label flips it.
  rte.completion = p == "1" ? "0" : p;
  EXPECT_EQ(evaluate_task(*model, tokenizer(), nullptr, "rte", {rte}, ge).metrics.at("accuracy"), p == "1" ? 0.0 : 1.0);
}

}  // namespace
}  // namespace statetune::engine::trainer
