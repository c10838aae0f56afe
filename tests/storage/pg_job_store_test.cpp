// PgJobStore (statetune-train's shared mode) against a real PostgreSQL 15, with several stores over
// one database standing for several workers: concurrent claimers never get one job twice, a write
// under a stale lease epoch changes nothing, an expired lease makes the job resumable from the
// checkpoint stored in the database, publishing happens once, and cancel works from any replica.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>
#include <thread>
#include <tuple>

#include "server/engine/util/durable_file.h"
#include "server/engine/util/sha256.h"
#include "server/storage/postgres/pg_adapter_store.h"
#include "server/storage/postgres/pg_job_store.h"
#include "server/storage/postgres/schema.h"
#include "tests/adapters/test_fixtures.h"
#include "tests/storage/postgres_fixture.h"

namespace statetune::storage {
namespace {
namespace fs = std::filesystem;
using engine::testing::constant_adapter;
using engine::testing::tiny_fingerprint;
using test_support::wait_until;
using training::JobRecord;
using training::JobState;
using training::LeaseLost;
using namespace std::chrono_literals;

class PgJobStoreTest : public test_support::PostgresTest {
 protected:
  void SetUp() override {
    PostgresTest::SetUp();
    if (IsSkipped()) return;
    root_ = fs::path(::testing::TempDir()) / ("pg-jobs-" + db_name_);
    open_db()->migrate(statetune_migrations());
  }
  void TearDown() override { fs::remove_all(root_); }
  // A worker's store: its own connections and its own local folder.
  std::unique_ptr<PgJobStore> worker(const std::string& name, engine::AdapterQuota quota = {}) {
    PgJobStoreOptions o;
    o.datasets_dir = root_ / name / "datasets";
    o.base = tiny_fingerprint();
    o.quota = quota;
    return std::make_unique<PgJobStore>(open_db(), o);
  }
  static JobRecord queued_job(PgJobStore& s, const std::string& id, int64_t created_ms = 1) {
    JobRecord j;
    j.id = id;
    j.tenant = "acme";
    j.spec = {{"dataset_id", "ds-1"}, {"adapter_name", "trained"}};
    j.created_ms = created_ms;
    s.insert_job(j, "queued");
    return j;
  }
  int64_t count(const std::string& sql) const { return std::stoll(pg_->psql(sql, db_name_)); }
  void sql_damage(const std::string& sql) const { pg_->psql(sql, db_name_); }

  fs::path root_;
};

TEST_F(PgJobStoreTest, ConcurrentClaimersNeverGetOneJobTwice) {
  constexpr int kJobs = 40, kWorkers = 4;
  {
    auto s = worker("setup");
    for (int i = 0; i < kJobs; ++i) queued_job(*s, "job-" + std::to_string(i), i);
  }
  std::vector<std::unique_ptr<PgJobStore>> workers;
  for (int w = 0; w < kWorkers; ++w) workers.push_back(worker("w" + std::to_string(w)));
  std::vector<std::vector<std::string>> got(kWorkers);
  std::vector<std::thread> threads;
  for (int w = 0; w < kWorkers; ++w) {
    threads.emplace_back([&, w] {
      while (auto c = workers[w]->claim("w" + std::to_string(w), 60s)) {
        EXPECT_FALSE(c->resumed);
        EXPECT_EQ(c->job.lease_epoch, 1);
        got[w].push_back(c->job.id);
      }
    });
  }
  for (auto& t : threads) t.join();
  std::multiset<std::string> all;
  for (const auto& g : got) all.insert(g.begin(), g.end());
  EXPECT_EQ(all.size(), static_cast<size_t>(kJobs));
  EXPECT_EQ(std::set<std::string>(all.begin(), all.end()).size(), static_cast<size_t>(kJobs))
      << "a job was claimed twice";
  EXPECT_EQ(count("SELECT count(*) FROM train_jobs WHERE state = 3 AND lease_epoch = 1"), kJobs);
  EXPECT_FALSE(workers[0]->claim("w0", 60s).has_value()) << "every lease is live: nothing to claim";
}

TEST_F(PgJobStoreTest, AStaleEpochWriteChangesNothingAndTheExpiredJobResumesFromItsCheckpoint) {
  auto a = worker("a");
  auto b = worker("b");
  queued_job(*a, "job-1");
  auto first = a->claim("a", 300ms);
  ASSERT_TRUE(first.has_value());
  JobRecord mine = first->job;
  mine.step = 4;
  a->update_job(mine, "step", {{"step", 4}});
  // A checkpoint of A's in the database.
  const fs::path ck_a = root_ / "a" / "ck";
  fs::create_directories(ck_a);
  engine::write_file_durably(ck_a / "trainer_state.safetensors", std::string("state at step 4"));
  engine::write_file_durably(ck_a / "adapter.safetensors", std::string("adapter at step 4"));
  a->save_checkpoint(mine, ck_a);

  EXPECT_FALSE(b->claim("b", 60s).has_value()) << "A's lease is live";
  // A stops renewing: once the lease runs out, B takes the job over under a new epoch.
  std::optional<training::ClaimedJob> taken;
  ASSERT_TRUE(wait_until([&] { return (taken = b->claim("b", 60s)).has_value(); }, 10s));
  EXPECT_TRUE(taken->resumed);
  EXPECT_EQ(taken->job.lease_epoch, 2);
  EXPECT_EQ(taken->job.resumes, 1);
  EXPECT_EQ(taken->job.step, 4);
  const fs::path ck_b = root_ / "b" / "ck";
  ASSERT_TRUE(b->restore_checkpoint(taken->job, ck_b));
  EXPECT_EQ(engine::read_file(ck_b / "trainer_state.safetensors"), "state at step 4");
  EXPECT_EQ(engine::read_file(ck_b / "adapter.safetensors"), "adapter at step 4");

  // Every write of A's now changes nothing.
  const int64_t events_before = count("SELECT count(*) FROM train_events WHERE job_id = 'job-1'");
  mine.step = 9;
  EXPECT_THROW(a->update_job(mine, "step", {{"step", 9}}), LeaseLost);
  EXPECT_FALSE(a->renew(mine, 60s).held);
  engine::write_file_durably(ck_a / "trainer_state.safetensors", std::string("state at step 8"));
  EXPECT_THROW(a->save_checkpoint(mine, ck_a), LeaseLost);
  EXPECT_THROW(a->save_output(mine, "bytes"), LeaseLost);
  EXPECT_THROW(a->publish(mine, "trained", engine::encode_adapter(constant_adapter(0.5f))), LeaseLost);
  EXPECT_EQ(count("SELECT count(*) FROM train_events WHERE job_id = 'job-1'"), events_before);
  EXPECT_EQ(b->job("job-1")->step, 4);
  EXPECT_EQ(count("SELECT count(*) FROM adapter_versions"), 0);
  ASSERT_TRUE(b->restore_checkpoint(taken->job, ck_b));
  EXPECT_EQ(engine::read_file(ck_b / "trainer_state.safetensors"), "state at step 4");

  // B, the holder, can write.
  JobRecord theirs = taken->job;
  theirs.step = 5;
  EXPECT_GT(b->update_job(theirs, "step", {{"step", 5}}), events_before);
  EXPECT_TRUE(b->renew(theirs, 60s).held);
}

TEST_F(PgJobStoreTest, ARenewedLeaseIsNotTakenOver) {
  auto a = worker("a");
  auto b = worker("b");
  queued_job(*a, "job-1");
  auto mine = a->claim("a", 400ms);
  ASSERT_TRUE(mine.has_value());
  const auto until = std::chrono::steady_clock::now() + 1500ms;
  while (std::chrono::steady_clock::now() < until) {
    ASSERT_TRUE(a->renew(mine->job, 400ms).held);
    EXPECT_FALSE(b->claim("b", 60s).has_value());
    std::this_thread::sleep_for(100ms);  // the renewal period under test, not a synchronisation
  }
}

TEST_F(PgJobStoreTest, PublishingStoresOneVersionAndSucceedsTheJobOnce) {
  auto a = worker("a");
  queued_job(*a, "job-1");
  auto claimed = a->claim("a", 60s);
  ASSERT_TRUE(claimed.has_value());
  JobRecord j = claimed->job;
  const std::string bytes = engine::encode_adapter(constant_adapter(0.25f));
  a->save_output(j, bytes);
  EXPECT_EQ(a->publish(j, "trained", bytes), "1");
  EXPECT_EQ(j.state, JobState::kSucceeded);
  EXPECT_EQ(j.adapter_version, "1");
  const auto stored = a->job("job-1");
  EXPECT_EQ(stored->state, JobState::kSucceeded);
  EXPECT_EQ(stored->adapter_name, "trained");
  EXPECT_EQ(stored->adapter_version, "1");
  EXPECT_EQ(a->events("job-1", 0).back().payload.value("message", ""), "published as trained version 1");
  // A second publish of the same job (a retry after an unknown commit outcome) stores nothing.
  JobRecord again = claimed->job;
  EXPECT_THROW(a->publish(again, "trained", bytes), LeaseLost);
  EXPECT_EQ(count("SELECT count(*) FROM adapter_versions WHERE tenant = 'acme' AND name = 'trained'"), 1);
  EXPECT_EQ(count("SELECT current_version FROM adapters WHERE tenant = 'acme' AND name = 'trained'"), 1);
  EXPECT_EQ(count("SELECT count(*) FROM train_outputs WHERE job_id = 'job-1'"), 1);
  // What a serving replica reads is the published adapter.
  PgAdapterStoreOptions so;
  so.follow_changes = false;
  PgAdapterStore serving(open_db(), tiny_fingerprint(), so);
  EXPECT_TRUE(serving.load("acme", "trained", "1").state_offset.equal(constant_adapter(0.25f).state_offset));
}

TEST_F(PgJobStoreTest, APublishOverTheAdapterQuotaOrOfABadAdapterChangesNothing) {
  engine::AdapterQuota quota;
  quota.tenant_adapters = 1;
  auto a = worker("a", quota);
  queued_job(*a, "job-1", 1);
  queued_job(*a, "job-2", 2);
  auto one = a->claim("a", 60s);
  auto two = a->claim("a", 60s);
  ASSERT_TRUE(one && two);
  const std::string bytes = engine::encode_adapter(constant_adapter(0.25f));
  EXPECT_EQ(a->publish(one->job, "first", bytes), "1");
  JobRecord j = two->job;
  EXPECT_THROW(a->publish(j, "second", bytes), engine::AdapterQuotaExceeded);
  EXPECT_THROW(a->publish(j, "second", "not an adapter"), std::invalid_argument);
  EXPECT_EQ(a->job("job-2")->state, JobState::kRunning);
  EXPECT_EQ(count("SELECT count(*) FROM adapter_versions"), 1);
}

TEST_F(PgJobStoreTest, CancelWorksFromAnyReplica) {
  auto a = worker("a");
  auto b = worker("b");
  queued_job(*a, "job-run", 1);
  queued_job(*a, "job-wait", 2);
  auto running = a->claim("a", 60s);
  ASSERT_TRUE(running.has_value());
  EXPECT_FALSE(a->renew(running->job, 60s).cancel_requested);
  // Through B: the queued job at once, the running one by asking its worker.
  EXPECT_TRUE(b->request_cancel("job-wait"));
  EXPECT_EQ(a->job("job-wait")->state, JobState::kCancelled);
  EXPECT_FALSE(a->claim("a", 60s).has_value()) << "a cancelled job is never claimed";
  EXPECT_TRUE(b->request_cancel("job-run"));
  EXPECT_TRUE(a->renew(running->job, 60s).cancel_requested);
  JobRecord j = running->job;
  j.state = JobState::kCancelled;
  a->update_job(j, "state", {{"message", "cancelled at step 0"}});
  EXPECT_FALSE(b->request_cancel("job-run")) << "already over";
  EXPECT_FALSE(b->request_cancel("no-such-job"));
}

TEST_F(PgJobStoreTest, EventsWakeEveryReplicasListener) {
  auto a = worker("a");
  auto b = worker("b");
  std::atomic<int> heard{0};
  b->set_event_listener([&] { ++heard; });
  ASSERT_TRUE(wait_until([&] { return heard.load() >= 1; }));  // the first connect
  const int before = heard.load();
  queued_job(*a, "job-1");
  EXPECT_TRUE(wait_until([&] { return heard.load() > before; }));
  EXPECT_EQ(b->events("job-1", 0).size(), 1u);
}

TEST_F(PgJobStoreTest, ADamagedRowIsSkippedAndNeverBlocksTheQueue) {
  std::vector<std::string> bad;
  PgJobStoreOptions o;
  o.datasets_dir = root_ / "a" / "datasets";
  o.base = tiny_fingerprint();
  PgJobStore a(open_db(), o, [&](const std::string& table, const std::string& id, const std::string&) {
    bad.push_back(table + "/" + id);
  });
  queued_job(a, "job-bad", 1);
  queued_job(a, "job-good", 2);
  sql_damage("UPDATE train_jobs SET spec = '{\"dataset_id\": ' WHERE id = 'job-bad'");
  EXPECT_EQ(a.jobs("acme").size(), 1u) << "the unreadable job is left out of the listing, the other stays";
  // The oldest job cannot be read: it is failed, and the next claim gets the next job.
  EXPECT_FALSE(a.claim("a", 60s).has_value());
  EXPECT_EQ(pg_->psql("SELECT state, error_code FROM train_jobs WHERE id = 'job-bad'", db_name_), "5|INTERNAL\n");
  auto next = a.claim("a", 60s);
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(next->job.id, "job-good");
  EXPECT_EQ(bad, std::vector<std::string>{"train_jobs/job-bad"}) << "reported once";
  // A checkpoint file whose stored name is a path is not written outside the checkpoint folder.
  const fs::path ck = root_ / "a" / "ck";
  fs::create_directories(ck);
  engine::write_file_durably(ck / "trainer_state.safetensors", std::string("state"));
  a.save_checkpoint(next->job, ck);
  sql_damage("UPDATE train_checkpoint_files SET name = '../escaped' WHERE job_id = 'job-good'");
  EXPECT_FALSE(a.restore_checkpoint(next->job, ck)) << "nothing usable was stored";
  EXPECT_FALSE(fs::exists(root_ / "a" / "escaped"));
  EXPECT_TRUE(fs::is_empty(ck));
}

TEST_F(PgJobStoreTest, TenantLimitsHoldAcrossReplicasAddingAtOnce) {
  std::vector<std::unique_ptr<PgJobStore>> replicas;
  for (const char* name : {"a", "b", "c", "d"}) {
    PgJobStoreOptions o;
    o.datasets_dir = root_ / name / "datasets";
    o.base = tiny_fingerprint();
    o.tenant_storage_bytes = 250;  // two data sets of 100 bytes, not three
    o.max_active_jobs = 2;
    replicas.push_back(std::make_unique<PgJobStore>(open_db(), o));
  }
  const std::string content(100, 'x');
  std::atomic<int> datasets_stored{0}, datasets_refused{0}, jobs_stored{0}, jobs_refused{0};
  std::vector<std::thread> threads;
  for (size_t r = 0; r < replicas.size(); ++r) {
    threads.emplace_back([&, r] {
      training::DatasetRecord d;
      d.id = "ds-" + std::to_string(r);
      d.tenant = "acme";
      d.name = "n";
      d.sha256 = engine::Sha256::hex(content);
      d.size_bytes = static_cast<int64_t>(content.size());
      JobRecord j;
      j.id = "job-" + std::to_string(r);
      j.tenant = "acme";
      j.spec = {{"dataset_id", "ds-0"}};
      for (auto [insert, stored, refused] :
           {std::make_tuple(std::function<void()>([&] { replicas[r]->insert_dataset(d, content); }), &datasets_stored,
                            &datasets_refused),
            std::make_tuple(std::function<void()>([&] { replicas[r]->insert_job(j, "queued"); }), &jobs_stored,
                            &jobs_refused)}) {
        try {
          insert();
          ++*stored;
        } catch (const engine::EngineError& e) {
          EXPECT_EQ(e.kind(), engine::ErrorKind::kResourceExhausted) << e.what();
          ++*refused;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(datasets_stored.load(), 2);
  EXPECT_EQ(datasets_refused.load(), 2);
  EXPECT_EQ(jobs_stored.load(), 2);
  EXPECT_EQ(jobs_refused.load(), 2);
  EXPECT_EQ(replicas[0]->tenant_dataset_bytes("acme"), 200);
  EXPECT_EQ(replicas[0]->count_jobs("acme", {JobState::kQueued}), 2);
  // Another tenant's limits are its own; a finished job no longer counts.
  JobRecord other;
  other.id = "job-beta";
  other.tenant = "beta";
  other.spec = nlohmann::json::object();
  EXPECT_NO_THROW(replicas[0]->insert_job(other, "queued"));
  EXPECT_TRUE(replicas[1]->request_cancel(replicas[1]->jobs("acme").front().id));
  JobRecord again = other;
  again.id = "job-again";
  again.tenant = "acme";
  EXPECT_NO_THROW(replicas[2]->insert_job(again, "queued"));
}

TEST_F(PgJobStoreTest, DataSetsAreCopiedToEachWorkerAndCheckedAgainstTheirSha256) {
  auto a = worker("a");
  auto b = worker("b");
  const std::string content = "{\"prompt\": \"p\", \"completion\": \"c\"}\n";
  training::DatasetRecord d;
  d.id = "ds-1";
  d.tenant = "acme";
  d.name = "train";
  d.sha256 = engine::Sha256::hex(content);
  d.size_bytes = static_cast<int64_t>(content.size());
  d.examples = 1;
  d.max_example_tokens = 3;
  d.created_unix = 7;
  a->insert_dataset(d, content);
  const auto seen = b->dataset("acme", "ds-1");
  ASSERT_TRUE(seen.has_value());
  EXPECT_EQ(seen->sha256, d.sha256);
  EXPECT_FALSE(b->dataset("beta", "ds-1").has_value()) << "data sets are scoped to their tenant";
  const fs::path copy = b->dataset_file(*seen);
  EXPECT_EQ(copy, root_ / "b" / "datasets" / "acme" / "ds-1.jsonl");
  EXPECT_EQ(engine::read_file(copy), content);
  std::ofstream(copy, std::ios::trunc) << "tampered";
  EXPECT_EQ(engine::read_file(b->dataset_file(*seen)), content) << "a damaged copy is fetched again";
  EXPECT_EQ(b->tenant_dataset_bytes("acme"), d.size_bytes);
  EXPECT_TRUE(b->delete_dataset("acme", "ds-1"));
  EXPECT_FALSE(a->dataset("acme", "ds-1").has_value());
}

}  // namespace
}  // namespace statetune::storage
