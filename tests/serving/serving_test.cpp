// Integration tests: the real statetune-serve binary on a loopback port, with a tiny random model and
// the GPT-NeoX tokenizer, driven through the client library over gRPC and scraped over HTTP.
// With STATETUNE_TEST_ADAPTER_STORAGE=postgres (the ctest entry serving_integration_postgres_test)
// the same tests run in the shared mode: one real PostgreSQL for the binary, a fresh database per
// test, --adapters-dir only the bytes cache.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <cstdlib>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "client/statetune_client.h"
#include "tests/support/loopback_http.h"
#include "tests/support/shared_mode.h"
#include "tests/support/serving_fixture.h"
#include "tests/support/shell.h"
#include "tests/support/test_tls.h"
#include "server/engine/text/tokenizer.h"
#include "server/engine/util/sha256.h"
#include "tests/adapters/test_fixtures.h"

namespace statetune::serving {
namespace {
namespace fs = std::filesystem;
namespace v1 = ::statetune::v1;
using client::Client;
using client::ClientOptions;
using grpc::StatusCode;

using test_support::http_get;
using test_support::kAcmeKey;
using test_support::kAdminKey;
using test_support::kBetaKey;
using test_support::metric_value;
using test_support::slurp;
using ServerProcess = test_support::ServingProcess;

// Polls `done` every 10 ms until it holds or `timeout` passes; returns whether it held.
template <typename Pred>
bool wait_until(Pred done, std::chrono::seconds timeout = std::chrono::seconds(60)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

// Every test runs against its own statetune-serve with its own adapter store, so that each passes
// alone and in any order; the model, the adapter files and the tenants file are shared inputs that
// no test changes.
class ServingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    suite_ = new fs::path(fs::temp_directory_path() / ("statetune_serving_" + std::to_string(::getpid())));
    fs::remove_all(*suite_);
    adapter_files_ = test_support::write_serving_files(*suite_, 4);  // model/, adapterN.safetensors, tenants.json
    shared_ = new test_support::SharedModeDatabases();
  }
  static void TearDownTestSuite() {
    delete shared_;
    shared_ = nullptr;
    fs::remove_all(*suite_);
    delete suite_;
    adapter_files_.clear();
  }
  void SetUp() override {
    if (shared_->unavailable()) GTEST_SKIP() << test_support::SharedModeDatabases::kNotInstalled;
    work_ = *suite_ / ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::create_directories(work_);
    server_ = std::make_unique<ServerProcess>();
    ASSERT_NO_FATAL_FAILURE(server_->start(work_, flags()));
    ASSERT_TRUE(shared_->log_shows_mode(server_->log())) << server_->log();
  }
  void TearDown() override {
    server_.reset();
    fs::remove_all(work_);
  }

  static fs::path model_dir() { return *suite_ / "model"; }
  static fs::path adapter_path(int i) { return *suite_ / ("adapter" + std::to_string(i) + ".safetensors"); }
  static std::string tokenizer_path() {
    return std::string(STATETUNE_SHARED_DIR) + "/models/gpt-neox-20b-tokenizer.json";
  }
  // The test server's flags; `model` and `adapters` (its store) default to the test's.
  std::vector<std::string> flags(const fs::path& model = {}, fs::path adapters = {}) const {
    if (adapters.empty()) adapters = work_ / "adapters";
    std::vector<std::string> f = {
        "--model", (model.empty() ? model_dir() : model).string(), "--tokenizer", tokenizer_path(),
        "--adapters-dir", adapters.string(), "--tenants-file", (*suite_ / "tenants.json").string(),
        "--max-batch", "8", "--queue-size", "2", "--max-new-tokens", "100000", "--max-prompt-tokens", "64",
        "--max-request-bytes", "64KiB", "--max-upload-bytes", "4MiB", "--adapter-slots", "3",
        "--adapter-versions", "6", "--drain-seconds", "2"};
    for (auto& extra : shared_->flags_for(adapters)) f.push_back(std::move(extra));
    return f;
  }
  // Rows of tenant acme's adapter `name` in the test's database (shared mode only).
  int stored_versions(const std::string& name) const {
    return std::stoi(shared_->psql(work_ / "adapters",
                                   "SELECT count(*) FROM adapter_versions WHERE tenant = 'acme' AND name = '" + name + "'"));
  }

  Client acme() const { return Client(server_->options(kAcmeKey)); }
  Client beta() const { return Client(server_->options(kBetaKey)); }
  std::string metrics() const { return http_get(server_->metrics_port(), "/metrics"); }

  // A /metrics scrape that shows the adapter pool as it is now. The server copies the pool's counters
  // into the metrics every 250 ms, in the same pass that sets statetune_requests_running: a base-model
  // request held open until a scrape shows it running, then released until a scrape shows nothing
  // running, brackets a full copy made after this call began.
  std::string settled_metrics() {
    std::atomic<bool> release{false};
    std::thread probe([&] {
      Client own = acme();
      own.generate(request("", 100000, 1), [&](const v1::TokenChunk&) { return !release.load(); });
    });
    std::string m;
    const bool seen_running = wait_until([&] { return metric_value(m = metrics(), "statetune_requests_running") >= 1; });
    release = true;
    probe.join();
    EXPECT_TRUE(seen_running) << "the probe request never showed as running:\n" << m;
    EXPECT_TRUE(wait_until([&] { return metric_value(m = metrics(), "statetune_requests_running") == 0; })) << m;
    return m;
  }

  static void upload(Client& c, const std::string& name, int file, v1::AdapterInfo* info = nullptr) {
    v1::AdapterInfo scratch;
    auto st = c.upload_adapter(name, adapter_files_[file], info ? info : &scratch, "", 64 << 10);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }

  static v1::GenerateRequest request(const std::string& adapter, uint32_t max_tokens, uint64_t seed) {
    v1::GenerateRequest r;
    r.set_text("The quick brown fox jumps over the lazy dog because");
    if (!adapter.empty()) r.mutable_adapter()->set_name(adapter);
    r.set_max_tokens(max_tokens);
    r.set_stop_at_eos(false);
    if (seed == 0) {
      r.set_temperature(0);
    } else {
      r.set_temperature(1.0f);
      r.set_seed(seed);
    }
    return r;
  }

  static fs::path* suite_;
  static std::vector<std::string> adapter_files_;
  static test_support::SharedModeDatabases* shared_;
  fs::path work_;
  std::unique_ptr<ServerProcess> server_;
};
fs::path* ServingTest::suite_ = nullptr;
std::vector<std::string> ServingTest::adapter_files_;
test_support::SharedModeDatabases* ServingTest::shared_ = nullptr;

TEST_F(ServingTest, StreamsTokensAndEndsWithDone) {
  Client c = acme();
  auto r = c.generate(request("", 24, 5));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_GE(r.chunks, 2) << "tokens should arrive as a stream, not in one message";
  ASSERT_TRUE(r.has_done);
  EXPECT_EQ(r.done.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(r.done.usage().completion_tokens(), 24u);
  EXPECT_EQ(r.token_ids.size(), 24u);
  EXPECT_GT(r.done.usage().prompt_tokens(), 5u);
  EXPECT_FALSE(r.done.request_id().empty());
  EXPECT_FALSE(r.text.empty());
  // The same prompt as token ids and the same seed give the same tokens.
  auto again = c.generate(request("", 24, 5));
  EXPECT_EQ(again.token_ids, r.token_ids);
}

TEST_F(ServingTest, StopStringEndsTheStreamWithoutIt) {
  Client c = acme();
  auto full = c.generate(request("", 40, 9));
  ASSERT_TRUE(full.status.ok());
  ASSERT_GT(full.text.size(), 8u);
  const std::string stop = full.text.substr(full.text.size() / 2, 3);
  auto req = request("", 40, 9);
  req.add_stop(stop);
  auto r = c.generate(req);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.done.finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(r.done.stop_sequence(), stop);
  EXPECT_EQ(r.text, full.text.substr(0, full.text.find(stop)));
}

TEST_F(ServingTest, MixedAdaptersInOneBatchGiveTheSameTokensAsAlone) {
  Client c = acme();
  upload(c, "mix-a", 0);
  upload(c, "mix-b", 1);
  const std::vector<std::string> adapters = {"", "mix-a", "mix-b", "", "mix-a", "mix-b"};
  std::vector<std::vector<int64_t>> alone;
  for (size_t i = 0; i < adapters.size(); ++i) {
    auto r = c.generate(request(adapters[i], 32, i < 3 ? 0 : 100 + i));  // greedy and seeded sampling
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    alone.push_back(r.token_ids);
  }
  // The same seeded request without the adapter: a mixed batch that ignored the adapter slots would
  // give it to rows 4 and 5, so the adapters must change their output.
  for (size_t i : {size_t{4}, size_t{5}}) {
    auto base = c.generate(request("", 32, 100 + i));
    ASSERT_TRUE(base.status.ok()) << base.status.error_message();
    EXPECT_NE(base.token_ids, alone[i]) << "adapter '" << adapters[i] << "' changed nothing";
  }
  std::vector<client::GenerateResult> together(adapters.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < adapters.size(); ++i) {
    threads.emplace_back([&, i] {
      Client own = acme();
      together[i] = own.generate(request(adapters[i], 32, i < 3 ? 0 : 100 + i));
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < adapters.size(); ++i) {
    ASSERT_TRUE(together[i].status.ok()) << together[i].status.error_message();
    EXPECT_EQ(together[i].token_ids, alone[i]) << "request " << i << " adapter '" << adapters[i] << "'";
  }
  const std::string m = metrics();
  EXPECT_GT(metric_value(m, "statetune_batch_size_bucket", {"le=\"+Inf\""}) -
                metric_value(m, "statetune_batch_size_bucket", {"le=\"1\""}), 0)
      << "no decode step ever ran more than one row";
}

TEST_F(ServingTest, HotSwapUnderTrafficFailsNoRequest) {
  Client c = acme();
  v1::AdapterInfo first;
  upload(c, "swap", 0, &first);
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0}, done{0};
  std::mutex mu;
  std::set<std::string> versions_seen;
  std::string failure_message;
  std::vector<std::thread> traffic;
  for (int t = 0; t < 3; ++t) {
    traffic.emplace_back([&, t] {
      Client own = acme();
      while (!stop) {
        auto r = own.generate(request("swap", 16, 1 + t));
        if (!r.status.ok()) {
          ++failures;
          std::lock_guard<std::mutex> lock(mu);
          failure_message = client::status_code_name(r.status.error_code()) + ": " + r.status.error_message();
          continue;
        }
        ++done;
        std::lock_guard<std::mutex> lock(mu);
        versions_seen.insert(r.done.adapter_version());
      }
    });
  }
  // Each swap happens once the traffic has completed a request on the version before it.
  auto traffic_saw = [&](const std::string& version) {
    const bool seen = wait_until([&] {
      std::lock_guard<std::mutex> lock(mu);
      return versions_seen.count(version) > 0 || failures > 0;
    });
    EXPECT_TRUE(seen) << "no traffic request completed on version " << version;
  };
  traffic_saw(first.current_version());
  std::vector<double> servable_ms;
  for (int i = 1; i <= 3; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    v1::AdapterInfo info;
    upload(c, "swap", i, &info);
    // The very next request gets the new version.
    auto r = c.generate(request("swap", 1, 3));
    servable_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.done.adapter_version(), info.current_version());
    traffic_saw(info.current_version());
  }
  stop = true;
  for (auto& t : traffic) t.join();
  EXPECT_EQ(failures.load(), 0) << failure_message;
  EXPECT_GT(done.load(), 6);
  EXPECT_EQ(versions_seen.size(), 4u) << "traffic never ran across the swaps";
  for (double ms : servable_ms) std::printf("upload -> first token with the new version: %.1f ms\n", ms);
  // Requests may pin an explicit older version, which stays servable after the swap.
  auto req = request("swap", 4, 0);
  req.mutable_adapter()->set_version(first.current_version());
  auto old = c.generate(req);
  ASSERT_TRUE(old.status.ok()) << old.status.error_message();
  EXPECT_EQ(old.done.adapter_version(), first.current_version());
}

TEST_F(ServingTest, TenantsSeeOnlyTheirOwnAdapters) {
  Client a = acme();
  Client b = beta();
  upload(a, "private", 2);
  auto r = b.generate(request("private", 4, 0));
  EXPECT_EQ(r.status.error_code(), StatusCode::NOT_FOUND) << r.status.error_message();
  v1::AdapterInfo info;
  EXPECT_EQ(b.get_adapter("private", &info).error_code(), StatusCode::NOT_FOUND);
  uint32_t n = 0;
  EXPECT_EQ(b.delete_adapter("private", &n).error_code(), StatusCode::NOT_FOUND);
  v1::ListAdaptersResponse list;
  ASSERT_TRUE(b.list_adapters(&list).ok());
  for (const auto& x : list.adapters()) EXPECT_NE(x.name(), "private");
  EXPECT_EQ(b.list_adapters(&list, "acme").error_code(), StatusCode::PERMISSION_DENIED);
  // The admin key acts on a named tenant.
  Client admin(server_->options(kAdminKey));
  ASSERT_TRUE(admin.get_adapter("private", &info, "acme").ok());
  EXPECT_EQ(info.tenant(), "acme");
  EXPECT_EQ(info.base().d_model(), 64);
  // No key / a wrong key.
  Client anon(server_->options(""));
  EXPECT_EQ(anon.generate(request("", 2, 0)).status.error_code(), StatusCode::UNAUTHENTICATED);
  Client wrong(server_->options("not-a-key"));
  EXPECT_EQ(wrong.list_adapters(&list).error_code(), StatusCode::UNAUTHENTICATED);
  // Delete, then it is gone for its owner too.
  ASSERT_TRUE(a.delete_adapter("private", &n).ok());
  EXPECT_EQ(n, 1u);
  EXPECT_EQ(a.generate(request("private", 2, 0)).status.error_code(), StatusCode::NOT_FOUND);
}

TEST_F(ServingTest, BadUploadsAreRefusedAndKeepTheCurrentVersion) {
  Client c = acme();
  v1::AdapterInfo good;
  upload(c, "keep", 0, &good);
  v1::UploadHeader h;
  h.set_name("keep");
  h.set_total_bytes(adapter_files_[1].size());
  h.set_sha256(std::string(64, '0'));
  v1::AdapterInfo info;
  auto st = c.upload_adapter_raw(h, adapter_files_[1], &info);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("sha256"), std::string::npos) << st.error_message();
  std::string garbage(1000, 'x');
  st = c.upload_adapter("keep", garbage, &info);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << st.error_message();
  h.set_total_bytes(5u << 20);
  st = c.upload_adapter_raw(h, "", &info);
  EXPECT_EQ(st.error_code(), StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(st.error_message().find("--max-upload-bytes"), std::string::npos) << st.error_message();
  ASSERT_TRUE(c.get_adapter("keep", &info).ok());
  EXPECT_EQ(info.current_version(), good.current_version());
}

TEST_F(ServingTest, DeeplyNestedMetadataIsRefusedAndTheServerStaysUp) {
  // This upload used to overflow the server's stack, and, stored first, again at every restart.
  Client c = acme();
  engine::testing::RawFile hostile = engine::testing::RawFile::parse(adapter_files_[0]);
  hostile.metadata["extra"] = std::string(100000, '[') + std::string(100000, ']');
  v1::AdapterInfo info;
  auto st = c.upload_adapter("nested", hostile.serialize(), &info);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_NE(st.error_message().find("nests deeper"), std::string::npos) << st.error_message();
  EXPECT_LT(st.error_message().size(), 1000u);
  EXPECT_EQ(c.get_adapter("nested", &info).error_code(), StatusCode::NOT_FOUND);
  EXPECT_FALSE(fs::exists(work_ / "adapters" / "acme" / "nested"));
  if (shared_->active()) {
    EXPECT_EQ(stored_versions("nested"), 0);
  }
  upload(c, "nested", 1, &info);  // still serving
}

TEST_F(ServingTest, UploadsPastAStorageQuotaAreResourceExhausted) {
  Client c = acme();
  v1::AdapterInfo info;
  for (int i = 0; i < 6; ++i) upload(c, "quota", i % 4, &info);  // --adapter-versions 6
  auto st = c.upload_adapter("quota", adapter_files_[0], &info);
  EXPECT_EQ(st.error_code(), StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_NE(st.error_message().find("versions"), std::string::npos) << st.error_message();
  ASSERT_TRUE(c.get_adapter("quota", &info).ok());
  EXPECT_EQ(info.current_version(), "6");
  // Deleting makes room again.
  uint32_t deleted = 0;
  ASSERT_TRUE(c.delete_adapter("quota", &deleted).ok());
  EXPECT_EQ(deleted, 6u);
  upload(c, "quota", 0, &info);
  EXPECT_EQ(info.current_version(), "7");
}

TEST_F(ServingTest, BadRequestsNameTheLimit) {
  Client c = acme();
  auto too_many = request("", 100001, 0);
  auto r = c.generate(too_many);
  EXPECT_EQ(r.status.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(r.status.error_message().find("--max-new-tokens"), std::string::npos) << r.status.error_message();
  v1::GenerateRequest long_prompt;
  for (int i = 0; i < 65; ++i) long_prompt.mutable_token_ids()->add_ids(100 + i);
  r = c.generate(long_prompt);
  EXPECT_EQ(r.status.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(r.status.error_message().find("--max-prompt-tokens"), std::string::npos) << r.status.error_message();
  v1::GenerateRequest huge;
  huge.set_text(std::string(100 << 10, 'a'));
  r = c.generate(huge);
  EXPECT_EQ(r.status.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(r.status.error_message().find("--max-request-bytes"), std::string::npos) << r.status.error_message();
  v1::GenerateRequest empty;
  EXPECT_EQ(c.generate(empty).status.error_code(), StatusCode::INVALID_ARGUMENT);
  v1::GenerateRequest bad_id;
  bad_id.mutable_token_ids()->add_ids(50280);
  EXPECT_EQ(c.generate(bad_id).status.error_code(), StatusCode::INVALID_ARGUMENT);
  auto bad_p = request("", 4, 1);
  bad_p.set_top_p(1.5f);
  r = c.generate(bad_p);
  EXPECT_EQ(r.status.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(r.status.error_message().find("top_p"), std::string::npos);
  auto bad_name = request("../etc", 4, 0);
  EXPECT_EQ(c.generate(bad_name).status.error_code(), StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServingTest, CancellationAndQueueFull) {
  const std::string before = metrics();
  // A client cancel ends the request in the engine at once.
  Client c = acme();
  auto r = c.generate(request("", 100000, 4), [](const v1::TokenChunk&) { return false; });
  EXPECT_EQ(r.status.error_code(), StatusCode::CANCELLED);
  // The engine drops the cancelled row at its next step; until then it still holds a row, and one of
  // the 10 requests below could find the queue full (seen on a loaded machine).
  std::string idle;
  ASSERT_TRUE(wait_until([&] {
    idle = metrics();
    return metric_value(idle, "statetune_requests_running") == 0 && metric_value(idle, "statetune_requests_waiting") == 0;
  })) << "the cancelled request never left the engine:\n" << idle;

  // Fill the 8 rows with endless requests, then the 2 queue places; the next is refused. The two
  // groups go in one after the other: a burst of 10 at once can race the engine's admission and see
  // one refused early (a known gap, recorded on the Serving issue), which is not what this test checks.
  std::vector<std::thread> endless;
  std::atomic<int> cancelled{0};
  std::atomic<bool> release{false};
  auto start_endless = [&](int from, int to) {
    for (int i = from; i < to; ++i) {
      endless.emplace_back([&, i] {
        Client own = acme();
        auto res = own.generate(request("", 100000, 50 + i),
                                [&](const v1::TokenChunk&) { return !release.load(); });
        if (res.status.error_code() == StatusCode::CANCELLED) ++cancelled;
      });
    }
  };
  std::string last_metrics;
  auto wait_for = [&](int running, int waiting) {
    return wait_until([&] {
      last_metrics = metrics();
      return metric_value(last_metrics, "statetune_requests_running") == running &&
             metric_value(last_metrics, "statetune_requests_waiting") == waiting;
    });
  };
  start_endless(0, 8);
  bool full = wait_for(8, 0);
  if (full) {
    start_endless(8, 10);
    full = wait_for(8, 2);
  }
  if (!full) {  // release and join the threads before failing: a joinable std::thread aborts
    release = true;
    for (auto& t : endless) t.join();
    FAIL() << "never saw 8 running, then 8 running + 2 waiting requests:\n" << last_metrics;
  }
  auto refused = c.generate(request("", 4, 0));
  EXPECT_EQ(refused.status.error_code(), StatusCode::RESOURCE_EXHAUSTED) << refused.status.error_message();
  EXPECT_NE(refused.status.error_message().find("--queue-size"), std::string::npos);
  release = true;
  for (auto& t : endless) t.join();
  EXPECT_EQ(cancelled.load(), 10);
  // Every cancelled row was freed: the server serves again at once.
  auto after = c.generate(request("", 4, 0));
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
  std::string m;
  EXPECT_TRUE(wait_until([&] { return metric_value(m = metrics(), "statetune_requests_running") == 0; })) << m;
  EXPECT_GE(metric_value(m, "statetune_requests_total", {"tenant=\"acme\"", "status=\"cancelled\""}) -
                metric_value(before, "statetune_requests_total", {"tenant=\"acme\"", "status=\"cancelled\""}),
            11);
  EXPECT_GE(metric_value(m, "statetune_requests_total", {"status=\"resource_exhausted\""}), 1);
}

TEST_F(ServingTest, MetricsAreScrapedFromTheRealEndpoint) {
  Client c = acme();
  upload(c, "metered", 3);
  ASSERT_TRUE(c.generate(request("metered", 8, 0)).status.ok());
  // The pool's counters reach the metrics on the next refresh.
  const std::string m = settled_metrics();
  EXPECT_GT(metric_value(m, "statetune_requests_total", {"tenant=\"acme\"", "status=\"ok\""}), 0) << m;
  EXPECT_GT(metric_value(m, "statetune_time_to_first_token_seconds_count", {"tenant=\"acme\""}), 0);
  EXPECT_GT(metric_value(m, "statetune_inter_token_latency_seconds_count"), 0);
  EXPECT_GT(metric_value(m, "statetune_request_duration_seconds_count"), 0);
  EXPECT_GT(metric_value(m, "statetune_queue_time_seconds_count"), 0);
  EXPECT_GT(metric_value(m, "statetune_generated_tokens_total", {"tenant=\"acme\""}), 0);
  EXPECT_GT(metric_value(m, "statetune_prompt_tokens_total", {"tenant=\"acme\""}), 0);
  EXPECT_GT(metric_value(m, "statetune_adapter_loads_total"), 0);
  EXPECT_EQ(metric_value(m, "statetune_adapter_slots"), 3);
  EXPECT_GT(metric_value(m, "statetune_adapters_resident"), 0);
  EXPECT_NE(m.find("statetune_adapter_evictions_total"), std::string::npos);
  EXPECT_NE(m.find("statetune_adapter_load_seconds_total"), std::string::npos);
  EXPECT_NE(m.find("statetune_batch_size_bucket"), std::string::npos);
  EXPECT_EQ(metric_value(m, "statetune_up"), 1);
}

// What the Gateway API Inference Extension's endpoint picker scrapes (its model-server protocol):
// requests waiting and running, the rows' utilisation, and the adapters running and waiting with the
// slot count as labels of statetune_lora_requests_info, whose value is the time of the update. Real
// requests fill the decode rows with one adapter and the queue with another; the gauges follow, and
// return to idle when the requests end.
TEST_F(ServingTest, EndpointPickerGaugesFollowTheLoad) {
  Client c = acme();
  upload(c, "routed", 0);
  upload(c, "queued", 1);
  std::string m;
  auto lora_info = [&](const std::string& running, const std::string& waiting) {
    return metric_value(m, "statetune_lora_requests_info",
                        {"running_lora_adapters=\"" + running + "\"", "waiting_lora_adapters=\"" + waiting + "\"",
                         "max_lora=\"3\""});
  };
  ASSERT_TRUE(wait_until([&] {
    m = metrics();
    return metric_value(m, "statetune_requests_running") == 0 && metric_value(m, "statetune_requests_waiting") == 0;
  })) << m;
  EXPECT_EQ(metric_value(m, "statetune_batch_rows_usage_ratio"), 0) << m;
  // An idle server still says when it last looked (a recent Unix time), with empty adapter lists.
  EXPECT_GT(lora_info("", ""), 1.7e9) << m;

  std::vector<std::thread> endless;
  std::atomic<bool> release{false};
  auto start_endless = [&](const std::string& adapter, int n) {
    for (int i = 0; i < n; ++i) {
      endless.emplace_back([&, adapter, i] {
        Client own = acme();
        own.generate(request(adapter, 100000, 70 + i), [&](const v1::TokenChunk&) { return !release.load(); });
      });
    }
  };
  auto finish = [&] {
    release = true;
    for (auto& t : endless) t.join();
  };
  start_endless("routed", 8);
  bool seen = wait_until([&] {
    m = metrics();
    return metric_value(m, "statetune_requests_running") == 8 && lora_info("routed", "") > 0;
  });
  if (seen) {
    EXPECT_EQ(metric_value(m, "statetune_batch_rows_usage_ratio"), 1) << m;
    start_endless("queued", 2);
    seen = wait_until([&] {
      m = metrics();
      return metric_value(m, "statetune_requests_waiting") == 2 && lora_info("routed", "queued") > 0;
    });
  }
  finish();
  ASSERT_TRUE(seen) << "never saw 8 rows running \"routed\", then \"queued\" waiting:\n" << m;
  // Exactly one series: the endpoint picker takes the newest, and a stale one would be noise.
  size_t series = 0;
  for (size_t at = m.find("\nstatetune_lora_requests_info{"); at != std::string::npos;
       at = m.find("\nstatetune_lora_requests_info{", at + 1)) {
    ++series;
  }
  EXPECT_EQ(series, 1u) << m;
  EXPECT_TRUE(wait_until([&] {
    m = metrics();
    return metric_value(m, "statetune_batch_rows_usage_ratio") == 0 && lora_info("", "") > 0;
  })) << "the gauges did not return to idle:\n" << m;
}

TEST_F(ServingTest, UploadLoadsTheNewVersionIntoThePoolBeforeAnyRequest) {
  auto loads = [](const std::string& m) { return metric_value(m, "statetune_adapter_loads_total"); };
  Client c = acme();
  const double before = loads(settled_metrics());
  v1::AdapterInfo info;
  upload(c, "prewarmed", 2, &info);
  std::string m;
  EXPECT_TRUE(wait_until([&] { return loads(m = metrics()) > before; }))
      << "the upload did not load the new version into the pool:\n" << m;
  EXPECT_EQ(loads(m), before + 1);
  // The first request finds it resident: no further load, and it runs the version just uploaded.
  auto r = c.generate(request("prewarmed", 8, 7));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.done.adapter_version(), info.current_version());
  const double after_upload = loads(settled_metrics());
  EXPECT_EQ(after_upload, before + 1) << "the first request loaded the adapter again";
  // A hot swap warms the new version too, and requests get it.
  upload(c, "prewarmed", 3, &info);
  EXPECT_TRUE(wait_until([&] { return loads(m = metrics()) > after_upload; })) << m;
  EXPECT_EQ(loads(m), after_upload + 1);
  auto swapped = c.generate(request("prewarmed", 8, 7));
  ASSERT_TRUE(swapped.status.ok()) << swapped.status.error_message();
  EXPECT_EQ(swapped.done.adapter_version(), info.current_version());
  EXPECT_EQ(loads(settled_metrics()), after_upload + 1) << "the first request after the swap loaded it again";
  EXPECT_NE(swapped.token_ids, r.token_ids) << "the swap to another adapter file changed nothing";
}

// A second server with TLS: a CA made at test time signs the server certificate (names 127.0.0.1
// and localhost). Clients holding that CA are served; plaintext and wrong-CA clients are refused.
TEST_F(ServingTest, TlsServesClientsThatTrustItsCaOnly) {
  if (!test_support::have_openssl()) {
    GTEST_SKIP() << "openssl is not installed (scripts/setup.sh installs it)";
  }
  const fs::path dir = work_ / "tls";
  ASSERT_NO_FATAL_FAILURE(test_support::make_test_certificates(dir));
  const std::string d = dir.string();

  ServerProcess tls;
  std::vector<std::string> f = flags({}, dir / "adapters");  // its own store
  f.insert(f.end(), {"--tls-cert", d + "/server.pem", "--tls-key", d + "/server.key"});
  tls.start(dir, f, dir / "ca.pem");  // waits for health SERVING over TLS
  if (HasFatalFailure()) return;
  EXPECT_NE(tls.log().find("tls=true"), std::string::npos) << tls.log();

  // (a) The CA's holder: health SERVING and a streamed generation.
  Client good(tls.options(kAcmeKey));
  grpc::health::v1::HealthCheckResponse::ServingStatus st{};
  ASSERT_TRUE(good.health("", &st).ok());
  EXPECT_EQ(st, grpc::health::v1::HealthCheckResponse::SERVING);
  auto r = good.generate(request("", 12, 3));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_GE(r.chunks, 2);
  EXPECT_EQ(r.token_ids.size(), 12u);

  // (b) Plaintext against the TLS port: UNAVAILABLE, not a hang or a garbled answer.
  ClientOptions plain = tls.options(kAcmeKey);
  plain.tls_ca_file.clear();
  plain.timeout = std::chrono::seconds(20);
  auto p = Client(plain).generate(request("", 2, 0));
  EXPECT_EQ(p.status.error_code(), StatusCode::UNAVAILABLE) << p.status.error_message();
  EXPECT_FALSE(p.status.error_message().empty());

  // (c) TLS with a CA that did not sign the server certificate: the handshake fails, UNAVAILABLE.
  ClientOptions wrong = tls.options(kAcmeKey);
  wrong.tls_ca_file = (dir / "other-ca.pem").string();
  wrong.timeout = std::chrono::seconds(20);
  auto w = Client(wrong).generate(request("", 2, 0));
  EXPECT_EQ(w.status.error_code(), StatusCode::UNAVAILABLE) << w.status.error_message();
  grpc::health::v1::HealthCheckResponse::ServingStatus wst{};
  EXPECT_EQ(Client(wrong).health("", &wst).error_code(), StatusCode::UNAVAILABLE);
  EXPECT_EQ(tls.stop(), 0) << tls.log();
}

// Restarts the server: adapters persist on disk and come back with their versions.
TEST_F(ServingTest, RestartKeepsAdaptersAndGracefulShutdownExitsCleanly) {
  Client c = acme();
  v1::AdapterInfo info, other;
  upload(c, "durable", 1, &info);
  upload(c, "durable", 2, &info);
  upload(c, "second", 3, &other);
  auto before = c.generate(request("durable", 12, 21));
  ASSERT_TRUE(before.status.ok());
  EXPECT_EQ(server_->stop(), 0) << server_->log();
  EXPECT_NE(server_->log().find("server.stopped"), std::string::npos);
  ASSERT_NO_FATAL_FAILURE(server_->start(work_, flags()));
  Client again = acme();
  v1::AdapterInfo after_info;
  ASSERT_TRUE(again.get_adapter("durable", &after_info).ok());
  EXPECT_EQ(after_info.current_version(), info.current_version());
  EXPECT_EQ(after_info.versions_size(), 2);
  auto after = again.generate(request("durable", 12, 21));
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.token_ids, before.token_ids);
  v1::ListAdaptersResponse list;
  ASSERT_TRUE(again.list_adapters(&list).ok());
  std::set<std::string> names;
  for (const auto& a : list.adapters()) names.insert(a.name());
  EXPECT_EQ(names, (std::set<std::string>{"durable", "second"}));
}

// What is served is what the engine computes: the greedy stream of the base model and of an uploaded
// adapter equals `statetune-engine generate` (the offline tool, its own prefill/decode loop) on the
// same model, adapter file and prompt, text for text; the streamed text is the decode of the streamed
// ids; and both stop at the same end-of-sequence token.
TEST_F(ServingTest, ServedGreedyOutputEqualsTheOfflineEngine) {
  const engine::Tokenizer tokenizer = engine::Tokenizer::from_file(tokenizer_path());
  // A strong adapter (scale 5): the tiny random model's greedy output repeats the prompt's last
  // token, which the suite's scale-0.5 adapters do not change.
  const fs::path strong = work_ / "strong.safetensors";
  {
    auto model = engine::MambaModel::load(model_dir(), engine::LoadOptions{});
    engine::save_adapter(engine::random_adapter(model->config(), model->fingerprint(),
                                                {engine::kStateOffset, engine::kOutputOffset}, 3, 5.0),
                         strong);
  }
  Client c = acme();
  v1::AdapterInfo info;
  ASSERT_TRUE(c.upload_adapter("offline", slurp(strong), &info).ok());
  const std::string prompt = "The quick brown fox jumps over the lazy dog because";
  std::set<std::string> texts;
  for (bool adapter : {false, true}) {
    v1::GenerateRequest req;
    req.set_text(prompt);
    req.set_max_tokens(20);
    req.set_temperature(0);
    if (adapter) req.mutable_adapter()->set_name("offline");
    auto served = c.generate(req);
    ASSERT_TRUE(served.status.ok()) << served.status.error_message();
    ASSERT_FALSE(served.token_ids.empty());
    std::vector<int32_t> ids(served.token_ids.begin(), served.token_ids.end());
    EXPECT_EQ(served.text, tokenizer.decode(ids)) << "the streamed text is not the decode of the streamed ids";
    EXPECT_EQ(served.done.usage().completion_tokens(), served.token_ids.size());

    std::string cmd = std::string(STATETUNE_ENGINE_BIN) + " generate --threads 1 --model " +
                      test_support::quote(model_dir().string()) + " --tokenizer " +
                      test_support::quote(tokenizer_path()) + " --prompt " + test_support::quote(prompt) +
                      " --max-tokens 20";
    if (adapter) cmd += " --adapter " + test_support::quote(strong.string());
    const auto offline = test_support::run_shell(cmd, work_);
    ASSERT_EQ(offline.code, 0) << test_support::describe(offline);
    EXPECT_EQ(served.text + "\n", offline.out) << "adapter " << adapter;
    EXPECT_NE(offline.err.find("generated"), std::string::npos) << offline.err;
    EXPECT_NE(offline.err.find(" " + std::to_string(served.token_ids.size()) + " generated"), std::string::npos)
        << "served " << served.token_ids.size() << " tokens; " << offline.err;
    texts.insert(served.text);
  }
  EXPECT_EQ(texts.size(), 2u) << "the adapter did not change the greedy output";
}

// End-of-sequence through the server: a copy of the model whose config names, as its eos_token_id, a
// token a seeded request really draws mid-stream. With stop_at_eos (the default) the stream ends just
// before it with FINISH_REASON_STOP; with stop_at_eos false it is an ordinary token and the request
// runs to max_tokens, giving exactly the original model's tokens.
TEST_F(ServingTest, EndOfSequenceEndsTheStreamUnlessStopAtEosIsFalse) {
  Client c = acme();
  auto req = request("", 24, 4242);
  auto original = c.generate(req);
  ASSERT_TRUE(original.status.ok()) << original.status.error_message();
  ASSERT_EQ(original.token_ids.size(), 24u);
  const auto& t = original.token_ids;
  size_t k = 1;  // the first token, past the start, that did not come before
  while (k < t.size() && std::find(t.begin(), t.begin() + static_cast<std::ptrdiff_t>(k), t[k]) != t.begin() + static_cast<std::ptrdiff_t>(k)) ++k;
  ASSERT_LT(k, t.size()) << "the sampled stream repeats one token; pick another seed";

  const fs::path eos_model = work_ / "model-eos";
  fs::create_directories(eos_model);
  fs::copy_file(model_dir() / "model.safetensors", eos_model / "model.safetensors");
  nlohmann::json config = nlohmann::json::parse(slurp(model_dir() / "config.json"));
  config["eos_token_id"] = t[k];
  std::ofstream(eos_model / "config.json") << config.dump(2);
  ServerProcess eos_server;
  const fs::path eos_work = work_ / "eos";
  fs::create_directories(eos_work);
  std::vector<std::string> f = flags(eos_model, eos_work / "adapters");  // its own store
  ASSERT_NO_FATAL_FAILURE(eos_server.start(eos_work, f));
  Client e(eos_server.options(kAcmeKey));

  auto kept = e.generate(req);  // stop_at_eos false
  ASSERT_TRUE(kept.status.ok()) << kept.status.error_message();
  EXPECT_EQ(kept.token_ids, t);
  EXPECT_EQ(kept.done.finish_reason(), v1::FINISH_REASON_LENGTH);

  req.clear_stop_at_eos();  // the default: stop
  auto stopped = e.generate(req);
  ASSERT_TRUE(stopped.status.ok()) << stopped.status.error_message();
  EXPECT_EQ(stopped.token_ids, std::vector<int64_t>(t.begin(), t.begin() + static_cast<std::ptrdiff_t>(k)));
  EXPECT_EQ(stopped.done.finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(stopped.done.usage().completion_tokens(), k);
  req.set_stop_at_eos(true);
  EXPECT_EQ(e.generate(req).token_ids, stopped.token_ids);
  EXPECT_EQ(eos_server.stop(), 0) << eos_server.log();
}

// The `statetune adapters` commands a tenant uses: upload, list, get, delete, and their failures.
TEST_F(ServingTest, CommandLineUploadsListsAndDeletesAdapters) {
  const std::string cli = std::string(STATETUNE_BINARY_DIR) + "/client/statetune";
  auto run = [&](const std::string& args, const std::string& key = kAcmeKey) {
    return test_support::run_shell(cli + " " + args + " --addr 127.0.0.1:" + std::to_string(server_->port()) +
                                       " --api-key " + key + " --timeout 60",
                                   work_);
  };
  auto r = run("adapters list");
  ASSERT_EQ(r.code, 0) << test_support::describe(r);
  EXPECT_EQ(r.out, "(no adapters)\n");
  r = run("adapters upload --name cli-a --file " + test_support::quote(adapter_path(0).string()));
  ASSERT_EQ(r.code, 0) << test_support::describe(r);
  EXPECT_EQ(r.out.rfind("acme/cli-a current=", 0), 0u) << r.out;
  r = run("adapters upload --name cli-a --file " + test_support::quote(adapter_path(1).string()));
  ASSERT_EQ(r.code, 0) << test_support::describe(r);
  // What the CLI printed is what the server stores: two versions, the second current, the file's size.
  Client c = acme();
  v1::AdapterInfo info;
  ASSERT_TRUE(c.get_adapter("cli-a", &info).ok());
  ASSERT_EQ(info.versions_size(), 2);
  EXPECT_NE(r.out.find("acme/cli-a current=" + info.current_version() + "\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(std::to_string(adapter_files_[1].size()) + " bytes"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("methods state_offset output_offset"), std::string::npos) << r.out;
  // Another tenant does not see it; the owner lists it.
  r = run("adapters list", kBetaKey);
  EXPECT_EQ(r.code, 0) << test_support::describe(r);
  EXPECT_EQ(r.out, "(no adapters)\n");
  r = run("adapters list");
  EXPECT_EQ(r.code, 0) << test_support::describe(r);
  EXPECT_NE(r.out.find("acme/cli-a current=" + info.current_version()), std::string::npos) << r.out;
  // A file that is not an adapter: INVALID_ARGUMENT, exit 2, nothing stored.
  r = run("adapters upload --name cli-bad --file " + test_support::quote((*suite_ / "tenants.json").string()));
  EXPECT_EQ(r.code, 2) << test_support::describe(r);
  EXPECT_NE(r.err.find("INVALID_ARGUMENT"), std::string::npos) << r.err;
  EXPECT_EQ(c.get_adapter("cli-bad", &info).error_code(), StatusCode::NOT_FOUND);
  r = run("adapters delete --name cli-a");
  EXPECT_EQ(r.code, 0) << test_support::describe(r);
  EXPECT_EQ(r.out, "deleted 2 version(s)\n");
  EXPECT_EQ(c.get_adapter("cli-a", &info).error_code(), StatusCode::NOT_FOUND);
  r = run("adapters delete --name cli-a");
  EXPECT_EQ(r.code, 2) << test_support::describe(r);
  EXPECT_NE(r.err.find("NOT_FOUND"), std::string::npos) << r.err;
  r = run("adapters list");
  EXPECT_EQ(r.out, "(no adapters)\n");
}

}  // namespace
}  // namespace statetune::serving
