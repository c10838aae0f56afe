#include "server/engine/tasks/jsonl.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>

namespace statetune::tasks {
namespace {

TEST(Jsonl, RoundTripKeepsNewlinesAndUnicode) {
  const std::string path =
      (std::filesystem::temp_directory_path() / ("statetune_jsonl_" + std::to_string(::getpid()) + ".jsonl")).string();
  const std::vector<PromptCompletion> records = {{"line 1\nline \"2\"", "0"}, {"caf\xC3\xA9 \xE2\x9C\x93", ""}};
  write_prompt_completion_jsonl(path, records);
  const auto back = read_prompt_completion_jsonl(path);
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].prompt, records[0].prompt);
  EXPECT_EQ(back[1].prompt, records[1].prompt);
  EXPECT_EQ(back[1].completion, "");
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  std::filesystem::remove(path);
}

TEST(Jsonl, ErrorsNameTheLine) {
  const std::string text = "{\"prompt\": \"a\", \"completion\": \"b\"}\n\n{\"prompt\": \"a\"}\n";
  try {
    parse_prompt_completion_jsonl(text, "upload.jsonl");
    FAIL() << "a record without completion must be rejected";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("upload.jsonl:3"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("completion"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_prompt_completion_jsonl("{\"prompt\": 1, \"completion\": \"b\"}", "x"), std::runtime_error);
  EXPECT_THROW(parse_prompt_completion_jsonl("not json", "x"), std::runtime_error);
  EXPECT_EQ(parse_prompt_completion_jsonl("{\"prompt\":\"p\",\"completion\":\"c\"}\r\n", "x").size(), 1u);
}

// One rule for every reader (the service's validator uses prompt_completion_problems too): a field
// other than prompt and completion is an error, not silently skipped.
TEST(Jsonl, ExtraFieldsAreRefusedAsTheServiceRefusesThem) {
  try {
    parse_prompt_completion_jsonl("{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\", \"completion\": \"b\", \"label\": 1}\n", "x.jsonl");
    FAIL() << "an extra field must be refused";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("x.jsonl:2: unexpected field \"label\""), std::string::npos) << e.what();
  }
  PromptCompletion out;
  EXPECT_EQ(prompt_completion_problems(nlohmann::json::parse(R"({"prompt": "p", "completion": ""})"), false, out),
            std::vector<std::string>{});
  EXPECT_EQ(out.completion, "");
  const auto strict = prompt_completion_problems(nlohmann::json::parse(R"({"prompt": "", "completion": 3, "id": 1})"), true, out);
  ASSERT_EQ(strict.size(), 3u);
  EXPECT_NE(strict[0].find("unexpected field \"id\""), std::string::npos);
  EXPECT_NE(strict[1].find("\"prompt\" is empty"), std::string::npos);
  EXPECT_NE(strict[2].find("\"completion\" is not a string"), std::string::npos);
  // A hostile key is quoted bounded and printable.
  const auto hostile = prompt_completion_problems(
      nlohmann::json{{"prompt", "p"}, {"completion", "c"}, {std::string(10000, 'k') + "\n", 1}}, false, out);
  ASSERT_EQ(hostile.size(), 1u);
  EXPECT_LT(hostile[0].size(), 300u);
}

TEST(Jsonl, WriteToMissingFolderFails) {
  EXPECT_THROW(write_prompt_completion_jsonl("/nonexistent-folder/x.jsonl", std::vector<PromptCompletion>{}),
               std::runtime_error);
}

}  // namespace
}  // namespace statetune::tasks
