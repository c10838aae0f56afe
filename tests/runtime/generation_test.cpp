// The text-generation facade: CompletionText fed chosen GPT-NeoX token ids (stop strings that span
// tokens, characters split across byte tokens), and TextGenerator over the real scheduler and a tiny
// random model (vocabulary 256: the GPT-NeoX specials and byte tokens) for finish reasons, usage,
// cancellation and the refusals a front end passes on.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "server/engine/adapters/adapter.h"
#include "server/engine/adapters/adapter_registry.h"
#include "server/engine/adapters/adapter_store.h"
#include "server/engine/model/model_init.h"
#include "server/engine/runtime/generation.h"
#include "tests/text/test_util.h"

namespace statetune::engine {
namespace {
namespace fs = std::filesystem;

// The id of the GPT-NeoX byte token for one byte.
int32_t byte_token(const Tokenizer& tok, unsigned char byte) {
  for (int32_t id = 0; id < 512; ++id) {
    if (!tok.is_special(id) && tok.token_bytes(id) == std::string(1, static_cast<char>(byte))) return id;
  }
  ADD_FAILURE() << "no byte token for " << static_cast<int>(byte);
  return 0;
}

struct Pushed {
  std::string released;
  bool stopped = false;
  size_t stopped_at = 0;  // index of the token that completed the stop string
};

Pushed push_all(CompletionText& text, const std::vector<int32_t>& ids) {
  Pushed out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!text.push(ids[i], out.released)) {
      out.stopped = true;
      out.stopped_at = i;
      break;
    }
  }
  return out;
}

TEST(CompletionText, StopStringAcrossTokenBoundariesEndsTheTextBeforeIt) {
  STATETUNE_REQUIRE_NEOX(tok);
  const std::vector<int32_t> ids = tok->encode("Hello world, the end");
  ASSERT_GE(ids.size(), 3u);
  ASSERT_EQ(tok->decode({ids[0]}), "Hello") << "the stop string below must span tokens";
  CompletionText text(*tok, {"o wor", "zzz"});
  std::string released;
  ASSERT_TRUE(text.push(ids[0], released));
  // The tail that could still start a stop string (longest stop - 1 = 4 bytes) is held back.
  EXPECT_EQ(released, "H");
  EXPECT_FALSE(text.push(ids[1], released)) << "\" world\" completes the stop string";
  EXPECT_EQ(released, "Hell");
  EXPECT_EQ(text.stop_sequence(), "o wor");
  EXPECT_EQ(text.finish(), "") << "nothing after a stop string is ever released";
}

TEST(CompletionText, EarliestStopStringWinsAndHeldBackTextIsReleasedAtTheEnd) {
  STATETUNE_REQUIRE_NEOX(tok);
  const std::string sentence = "one two three four";
  const std::vector<int32_t> ids = tok->encode(sentence);
  {
    CompletionText text(*tok, {"four", "two"});
    Pushed p = push_all(text, ids);
    EXPECT_TRUE(p.stopped);
    EXPECT_EQ(p.released, "one ");
    EXPECT_EQ(text.stop_sequence(), "two");
  }
  {
    // No stop string appears: released + finish() is the whole decode, and after every token what was
    // released is a prefix of it that lacks at most the hold-back (longest stop - 1 = 3 bytes).
    CompletionText text(*tok, {"nine"});
    std::string released;
    for (size_t i = 0; i < ids.size(); ++i) {
      ASSERT_TRUE(text.push(ids[i], released));
      const std::string so_far = tok->decode(std::vector<int32_t>(ids.begin(), ids.begin() + i + 1));
      ASSERT_EQ(so_far.compare(0, released.size(), released), 0) << "not a prefix: '" << released << "'";
      EXPECT_LE(so_far.size() - released.size(), 3u);
    }
    EXPECT_EQ(released + text.finish(), sentence);
  }
}

TEST(CompletionText, CharactersSplitAcrossByteTokensAreHeldBackUntilComplete) {
  STATETUNE_REQUIRE_NEOX(tok);
  const int32_t e2 = byte_token(*tok, 0xE2), x82 = byte_token(*tok, 0x82), xac = byte_token(*tok, 0xAC);
  const int32_t a = byte_token(*tok, 'a');
  {
    CompletionText text(*tok, {});
    std::string released;
    ASSERT_TRUE(text.push(a, released));
    ASSERT_TRUE(text.push(e2, released));
    ASSERT_TRUE(text.push(x82, released));
    EXPECT_EQ(released, "a") << "half a character was released";
    ASSERT_TRUE(text.push(xac, released));
    EXPECT_EQ(released, "a\xE2\x82\xAC");
    // A character the generation leaves unfinished becomes one U+FFFD at the end.
    ASSERT_TRUE(text.push(e2, released));
    EXPECT_EQ(released, "a\xE2\x82\xAC");
    EXPECT_EQ(text.finish(), "\xEF\xBF\xBD");
  }
  {
    // A stop string that is one multi-byte character, its bytes in three tokens.
    CompletionText text(*tok, {"\xE2\x82\xAC"});
    Pushed p = push_all(text, {a, e2, x82, xac, a});
    EXPECT_TRUE(p.stopped);
    EXPECT_EQ(p.stopped_at, 3u);
    EXPECT_EQ(p.released, "a");
  }
}

MambaConfig tiny(int64_t eos) {
  MambaConfig c;
  c.d_model = 64;
  c.n_layer = 2;
  c.vocab_size = 256;
  c.d_state = 16;
  c.expand = 2;
  c.d_inner = 128;
  c.d_conv = 4;
  c.dt_rank = 4;
  c.eos_token_id = eos;
  return c;
}

// One served model: weights (seed 1234) with a chosen end-of-sequence id, pool, store, scheduler and
// the facade over them.
struct Served {
  std::unique_ptr<MambaModel> model;
  std::unique_ptr<AdapterPool> pool;
  std::unique_ptr<AdapterStore> store;
  std::unique_ptr<AdapterRegistry> registry;
  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<TextGenerator> generator;

  Served(const fs::path& dir, const Tokenizer& tok, int64_t eos, int64_t max_batch = 4) {
    write_random_checkpoint(dir / "model", tiny(eos), 1234);
    model = MambaModel::load(dir / "model", LoadOptions{});
    AdapterPoolOptions po;
    po.max_slots = 3;
    pool = std::make_unique<AdapterPool>(model->fingerprint(), po);
    store = std::make_unique<AdapterStore>(dir / "adapters", model->fingerprint());
    registry = std::make_unique<AdapterRegistry>(*store, *pool);
    SchedulerOptions so;
    so.max_batch = max_batch;
    so.max_waiting = 4;
    scheduler = std::make_unique<Scheduler>(*model, *pool, so);
    GenerationLimits limits;
    limits.max_prompt_tokens = 32;
    limits.max_new_tokens = 1000000;
    generator = std::make_unique<TextGenerator>(*scheduler, tok, *registry, model->config().vocab_size, limits);
  }
  ~Served() {
    generator.reset();
    scheduler.reset();
  }
};

class TextGeneratorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tok_ = testing::neox_tokenizer();
    if (tok_ == nullptr) GTEST_SKIP() << "no tokenizer at " << testing::neox_tokenizer_path();
    dir_ = fs::temp_directory_path() / ("statetune_generation_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    served_ = std::make_unique<Served>(dir_ / "main", *tok_, /*eos=*/0);
  }
  void TearDown() override {
    served_.reset();
    fs::remove_all(dir_);
  }

  // Sampled (a tiny random model's greedy output is nearly constant), so the text varies.
  static TextGenerationRequest request(int64_t max_tokens) {
    TextGenerationRequest r;
    r.request_id = "test";
    r.tenant = "acme";
    r.prompt_tokens = {40, 72, 101, 108, 108, 111};
    r.temperature = 1.0;
    r.seed = 4242;
    r.max_tokens = max_tokens;
    r.stop_at_eos = false;
    return r;
  }

  TextGenerator& generator() { return *served_->generator; }

  const Tokenizer* tok_ = nullptr;
  fs::path dir_;
  std::unique_ptr<Served> served_;
};

TEST_F(TextGeneratorTest, LengthFinishGivesTheDecodeOfItsTokensAndTheUsage) {
  const Completion c = generator().complete(request(24));
  EXPECT_EQ(c.finish.reason, FinishReason::kLength);
  EXPECT_TRUE(c.finish.stop_sequence.empty());
  ASSERT_EQ(c.token_ids.size(), 24u);
  std::vector<int32_t> ids(c.token_ids.begin(), c.token_ids.end());
  EXPECT_EQ(c.text, tok_->decode(ids));
  EXPECT_EQ(c.finish.usage.prompt_tokens, 6);
  EXPECT_EQ(c.finish.usage.completion_tokens, 24);
  EXPECT_GT(c.finish.usage.total_seconds, 0);
  EXPECT_TRUE(c.adapter_version.empty());
  // The same seed gives the same completion; text given as a prompt is encoded.
  EXPECT_EQ(generator().complete(request(24)).token_ids, c.token_ids);
  TextGenerationRequest text = request(4);
  text.prompt_tokens.clear();
  text.prompt_text = "(a)";
  const std::vector<int32_t> encoded = tok_->encode(text.prompt_text);
  ASSERT_TRUE(std::all_of(encoded.begin(), encoded.end(), [](int32_t id) { return id < 256; }));
  EXPECT_EQ(generator().complete(text).finish.usage.prompt_tokens, static_cast<int64_t>(encoded.size()));
}

TEST_F(TextGeneratorTest, StopStringAcrossTokensEndsTheCompletionBeforeIt) {
  const Completion full = generator().complete(request(40));
  ASSERT_EQ(full.token_ids.size(), 40u);
  // A two-byte ASCII stop string made of the last byte of token k and the first byte of token k+1,
  // appearing first there.
  std::string stop, expected;
  size_t completing = 0;
  for (size_t k = 1; k + 1 < full.token_ids.size() && stop.empty(); ++k) {
    const std::string before = tok_->decode(std::vector<int32_t>(full.token_ids.begin(), full.token_ids.begin() + k));
    const std::string tail = tok_->token_bytes(static_cast<int32_t>(full.token_ids[k]));
    if (before.empty() || full.text.compare(0, before.size(), before) != 0 || tail.empty()) continue;
    const std::string candidate = before.substr(before.size() - 1) + tail.substr(0, 1);
    const bool ascii = std::all_of(candidate.begin(), candidate.end(),
                                   [](char ch) { return ch >= 0x20 && ch < 0x7f; });
    if (ascii && full.text.find(candidate) == before.size() - 1) {
      stop = candidate;
      expected = before.substr(0, before.size() - 1);
      completing = k;
    }
  }
  ASSERT_FALSE(stop.empty()) << "no token boundary between two ASCII bytes in '" << full.text << "'";
  TextGenerationRequest r = request(40);
  r.stop = {"never in it \x01", stop};
  const Completion c = generator().complete(r);
  EXPECT_EQ(c.finish.reason, FinishReason::kStop);
  EXPECT_EQ(c.finish.stop_sequence, stop);
  EXPECT_EQ(c.text, expected);
  EXPECT_EQ(c.token_ids, std::vector<int64_t>(full.token_ids.begin(), full.token_ids.begin() + completing + 1))
      << "the token that completed the stop string is reported, nothing after it";
  EXPECT_EQ(c.finish.usage.completion_tokens, static_cast<int64_t>(completing + 1));
}

TEST_F(TextGeneratorTest, EndOfSequenceFinishesWithStopAndNoStopSequence) {
  const Completion full = generator().complete(request(24));
  // The first token that did not appear before it, past the start: stopping there is visible.
  size_t k = 1;
  while (k < full.token_ids.size() &&
         std::find(full.token_ids.begin(), full.token_ids.begin() + k, full.token_ids[k]) != full.token_ids.begin() + k) {
    ++k;
  }
  ASSERT_LT(k, full.token_ids.size()) << "the sampled sequence repeats one token; pick another seed";
  Served eos(dir_ / "eos", *tok_, full.token_ids[k]);
  TextGenerationRequest r = request(24);
  r.stop_at_eos = true;
  const Completion c = eos.generator->complete(r);
  EXPECT_EQ(c.finish.reason, FinishReason::kStop);
  EXPECT_TRUE(c.finish.stop_sequence.empty());
  const std::vector<int64_t> before(full.token_ids.begin(), full.token_ids.begin() + k);
  EXPECT_EQ(c.token_ids, before) << "the end-of-sequence token is not part of the completion";
  EXPECT_EQ(c.text, tok_->decode(std::vector<int32_t>(before.begin(), before.end())));
  EXPECT_EQ(c.finish.usage.completion_tokens, static_cast<int64_t>(k));
  r.stop_at_eos = false;
  EXPECT_EQ(eos.generator->complete(r).finish.reason, FinishReason::kLength);
}

TEST_F(TextGeneratorTest, CancellingOrDroppingAStreamFreesItsRow) {
  Served one(dir_ / "one", *tok_, 0, /*max_batch=*/1);
  {
    std::unique_ptr<GenerationStream> s = one.generator->start(request(1000000));
    auto first = s->next(Clock::now() + std::chrono::seconds(60));
    ASSERT_TRUE(first && first->delta) << "no token within 60 s";
    s->cancel();
    std::optional<GenerationFinish> finish;
    while (auto e = s->next(Clock::now() + std::chrono::seconds(60))) {
      if (e->finish) finish = e->finish;
    }
    ASSERT_TRUE(finish) << "the stream did not finish after cancel()";
    EXPECT_EQ(finish->reason, FinishReason::kCancelled);
    EXPECT_TRUE(finish->cancelled_by_caller);
    EXPECT_FALSE(s->next(Clock::now()).has_value()) << "nothing after the finish";
  }
  {
    // A front end that returns early just drops its stream.
    std::unique_ptr<GenerationStream> s = one.generator->start(request(1000000));
    ASSERT_TRUE(s->next(Clock::now() + std::chrono::seconds(60))) << "no token within 60 s";
  }
  // The single row is free again: the next request runs to its length.
  EXPECT_EQ(one.generator->complete(request(3)).finish.reason, FinishReason::kLength);
  // A callback that returns false cancels too.
  int deltas = 0;
  const Completion c = one.generator->complete(request(1000000), [&](const TextDelta&) { return ++deltas < 2; });
  EXPECT_EQ(c.finish.reason, FinishReason::kCancelled);
  EXPECT_TRUE(c.finish.cancelled_by_caller);
  EXPECT_EQ(one.scheduler->counts().running, 0);
}

TEST_F(TextGeneratorTest, AdapterIsResolvedToItsCurrentVersion) {
  Adapter a = random_adapter(served_->model->config(), served_->model->fingerprint(), {kStateOffset}, 7, 0.5);
  const std::string version = served_->store->put("acme", "mine", a);
  TextGenerationRequest r = request(5);
  r.adapter = "mine";
  const Completion c = generator().complete(r);
  EXPECT_EQ(c.finish.reason, FinishReason::kLength);
  EXPECT_EQ(c.adapter_version, version);
  EXPECT_EQ(served_->pool->stats().pinned, 0) << "the lease ends with the request";
  r.tenant = "beta";
  EXPECT_THROW(generator().start(r), AdapterNotFound) << "another tenant's adapter";
  r.tenant = "acme";
  r.adapter_version = "99";
  EXPECT_THROW(generator().start(r), AdapterNotFound);
}

TEST_F(TextGeneratorTest, InvalidRequestsAreRefusedWithASentenceNamingTheLimit) {
  auto refusal = [&](const TextGenerationRequest& r) -> std::string {
    try {
      generator().start(r);
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "(accepted)";
  };
  TextGenerationRequest r = request(4);
  r.prompt_tokens.clear();
  EXPECT_EQ(refusal(r), "the prompt is empty: set `text` or `token_ids`");
  r.prompt_text = "ok \xC3";
  EXPECT_NE(refusal(r).find("the prompt `text` is not valid UTF-8: byte 0xc3 at offset 3"), std::string::npos);
  r = request(4);
  r.prompt_tokens.assign(33, 5);
  EXPECT_EQ(refusal(r), "the prompt has 33 tokens; --max-prompt-tokens is 32");
  r = request(4);
  r.prompt_tokens = {1, 256};
  EXPECT_EQ(refusal(r), "token id 256 is outside the vocabulary [0, 256)");
  r = request(1000001);
  EXPECT_EQ(refusal(r), "max_tokens 1000001 is above --max-new-tokens 1000000");
  r = request(4);
  r.stop.assign(17, "x");
  EXPECT_EQ(refusal(r), "at most 16 stop strings");
  r.stop = {""};
  EXPECT_EQ(refusal(r), "each stop string must be 1..256 bytes");
  r.stop = {std::string(257, 'x')};
  EXPECT_EQ(refusal(r), "each stop string must be 1..256 bytes");
  r.stop = {"fine", "\xFF"};
  EXPECT_NE(refusal(r).find("stop string 1 is not valid UTF-8"), std::string::npos);
  r = request(4);
  r.top_p = 0;
  EXPECT_NE(refusal(r), "(accepted)");
  r = request(4);
  r.adapter = "../etc";
  EXPECT_NE(refusal(r), "(accepted)") << "adapter names are validated";
  EXPECT_EQ(served_->scheduler->counts().waiting, 0) << "nothing refused was queued";
}

}  // namespace
}  // namespace statetune::engine
