// Integration tests: the real statetune-serve binary on a loopback port, with a tiny random model and
// the GPT-NeoX tokenizer, driven through the client library over gRPC and scraped over HTTP.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
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
#include "tests/support/serving_fixture.h"
#include "server/engine/util/sha256.h"

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

class ServingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    work_ = new fs::path(fs::temp_directory_path() / ("statetune_serving_" + std::to_string(::getpid())));
    adapter_files_ = test_support::write_serving_files(*work_, 4);
    server_ = new ServerProcess();
    server_->start(*work_, flags());
  }
  static void TearDownTestSuite() {
    delete server_;
    fs::remove_all(*work_);
    delete work_;
  }
  static std::vector<std::string> flags() {
    return {"--model", (*work_ / "model").string(),
            "--tokenizer", std::string(STATETUNE_SHARED_DIR) + "/models/gpt-neox-20b-tokenizer.json",
            "--adapters-dir", (*work_ / "adapters").string(), "--tenants-file", (*work_ / "tenants.json").string(),
            "--max-batch", "8", "--queue-size", "2", "--max-new-tokens", "100000", "--max-prompt-tokens", "64",
            "--max-request-bytes", "64KiB", "--max-upload-bytes", "4MiB", "--adapter-slots", "3",
            "--drain-seconds", "2"};
  }

  static Client acme() { return Client(server_->options(kAcmeKey)); }
  static Client beta() { return Client(server_->options(kBetaKey)); }

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

  static fs::path* work_;
  static ServerProcess* server_;
  static std::vector<std::string> adapter_files_;
};
fs::path* ServingTest::work_ = nullptr;
ServerProcess* ServingTest::server_ = nullptr;
std::vector<std::string> ServingTest::adapter_files_;

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
  EXPECT_NE(alone[3], alone[4]) << "the adapter changed nothing";
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
  const std::string m = http_get(server_->metrics_port(), "/metrics");
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
  std::vector<double> servable_ms;
  for (int i = 1; i <= 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    const auto t0 = std::chrono::steady_clock::now();
    v1::AdapterInfo info;
    upload(c, "swap", i, &info);
    // The very next request gets the new version.
    auto r = c.generate(request("swap", 1, 3));
    servable_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.done.adapter_version(), info.current_version());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  stop = true;
  for (auto& t : traffic) t.join();
  EXPECT_EQ(failures.load(), 0) << failure_message;
  EXPECT_GT(done.load(), 6);
  EXPECT_GE(versions_seen.size(), 3u) << "traffic never ran across the swaps";
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
  const std::string before = http_get(server_->metrics_port(), "/metrics");
  // A client cancel ends the request in the engine at once.
  Client c = acme();
  auto r = c.generate(request("", 100000, 4), [](const v1::TokenChunk&) { return false; });
  EXPECT_EQ(r.status.error_code(), StatusCode::CANCELLED);
  // The engine drops the cancelled row at its next step; until then it still holds a row, and one of
  // the 10 requests below could find the queue full (seen on a loaded machine).
  for (int i = 0; i < 500; ++i) {
    const std::string m = http_get(server_->metrics_port(), "/metrics");
    if (metric_value(m, "statetune_requests_running") == 0 &&
        metric_value(m, "statetune_requests_waiting") == 0) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }

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
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      last_metrics = http_get(server_->metrics_port(), "/metrics");
      if (metric_value(last_metrics, "statetune_requests_running") == running &&
          metric_value(last_metrics, "statetune_requests_waiting") == waiting) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
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
  for (int i = 0; i < 100; ++i) {
    m = http_get(server_->metrics_port(), "/metrics");
    if (metric_value(m, "statetune_requests_running") == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(metric_value(m, "statetune_requests_running"), 0);
  EXPECT_GE(metric_value(m, "statetune_requests_total", {"tenant=\"acme\"", "status=\"cancelled\""}) -
                metric_value(before, "statetune_requests_total", {"tenant=\"acme\"", "status=\"cancelled\""}),
            11);
  EXPECT_GE(metric_value(m, "statetune_requests_total", {"status=\"resource_exhausted\""}), 1);
}

TEST_F(ServingTest, MetricsAreScrapedFromTheRealEndpoint) {
  Client c = acme();
  upload(c, "metered", 3);
  ASSERT_TRUE(c.generate(request("metered", 8, 0)).status.ok());
  const std::string m = http_get(server_->metrics_port(), "/metrics");
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

TEST_F(ServingTest, UploadLoadsTheNewVersionIntoThePoolBeforeAnyRequest) {
  // The pool gauges are refreshed every 250 ms; wait for the loads counter to move.
  auto loads_after = [](double before) {
    std::string m;
    for (int i = 0; i < 100; ++i) {
      m = http_get(server_->metrics_port(), "/metrics");
      if (metric_value(m, "statetune_adapter_loads_total") > before) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return metric_value(m, "statetune_adapter_loads_total");
  };
  Client c = acme();
  std::this_thread::sleep_for(std::chrono::milliseconds(600));  // the earlier tests' loads are counted
  const double before = metric_value(http_get(server_->metrics_port(), "/metrics"), "statetune_adapter_loads_total");
  v1::AdapterInfo info;
  upload(c, "prewarmed", 2, &info);
  const double after_upload = loads_after(before);
  EXPECT_EQ(after_upload, before + 1) << "the upload did not load the new version into the pool";
  // The first request finds it resident: no further load, and it runs the version just uploaded.
  auto r = c.generate(request("prewarmed", 8, 7));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.done.adapter_version(), info.current_version());
  std::this_thread::sleep_for(std::chrono::milliseconds(600));  // two refreshes
  EXPECT_EQ(loads_after(after_upload), after_upload) << "the first request loaded the adapter again";
  // A hot swap warms the new version too, and requests get it.
  upload(c, "prewarmed", 3, &info);
  EXPECT_EQ(loads_after(after_upload), after_upload + 1);
  auto swapped = c.generate(request("prewarmed", 8, 7));
  ASSERT_TRUE(swapped.status.ok()) << swapped.status.error_message();
  EXPECT_EQ(swapped.done.adapter_version(), info.current_version());
  EXPECT_NE(swapped.token_ids, r.token_ids) << "the swap to another adapter file changed nothing";
}

// Runs `command` through the shell; fails the test with its output when it exits non-zero.
void run_or_fail(const std::string& command, const fs::path& log) {
  const int rc = std::system((command + " >" + log.string() + " 2>&1").c_str());
  ASSERT_EQ(rc, 0) << command << "\n" << slurp(log);
}

// A second server with TLS: a CA made at test time signs the server certificate (names 127.0.0.1
// and localhost). Clients holding that CA are served; plaintext and wrong-CA clients are refused.
TEST_F(ServingTest, TlsServesClientsThatTrustItsCaOnly) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "openssl is not installed (scripts/setup.sh installs it)";
  }
  const fs::path dir = *work_ / "tls";
  fs::create_directories(dir);
  const std::string d = dir.string();
  const fs::path log = dir / "openssl.log";
  const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2";
  run_or_fail("openssl req -x509" + ec + " -keyout " + d + "/ca.key -out " + d + "/ca.pem -subj /CN=statetune-test-ca", log);
  run_or_fail("openssl req -x509" + ec + " -keyout " + d + "/other-ca.key -out " + d + "/other-ca.pem -subj /CN=other-ca", log);
  run_or_fail("openssl req" + ec + " -keyout " + d + "/server.key -out " + d + "/server.csr -subj /CN=localhost", log);
  std::ofstream(dir / "san.ext") << "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
  run_or_fail("openssl x509 -req -in " + d + "/server.csr -CA " + d + "/ca.pem -CAkey " + d + "/ca.key -CAcreateserial -days 2 -extfile " + d + "/san.ext -out " + d + "/server.pem", log);

  ServerProcess tls;
  std::vector<std::string> f = flags();
  for (size_t i = 0; i + 1 < f.size(); ++i) {
    if (f[i] == "--adapters-dir") f[i + 1] = (dir / "adapters").string();  // its own store
  }
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

// Last: restarts the server. Adapters persist on disk and come back with their versions.
TEST_F(ServingTest, RestartKeepsAdaptersAndGracefulShutdownExitsCleanly) {
  Client c = acme();
  v1::AdapterInfo info;
  upload(c, "durable", 1, &info);
  auto before = c.generate(request("durable", 12, 21));
  ASSERT_TRUE(before.status.ok());
  EXPECT_EQ(server_->stop(), 0) << server_->log();
  EXPECT_NE(server_->log().find("server.stopped"), std::string::npos);
  server_->start(*work_, flags());
  Client again = acme();
  v1::AdapterInfo after_info;
  ASSERT_TRUE(again.get_adapter("durable", &after_info).ok());
  EXPECT_EQ(after_info.current_version(), info.current_version());
  auto after = again.generate(request("durable", 12, 21));
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.token_ids, before.token_ids);
  v1::ListAdaptersResponse list;
  ASSERT_TRUE(again.list_adapters(&list).ok());
  EXPECT_GE(list.adapters_size(), 4);
}

}  // namespace
}  // namespace statetune::serving
