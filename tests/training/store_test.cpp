// The data set validator (line-numbered problems, many at once) and the SQLite job store (schema
// migrations, persistence across reopen, event sequence numbers, tenant scoping).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "server/training/chat_dataset.h"
#include "server/training/dataset_validator.h"
#include "server/training/job_store.h"

namespace statetune::training {
namespace {
namespace fs = std::filesystem;

TEST(DatasetValidator, AcceptsGoodLinesAndSkipsBlankOnes) {
  const std::string text =
      "{\"prompt\": \"a\", \"completion\": \"b\"}\n\n{\"completion\": \"d\", \"prompt\": "
      "\"c\"}\r\n";
  ValidationOptions o;
  o.min_examples = 2;
  const auto r = validate_jsonl(text, o);
  ASSERT_TRUE(r.ok()) << r.summary();
  ASSERT_EQ(r.examples.size(), 2u);
  EXPECT_EQ(r.examples[1].line, 3);
  EXPECT_EQ(r.examples[1].prompt, "c");
  EXPECT_EQ(r.examples[1].completion, "d");
}

// OpenAI chat-format fine-tuning lines become prompt/completion lines rendered with the chat template
// (what statetune-serve's /v1/chat/completions renders), line numbers unchanged; prompt/completion
// lines and non-JSON lines pass through for the validator to judge.
TEST(ChatDataset, ConvertsChatLinesWithTheTemplateAndKeepsLineNumbers) {
  const std::string text =
      "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, "
      "{\"role\": \"user\", \"content\": \"2+2?\"}, {\"role\": \"assistant\", \"content\": \"4\"}]}\n"
      "\n"
      "{\"prompt\": \"p\", \"completion\": \"c\"}\n"
      "not json\n";
  const engine::ChatTemplate plain;
  const ChatConversion c = convert_chat_jsonl(text, plain);
  ASSERT_TRUE(c.problems.ok()) << c.problems.summary();
  const auto r = validate_jsonl(c.jsonl, ValidationOptions{});
  ASSERT_EQ(r.examples.size(), 2u) << c.jsonl;
  EXPECT_EQ(r.examples[0].line, 1);
  EXPECT_EQ(r.examples[0].prompt, "System: Be brief.\nUser: 2+2?\nAssistant:");
  EXPECT_EQ(r.examples[0].completion, "4");
  EXPECT_EQ(r.examples[1].line, 3);
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_EQ(r.problems[0].line, 4);  // the non-JSON line, reported by the validator with its number
  // At serving time the same chat (without the answer) renders to the training prompt + separator.
  EXPECT_EQ(plain.render_prompt({{"system", "Be brief."}, {"user", "2+2?"}}),
            r.examples[0].prompt + engine::kPromptCompletionSeparator);
}

TEST(ChatDataset, ReportsBadChatLinesWithTheirLineNumbers) {
  const std::string text =
      "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"a\"}]}\n"
      "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}]}\n"                 // no answer
      "{\"messages\": [{\"role\": \"wizard\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"a\"}]}\n"
      "{\"messages\": [{\"role\": \"user\", \"content\": 5}, {\"role\": \"assistant\", \"content\": \"a\"}]}\n"
      "{\"messages\": \"nope\"}\n";
  const ChatConversion c = convert_chat_jsonl(text, engine::ChatTemplate{}, /*max_problems=*/3);
  EXPECT_EQ(c.problems.total_problems, 4);
  ASSERT_EQ(c.problems.problems.size(), 3u);
  EXPECT_EQ(c.problems.problems[0].line, 2);
  EXPECT_EQ(c.problems.problems[1].line, 3);
  EXPECT_NE(c.problems.problems[1].message.find("role"), std::string::npos);
  EXPECT_EQ(c.problems.problems[2].line, 4);
  EXPECT_NE(c.problems.summary().find("line 2"), std::string::npos);
}

TEST(DatasetValidator, ReportsEveryProblemWithItsLine) {
  const std::string text =
      "{\"prompt\": \"ok\", \"completion\": \"fine\"}\n"         // 1 ok
      "{\"prompt\": \"x\"}\n"                                    // 2 missing completion
      "[1, 2]\n"                                                 // 3 not an object
      "{\"prompt\": \"x\", \"completion\": \"y\"\n"              // 4 truncated JSON
      "{\"prompt\": \"x\", \"completion\": \"y\", \"id\": 3}\n"  // 5 extra key
      "{\"prompt\": \"\", \"completion\": 7}\n"           // 6 empty prompt, completion not a string
      "{\"prompt\": \"\xff\", \"completion\": \"y\"}\n";  // 7 invalid UTF-8
  const auto r = validate_jsonl(text, ValidationOptions{});
  ASSERT_FALSE(r.ok());
  std::vector<int64_t> lines;
  for (const auto& p : r.problems) lines.push_back(p.line);
  EXPECT_EQ(lines, (std::vector<int64_t>{2, 3, 4, 5, 6, 6, 7}));
  EXPECT_NE(r.problems[0].message.find("missing field \"completion\""), std::string::npos);
  EXPECT_NE(r.problems[3].message.find("unexpected field \"id\""), std::string::npos);
  EXPECT_NE(r.problems[6].message.find("UTF-8"), std::string::npos);
  EXPECT_NE(r.summary().find("line 4: not valid JSON"), std::string::npos) << r.summary();
  EXPECT_EQ(r.examples.size(), 1u);
}

TEST(DatasetValidator, TokenLimitMinimumCountAndProblemCap) {
  ValidationOptions o;
  o.max_example_tokens = 5;
  o.count_tokens = [](std::string_view s, int64_t) { return static_cast<int64_t>(s.size()); };
  o.min_examples = 3;
  auto r = validate_jsonl(
      "{\"prompt\": \"ab\", \"completion\": \"c\"}\n{\"prompt\": \"abc\", \"completion\": "
      "\"def\"}\n",
      o);
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_EQ(r.problems[0].line, 2);
  EXPECT_NE(r.problems[0].message.find("6 tokens"), std::string::npos);
  r = validate_jsonl("{\"prompt\": \"ab\", \"completion\": \"c\"}\n", o);
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_EQ(r.problems[0].line, 0);
  EXPECT_NE(r.problems[0].message.find("minimum of 3"), std::string::npos);
  EXPECT_EQ(r.max_example_tokens, 3);
  std::string many;
  for (int i = 0; i < 50; ++i) many += "nope\n";
  ValidationOptions capped;
  capped.max_problems = 10;
  r = validate_jsonl(many, capped);
  EXPECT_EQ(r.problems.size(), 10u);
  EXPECT_EQ(r.total_problems, 50);
  EXPECT_NE(r.summary(5).find("the data set has 50 problems: line 1: "), std::string::npos)
      << r.summary(5);
  EXPECT_NE(r.summary(5).find("; and 45 more"), std::string::npos) << r.summary(5);
}

TEST(DatasetValidator, Utf8) {
  EXPECT_TRUE(is_valid_utf8("h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80"));
  EXPECT_FALSE(is_valid_utf8("\xC0\xAF"));          // overlong
  EXPECT_FALSE(is_valid_utf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(is_valid_utf8("\xE2\x82"));          // truncated
  EXPECT_FALSE(is_valid_utf8("\xF4\x90\x80\x80"));  // above U+10FFFF
}

class JobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("statetune_store_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(JobStoreTest, PersistsDatasetsJobsAndEventsAcrossReopen) {
  {
    SqliteJobStore s(dir_ / "jobs.db");
    EXPECT_EQ(s.schema_version(), 2);
    s.insert_dataset({"ds-1", "acme", "train", "/x.jsonl", "abc", 100, 10, 7, 1000}, "");
    s.insert_dataset({"ds-2", "beta", "other", "/y.jsonl", "def", 50, 5, 3, 1001}, "");
    JobRecord j;
    j.id = "job-1";
    j.tenant = "acme";
    j.spec = {{"dataset_id", "ds-1"}, {"adapter_name", "a"}};
    j.created_ms = 5;
    s.insert_job(j, "queued");
    j.state = JobState::kRunning;
    j.step = 3;
    j.train_loss = 1.5;
    EXPECT_EQ(s.update_job(j, "step", {{"step", 3}}), 2);
    EXPECT_EQ(s.append_progress(j, "step", {{"step", 4}}), 3);
    EXPECT_TRUE(s.dataset_in_use("acme", "ds-1"));
    EXPECT_FALSE(s.dataset_in_use("beta", "ds-1"));
  }
  SqliteJobStore s(dir_ / "jobs.db");  // reopened: migrations are not re-run, the rows are there
  EXPECT_EQ(s.schema_version(), 2);
  EXPECT_EQ(s.datasets("acme").size(), 1u);
  EXPECT_FALSE(s.dataset("beta", "ds-1").has_value()) << "data sets are scoped to their tenant";
  EXPECT_EQ(s.tenant_dataset_bytes("acme"), 100);
  auto j = s.job("job-1");
  ASSERT_TRUE(j.has_value());
  EXPECT_EQ(j->state, JobState::kRunning);
  EXPECT_EQ(j->step, 3);
  EXPECT_DOUBLE_EQ(j->train_loss, 1.5);
  EXPECT_EQ(j->spec["adapter_name"], "a");
  EXPECT_EQ(s.jobs_in_state(JobState::kRunning).size(), 1u);
  EXPECT_EQ(s.count_jobs("acme", {JobState::kQueued, JobState::kRunning}), 1);
  auto ev = s.events("job-1", 1);
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].seq, 2);
  EXPECT_EQ(ev[0].type, "step");
  EXPECT_EQ(ev[1].payload["step"], 4);
  EXPECT_TRUE(s.delete_dataset("acme", "ds-1"));
  EXPECT_FALSE(s.delete_dataset("acme", "ds-1"));
}

}  // namespace
}  // namespace statetune::training
