// Scheduler against a real tiny model: batched and mixed-adapter generation must give exactly the
// tokens each request gets alone (checked against a plain prefill/decode loop), and the queue,
// cancellation, stop requests, pool pressure and drain behave as documented.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <mutex>
#include <random>
#include <thread>

#include "server/engine/adapters/adapter.h"
#include "server/engine/adapters/adapter_store.h"
#include "server/engine/model/model_init.h"
#include "server/engine/runtime/scheduler.h"
#include "tests/runtime/tiny_model.h"

namespace statetune::engine {
namespace {
namespace fs = std::filesystem;

MambaConfig tiny() { return tiny_model_config(0); }

// What a request produces, collected from the callbacks.
struct Outcome {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int64_t> tokens;
  bool done = false;
  GenerationResult result;

  void wait() {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(60), [&] { return done; })) << "request never finished";
  }
  // Until at least n tokens arrived (the request may have finished since); false after 60 s, so a
  // test that waits on a stuck engine fails instead of hanging.
  bool wait_tokens(size_t n) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(60), [&] { return tokens.size() >= n || done; }) &&
           tokens.size() >= n;
  }
  size_t count() {
    std::lock_guard<std::mutex> lock(mu);
    return tokens.size();
  }
};

class SchedulerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / ("statetune_sched_" + std::to_string(::getpid())));
    write_random_checkpoint(*dir_, tiny(), 1234);
    model_ = MambaModel::load(*dir_, LoadOptions{}).release();
    for (int i = 0; i < 3; ++i) {
      adapters_.push_back(random_adapter(model_->config(), model_->fingerprint(),
                                         {kStateOffset, kOutputOffset}, 100 + i, 0.5));
    }
  }
  static void TearDownTestSuite() {
    delete model_;
    fs::remove_all(*dir_);
    delete dir_;
  }

  static AdapterPool make_pool(int64_t adapter_slots) {
    AdapterPoolOptions o;
    o.max_slots = adapter_slots + 1;
    return AdapterPool(model_->fingerprint(), o);
  }

  // Tokens of one prompt alone, by a plain prefill/decode loop (no scheduler), with an adapter index
  // (-1 = base): greedy for seed 0, else sampled at temperature 1 with that seed. (A tiny random
  // model's greedy output is nearly constant, so sampling is what makes the comparisons sharp.)
  static std::vector<int64_t> reference(const std::vector<int64_t>& prompt, int adapter, int64_t n,
                                        uint64_t seed = 0) {
    SamplingParams params;
    params.temperature = seed == 0 ? 0.0 : 1.0;
    params.seed = seed;
    Sampler sampler(params);
    AdapterPoolOptions o;
    o.max_slots = 2;
    AdapterPool pool(model_->fingerprint(), o);
    SlotLease lease;
    if (adapter >= 0) lease = pool.acquire("ref", [&] { return adapters_[adapter]; });
    StateCache cache(model_->config(), 1, at::kCPU);
    const int64_t L = static_cast<int64_t>(prompt.size());
    at::Tensor tokens = at::tensor(prompt, at::kLong).view({1, L});
    at::Tensor lengths = at::full({1}, L, at::kLong);
    at::Tensor rows = at::zeros({1}, at::kLong);
    at::Tensor slots = at::full({1}, lease.slot(), at::kInt);
    at::Tensor logits = model_->prefill(tokens, lengths, rows, slots, pool.view(), cache);
    std::vector<int64_t> out;
    while (static_cast<int64_t>(out.size()) < n) {
      const int64_t next = sampler.sample(logits.contiguous().data_ptr<float>(), logits.size(1));
      out.push_back(next);
      logits = model_->decode(at::full({1}, next, at::kLong), rows, slots, pool.view(), cache);
    }
    return out;
  }

  GenerationRequest request(std::vector<int64_t> prompt, int adapter, int64_t n, Outcome& out,
                            uint64_t seed = 0) {
    GenerationRequest r;
    r.id = "t";
    r.prompt = std::move(prompt);
    r.max_new_tokens = n;
    r.stop_at_eos = false;
    r.sampling.temperature = seed == 0 ? 0.0 : 1.0;
    r.sampling.seed = seed;
    if (adapter >= 0) {
      r.adapter_key = "adapter" + std::to_string(adapter);
      r.adapter_loader = [adapter] { return adapters_[adapter]; };
    }
    r.on_token = [&out](int64_t t) {
      std::lock_guard<std::mutex> lock(out.mu);
      out.tokens.push_back(t);
      out.cv.notify_all();
      return true;
    };
    r.on_finish = [&out](const GenerationResult& res) {
      std::lock_guard<std::mutex> lock(out.mu);
      out.result = res;
      out.done = true;
      out.cv.notify_all();
    };
    return r;
  }

  static std::vector<int64_t> prompt_of(int seed, int len) {
    std::mt19937 rng(seed);
    std::vector<int64_t> p;
    for (int i = 0; i < len; ++i) p.push_back(1 + static_cast<int64_t>(rng() % 255));
    return p;
  }

  // Eight requests of different lengths, base and three adapters, greedy and seeded, submitted at
  // once: each gets exactly the tokens it gets alone.
  void expect_mixed_batch_matches_each_alone(const SchedulerOptions& options);

  static fs::path* dir_;
  static MambaModel* model_;
  static std::vector<Adapter> adapters_;
};
fs::path* SchedulerTest::dir_ = nullptr;
MambaModel* SchedulerTest::model_ = nullptr;
std::vector<Adapter> SchedulerTest::adapters_;

TEST_F(SchedulerTest, MixedAdaptersInOneBatchMatchEachRequestAlone) {
  expect_mixed_batch_matches_each_alone(SchedulerOptions{});
}

// The same on the bucketed decode path (fixed buffers, batch sizes padded to buckets, padding rows
// in scratch rows): what --cuda-graphs replays on a GPU, run eagerly here.
TEST_F(SchedulerTest, MixedAdaptersOnTheBucketedDecodePathMatchEachRequestAlone) {
  SchedulerOptions o;
  o.decode_path = DecodePath::kBucketed;
  o.max_batch = 6;  // buckets 1, 2, 4, 6: 8 requests pass through several, padded and not
  expect_mixed_batch_matches_each_alone(o);
}

TEST_F(SchedulerTest, CudaGraphsOnACpuModelAreRefusedAtStart) {
  AdapterPool pool = make_pool(1);
  SchedulerOptions o;
  o.decode_path = DecodePath::kCudaGraphs;
  EXPECT_THROW(Scheduler(*model_, pool, o), std::invalid_argument);
}

void SchedulerTest::expect_mixed_batch_matches_each_alone(const SchedulerOptions& options) {
  const int n = 12;
  std::vector<std::vector<int64_t>> prompts;
  std::vector<int> which;
  for (int i = 0; i < 8; ++i) {
    prompts.push_back(prompt_of(i, 3 + i * 2));  // different lengths: padded prefill
    which.push_back(i % 4 - 1);                   // base, adapter 0, 1, 2
  }
  // Half greedy, half seeded sampling (which exposes any change in a row's logits).
  auto seed_of = [](int i) { return i % 2 == 0 ? uint64_t{0} : uint64_t(500 + i); };
  std::vector<std::vector<int64_t>> expected;
  for (int i = 0; i < 8; ++i) expected.push_back(reference(prompts[i], which[i], n, seed_of(i)));
  // The adapters really change the output, so a mixed batch that ignored slots would fail.
  for (int i : {3, 5}) {
    EXPECT_NE(reference(prompts[i], -1, n, seed_of(i)), expected[i]) << "adapter " << which[i] << " has no effect";
  }

  AdapterPool pool = make_pool(4);
  std::atomic<int64_t> max_batch{0};
  Scheduler s(*model_, pool, options, [&](const StepInfo& info) {
    max_batch = std::max<int64_t>(max_batch, info.batch_size);
  });
  std::vector<std::unique_ptr<Outcome>> outs;
  for (int i = 0; i < 8; ++i) {
    outs.push_back(std::make_unique<Outcome>());
    s.submit(request(prompts[i], which[i], n, *outs.back(), seed_of(i)));
  }
  for (int i = 0; i < 8; ++i) {
    outs[i]->wait();
    EXPECT_EQ(outs[i]->result.reason, FinishReason::kLength);
    EXPECT_EQ(outs[i]->result.completion_tokens, n);
    EXPECT_EQ(outs[i]->tokens, expected[i]) << "request " << i << " adapter " << which[i];
  }
  EXPECT_GT(max_batch.load(), 1) << "requests were never batched together";
  EXPECT_EQ(s.counts().running, 0);
  EXPECT_EQ(pool.stats().pinned, 0) << "finished requests must release their leases";
}

TEST_F(SchedulerTest, LateArrivalsJoinTheRunningBatch) {
  AdapterPool pool = make_pool(2);
  std::atomic<int64_t> max_batch{0};
  Scheduler s(*model_, pool, SchedulerOptions{}, [&](const StepInfo& info) {
    max_batch = std::max<int64_t>(max_batch, info.batch_size);
  });
  Outcome first, second;
  const auto p1 = prompt_of(50, 5), p2 = prompt_of(51, 9);
  s.submit(request(p1, 0, 200, first, 31));
  ASSERT_TRUE(first.wait_tokens(3)) << "the first request never produced 3 tokens";
  s.submit(request(p2, 1, 10, second, 32));
  second.wait();
  first.wait();
  EXPECT_EQ(max_batch.load(), 2);
  EXPECT_EQ(second.tokens, reference(p2, 1, 10, 32));
  EXPECT_EQ(first.tokens, reference(p1, 0, 200, 31));
}

TEST_F(SchedulerTest, StopRequestFromTheCallback) {
  AdapterPool pool = make_pool(1);
  Scheduler s(*model_, pool, SchedulerOptions{});
  Outcome o;
  auto r = request(prompt_of(3, 4), -1, 50, o);
  r.on_token = [&o](int64_t t) {
    std::lock_guard<std::mutex> lock(o.mu);
    o.tokens.push_back(t);
    return o.tokens.size() < 3;
  };
  s.submit(std::move(r));
  o.wait();
  EXPECT_EQ(o.result.reason, FinishReason::kStop);
  EXPECT_EQ(o.tokens.size(), 3u);
  EXPECT_EQ(o.result.completion_tokens, 3);
}

// End-of-sequence on a model whose eos_token_id is a token it really generates: the same random weights
// with the config naming (a) the first greedy token, (b) a token the seeded sampler draws mid-sequence.
// The fingerprint covers the weights, not the eos id, so the same adapters fit both.
TEST_F(SchedulerTest, EndOfSequenceStopsTheRequestUnlessStopAtEosIsOff) {
  const auto p = prompt_of(4, 4);
  const uint64_t seed = 4242;
  const std::vector<int64_t> sampled = reference(p, 0, 24, seed);
  // The first token that did not appear before it, past the start: stopping there is visible.
  size_t k = 1;
  while (k < sampled.size() &&
         std::find(sampled.begin(), sampled.begin() + static_cast<std::ptrdiff_t>(k), sampled[k]) !=
             sampled.begin() + static_cast<std::ptrdiff_t>(k)) {
    ++k;
  }
  ASSERT_LT(k, sampled.size()) << "the sampled sequence repeats one token; pick another seed";
  const int64_t greedy_first = reference(p, -1, 1)[0];

  struct Case {
    int64_t eos;
    int adapter;
    uint64_t seed;
    std::vector<int64_t> full;  // what the request gives with stop_at_eos off
    size_t stop_at;             // tokens emitted before the end-of-sequence token
  };
  const std::vector<Case> cases = {{greedy_first, -1, 0, reference(p, -1, 24), 0}, {sampled[k], 0, seed, sampled, k}};
  for (const Case& c : cases) {
    SCOPED_TRACE("eos " + std::to_string(c.eos) + ", stop after " + std::to_string(c.stop_at) + " tokens");
    MambaConfig config = tiny();
    config.eos_token_id = c.eos;
    const fs::path dir = *dir_ / ("eos-" + std::to_string(c.eos));
    write_random_checkpoint(dir, config, 1234);  // the suite model's weights
    auto model = MambaModel::load(dir, LoadOptions{});
    ASSERT_EQ(model->fingerprint().weights_sha256, model_->fingerprint().weights_sha256);
    AdapterPoolOptions po;
    po.max_slots = 2;
    AdapterPool pool(model->fingerprint(), po);
    Scheduler s(*model, pool, SchedulerOptions{});
    Outcome stopped, kept;
    auto q = request(p, c.adapter, 24, stopped, c.seed);
    q.stop_at_eos = true;
    s.submit(std::move(q));
    stopped.wait();
    EXPECT_EQ(stopped.result.reason, FinishReason::kStop);
    EXPECT_EQ(stopped.tokens, std::vector<int64_t>(c.full.begin(), c.full.begin() + static_cast<std::ptrdiff_t>(c.stop_at)));
    EXPECT_EQ(stopped.result.completion_tokens, static_cast<int64_t>(c.stop_at)) << "the end-of-sequence token is not counted";
    // stop_at_eos off: the end-of-sequence token is an ordinary token and the request runs to its length.
    auto r = request(p, c.adapter, 24, kept, c.seed);
    r.stop_at_eos = false;
    s.submit(std::move(r));
    kept.wait();
    EXPECT_EQ(kept.result.reason, FinishReason::kLength);
    EXPECT_EQ(kept.tokens, c.full);
    EXPECT_EQ(kept.tokens[c.stop_at], c.eos);
  }
}

TEST_F(SchedulerTest, SeededSamplingIsIndependentOfTheBatch) {
  AdapterPool pool = make_pool(2);
  Scheduler s(*model_, pool, SchedulerOptions{});
  auto sampled = [&](bool crowded) {
    std::vector<std::unique_ptr<Outcome>> others;
    if (crowded) {
      for (int i = 0; i < 4; ++i) {
        others.push_back(std::make_unique<Outcome>());
        auto r = request(prompt_of(90 + i, 6), i % 2, 20, *others.back());
        r.sampling.temperature = 1.0;
        r.sampling.seed = 1000 + i;
        s.submit(std::move(r));
      }
    }
    Outcome o;
    auto r = request(prompt_of(77, 7), 0, 20, o);
    r.sampling.temperature = 0.9;
    r.sampling.top_k = 40;
    r.sampling.top_p = 0.95;
    r.sampling.seed = 99;
    s.submit(std::move(r));
    o.wait();
    for (auto& x : others) x->wait();
    return o.tokens;
  };
  const auto alone = sampled(false);
  EXPECT_EQ(alone.size(), 20u);
  EXPECT_EQ(sampled(true), alone);
}

TEST_F(SchedulerTest, CancellationFreesTheRowAtOnce) {
  AdapterPool pool = make_pool(1);
  SchedulerOptions so;
  so.max_batch = 1;
  Scheduler s(*model_, pool, so);
  Outcome o;
  auto handle = s.submit(request(prompt_of(5, 4), 0, 1000000, o));
  ASSERT_TRUE(o.wait_tokens(2)) << "the request never produced 2 tokens";
  const size_t before_cancel = o.count();
  handle->cancel();
  o.wait();
  // At once = at the engine's next step: at most the token of the step already under way follows.
  EXPECT_LE(o.count(), before_cancel + 1);
  EXPECT_EQ(o.result.reason, FinishReason::kCancelled);
  EXPECT_EQ(pool.stats().pinned, 0);
  // The single row is free again: the next request runs.
  Outcome next;
  s.submit(request(prompt_of(6, 4), -1, 4, next));
  next.wait();
  EXPECT_EQ(next.result.reason, FinishReason::kLength);
  EXPECT_EQ(s.counts().running, 0);
}

TEST_F(SchedulerTest, FullQueueIsRefusedAndCancelledWaitersLeave) {
  AdapterPool pool = make_pool(1);
  SchedulerOptions so;
  so.max_batch = 1;
  so.max_waiting = 2;
  Scheduler s(*model_, pool, so);
  Outcome running, w1, w2, w3;
  auto h0 = s.submit(request(prompt_of(7, 4), -1, 1000000, running));
  ASSERT_TRUE(running.wait_tokens(1)) << "the running request never produced a token";
  auto h1 = s.submit(request(prompt_of(8, 4), -1, 5, w1));
  auto h2 = s.submit(request(prompt_of(9, 4), -1, 5, w2));
  EXPECT_EQ(s.counts().waiting, 2);
  EXPECT_THROW(s.submit(request(prompt_of(10, 4), -1, 5, w3)), QueueFull);
  h1->cancel();
  w1.wait();
  EXPECT_EQ(w1.result.reason, FinishReason::kCancelled);
  EXPECT_TRUE(w1.tokens.empty());
  h0->cancel();
  w2.wait();
  EXPECT_EQ(w2.result.reason, FinishReason::kLength);
  running.wait();
}

// The queue bound counts every accepted request that has not finished, including those the engine
// has taken from the queue but not yet put into a row (e.g. while their adapter loads): a burst of
// max_batch + max_waiting at an idle scheduler is accepted whole, and one more is refused.
TEST_F(SchedulerTest, ConcurrentBurstFillsRowsAndQueueThenIsRefused) {
  SchedulerOptions so;
  so.max_batch = 4;
  so.max_waiting = 2;
  const int capacity = static_cast<int>(so.max_batch + so.max_waiting);
  for (int round = 0; round < 10; ++round) {
    AdapterPool pool = make_pool(1);
    Scheduler s(*model_, pool, so);
    std::vector<Outcome> outcomes(static_cast<size_t>(capacity) + 1);
    std::vector<std::shared_ptr<RequestHandle>> handles(outcomes.size());
    std::atomic<int> refused{0}, ready{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    for (size_t i = 0; i < outcomes.size(); ++i) {
      threads.emplace_back([&, i] {
        // Half on an adapter (admission then loads it), half on the base model.
        GenerationRequest r = request(prompt_of(static_cast<int>(i), 4), i % 2 == 0 ? 0 : -1, 1000000, outcomes[i]);
        ++ready;
        while (!go) std::this_thread::yield();
        try {
          handles[i] = s.submit(std::move(r));
        } catch (const QueueFull&) {
          ++refused;
        }
      });
    }
    while (ready < static_cast<int>(outcomes.size())) std::this_thread::yield();
    go = true;
    for (auto& t : threads) t.join();
    EXPECT_EQ(refused.load(), 1) << "round " << round << ": " << capacity + 1 - refused.load() << " of "
                                 << capacity + 1 << " accepted; max_batch + max_waiting is " << capacity;
    for (auto& h : handles) {
      if (h) h->cancel();
    }
    for (size_t i = 0; i < outcomes.size(); ++i) {
      if (handles[i]) outcomes[i].wait();
    }
  }
}

// The same bound while the engine is held inside admission by a slow adapter load: the request being
// admitted still counts.
TEST_F(SchedulerTest, RequestBeingAdmittedCountsAgainstTheQueueBound) {
  AdapterPool pool = make_pool(1);
  SchedulerOptions so;
  so.max_batch = 2;
  so.max_waiting = 1;
  Scheduler s(*model_, pool, so);
  std::promise<void> loading, release;
  std::shared_future<void> released = release.get_future().share();
  Outcome slow;
  GenerationRequest r = request(prompt_of(20, 4), 0, 1000000, slow);
  r.adapter_key = "slow";
  r.adapter_loader = [&loading, released] {
    loading.set_value();
    released.wait();
    return adapters_[0];
  };
  auto h0 = s.submit(std::move(r));
  loading.get_future().wait();  // the engine has taken it from the queue and is loading its adapter
  std::vector<Outcome> rest(3);
  std::vector<std::shared_ptr<RequestHandle>> handles;
  handles.push_back(s.submit(request(prompt_of(21, 4), -1, 1000000, rest[0])));
  handles.push_back(s.submit(request(prompt_of(22, 4), -1, 1000000, rest[1])));
  EXPECT_THROW(s.submit(request(prompt_of(23, 4), -1, 5, rest[2])), QueueFull);
  release.set_value();
  h0->cancel();
  for (auto& h : handles) h->cancel();
  slow.wait();
  rest[0].wait();
  rest[1].wait();
}

TEST_F(SchedulerTest, InvalidRequestsAreRefusedWithTheReason) {
  AdapterPool pool = make_pool(1);
  Scheduler s(*model_, pool, SchedulerOptions{});
  Outcome o;
  try {
    s.submit(request({}, -1, 5, o));
    FAIL() << "empty prompt accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("empty"), std::string::npos);
  }
  try {
    s.submit(request({1, 256}, -1, 5, o));
    FAIL() << "out-of-range id accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("256"), std::string::npos);
  }
  EXPECT_THROW(s.submit(request({1}, -1, 0, o)), std::invalid_argument);
  auto bad = request({1}, -1, 5, o);
  bad.sampling.top_p = 2;
  EXPECT_THROW(s.submit(std::move(bad)), std::invalid_argument);
}

TEST_F(SchedulerTest, MissingAdapterAndExhaustedPool) {
  AdapterPool pool = make_pool(1);
  Scheduler s(*model_, pool, SchedulerOptions{});
  Outcome missing;
  auto r = request(prompt_of(11, 4), -1, 5, missing);
  r.adapter_key = "gone";
  r.adapter_loader = []() -> Adapter { throw AdapterNotFound("adapter gone was deleted"); };
  s.submit(std::move(r));
  missing.wait();
  EXPECT_EQ(missing.result.reason, FinishReason::kError);
  EXPECT_EQ(missing.result.error_kind, ErrorKind::kNotFound);

  // One adapter slot, two adapters: the second waits for the first to finish instead of failing.
  // a's first token holds the engine until b is submitted, so b surely arrives while a pins the slot
  // (on a loaded machine the test thread could otherwise sleep through all of a's 30 tokens).
  Outcome a, b;
  std::promise<void> b_submitted;
  std::shared_future<void> b_in = b_submitted.get_future().share();
  using Clock = std::chrono::steady_clock;
  Clock::time_point a_last, b_first;
  auto ra = request(prompt_of(12, 4), 0, 30, a);
  ra.on_token = [&a, &a_last, b_in](int64_t t) {
    b_in.wait();
    std::lock_guard<std::mutex> lock(a.mu);
    a.tokens.push_back(t);
    a_last = Clock::now();
    return true;
  };
  auto rb = request(prompt_of(13, 4), 1, 5, b, 8);
  rb.on_token = [&b, &b_first](int64_t t) {
    std::lock_guard<std::mutex> lock(b.mu);
    if (b.tokens.empty()) b_first = Clock::now();
    b.tokens.push_back(t);
    return true;
  };
  s.submit(std::move(ra));
  s.submit(std::move(rb));
  b_submitted.set_value();
  a.wait();
  b.wait();
  EXPECT_EQ(a.result.reason, FinishReason::kLength);
  EXPECT_EQ(b.result.reason, FinishReason::kLength);
  EXPECT_EQ(b.tokens, reference(prompt_of(13, 4), 1, 5, 8));
  EXPECT_GE(b_first, a_last) << "b produced a token while a still held the only adapter slot";
}

TEST_F(SchedulerTest, DrainFinishesWorkThenRefusesAndCancelsAtTheDeadline) {
  AdapterPool pool = make_pool(1);
  {
    Scheduler s(*model_, pool, SchedulerOptions{});
    Outcome a, b;
    s.submit(request(prompt_of(20, 4), -1, 8, a));
    s.submit(request(prompt_of(21, 4), 0, 8, b));
    EXPECT_EQ(s.drain(Clock::now() + std::chrono::seconds(60)), 0);
    a.wait();
    b.wait();
    EXPECT_EQ(a.result.reason, FinishReason::kLength);
    EXPECT_EQ(b.result.reason, FinishReason::kLength);
    Outcome c;
    EXPECT_THROW(s.submit(request(prompt_of(22, 4), -1, 8, c)), NotAccepting);
  }
  {
    Scheduler s(*model_, pool, SchedulerOptions{});
    Outcome endless;
    s.submit(request(prompt_of(23, 4), -1, 100000000, endless));
    ASSERT_TRUE(endless.wait_tokens(1)) << "the request never produced a token";
    EXPECT_EQ(s.drain(Clock::now() + std::chrono::milliseconds(50)), 1);
    endless.wait();
    EXPECT_EQ(endless.result.reason, FinishReason::kCancelled);
  }
}

}  // namespace
}  // namespace statetune::engine
