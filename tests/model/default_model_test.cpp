// The shipped default base model (models/default), which every binary loads when no --model is given:
// it is where default_model_dir() says, it loads, it is the model its card (models/default/README.md)
// describes -- shape, parameter count, vocabulary and the weights' fingerprint, which adapters trained
// on it record -- and it is a trained language model, not random weights: it scores English far
// better than chance and generates.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "server/engine/model/default_model.h"
#include "server/engine/model/mamba_model.h"
#include "server/engine/text/tokenizer.h"

namespace statetune::engine {
namespace {
namespace fs = std::filesystem;

const fs::path kDefaultDir = fs::path(STATETUNE_SOURCE_DIR) / "models" / "default";

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream b;
  b << in.rdbuf();
  return b.str();
}

// The first capture of `pattern` in the model card; fails the test when the card does not say it.
std::string from_card(const std::string& pattern) {
  static const std::string card = read_text(kDefaultDir / "README.md");
  std::smatch m;
  if (!std::regex_search(card, m, std::regex(pattern))) {
    ADD_FAILURE() << "models/default/README.md does not match /" << pattern << "/";
    return "";
  }
  return m[1].str();
}

int64_t card_number(const std::string& pattern) {
  std::string digits = from_card(pattern);
  digits.erase(std::remove(digits.begin(), digits.end(), ','), digits.end());
  return digits.empty() ? -1 : std::stoll(digits);
}

class DefaultModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = MambaModel::load(kDefaultDir, LoadOptions{}).release();
    tokenizer_ = new Tokenizer(Tokenizer::from_file((kDefaultDir / "tokenizer.json").string()));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete tokenizer_;
  }
  // Logits after each position of `ids` (batch 1), [L, V].
  static at::Tensor all_logits(const std::vector<int32_t>& ids) {
    const int64_t L = static_cast<int64_t>(ids.size());
    std::vector<int64_t> v(ids.begin(), ids.end());
    StateCache cache(model_->config(), 1, at::kCPU);
    return model_->prefill(at::tensor(v, at::kLong).view({1, L}), at::full({1}, L, at::kLong),
                           at::zeros({1}, at::kLong), at::Tensor(), AdapterPoolView{}, cache,
                           /*resume=*/false, /*all_positions=*/true)[0];
  }
  static MambaModel* model_;
  static Tokenizer* tokenizer_;
};
MambaModel* DefaultModel::model_ = nullptr;
Tokenizer* DefaultModel::tokenizer_ = nullptr;

TEST_F(DefaultModel, IsWhereEveryBinaryLooksWithoutAModelFlag) {
  const char* env = std::getenv("STATETUNE_MODEL");
  const std::string saved = env ? env : "";
  ::unsetenv("STATETUNE_MODEL");
  const fs::path found = default_model_dir();
  if (!saved.empty()) ::setenv("STATETUNE_MODEL", saved.c_str(), 1);
  EXPECT_EQ(fs::canonical(found), fs::canonical(kDefaultDir));
}

TEST_F(DefaultModel, MatchesItsModelCard) {
  const MambaConfig& c = model_->config();
  EXPECT_EQ(c.d_model, card_number(R"(d_model (\d+))"));
  EXPECT_EQ(c.n_layer, card_number(R"(d_model \d+, (\d+) layers)"));
  EXPECT_EQ(c.d_state, card_number(R"(d_state (\d+))"));
  EXPECT_EQ(c.expand, card_number(R"(expand (\d+))"));
  EXPECT_EQ(c.d_inner, card_number(R"(d_inner (\d+))"));
  EXPECT_EQ(c.d_conv, card_number(R"(d_conv (\d+))"));
  EXPECT_EQ(c.dt_rank, card_number(R"(dt_rank (\d+))"));
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_FALSE(c.proj_bias);
  EXPECT_EQ(static_cast<int64_t>(tokenizer_->vocab_size()), card_number(R"((\d+) tokens padded to)"));
  EXPECT_EQ(c.vocab_size, card_number(R"(tokens padded to (\d+))"));
  EXPECT_EQ(c.parameter_count(), card_number(R"(\| parameters \| ([\d,]+))"));
  EXPECT_EQ(c.eos_token_id, tokenizer_->encode("<|endoftext|>").at(0));
  // The fingerprint adapters trained on this base carry: the card's value is this file's.
  EXPECT_EQ(model_->fingerprint().weights_sha256, from_card(R"(weights_sha256 `([0-9a-f]{64})`)"))
      << "models/default/model.safetensors changed without its model card";
  EXPECT_EQ(model_->fingerprint().architecture, "MambaForCausalLM");
}

// Trained, not random: the mean next-token loss on an ordinary English sentence is far below chance
// (ln 50277 = 10.8 nats; the card reports 4.6 on its held-out text), and greedy decoding produces text.
TEST_F(DefaultModel, ScoresEnglishFarBetterThanChanceAndGenerates) {
  const std::vector<int32_t> ids =
      tokenizer_->encode("The children walked to the school in the morning, and the teacher was waiting for them.");
  ASSERT_GT(ids.size(), 10u);
  const at::Tensor logp = at::log_softmax(all_logits(ids), -1);
  double nll = 0;
  for (size_t i = 0; i + 1 < ids.size(); ++i) nll -= logp[static_cast<int64_t>(i)][ids[i + 1]].item<double>();
  nll /= static_cast<double>(ids.size() - 1);
  EXPECT_TRUE(std::isfinite(nll));
  EXPECT_LT(nll, 6.5) << "a trained model; random weights score about " << std::log(50277.0);

  std::vector<int32_t> prompt = tokenizer_->encode("The meaning of the word");
  std::vector<int32_t> generated;
  std::vector<int32_t> context = prompt;
  for (int i = 0; i < 8; ++i) {
    const at::Tensor last = all_logits(context)[static_cast<int64_t>(context.size()) - 1];
    const int32_t next = static_cast<int32_t>(last.narrow(0, 0, static_cast<int64_t>(tokenizer_->vocab_size())).argmax().item<int64_t>());
    generated.push_back(next);
    context.push_back(next);
  }
  const std::string text = tokenizer_->decode(generated);
  EXPECT_FALSE(text.empty());
  EXPECT_NE(text.find_first_not_of(" \n"), std::string::npos) << "only whitespace: \"" << text << "\"";
  std::printf("models/default: %.3f nats/token on the sentence; greedy continuation \"%s\"\n", nll, text.c_str());
}

}  // namespace
}  // namespace statetune::engine
