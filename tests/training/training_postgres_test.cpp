// statetune-train's shared mode end to end: two statetune-train workers and one statetune-serve, as
// separate processes over one real PostgreSQL 15 (--database). kill -9 of the worker running a job:
// the other resumes it from the last checkpoint stored in the database within the lease time, the
// job succeeds once, exactly one adapter version is published and serving serves it. Cancel and
// watch through either replica; a restart of every process keeps every data set, job and event.
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <string>

#include "client/training_client.h"
#include "tests/storage/postgres_fixture.h"
#include "tests/support/serving_fixture.h"
#include "tests/support/training_requests.h"

namespace statetune::training {
namespace {
namespace fs = std::filesystem;
namespace v1 = ::statetune::v1;
using client::TrainingClient;
using google::protobuf::util::MessageDifferencer;
using test_support::dataset_text;
using test_support::job_request;
using test_support::kAcmeKey;
using test_support::upload;
using test_support::wait_until;
using test_support::watch_all;
using namespace std::chrono_literals;

constexpr int kLeaseSeconds = 3;

class SharedTrainingTest : public test_support::PostgresTest {
 protected:
  void SetUp() override {
    PostgresTest::SetUp();
    if (IsSkipped()) return;
    work_ = fs::path(::testing::TempDir()) / ("training-pg-" + db_name_);
    test_support::write_serving_files(work_, 0);
    ASSERT_NO_FATAL_FAILURE(start_all());
  }
  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "--- worker A:\n" << a_.log() << "\n--- worker B:\n" << b_.log() << "\n--- serve:\n"
                << serve_.log() << "\n";
    }
    a_.stop();
    b_.stop();
    serve_.stop();
    if (!HasFailure()) fs::remove_all(work_);
  }
  std::vector<std::string> common_flags() const {
    return {"--model", (work_ / "model").string(), "--tokenizer",
            std::string(STATETUNE_SHARED_DIR) + "/models/gpt-neox-20b-tokenizer.json", "--tenants-file",
            (work_ / "tenants.json").string(), "--database", url_, "--database-password-file",
            pg_->password_file().string(), "--database-pool-size", "2"};
  }
  void start_worker(test_support::ServiceProcess& p, const std::string& name) {
    auto flags = common_flags();
    flags.insert(flags.end(), {"--data-dir", (work_ / name).string(), "--lease-seconds", std::to_string(kLeaseSeconds),
                               "--checkpoint-every", "2", "--min-examples", "4", "--max-example-tokens", "64"});
    ASSERT_NO_FATAL_FAILURE(p.start(work_, flags));
    // The port opens before the database is reached; until then calls are UNAVAILABLE.
    ASSERT_NO_FATAL_FAILURE(p.wait_serving());
  }
  void start_all() {
    auto flags = common_flags();
    flags.insert(flags.end(), {"--adapters-dir", (work_ / "serve-cache").string(), "--drain-seconds", "1"});
    ASSERT_NO_FATAL_FAILURE(serve_.start(work_, flags));
    ASSERT_NO_FATAL_FAILURE(start_worker(a_, "a"));
    ASSERT_NO_FATAL_FAILURE(start_worker(b_, "b"));
  }
  std::string sql(const std::string& query) const { return pg_->psql(query, db_name_); }

  fs::path work_;
  test_support::ServiceProcess a_{std::string(STATETUNE_BINARY_DIR) + "/server/training/statetune-train", "train-a"};
  test_support::ServiceProcess b_{std::string(STATETUNE_BINARY_DIR) + "/server/training/statetune-train", "train-b"};
  test_support::ServingProcess serve_;
};

TEST_F(SharedTrainingTest, KillNineOfTheRunningWorkerResumesOnTheOtherAndPublishesOnce) {
  TrainingClient via_a(a_.options(kAcmeKey));
  const std::string ds = upload(via_a, "digits", dataset_text(12));
  v1::Job job;
  ASSERT_TRUE(via_a.create_job(job_request(ds, "digits", 80), &job).ok());
  // Until a checkpoint past step 4 is in the database.
  int64_t checkpoint_step = 0;
  ASSERT_TRUE(wait_until(
      [&] {
        const std::string s = sql("SELECT count(*) FROM train_checkpoint_files WHERE job_id = '" + job.id() + "'");
        v1::Job now;
        if (std::stoi(s) == 0 || !via_a.get_job(job.id(), &now).ok()) return false;
        checkpoint_step = now.step();
        return now.step() >= 4;
      },
      60s));
  ASSERT_LT(checkpoint_step, 80) << "the job finished before the kill: make it longer";
  const std::string owner = sql("SELECT lease_owner FROM train_jobs WHERE id = '" + job.id() + "'");
  const bool a_runs = owner.find("/" + std::to_string(a_.pid()) + "/") != std::string::npos;
  const bool b_runs = owner.find("/" + std::to_string(b_.pid()) + "/") != std::string::npos;
  ASSERT_NE(a_runs, b_runs) << "owner " << owner;
  test_support::ServiceProcess& victim = a_runs ? a_ : b_;
  test_support::ServiceProcess& survivor = a_runs ? b_ : a_;
  const auto killed_at = std::chrono::steady_clock::now();
  EXPECT_EQ(victim.stop(SIGKILL), 128 + SIGKILL);

  TrainingClient via_survivor(survivor.options(kAcmeKey));
  std::vector<v1::JobEvent> events;
  std::chrono::steady_clock::time_point resumed_at{}, finished_at{};
  const auto st = via_survivor.watch_job(job.id(), 0, [&](const v1::JobEvent& e) {
    if (e.state_change().find("resuming") != std::string::npos && resumed_at == decltype(resumed_at){}) {
      resumed_at = std::chrono::steady_clock::now();
    }
    if (e.state() == v1::JOB_STATE_SUCCEEDED) finished_at = std::chrono::steady_clock::now();
    events.push_back(e);
    return true;
  });
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), v1::JOB_STATE_SUCCEEDED);
  ASSERT_NE(resumed_at, decltype(resumed_at){}) << "no resume event";
  const double takeover_s = std::chrono::duration<double>(resumed_at - killed_at).count();
  std::cout << "kill -9 -> resumed on the other worker: " << takeover_s << " s (lease " << kLeaseSeconds << " s)\n";
  // The lease (renewed every third of it, so it ran out at most a lease after the kill), plus the
  // survivor's poll (a quarter lease, at most 1 s), plus slack for a loaded 2-core machine.
  EXPECT_LT(takeover_s, kLeaseSeconds + 2.0);

  // The steps after the takeover continue from the checkpoint, not from step 1.
  int64_t max_before = 0, first_after = -1, succeeded = 0;
  bool resumed = false;
  for (const auto& e : events) {
    if (e.state_change().find("resuming") != std::string::npos) resumed = true;
    if (e.has_step()) {
      if (!resumed) max_before = std::max(max_before, e.step().step());
      if (resumed && first_after < 0) first_after = e.step().step();
    }
    if (e.state() == v1::JOB_STATE_SUCCEEDED) ++succeeded;
  }
  EXPECT_GE(first_after, checkpoint_step) << "resumed from the last stored checkpoint";
  EXPECT_LE(first_after, max_before + 1);
  EXPECT_EQ(succeeded, 1) << "the job succeeds once";
  ASSERT_TRUE(via_survivor.get_job(job.id(), &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.resumes(), 1);
  EXPECT_EQ(job.step(), 80);
  EXPECT_EQ(job.adapter_version(), "1");
  EXPECT_EQ(sql("SELECT count(*) FROM adapter_versions WHERE tenant = 'acme' AND name = 'digits'"), "1\n")
      << "exactly one version published";
  const std::string m = test_support::http_get(survivor.metrics_port(), "/metrics");
  EXPECT_EQ(test_support::metric_value(m, "statetune_train_jobs_resumed_total"), 1) << m;
  // The survivor renews every third of the lease; on a fast machine its part of the job can end sooner.
  const double survivor_run_s = std::chrono::duration<double>(finished_at - resumed_at).count();
  if (survivor_run_s > kLeaseSeconds / 3.0 + 0.5) {
    EXPECT_GT(test_support::metric_value(m, "statetune_train_lease_renewals_total"), 0)
        << "the survivor ran the job " << survivor_run_s << " s without renewing its lease\n" << m;
  }

  // Serving serves it, without hearing from either worker.
  client::Client serving(serve_.options(kAcmeKey));
  v1::GenerateRequest r;
  r.set_text("Spell the digit 7\n###\n");
  r.mutable_adapter()->set_name("digits");
  r.set_max_tokens(4);
  r.set_temperature(0);
  client::GenerateResult out;
  ASSERT_TRUE(wait_until([&] { return (out = serving.generate(r)).status.ok(); }, 10s))
      << out.status.error_message();
  EXPECT_EQ(out.done.adapter_version(), "1");
}

TEST_F(SharedTrainingTest, CancelAndWatchThroughEitherReplicaAndEverythingSurvivesARestart) {
  TrainingClient via_a(a_.options(kAcmeKey)), via_b(b_.options(kAcmeKey));
  const std::string ds = upload(via_a, "digits", dataset_text(8));
  v1::Job done, long_job;
  ASSERT_TRUE(via_b.create_job(job_request(ds, "short", 4), &done).ok());
  ASSERT_TRUE(via_a.create_job(job_request(ds, "long", 100000), &long_job).ok());
  // Watched through the replica it was not created on.
  auto events = watch_all(via_a, done.id());
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), v1::JOB_STATE_SUCCEEDED);
  // The long job: cancelled through B whichever worker runs it.
  ASSERT_TRUE(via_b.watch_job(long_job.id(), 0, [](const v1::JobEvent& e) { return !(e.has_step() && e.step().step() >= 2); })
                  .ok());
  v1::Job after;
  ASSERT_TRUE(via_b.cancel_job(long_job.id(), &after).ok());
  events = watch_all(via_a, long_job.id());
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(via_a.cancel_job(long_job.id(), &after).error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  // Everything as the clients saw it before...
  v1::ListDatasetsResponse datasets_before;
  v1::ListJobsResponse jobs_before;
  ASSERT_TRUE(via_a.list_datasets(&datasets_before).ok());
  ASSERT_TRUE(via_a.list_jobs(&jobs_before).ok());
  const size_t events_done = watch_all(via_a, done.id()).size(), events_long = watch_all(via_a, long_job.id()).size();
  // ...is there after every process restarted (and the local copies are gone).
  a_.stop();
  b_.stop();
  serve_.stop();
  fs::remove_all(work_ / "a");
  fs::remove_all(work_ / "b");
  ASSERT_NO_FATAL_FAILURE(start_all());
  TrainingClient again(b_.options(kAcmeKey));
  v1::ListDatasetsResponse datasets_after;
  v1::ListJobsResponse jobs_after;
  ASSERT_TRUE(again.list_datasets(&datasets_after).ok());
  ASSERT_TRUE(again.list_jobs(&jobs_after).ok());
  // (Compared as messages: a map field's serialized order is not fixed.)
  EXPECT_TRUE(MessageDifferencer::Equals(datasets_after, datasets_before)) << datasets_after.DebugString();
  EXPECT_TRUE(MessageDifferencer::Equals(jobs_after, jobs_before)) << jobs_after.DebugString();
  EXPECT_EQ(watch_all(again, done.id()).size(), events_done);
  EXPECT_EQ(watch_all(again, long_job.id()).size(), events_long);
  // The data set's content too: a new job on it trains on the restarted workers.
  v1::Job next;
  ASSERT_TRUE(again.create_job(job_request(ds, "short", 2), &next).ok());
  events = watch_all(again, next.id());
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), v1::JOB_STATE_SUCCEEDED);
  ASSERT_TRUE(again.get_job(next.id(), &next).ok());
  EXPECT_EQ(next.adapter_version(), "2");
}

}  // namespace
}  // namespace statetune::training
