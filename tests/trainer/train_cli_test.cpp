// `statetune-engine train` and `eval` run as subprocesses on a tiny random model: JSONL and named data
// sets, progress lines, the adapter file, checkpoints and resume, and usage errors (exit code 2).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

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

// s without the whitespace tasks::accuracy trims.
std::string trimmed(const std::string& s) {
  const char* ws = " \t\r\n\f\v";
  const auto b = s.find_first_not_of(ws);
  return b == std::string::npos ? "" : s.substr(b, s.find_last_not_of(ws) - b + 1);
}

// The share of predictions equal to their reference after trimming: the metric recomputed here.
double share_equal(const std::vector<std::string>& predictions, const std::vector<std::string>& references) {
  EXPECT_EQ(predictions.size(), references.size());
  double equal = 0;
  for (size_t i = 0; i < predictions.size() && i < references.size(); ++i) {
    equal += trimmed(predictions[i]) == trimmed(references[i]);
  }
  return predictions.empty() ? -1 : equal / static_cast<double>(predictions.size());
}

// The "completion" of every line of a prompt/completion JSONL file.
std::vector<std::string> completions(const fs::path& file) {
  std::vector<std::string> out;
  std::istringstream in(slurp(file));
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(nlohmann::json::parse(line).at("completion").get<std::string>());
  }
  return out;
}

// `statetune-engine eval <args> --json FILE`: what it printed, and the JSON it wrote (null on failure).
std::pair<Result, nlohmann::json> eval_json(const std::string& args, const std::string& name) {
  const fs::path json = scratch() / (name + ".eval.json");
  const Result r = engine("eval " + args + " --json " + quote(json.string()));
  EXPECT_EQ(r.code, 0) << describe(r);
  return {r, r.code == 0 ? nlohmann::json::parse(slurp(json)) : nlohmann::json()};
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
  const auto [e, j] = eval_json("--model " + quote(model.string()) + " --adapter " + quote(out.string()) +
                                     " --data " + quote(data.string()) + " --max-new-tokens 4 --show 1", "a");
  ASSERT_EQ(e.code, 0);
  // The metric is what the predictions score against the data's completions, printed and in the JSON.
  const auto predictions = j.at("predictions").get<std::vector<std::string>>();
  ASSERT_EQ(predictions.size(), 6u);
  const double exact = share_equal(predictions, completions(data));
  EXPECT_DOUBLE_EQ(j.at("metrics").at("exact_match").get<double>(), exact);
  char line[64];
  std::snprintf(line, sizeof(line), "exact_match %.6f\n", exact);
  EXPECT_NE(e.out.find(line), std::string::npos) << line << e.out;
  EXPECT_NE(e.out.find("example 0: reference \" It is 0.\" | prediction " + nlohmann::json(predictions[0]).dump() + "\n"),
            std::string::npos) << e.out;
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
  const std::string with_adapter = "--model " + quote(model.string()) + " --adapter " + quote(out.string());
  const auto [e, named] = eval_json(with_adapter + " --dataset glue/rte --split validation --max-examples 3"
                                    " --max-new-tokens 4" + ds, "rte");
  ASSERT_EQ(e.code, 0);
  EXPECT_NE(e.out.find("eval rte split validation, 3 examples"), std::string::npos) << e.out;
  // The same three examples through convert-dataset: the JSONL a tenant uploads holds the split's
  // prompts and labels, and evaluating it as plain data gives the same predictions and score.
  const fs::path converted = scratch() / "rte-validation.jsonl";
  const Result c = engine("convert-dataset --dataset rte --split validation --max-examples 3 --out " +
                          quote(converted.string()) + ds, /*threads=*/false);
  ASSERT_EQ(c.code, 0) << describe(c);
  // convert-dataset names the folder it read (an image has no data unless one is mounted).
  EXPECT_EQ(c.out, "wrote 3 examples of rte/validation (from " + (kShared / "datasets").string() + ") to " +
                       converted.string() + "\n");
  const std::vector<std::string> labels = completions(converted);
  ASSERT_EQ(labels.size(), 3u);
  for (const auto& l : labels) EXPECT_TRUE(l == "0" || l == "1") << "an RTE label digit, got \"" << l << "\"";
  const auto [d, as_data] = eval_json(with_adapter + " --data " + quote(converted.string()) + " --max-new-tokens 4",
                                      "rte-as-data");
  ASSERT_EQ(d.code, 0);
  const auto predictions = named.at("predictions").get<std::vector<std::string>>();
  EXPECT_EQ(as_data.at("predictions").get<std::vector<std::string>>(), predictions);
  const double accuracy = share_equal(predictions, labels);
  EXPECT_DOUBLE_EQ(named.at("metrics").at("accuracy").get<double>(), accuracy);
  EXPECT_DOUBLE_EQ(as_data.at("metrics").at("exact_match").get<double>(), accuracy);
  char line[64];
  std::snprintf(line, sizeof(line), "accuracy %.6f\n", accuracy);
  EXPECT_NE(e.out.find(line), std::string::npos) << line << e.out;
}

// `train --methods full` (how models/default was pretrained) through the command line: every weight
// trained on {"text"} documents, the held-out loss falls on a repetitive stream, and the folder it
// writes is a model the other subcommands load.
TEST(TrainCli, FullTrainingWritesALoadableModelWithLowerHeldoutLoss) {
  const fs::path model = tiny_model(), data = scratch() / "docs.jsonl", heldout = scratch() / "heldout.jsonl";
  const char* sentences[] = {"the cat sat on the mat", "a dog ran in the park", "we like green tea"};
  {
    std::ofstream d(data), h(heldout);
    for (int i = 0; i < 60; ++i) d << nlohmann::json({{"text", sentences[i % 3]}}).dump() << "\n";
    for (int i = 0; i < 12; ++i) h << nlohmann::json({{"text", sentences[(i + 1) % 3]}}).dump() << "\n";
  }
  const fs::path out = scratch() / "full-model";
  const Result r = engine("train --methods full --model " + quote(model.string()) + " --data " +
                          quote(data.string()) + " --heldout-data " + quote(heldout.string()) + " --out " +
                          quote(out.string()) + " --max-steps 30 --max-length 16 --batch-size 4 --lr 1e-2"
                          " --warmup-steps 2 --eval-every 15 --eval-windows 4 --log-every 10 --save-dtype f32");
  ASSERT_EQ(r.code, 0) << describe(r);
  EXPECT_NE(r.out.find("step 30/30 loss "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("eval step 15 heldout_loss "), std::string::npos) << r.out;
  const auto log = nlohmann::json::parse(slurp(out / "training_log.json"));
  const auto& result = log.at("result");
  EXPECT_EQ(result.at("steps").get<int64_t>(), 30);
  EXPECT_EQ(result.at("tokens").get<int64_t>(), 30 * 4 * 16);
  EXPECT_LT(result.at("heldout_loss").get<double>(), result.at("initial_heldout_loss").get<double>() - 1.0)
      << "30 steps on three repeated sentences should take the held-out loss down";
  char done[160];
  std::snprintf(done, sizeof(done), "held-out loss %.4f -> %.4f", result.at("initial_heldout_loss").get<double>(),
                result.at("heldout_loss").get<double>());
  EXPECT_NE(r.out.find(done), std::string::npos) << done << "\n" << r.out;
  // The same architecture, new weights, and the folder works as a model.
  auto config = [](const fs::path& dir) { return nlohmann::json::parse(slurp(dir / "config.json")); };
  EXPECT_EQ(config(out), config(model));
  EXPECT_NE(slurp(out / "model.safetensors"), slurp(model / "model.safetensors"));
  EXPECT_TRUE(fs::exists(out / "tokenizer.json"));
  const Result g = engine("generate --model " + quote(out.string()) + " --prompt " + quote("the cat") +
                          " --max-tokens 4");
  EXPECT_EQ(g.code, 0) << describe(g);
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
