// Two statetune-serve replicas (separate processes) over one real PostgreSQL 15 (--database): an
// upload through one is served by the other (the delay is measured over 50 uploads and printed),
// a delete through one is refused by the other, concurrent uploads of one name through both get
// distinct versions, and a database outage keeps generation on known adapters working while uploads
// and deletes answer UNAVAILABLE, until the replicas resync. Each replica's registry view in /metrics
// (notify lag, pool connections, errors) is checked along the way. A replica started before its
// database retries (each try logged, never the password) and becomes SERVING once it is up; one whose
// database stays down past --database-start-seconds exits.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>

#include "tests/storage/postgres_fixture.h"
#include "tests/support/serving_fixture.h"

namespace statetune {
namespace {
namespace v1 = ::statetune::v1;
using grpc::StatusCode;
using test_support::kAcmeKey;
using test_support::wait_until;

class TwoReplicasTest : public test_support::PostgresTest {
 protected:
  void SetUp() override {
    PostgresTest::SetUp();
    if (IsSkipped()) return;
    work_ = std::filesystem::path(::testing::TempDir()) / ("serving-pg-" + db_name_);
    files_ = test_support::write_serving_files(work_, 3);
    for (const char* r : {"a", "b"}) std::filesystem::create_directories(work_ / r);
    ASSERT_NO_FATAL_FAILURE(a_.start(work_ / "a", flags("a")));
    ASSERT_NO_FATAL_FAILURE(b_.start(work_ / "b", flags("b")));
  }
  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "--- replica A log:\n" << a_.log() << "\n--- replica B log:\n" << b_.log() << "\n";
    }
  }
  std::vector<std::string> flags(const std::string& replica) const {
    return {"--model", (work_ / "model").string(),
            "--tokenizer", std::string(STATETUNE_SHARED_DIR) + "/models/gpt-neox-20b-tokenizer.json", "--tenants-file", (work_ / "tenants.json").string(),
            "--adapters-dir", (work_ / replica / "cache").string(), "--database", url_,
            "--database-password-file", pg_->password_file().string(), "--database-pool-size", "2",
            "--max-concurrent-uploads-per-tenant", "4"};
  }
  static v1::GenerateRequest request(const std::string& adapter) {
    v1::GenerateRequest r;
    r.set_text("The quick brown fox");
    r.mutable_adapter()->set_name(adapter);
    r.set_max_tokens(1);
    r.set_temperature(0);
    return r;
  }
  static std::string upload(client::Client& c, const std::string& name, const std::string& bytes,
                            StatusCode* code = nullptr) {
    v1::AdapterInfo info;
    const auto st = c.upload_adapter(name, bytes, &info);
    if (code != nullptr) *code = st.error_code();
    return st.ok() ? info.current_version() : "";
  }
  // The version a generation on `adapter` used ("" when it failed); `code` gets its status.
  static std::string served(client::Client& c, const std::string& adapter, StatusCode* code = nullptr) {
    const auto r = c.generate(request(adapter));
    if (code != nullptr) *code = r.status.error_code();
    return r.status.ok() ? r.done.adapter_version() : "";
  }

  std::filesystem::path work_;
  std::vector<std::string> files_;
  test_support::ServingProcess a_, b_;
};

TEST_F(TwoReplicasTest, AnUploadThroughOneReplicaIsServedByTheOther) {
  client::Client a(a_.options(kAcmeKey)), b(b_.options(kAcmeKey));
  constexpr int kUploads = 50;
  std::vector<double> delays_ms;
  for (int i = 0; i < kUploads; ++i) {
    const std::string version = upload(a, "style", files_[i % files_.size()]);
    ASSERT_EQ(version, std::to_string(i + 1));
    const auto uploaded = std::chrono::steady_clock::now();
    ASSERT_TRUE(wait_until([&] { return served(b, "style") == version; }))
        << "B never served version " << version;
    delays_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - uploaded).count());
  }
  std::sort(delays_ms.begin(), delays_ms.end());
  const auto pct = [&](double p) { return delays_ms[static_cast<size_t>(p * (delays_ms.size() - 1))]; };
  // The figure docs/benchmarks.md quotes: upload returned on A -> first generation on B that used it
  // (includes that generation's own round trip of one token).
  std::cout << "upload(A) -> served(B) over " << kUploads << " uploads: p50 " << pct(0.5) << " ms, p99 "
            << pct(0.99) << " ms, max " << delays_ms.back() << " ms\n";
  RecordProperty("propagation_p50_ms", std::to_string(pct(0.5)));
  RecordProperty("propagation_p99_ms", std::to_string(pct(0.99)));
  // Every replica lists the same versions.
  v1::AdapterInfo info;
  ASSERT_TRUE(b.get_adapter("style", &info).ok());
  EXPECT_EQ(info.versions_size(), kUploads);

  // The registry's view in /metrics. B applied each upload's notification before serving it, so its
  // notify-lag histogram holds a sample per upload (A's too: it hears its own). The pool gauges are
  // refreshed every 250 ms: wait until they show the quiet pool (in use + idle = open).
  for (const test_support::ServingProcess* p : {&a_, &b_}) {
    std::string text;
    const auto metric = [&](const std::string& name) { return test_support::metric_value(text, name); };
    EXPECT_TRUE(wait_until([&] {
      text = test_support::http_get(p->metrics_port(), "/metrics");
      const double open = metric("statetune_adapter_storage_connections");
      return open >= 1 && open <= 2 && metric("statetune_adapter_storage_connections_idle") >= 1 &&
             metric("statetune_adapter_storage_connections_in_use") + metric("statetune_adapter_storage_connections_idle") == open;
    })) << text;
    const double lags = metric("statetune_adapter_storage_notify_lag_seconds_count");
    // One per upload; the first may have been read by the replica's first resync instead, if its
    // LISTEN connection came up after it.
    EXPECT_GE(lags, kUploads - 1);
    EXPECT_LE(lags, kUploads);
    // Loopback and one database clock: well under a second on average, even on a loaded 2-core box.
    EXPECT_LT(metric("statetune_adapter_storage_notify_lag_seconds_sum") / lags, 1.0);
    EXPECT_EQ(metric("statetune_adapter_storage_statement_errors_total"), 0);
    EXPECT_EQ(metric("statetune_adapter_storage_unavailable_total"), 0);
    EXPECT_EQ(metric("statetune_adapter_storage_adapters"), 1);
  }
}

TEST_F(TwoReplicasTest, HotSwapsUnderTrafficOnBothReplicasFailNoRequest) {
  client::Client a(a_.options(kAcmeKey)), b(b_.options(kAcmeKey));
  ASSERT_EQ(upload(a, "hot", files_[0]), "1");
  ASSERT_TRUE(wait_until([&] { return served(b, "hot") == "1"; }));
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0}, done{0};
  std::mutex mu;
  std::set<std::string> seen[2];
  std::vector<std::thread> traffic;
  for (int t = 0; t < 4; ++t) {
    traffic.emplace_back([&, t] {
      client::Client c((t % 2 == 0 ? a_ : b_).options(kAcmeKey));
      v1::GenerateRequest r = request("hot");
      r.set_max_tokens(24);
      while (!stop) {
        const auto res = c.generate(r);
        if (!res.status.ok() || !res.has_done) {
          ++failures;
          continue;
        }
        ++done;
        std::lock_guard<std::mutex> lock(mu);
        seen[t % 2].insert(res.done.adapter_version());
      }
    });
  }
  for (int i = 0; i < 8; ++i) {
    // No ASSERT here: the traffic threads must be stopped and joined whatever happens.
    StatusCode code = StatusCode::OK;
    if (upload(i % 2 == 0 ? a : b, "hot", files_[(i + 1) % files_.size()], &code).empty()) {
      ADD_FAILURE() << "upload " << i << " failed: " << code;
      break;
    }
    const int before = done;
    if (!wait_until([&] { return done > before + 2; })) {  // traffic ran over this version
      ADD_FAILURE() << "the traffic stalled";
      break;
    }
  }
  stop = true;
  for (auto& t : traffic) t.join();
  EXPECT_EQ(failures, 0);
  EXPECT_GT(seen[0].size(), 1u) << "replica A never switched versions under traffic";
  EXPECT_GT(seen[1].size(), 1u) << "replica B never switched versions under traffic";
}

TEST_F(TwoReplicasTest, ADeleteThroughOneReplicaIsRefusedByTheOther) {
  client::Client a(a_.options(kAcmeKey)), b(b_.options(kAcmeKey));
  ASSERT_EQ(upload(a, "doomed", files_[0]), "1");
  ASSERT_TRUE(wait_until([&] { return served(b, "doomed") == "1"; }));
  ASSERT_EQ(served(a, "doomed"), "1");  // A has it in a slot
  uint32_t deleted = 0;
  ASSERT_TRUE(b.delete_adapter("doomed", &deleted).ok());
  EXPECT_EQ(deleted, 1u);
  StatusCode code = StatusCode::OK;
  ASSERT_TRUE(wait_until([&] { return served(a, "doomed", &code).empty() && code == StatusCode::NOT_FOUND; }))
      << "A still serves a deleted adapter";
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(served(a, "doomed", &code), "");
    EXPECT_EQ(code, StatusCode::NOT_FOUND);
  }
  v1::ListAdaptersResponse list;
  ASSERT_TRUE(a.list_adapters(&list).ok());
  EXPECT_EQ(list.adapters_size(), 0);
}

TEST_F(TwoReplicasTest, ConcurrentUploadsOfOneNameThroughBothReplicasGetDistinctVersions) {
  client::Client a(a_.options(kAcmeKey)), b(b_.options(kAcmeKey));
  constexpr int kEach = 3;
  std::vector<std::string> versions(2 * kEach);
  std::vector<StatusCode> codes(2 * kEach, StatusCode::OK);
  std::vector<std::thread> threads;
  for (int i = 0; i < 2 * kEach; ++i) {
    threads.emplace_back([&, i] { versions[i] = upload(i % 2 == 0 ? a : b, "race", files_[i % files_.size()], &codes[i]); });
  }
  for (auto& t : threads) t.join();
  for (StatusCode code : codes) EXPECT_EQ(code, StatusCode::OK);
  const std::set<std::string> distinct(versions.begin(), versions.end());
  EXPECT_EQ(distinct.size(), versions.size());
  EXPECT_EQ(distinct.count(""), 0u) << "an upload failed";
  for (client::Client* c : {&a, &b}) {
    EXPECT_TRUE(wait_until([&] {
      v1::AdapterInfo info;
      return c->get_adapter("race", &info).ok() && info.versions_size() == 2 * kEach &&
             info.current_version() == std::to_string(2 * kEach);
    }));
  }
}

TEST_F(TwoReplicasTest, ADatabaseOutageKeepsKnownAdaptersServingAndRefusesWrites) {
  client::Client a(a_.options(kAcmeKey)), b(b_.options(kAcmeKey));
  ASSERT_EQ(upload(a, "known", files_[0]), "1");
  ASSERT_TRUE(wait_until([&] { return served(b, "known") == "1"; }));

  pg_->stop();
  StatusCode code = StatusCode::OK;
  // Generation traffic on both replicas through at least 5 s of the outage (issue 13's acceptance).
  const auto outage_end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  int generations = 0;
  while (std::chrono::steady_clock::now() < outage_end || generations < 10) {
    EXPECT_EQ(served(a, "known", &code), "1") << "generation failed during the outage: " << code;
    EXPECT_EQ(served(b, "known", &code), "1") << "generation failed during the outage: " << code;
    generations += 2;
  }
  EXPECT_EQ(upload(a, "known", files_[1], &code), "");
  EXPECT_EQ(code, StatusCode::UNAVAILABLE);
  uint32_t deleted = 0;
  EXPECT_EQ(b.delete_adapter("known", &deleted).error_code(), StatusCode::UNAVAILABLE);
  EXPECT_EQ(served(b, "known"), "1");  // the refused delete changed nothing

  pg_->start();
  std::string v2;
  ASSERT_TRUE(wait_until([&] { return !(v2 = upload(a, "known", files_[1])).empty(); }))
      << "uploads never worked again after the database came back";
  EXPECT_EQ(v2, "2");
  ASSERT_TRUE(wait_until([&] { return served(b, "known") == "2"; })) << "B never resynced";
  // The registry's view in /metrics (refreshed every 250 ms): B reconnected and re-read everything,
  // A counted the writes the outage refused.
  const auto metric = [](const test_support::ServingProcess& p, const std::string& name) {
    return test_support::metric_value(test_support::http_get(p.metrics_port(), "/metrics"), name);
  };
  EXPECT_TRUE(wait_until([&] {
    return metric(b_, "statetune_adapter_storage_resyncs_total") >= 2 &&
           metric(b_, "statetune_adapter_storage_listening") == 1 &&
           metric(b_, "statetune_adapter_storage_adapters") == 1 &&
           metric(a_, "statetune_adapter_storage_unavailable_total") >= 1;
  })) << "resyncs " << metric(b_, "statetune_adapter_storage_resyncs_total") << ", unavailable "
      << metric(a_, "statetune_adapter_storage_unavailable_total");
}

// Only one replica loses the database (its role may no longer log in and its sessions, the LISTEN one
// too, are ended) while another uploads: it misses that NOTIFY, keeps serving what it knew, and once it
// is back its resync after reconnecting finds the version it missed.
TEST_F(TwoReplicasTest, AReplicaCutOffFromTheDatabaseCatchesUpWithWhatItMissed) {
  const std::string role = "replica_c_" + db_name_;  // roles are per server, databases per test
  pg_->psql("CREATE ROLE " + role + " LOGIN SUPERUSER PASSWORD '" + pg_->password() + "'");
  std::vector<std::string> c_flags = flags("c");
  std::replace(c_flags.begin(), c_flags.end(), url_, pg_->url(db_name_, role));
  std::filesystem::create_directories(work_ / "c");
  test_support::ServingProcess c_process;
  ASSERT_NO_FATAL_FAILURE(c_process.start(work_ / "c", c_flags));
  client::Client a(a_.options(kAcmeKey)), c(c_process.options(kAcmeKey));
  ASSERT_EQ(upload(a, "missed", files_[0]), "1");
  ASSERT_TRUE(wait_until([&] { return served(c, "missed") == "1"; }));
  const auto listening = [&] {
    return test_support::metric_value(test_support::http_get(c_process.metrics_port(), "/metrics"),
                                      "statetune_adapter_storage_listening");
  };

  pg_->psql("ALTER ROLE " + role + " NOLOGIN");
  pg_->psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '" + role + "'");
  ASSERT_TRUE(wait_until([&] { return listening() == 0; })) << "C never noticed it lost the database";
  ASSERT_EQ(upload(a, "missed", files_[1]), "2");
  EXPECT_EQ(served(c, "missed"), "1") << "C stopped serving the version it knew";

  pg_->psql("ALTER ROLE " + role + " LOGIN");
  EXPECT_TRUE(wait_until([&] { return served(c, "missed") == "2"; }))
      << "C never caught up with the upload it missed:\n" << c_process.log();
  EXPECT_TRUE(wait_until([&] { return listening() == 1; })) << "C does not listen again";
}

TEST_F(TwoReplicasTest, AResolverTargetSpreadsCallsOverBothReplicas) {
  client::ClientOptions o = a_.options(kAcmeKey);
  o.address = "ipv4:127.0.0.1:" + std::to_string(a_.port()) + ",127.0.0.1:" + std::to_string(b_.port());
  ASSERT_TRUE(client::uses_resolver_scheme(o.address));
  client::Client both(o);
  client::Client a(a_.options(kAcmeKey));
  ASSERT_EQ(upload(a, "spread", files_[0]), "1");
  ASSERT_TRUE(wait_until([&] { return served(both, "spread") == "1" && served(both, "spread") == "1"; }));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(served(both, "spread"), "1");
  const auto requests = [](const test_support::ServingProcess& p) {
    return test_support::metric_value(test_support::http_get(p.metrics_port(), "/metrics"),
                                      "statetune_requests_total", {"status=\"ok\""});
  };
  // round_robin alternates per call; pick_first would have sent all of them to one replica.
  EXPECT_GE(requests(a_), 4);
  EXPECT_GE(requests(b_), 4);
}

// One replica, started while PostgreSQL is down (a rollout that starts before the database).
class StartBeforeTheDatabaseTest : public test_support::PostgresTest {
 protected:
  void SetUp() override {
    PostgresTest::SetUp();
    if (IsSkipped()) return;
    work_ = std::filesystem::path(::testing::TempDir()) / ("serving-pg-start-" + db_name_);
    files_ = test_support::write_serving_files(work_, 1);
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "--- replica log:\n" << replica_.log() << "\n";
    if (!pg_->running()) pg_->start();
  }
  std::vector<std::string> flags(const std::string& start_seconds) const {
    return {"--model", (work_ / "model").string(),
            "--tokenizer", std::string(STATETUNE_SHARED_DIR) + "/models/gpt-neox-20b-tokenizer.json",
            "--tenants-file", (work_ / "tenants.json").string(), "--adapters-dir", (work_ / "cache").string(),
            "--database", url_, "--database-password-file", pg_->password_file().string(),
            "--database-start-seconds", start_seconds};
  }
  size_t failed_tries() const {
    const std::string log = replica_.log();
    size_t n = 0;
    for (size_t at = log.find("failed on try"); at != std::string::npos; at = log.find("failed on try", at + 1)) ++n;
    return n;
  }

  std::filesystem::path work_;
  std::vector<std::string> files_;
  test_support::ServingProcess replica_;
};

TEST_F(StartBeforeTheDatabaseTest, RetriesUntilTheDatabaseIsUpThenServes) {
  pg_->stop();
  // Listening (the ready file) but not SERVING: the model loads, the database is retried.
  ASSERT_NO_FATAL_FAILURE(replica_.ServiceProcess::start(work_, flags("120"), {}, std::chrono::seconds(120)));
  ASSERT_TRUE(wait_until([&] { return failed_tries() >= 2; }, std::chrono::seconds(60))) << "no retry logged";
  client::Client c(replica_.options(kAcmeKey));
  grpc::health::v1::HealthCheckResponse::ServingStatus st{};
  ASSERT_TRUE(c.health("", &st).ok());
  EXPECT_EQ(st, grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  pg_->start();
  ASSERT_NO_FATAL_FAILURE(replica_.wait_serving());
  v1::AdapterInfo info;
  ASSERT_TRUE(c.upload_adapter("late", files_[0], &info).ok());
  EXPECT_EQ(info.current_version(), "1");
  const std::string log = replica_.log();
  EXPECT_EQ(log.find(pg_->password()), std::string::npos) << "the password reached the log";
  EXPECT_NE(log.find("succeeded on try"), std::string::npos);
}

TEST_F(StartBeforeTheDatabaseTest, GivesUpWhenTheDatabaseStaysDown) {
  pg_->stop();
  ASSERT_NO_FATAL_FAILURE(replica_.ServiceProcess::start(work_, flags("2"), {}, std::chrono::seconds(120)));
  int status = -1;
  ASSERT_TRUE(wait_until([&] { return replica_.exited(&status); }, std::chrono::seconds(90)))
      << "still retrying long after --database-start-seconds 2";
  EXPECT_EQ(status, 1);
  EXPECT_GE(failed_tries(), 2u);
  EXPECT_NE(replica_.log().find("giving up"), std::string::npos);
  EXPECT_EQ(replica_.log().find(pg_->password()), std::string::npos) << "the password reached the log";
}

}  // namespace
}  // namespace statetune
