// `statetune-engine train` and `eval` run as subprocesses on a tiny random model: JSONL and named data
// sets, progress lines, the adapter file, checkpoints and resume, and usage errors (exit code 2).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/support/shell.h"

namespace {

namespace fs = std::filesystem;

const fs::path kShared = fs::path(STATETUNE_SHARED_DIR);

using Result = statetune::test_support::ShellResult;
using statetune::test_support::describe;
using statetune::test_support::quote;
using statetune::test_support::slurp;

fs::path scratch() {
  static const fs::path dir = [] {
    const fs::path d = fs::path(STATETUNE_BINARY_DIR) / "test-tmp" / "train-cli" / ("run-" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

// `threads`: append --threads 1 (every subcommand but init-model takes it).
Result engine(const std::string& args, bool threads = true) {
  return statetune::test_support::run_shell(
      std::string(STATETUNE_ENGINE_BIN) + " " + args + (threads ? " --threads 1" : ""), scratch());
}

fs::path tiny_model() {
  const fs::path dir = scratch() / "model";
  if (!fs::exists(dir / "config.json")) {
    const Result r = engine("init-model --out " + quote(dir.string()) +
                            " --d-model 16 --n-layer 2 --vocab 50280 --d-state 4 --seed 3 --tokenizer " +
                            quote((kShared / "models" / "gpt-neox-20b-tokenizer.json").string()),
                            /*threads=*/false);
    EXPECT_EQ(r.code, 0) << describe(r);
  }
  return dir;
}

fs::path jsonl() {
  const fs::path p = scratch() / "data.jsonl";
  std::ofstream f(p);
  for (int i = 0; i < 6; ++i) {
    f << R"({"prompt": "Question number )" << i << R"(: what is it?", "completion": " It is )" << i << R"(."})" << "\n";
  }
  return p;
}

TEST(TrainCli, TrainsOnJsonlWritesAdapterAndEvaluates) {
  const fs::path model = tiny_model(), data = jsonl(), out = scratch() / "a.safetensors";
  const Result r = engine("train --model " + quote(model.string()) + " --data " + quote(data.string()) +
                          " --epochs 2 --batch-size 2 --log-every 1 --val-fraction 0.34 --methods state_offset,output_offset"
                          " --out " + quote(out.string()));
  ASSERT_EQ(r.code, 0) << describe(r);
  EXPECT_NE(r.out.find("train: 4 examples, 2 validation"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("step 4/4 epoch 2 loss "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tok/s"), std::string::npos);
  EXPECT_NE(r.out.find("eval step 2 val_loss"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("done "), std::string::npos);
  ASSERT_TRUE(fs::exists(out));
  const Result e = engine("eval --model " + quote(model.string()) + " --adapter " + quote(out.string()) +
                          " --data " + quote(data.string()) + " --max-new-tokens 4 --show 1");
  ASSERT_EQ(e.code, 0) << describe(e);
  EXPECT_NE(e.out.find("exact_match "), std::string::npos) << e.out;
  EXPECT_NE(e.out.find("example 0: reference \" It is 0.\""), std::string::npos) << e.out;
}

TEST(TrainCli, CheckpointResumeReproducesTheUninterruptedAdapter) {
  const fs::path model = tiny_model(), data = jsonl();
  const std::string common = "train --model " + quote(model.string()) + " --data " + quote(data.string()) +
                             " --epochs 3 --batch-size 2 --lr 0.01 --checkpoint-every 1 --adapter-dtype f32";
  const Result full = engine(common + " --out " + quote((scratch() / "full.safetensors").string()) +
                             " --checkpoint-dir " + quote((scratch() / "ck-full").string()));
  ASSERT_EQ(full.code, 0) << describe(full);
  const std::string ck = " --checkpoint-dir " + quote((scratch() / "ck-part").string());
  const Result part = engine(common + " --max-steps 4 --out " + quote((scratch() / "part.safetensors").string()) + ck);
  ASSERT_EQ(part.code, 0) << describe(part);
  const Result rest = engine(common + " --resume --out " + quote((scratch() / "rest.safetensors").string()) + ck);
  ASSERT_EQ(rest.code, 0) << describe(rest);
  EXPECT_NE(rest.out.find("step 9/9"), std::string::npos) << rest.out;
  // Same tensors: compare the two files' tensor bytes through the optimizer-state files' params.
  const std::string a = slurp(scratch() / "ck-full" / "trainer_state.safetensors");
  const std::string b = slurp(scratch() / "ck-part" / "trainer_state.safetensors");
  EXPECT_EQ(a, b);
}

TEST(TrainCli, NamedDatasetTrainAndEval) {
  if (!fs::exists(kShared / "datasets" / "glue")) GTEST_SKIP() << "no shared/datasets/glue";
  const fs::path model = tiny_model(), out = scratch() / "rte.safetensors";
  const std::string ds = " --datasets-dir " + quote((kShared / "datasets").string());
  const Result r = engine("train --model " + quote(model.string()) + " --dataset glue/rte --max-examples 4 --epochs 1"
                          " --max-length 96 --out " + quote(out.string()) + ds);
  ASSERT_EQ(r.code, 0) << describe(r);
  EXPECT_NE(r.out.find("train: 4 examples, 0 validation"), std::string::npos) << r.out;
  const Result e = engine("eval --model " + quote(model.string()) + " --adapter " + quote(out.string()) +
                          " --dataset glue/rte --split validation --max-examples 3" + ds);
  ASSERT_EQ(e.code, 0) << describe(e);
  EXPECT_NE(e.out.find("eval rte split validation, 3 examples"), std::string::npos) << e.out;
  EXPECT_NE(e.out.find("accuracy "), std::string::npos) << e.out;
}

TEST(TrainCli, UsageErrorsExitTwo) {
  const fs::path model = tiny_model(), data = jsonl();
  EXPECT_EQ(engine("train --model " + quote(model.string()) + " --out x").code, 2);  // no data
  EXPECT_EQ(engine("train --model " + quote(model.string()) + " --data " + quote(data.string()) +
                   " --dataset rte --out x").code, 2);
  EXPECT_EQ(engine("train --model " + quote(model.string()) + " --data " + quote(data.string()) +
                   " --out x --no-such-flag 1").code, 2);
  EXPECT_EQ(engine("train --model " + quote(model.string()) + " --data " + quote(data.string()) +
                   " --out x --methods bogus").code, 2);
  EXPECT_EQ(engine("eval --model " + quote(model.string())).code, 2);
  // A bad file is a failure, not a usage error.
  EXPECT_EQ(engine("train --model " + quote(model.string()) + " --data /nonexistent.jsonl --out x").code, 1);
}

}  // namespace
