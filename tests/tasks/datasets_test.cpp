#include "server/engine/tasks/datasets.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <set>

#include "server/engine/tasks/convert_dataset.h"
#include "server/engine/tasks/jsonl.h"
#include "server/engine/tasks/task_metric.h"
#include "test_paths.h"

namespace statetune::tasks {
namespace {

std::vector<Example> load(const std::string& task, Split split) {
  DatasetOptions options;
  options.datasets_dir = testing::datasets_dir();
  return load_examples(task, split, options);
}

std::vector<std::string> completions(const std::vector<Example>& examples) {
  std::vector<std::string> out;
  for (const auto& ex : examples) out.push_back(ex.completion);
  return out;
}

TEST(Datasets, TaskAndSplitNames) {
  EXPECT_EQ(canonical_task_name("SST-2"), "sst2");
  EXPECT_EQ(canonical_task_name("Spider"), "spider");
  EXPECT_THROW(canonical_task_name("squad"), std::invalid_argument);
  EXPECT_EQ(parse_split("dev"), Split::kValidation);
  EXPECT_EQ(split_name(Split::kTest), "test");
  EXPECT_THROW(parse_split("holdout"), std::invalid_argument);
}

// A container without the data sets mounted: the error says which folder was looked at, where that
// folder came from, and how to name another.
TEST(Datasets, MissingFolderSaysWhereTheDataGoes) {
  const std::string missing = (std::filesystem::temp_directory_path() /
                               ("statetune_no_datasets_" + std::to_string(::getpid()))).string();
  auto message = [](const std::string& given) {
    try {
      DatasetOptions options;
      options.datasets_dir = given;
      load_examples("rte", Split::kTrain, options);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string from_flag = message(missing);
  EXPECT_NE(from_flag.find("no data sets at " + missing + "/glue (--datasets-dir)"), std::string::npos)
      << from_flag;
  EXPECT_NE(from_flag.find("STATETUNE_DATASETS_DIR"), std::string::npos) << from_flag;

  const char* before = std::getenv("STATETUNE_DATASETS_DIR");
  const std::string saved = before ? before : "";
  ::setenv("STATETUNE_DATASETS_DIR", missing.c_str(), 1);
  const std::string from_env = message("");
  if (before) ::setenv("STATETUNE_DATASETS_DIR", saved.c_str(), 1); else ::unsetenv("STATETUNE_DATASETS_DIR");
  EXPECT_NE(from_env.find(missing + "/glue (STATETUNE_DATASETS_DIR)"), std::string::npos) << from_env;
  // An empty folder (a volume mounted without the data) is no better.
  std::filesystem::create_directories(missing);
  const std::string empty = message(missing);
  std::filesystem::remove_all(missing);
  EXPECT_NE(empty.find("no data sets at " + missing + "/glue (--datasets-dir)"), std::string::npos) << empty;
}

TEST(Datasets, GlueCountsLabelsAndPrompts) {
  STATETUNE_SKIP_WITHOUT_DATASETS();
  // Line counts of the files minus headers (CoLA has none); MNLI/QNLI/QQP are the 8,999 / 1,000 subsets.
  const std::vector<std::tuple<std::string, size_t, size_t>> counts = {
      {"cola", 8551, 1043}, {"mrpc", 3667, 408},  {"rte", 2490, 277},  {"sst2", 67349, 872},
      {"mnli", 8999, 1000}, {"qnli", 8999, 1000}, {"qqp", 8999, 1000}};
  for (const auto& [task, train, dev] : counts) {
    EXPECT_EQ(load(task, Split::kTrain).size(), train) << task;
    EXPECT_EQ(load(task, Split::kValidation).size(), dev) << task;
  }
  const auto rte = load("rte", Split::kValidation);
  EXPECT_EQ(rte[0].prompt,
            "Sentence 1: Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44, "
            "according to the Christopher Reeve Foundation.\nSentence 2: Christopher Reeve had an accident.\n"
            "Do they entail? Answer 0 for yes, 1 for no");
  EXPECT_EQ(rte[0].completion, "1");
  EXPECT_EQ(rte[0].label, "not_entailment");
  // Label distributions of the dev files (awk over the label column): RTE 146 entailment, MRPC 279
  // paraphrases, CoLA 721 acceptable.
  auto count_digit = [](const std::vector<Example>& v, const std::string& d) {
    return std::count_if(v.begin(), v.end(), [&](const Example& e) { return e.completion == d; });
  };
  EXPECT_EQ(count_digit(rte, "0"), 146);
  EXPECT_EQ(count_digit(load("mrpc", Split::kValidation), "1"), 279);
  EXPECT_EQ(count_digit(load("cola", Split::kValidation), "1"), 721);
  const auto mnli = load("mnli", Split::kTrain);
  EXPECT_EQ(std::set<std::string>({mnli[0].completion, mnli[2].completion}), (std::set<std::string>{"0", "1"}));
  EXPECT_THROW(load("rte", Split::kTest), std::invalid_argument);
}

TEST(Datasets, GlueMetricsOnGoldAndFlippedLabels) {
  STATETUNE_SKIP_WITHOUT_DATASETS();
  const auto cola = load("cola", Split::kValidation);
  auto gold = completions(cola);
  const auto perfect = task_metric("cola", gold, cola);
  EXPECT_DOUBLE_EQ(perfect.at("accuracy"), 1.0);
  EXPECT_DOUBLE_EQ(perfect.at("matthews_correlation"), 1.0);
  for (auto& g : gold) g = g == "1" ? "0" : "1";
  EXPECT_NEAR(task_metric("cola", gold, cola).at("matthews_correlation"), -1.0, 1e-12);
  const auto mrpc = load("mrpc", Split::kValidation);
  const std::vector<std::string> all_ones(mrpc.size(), "1");
  // Always answering "1": precision 279/408, recall 1 -> F1 = 2*279 / (2*279 + 129) = 558/687.
  EXPECT_NEAR(task_metric("mrpc", all_ones, mrpc).at("f1"), 558.0 / 687.0, 1e-12);
}

TEST(Datasets, SamsumSplitsAndRouge) {
  STATETUNE_SKIP_WITHOUT_DATASETS();
  const auto train = load("samsum", Split::kTrain);
  EXPECT_EQ(train.size(), 14732u);
  EXPECT_EQ(load("samsum", Split::kValidation).size(), 818u);
  const auto test = load("samsum", Split::kTest);
  EXPECT_EQ(test.size(), 819u);
  EXPECT_EQ(train[0].prompt,
            "Summarize the dialogue.\nAmanda: I baked  cookies. Do you want some?\nJerry: Sure!\n"
            "Amanda: I'll bring you tomorrow :-)");
  EXPECT_EQ(train[0].completion, "Amanda baked cookies and will bring Jerry some tomorrow.");
  const auto scores = task_metric("samsum", completions(test), test);
  EXPECT_DOUBLE_EQ(scores.at("rouge1"), 1.0);
  EXPECT_DOUBLE_EQ(scores.at("rougeL"), 1.0);
}

TEST(Datasets, SpiderSplitsKeepTheDatabase) {
  STATETUNE_SKIP_WITHOUT_DATASETS();
  const auto train = load("spider", Split::kTrain);
  const auto dev = load("spider", Split::kValidation);
  EXPECT_EQ(train.size(), 7000u);
  EXPECT_EQ(dev.size(), 1034u);
  EXPECT_EQ(dev[0].db_id, "concert_singer");
  EXPECT_EQ(dev[0].completion, "SELECT count(*) FROM singer");
  EXPECT_NE(dev[0].prompt.find("singer: Singer_ID (number), Name (text)"), std::string::npos) << dev[0].prompt;
  EXPECT_NE(dev[0].prompt.find("Question: How many singers do we have?"), std::string::npos);
  EXPECT_EQ(train[0].completion, "SELECT count(*) FROM head WHERE age > 56");  // whitespace runs collapsed
  const auto scores = task_metric("spider", completions(dev), dev, testing::datasets_dir());
  EXPECT_DOUBLE_EQ(scores.at("exact_match"), 1.0);
  EXPECT_THROW(load("spider", Split::kTest), std::invalid_argument);
}

TEST(Datasets, DartSplitIsSeededAndDisjoint) {
  STATETUNE_SKIP_WITHOUT_DATASETS();
  const auto train = load("dart", Split::kTrain);
  const auto validation = load("dart", Split::kValidation);
  // 2,768 entries hold 2,721 distinct triple sets (duplicates are merged, their 6,980 references
  // without duplicates are 6,815): round(0.2 * 2721) = 544 go to validation; train has one example per
  // reference, so the references of both splits add up to 6,815.
  EXPECT_EQ(validation.size(), 544u);
  size_t refs = train.size();
  for (const auto& ex : validation) refs += ex.references.size();
  EXPECT_EQ(refs, 6815u);
  std::set<std::string> train_prompts;
  for (const auto& ex : train) train_prompts.insert(ex.prompt);
  for (const auto& ex : validation) EXPECT_EQ(train_prompts.count(ex.prompt), 0u) << ex.prompt;
  // Same seed, same split; another seed, another split.
  EXPECT_EQ(load("dart", Split::kValidation)[0].prompt, validation[0].prompt);
  DatasetOptions other;
  other.datasets_dir = testing::datasets_dir();
  other.seed = 7;
  const auto validation7 = load_examples("dart", Split::kValidation, other);
  EXPECT_EQ(validation7.size(), 544u);
  size_t same = 0;
  for (size_t i = 0; i < validation.size(); ++i) same += validation[i].prompt == validation7[i].prompt;
  EXPECT_LT(same, validation.size() / 2);
}

TEST(Datasets, DartTestXml) {
  STATETUNE_SKIP_WITHOUT_DATASETS();
  const auto test = load("dart", Split::kTest);
  EXPECT_EQ(test.size(), 5097u);  // every entry has at least one non-empty <lex>
  size_t refs = 0;
  for (const auto& ex : test) refs += ex.references.size();
  EXPECT_EQ(refs, 12551u);  // 12,552 <lex> elements, one of them empty
  EXPECT_EQ(test[0].prompt,
            "Write a sentence that states these facts (subject : relation : object):\n"
            "Hawaii Five-O : NOTES : Episode: The Flight of the Jewels | [TABLECONTEXT] : [TITLE] : Jeff Daniels | "
            "[TABLECONTEXT] : TITLE : Hawaii Five-O");
  EXPECT_EQ(test[0].completion, "Jeff Daniels played in the Hawaii Five-O episode The Flight of the Jewels");
  // The first reference of each example scored against all its references: every n-gram matches.
  EXPECT_NEAR(task_metric("dart", completions(test), test).at("bleu"), 100.0, 1e-9);
}

TEST(Datasets, ConvertDatasetWritesJsonl) {
  STATETUNE_SKIP_WITHOUT_DATASETS();
  const std::string path =
      (std::filesystem::temp_directory_path() / ("statetune_convert_" + std::to_string(::getpid()) + ".jsonl")).string();
  DatasetOptions options;
  options.datasets_dir = testing::datasets_dir();
  EXPECT_EQ(convert_dataset("RTE", "validation", path, 5, options), 5u);
  const auto records = read_prompt_completion_jsonl(path);
  const auto rte = load("rte", Split::kValidation);
  ASSERT_EQ(records.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(records[i].prompt, rte[i].prompt);
    EXPECT_EQ(records[i].completion, rte[i].completion);
  }
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace statetune::tasks
