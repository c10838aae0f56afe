// statetune-engine end to end: every subcommand run as a subprocess on a tiny random model, the way a
// user runs it. The tiny model keeps the GPT-NeoX vocabulary (50280 rows) so the real tokenizer's ids
// fit; everything else is small enough that each command takes well under a second of compute.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/shell.h"

namespace {

namespace fs = std::filesystem;

const fs::path kTokenizer = fs::path(STATETUNE_SHARED_DIR) / "models" / "gpt-neox-20b-tokenizer.json";
const char* kTinyShape = "--d-model 16 --n-layer 2 --vocab 50280 --d-state 4 --expand 2 --d-conv 4";

using Result = statetune::test_support::ShellResult;
using statetune::test_support::describe;
using statetune::test_support::quote;
using statetune::test_support::slurp;

fs::path scratch() {
  static const fs::path dir = [] {
    const fs::path d = fs::path(STATETUNE_BINARY_DIR) / "test-tmp" / "tools" /
                       ("run-" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

// Runs `statetune-engine <args>` (args already shell-quoted where needed).
Result engine(const std::string& args) {
  return statetune::test_support::run_shell(std::string(STATETUNE_ENGINE_BIN) + " " + args, scratch());
}

// A tiny model per seed, written once per test binary run.
fs::path tiny_model(int seed) {
  const fs::path dir = scratch() / ("model-" + std::to_string(seed));
  if (!fs::exists(dir / "config.json")) {
    const Result r = engine("init-model --out " + quote(dir.string()) + " " + kTinyShape +
                            " --seed " + std::to_string(seed) + " --tokenizer " +
                            quote(kTokenizer.string()));
    EXPECT_EQ(r.code, 0) << describe(r);
  }
  return dir;
}

std::vector<float> read_floats(const fs::path& p) {
  const std::string bytes = slurp(p);
  std::vector<float> v(bytes.size() / sizeof(float));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}

std::vector<float> logits(const fs::path& model, const std::string& extra, const std::string& name) {
  const fs::path out = scratch() / (name + ".f32");
  const Result r = engine("logits --threads 1 --model " + quote(model.string()) +
                          " --tokens 5,17,300,4000,9 --out " + quote(out.string()) + " " + extra);
  EXPECT_EQ(r.code, 0) << describe(r);
  return read_floats(out);
}

TEST(StatetuneEngine, InitModelIsDeterministicPerSeed) {
  const fs::path a = scratch() / "det-a", b = scratch() / "det-b", c = scratch() / "det-c";
  for (const auto& [dir, seed] : {std::pair{a, 11}, std::pair{b, 11}, std::pair{c, 12}}) {
    const Result r = engine("init-model --out " + quote(dir.string()) + " " + kTinyShape +
                            " --seed " + std::to_string(seed));
    ASSERT_EQ(r.code, 0) << describe(r);
    EXPECT_NE(r.out.find("parameters"), std::string::npos) << r.out;
  }
  const std::string wa = slurp(a / "model.safetensors");
  ASSERT_GT(wa.size(), 50280u * 16u * 4u);  // at least the f32 embedding
  EXPECT_EQ(wa, slurp(b / "model.safetensors"));
  EXPECT_EQ(slurp(a / "config.json"), slurp(b / "config.json"));
  EXPECT_NE(wa, slurp(c / "model.safetensors"));
  // The config says the shape asked for (kTinyShape), in the Hugging Face dialect.
  const auto config = nlohmann::json::parse(slurp(a / "config.json"));
  EXPECT_EQ(config.at("model_type"), "mamba");
  EXPECT_EQ(config.at("hidden_size"), 16) << config.dump();
  EXPECT_EQ(config.at("num_hidden_layers"), 2);
  EXPECT_EQ(config.at("vocab_size"), 50280);
  EXPECT_EQ(config.at("state_size"), 4);
  EXPECT_EQ(config.at("expand"), 2);
  EXPECT_EQ(config.at("intermediate_size"), 32);
  EXPECT_EQ(config.at("conv_kernel"), 4);
  EXPECT_EQ(config.at("time_step_rank"), 1);  // "auto": ceil(16 / 16)
}

TEST(StatetuneEngine, InitModelBf16IsHalfTheBytes) {
  const fs::path a = scratch() / "bf16-a", b = scratch() / "bf16-b";
  ASSERT_EQ(engine("init-model --out " + quote(a.string()) + " " + kTinyShape).code, 0);
  const Result r = engine("init-model --out " + quote(b.string()) + " " + kTinyShape + " --dtype bf16");
  ASSERT_EQ(r.code, 0) << describe(r);
  const auto fa = fs::file_size(a / "model.safetensors"), fb = fs::file_size(b / "model.safetensors");
  EXPECT_LT(fb, fa * 6 / 10);
  EXPECT_GT(fb, fa * 4 / 10);
}

TEST(StatetuneEngine, ZeroAdapterReproducesTheBaseAndRandomOneChangesIt) {
  const fs::path model = tiny_model(1);
  const fs::path zero = scratch() / "zero.safetensors", rnd = scratch() / "random.safetensors";
  Result r = engine("init-adapter --threads 1 --model " + quote(model.string()) + " --out " +
                    quote(zero.string()) + " --zero --methods state_offset,output_offset,initial_state");
  ASSERT_EQ(r.code, 0) << describe(r);
  r = engine("init-adapter --threads 1 --model " + quote(model.string()) + " --out " +
             quote(rnd.string()) + " --seed 3 --scale 0.5");
  ASSERT_EQ(r.code, 0) << describe(r);

  const auto base = logits(model, "", "base");
  ASSERT_EQ(base.size(), 50280u);
  const auto with_zero = logits(model, "--adapter " + quote(zero.string()), "zero");
  const auto with_rnd = logits(model, "--adapter " + quote(rnd.string()), "rnd");
  EXPECT_EQ(max_abs_diff(base, with_zero), 0.0);
  EXPECT_GT(max_abs_diff(base, with_rnd), 1e-3);
  for (float v : with_rnd) ASSERT_TRUE(std::isfinite(v));
}

TEST(StatetuneEngine, AllPositionsEndsWithTheLastPosition) {
  const fs::path model = tiny_model(1);
  const fs::path out = scratch() / "all.f32";
  const Result r = engine("logits --threads 1 --model " + quote(model.string()) +
                          " --tokens 5,17,300,4000,9 --all-positions --out " + quote(out.string()));
  ASSERT_EQ(r.code, 0) << describe(r);
  EXPECT_NE(r.out.find("[5, 50280]"), std::string::npos) << r.out;
  const auto all = read_floats(out);
  ASSERT_EQ(all.size(), 5u * 50280u);
  const auto last = logits(model, "", "last");
  const std::vector<float> tail(all.end() - 50280, all.end());
  EXPECT_LT(max_abs_diff(tail, last), 1e-4);
  // A prefix's logits do not depend on what follows: row 1 equals the logits of tokens 5,17.
  const fs::path two = scratch() / "two.f32";
  ASSERT_EQ(engine("logits --threads 1 --model " + quote(model.string()) + " --tokens 5,17 --out " +
                   quote(two.string())).code, 0);
  const std::vector<float> row1(all.begin() + 50280, all.begin() + 2 * 50280);
  EXPECT_LT(max_abs_diff(row1, read_floats(two)), 1e-4);
}

TEST(StatetuneEngine, AdapterForAnotherModelIsRefused) {
  const fs::path model_a = tiny_model(1), model_b = tiny_model(2);
  const fs::path adapter = scratch() / "for-a.safetensors";
  ASSERT_EQ(engine("init-adapter --threads 1 --model " + quote(model_a.string()) + " --out " +
                   quote(adapter.string())).code, 0);
  const Result r = engine("logits --threads 1 --model " + quote(model_b.string()) + " --adapter " +
                          quote(adapter.string()) + " --tokens 1,2 --out " +
                          quote((scratch() / "never.f32").string()));
  EXPECT_EQ(r.code, 1) << describe(r);
  EXPECT_NE(r.err.find("does not fit"), std::string::npos) << r.err;
  // Another shape too (d_state differs): refused, with the dimension named.
  const fs::path other = scratch() / "other-shape";
  ASSERT_EQ(engine("init-model --out " + quote(other.string()) +
                   " --d-model 16 --n-layer 2 --vocab 50280 --d-state 8").code, 0);
  const Result g = engine("generate --threads 1 --model " + quote(other.string()) + " --adapter " +
                          quote(adapter.string()) + " --prompt hi --tokenizer " +
                          quote(kTokenizer.string()));
  EXPECT_EQ(g.code, 1) << describe(g);
  EXPECT_NE(g.err.find("d_state"), std::string::npos) << g.err;
  // And a model folder that is not one.
  const Result m = engine("init-adapter --model " + quote((scratch() / "nope").string()) + " --out " +
                          quote((scratch() / "x.safetensors").string()));
  EXPECT_EQ(m.code, 1) << describe(m);
}

TEST(StatetuneEngine, GenerateStreamsText) {
  const fs::path model = tiny_model(1);
  const fs::path adapter = scratch() / "gen.safetensors";
  ASSERT_EQ(engine("init-adapter --threads 1 --model " + quote(model.string()) + " --out " +
                   quote(adapter.string()) + " --scale 1").code, 0);
  const Result base = engine("generate --threads 1 --model " + quote(model.string()) +
                             " --prompt " + quote("The capital of France is") + " --max-tokens 12");
  ASSERT_EQ(base.code, 0) << describe(base);
  EXPECT_NE(base.err.find("generated"), std::string::npos) << base.err;
  EXPECT_GT(base.out.size(), 1u) << describe(base);  // text plus the final newline
  // Greedy is deterministic, and the adapter steers it.
  const Result again = engine("generate --threads 1 --model " + quote(model.string()) +
                              " --prompt " + quote("The capital of France is") + " --max-tokens 12");
  EXPECT_EQ(base.out, again.out);
  const Result adapted = engine("generate --threads 1 --model " + quote(model.string()) +
                                " --adapter " + quote(adapter.string()) + " --prompt " +
                                quote("The capital of France is") + " --max-tokens 12");
  ASSERT_EQ(adapted.code, 0) << describe(adapted);
  EXPECT_NE(base.out, adapted.out);
}

TEST(StatetuneEngine, BenchPrintsBothThroughputsAndTheRatio) {
  const fs::path json = scratch() / "bench.json";
  const Result r = engine("bench --threads 1 --d-model 16 --n-layer 2 --vocab 256 --d-state 4 "
                          "--batch 4 --prompt-len 8 --decode-steps 4 --rounds 2 --json " +
                          quote(json.string()));
  ASSERT_EQ(r.code, 0) << describe(r);
  for (const char* s : {"decode median", "prefill median", "no adapter", "mixed/none",
                        "decode ratio mixed/no-adapter", "4 distinct"}) {
    EXPECT_NE(r.out.find(s), std::string::npos) << s << "\n" << r.out;
  }
  const auto j = nlohmann::json::parse(slurp(json));
  EXPECT_GT(j["decode_tokens_per_s"]["no_adapter"]["median"].get<double>(), 0);
  EXPECT_GT(j["decode_tokens_per_s"]["mixed"]["median"].get<double>(), 0);
  EXPECT_GT(j["prefill_tokens_per_s"]["mixed"]["median"].get<double>(), 0);
  EXPECT_GT(j["decode_ratio"]["median"].get<double>(), 0);
  EXPECT_GT(j["adapter_max_logit_change"].get<double>(), 0);
  EXPECT_EQ(j["order"].get<std::string>(), "ABBA");
  EXPECT_EQ(j["per_round"]["decode_mixed"].size(), 2u);
}

TEST(StatetuneEngine, UsageErrorsExitTwoAndNameTheFlag) {
  Result r = engine("init-model --out " + quote((scratch() / "u").string()) + " --bogus 1");
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_NE(r.err.find("--bogus"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(scratch() / "u"));  // refused before doing anything

  r = engine("bench --batch sixteen");
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_NE(r.err.find("--batch"), std::string::npos) << r.err;

  r = engine("logits --model x --tokens 1,2");
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_NE(r.err.find("--out"), std::string::npos) << r.err;

  r = engine("logits --model x --tokens 1,a --out y");
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_NE(r.err.find("--tokens"), std::string::npos) << r.err;

  r = engine("init-model --out " + quote((scratch() / "u").string()) + " --dtype f64");
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_NE(r.err.find("--dtype"), std::string::npos) << r.err;

  r = engine("init-adapter --model x --out y --methods state_offset,bogus_method");
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_NE(r.err.find("bogus_method"), std::string::npos) << r.err;

  r = engine("frobnicate");
  EXPECT_EQ(r.code, 2) << describe(r);
  r = engine("");
  EXPECT_EQ(r.code, 2) << describe(r);

  r = engine("bench --help");
  EXPECT_EQ(r.code, 0) << describe(r);
  EXPECT_NE(r.out.find("--decode-steps"), std::string::npos) << r.out;
}

}  // namespace
