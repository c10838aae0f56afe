// PgAdapterStore against a real PostgreSQL 15, two stores (two replicas) over one database: what one
// writes the other hears, concurrent writes stay distinct, quotas hold across replicas, a database
// outage keeps known adapters loadable and refuses writes, and the listener resyncs afterwards.
#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "server/engine/adapters/adapter_store.h"
#include "server/engine/util/sha256.h"
#include "server/storage/postgres/pg_adapter_store.h"
#include "server/storage/postgres/schema.h"
#include "tests/adapters/test_fixtures.h"
#include "tests/storage/postgres_fixture.h"

namespace statetune::storage {
namespace {
using engine::testing::constant_adapter;
using engine::testing::tiny_fingerprint;
using test_support::wait_until;

std::string adapter_bytes(float value) { return engine::encode_adapter(constant_adapter(value)); }

class PgAdapterStoreTest : public test_support::PostgresTest {
 protected:
  void SetUp() override {
    PostgresTest::SetUp();
    if (IsSkipped()) return;
    db_a_ = open_db();
    db_b_ = open_db();
    db_a_->migrate(statetune_migrations());
  }
  std::unique_ptr<PgAdapterStore> replica(const std::shared_ptr<Database>& db, const std::string& name,
                                          engine::AdapterQuota quota = {}, bool follow = true) {
    PgAdapterStoreOptions o;
    o.cache_dir = std::filesystem::path(::testing::TempDir()) / (db_name_ + "-" + name);
    o.quota = quota;
    o.follow_changes = follow;
    return std::make_unique<PgAdapterStore>(db, tiny_fingerprint(), o);
  }
  static bool current_is(const PgAdapterStore& s, const std::string& name, const std::string& version) {
    const auto info = s.get("acme", name);
    return version.empty() ? !info.has_value() : (info && info->version == version);
  }

  std::shared_ptr<Database> db_a_, db_b_;
};

TEST_F(PgAdapterStoreTest, AnUploadOnOneReplicaIsServedByTheOther) {
  auto a = replica(db_a_, "a");
  auto b = replica(db_b_, "b");
  ASSERT_TRUE(wait_until([&] { return b->listening(); }));
  std::vector<std::string> stale_heard;
  std::mutex mu;
  b->set_change_listener([&](const std::string&, const std::string&, const std::vector<std::string>& stale) {
    std::lock_guard<std::mutex> lock(mu);
    stale_heard.insert(stale_heard.end(), stale.begin(), stale.end());
  });
  engine::Adapter parsed;
  EXPECT_EQ(a->put("acme", "style", adapter_bytes(0.25f), &parsed), "1");
  EXPECT_EQ(parsed.version, "1");
  ASSERT_TRUE(wait_until([&] { return current_is(*b, "style", "1"); }));
  const auto info = b->get("acme", "style");
  EXPECT_EQ(info->sha256, engine::Sha256::hex(adapter_bytes(0.25f)));
  EXPECT_EQ(info->size_bytes, static_cast<int64_t>(adapter_bytes(0.25f).size()));
  const engine::Adapter loaded = b->load("acme", "style", "1");
  EXPECT_TRUE(loaded.state_offset.equal(constant_adapter(0.25f).state_offset));

  EXPECT_EQ(a->put("acme", "style", adapter_bytes(0.5f)), "2");
  ASSERT_TRUE(wait_until([&] { return current_is(*b, "style", "2"); }));
  EXPECT_EQ(b->versions("acme", "style").size(), 2u);
  EXPECT_EQ(b->tenants(), std::vector<std::string>{"acme"});
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(stale_heard, std::vector<std::string>{"1"}) << "B must be told that version 1 is no longer current";
}

TEST_F(PgAdapterStoreTest, ConcurrentUploadsOfOneNameThroughTwoReplicasGetDistinctVersions) {
  auto a = replica(db_a_, "a");
  auto b = replica(db_b_, "b");
  constexpr int kEach = 4;
  std::vector<std::string> versions(2 * kEach);
  std::vector<std::thread> threads;
  for (int i = 0; i < 2 * kEach; ++i) {
    threads.emplace_back([&, i] {
      PgAdapterStore& s = i % 2 == 0 ? *a : *b;
      versions[i] = s.put("acme", "shared", adapter_bytes(0.01f * static_cast<float>(i + 1)));
    });
  }
  for (auto& t : threads) t.join();
  const std::set<std::string> distinct(versions.begin(), versions.end());
  EXPECT_EQ(distinct.size(), versions.size());
  EXPECT_EQ(std::stoi(pg_->psql("SELECT count(*) FROM adapter_versions", db_name_)), 2 * kEach);
  EXPECT_EQ(pg_->psql("SELECT current_version FROM adapters", db_name_), std::to_string(2 * kEach) + "\n");
  ASSERT_TRUE(wait_until([&] {
    return current_is(*a, "shared", std::to_string(2 * kEach)) && current_is(*b, "shared", std::to_string(2 * kEach));
  }));
}

TEST_F(PgAdapterStoreTest, QuotasHoldAcrossReplicas) {
  engine::AdapterQuota q;
  q.tenant_adapters = 2;
  q.versions_per_adapter = 2;
  auto a = replica(db_a_, "a", q);
  auto b = replica(db_b_, "b", q);
  a->put("acme", "one", adapter_bytes(0.1f));
  b->put("acme", "two", adapter_bytes(0.2f));
  EXPECT_THROW(a->put("acme", "three", adapter_bytes(0.3f)), engine::AdapterQuotaExceeded);
  b->put("acme", "one", adapter_bytes(0.4f));
  EXPECT_THROW(a->put("acme", "one", adapter_bytes(0.5f)), engine::AdapterQuotaExceeded);
  EXPECT_EQ(std::stoi(pg_->psql("SELECT count(*) FROM adapter_versions", db_name_)), 3);

  engine::AdapterQuota bytes_quota;
  bytes_quota.tenant_bytes = static_cast<int64_t>(adapter_bytes(0.1f).size()) * 3;
  auto c = replica(db_a_, "c", bytes_quota);
  EXPECT_THROW(c->put("acme", "four", adapter_bytes(0.6f)), engine::AdapterQuotaExceeded);
  EXPECT_EQ(std::stoi(pg_->psql("SELECT count(*) FROM adapter_versions", db_name_)), 3);

  engine::AdapterQuota prune = q;
  prune.prune_old_versions = true;
  auto d = replica(db_b_, "d", prune);
  EXPECT_EQ(d->put("acme", "one", adapter_bytes(0.7f)), "3");
  EXPECT_EQ(pg_->psql("SELECT string_agg(version::text, ',' ORDER BY version) FROM adapter_versions WHERE name = 'one'",
                      db_name_),
            "2,3\n");
}

TEST_F(PgAdapterStoreTest, RejectedUploadsStoreNothing) {
  auto a = replica(db_a_, "a");
  EXPECT_THROW(a->put("acme", "bad", "not a safetensors file"), std::invalid_argument);
  EXPECT_THROW(a->put("acme", "../escape", adapter_bytes(0.1f)), std::invalid_argument);
  engine::Adapter other = constant_adapter(0.1f);
  other.base = tiny_fingerprint(std::string(64, 'b'));
  EXPECT_THROW(a->put("acme", "other-base", engine::encode_adapter(other)), std::invalid_argument);
  EXPECT_EQ(std::stoi(pg_->psql("SELECT count(*) FROM adapter_versions", db_name_)), 0);
  EXPECT_THROW(a->get("acme", "x", std::string("01")), std::invalid_argument);
}

TEST_F(PgAdapterStoreTest, DeleteIsHeardAndVersionNumbersNeverRepeat) {
  auto a = replica(db_a_, "a");
  auto b = replica(db_b_, "b");
  a->put("acme", "gone", adapter_bytes(0.1f));
  ASSERT_TRUE(wait_until([&] { return current_is(*b, "gone", "1"); }));
  EXPECT_TRUE(b->remove("acme", "gone"));
  EXPECT_FALSE(b->remove("acme", "gone"));
  ASSERT_TRUE(wait_until([&] { return current_is(*a, "gone", ""); }));
  EXPECT_TRUE(a->list("acme").empty());
  EXPECT_THROW(a->load("acme", "gone", "1"), engine::AdapterNotFound);
  EXPECT_EQ(a->put("acme", "gone", adapter_bytes(0.2f)), "2");
}

TEST_F(PgAdapterStoreTest, AnExplicitVersionTheMapDoesNotKnowIsLookedUp) {
  auto a = replica(db_a_, "a");
  auto deaf = replica(db_b_, "deaf", {}, /*follow=*/false);  // hears no notification
  a->put("acme", "fresh", adapter_bytes(0.3f));
  EXPECT_FALSE(deaf->get("acme", "fresh").has_value());  // current pointer: only from the map
  const auto v1 = deaf->get("acme", "fresh", std::string("1"));
  ASSERT_TRUE(v1.has_value());
  EXPECT_EQ(v1->version, "1");
  EXPECT_FALSE(deaf->get("acme", "fresh", std::string("2")).has_value());
  EXPECT_TRUE(deaf->load("acme", "fresh", "1").output_offset.equal(constant_adapter(0.3f).output_offset));
}

TEST_F(PgAdapterStoreTest, ACorruptCacheFileIsReadFromTheDatabaseAgain) {
  auto a = replica(db_a_, "a");
  a->put("acme", "cached", adapter_bytes(0.3f));
  const std::string sha = a->get("acme", "cached")->sha256;
  const auto file = std::filesystem::path(::testing::TempDir()) / (db_name_ + "-a") / (sha + ".safetensors");
  ASSERT_TRUE(std::filesystem::exists(file));
  std::ofstream(file, std::ios::trunc) << "garbage";
  EXPECT_TRUE(a->load("acme", "cached", "1").state_offset.equal(constant_adapter(0.3f).state_offset));
  EXPECT_EQ(engine::Sha256::hex(test_support::slurp(file)), sha);  // repaired
}

TEST_F(PgAdapterStoreTest, DatabaseOutageKeepsKnownAdaptersAndRefusesWritesThenResyncs) {
  auto a = replica(db_a_, "a");
  auto b = replica(db_b_, "b");
  a->put("acme", "known", adapter_bytes(0.1f));
  ASSERT_TRUE(wait_until([&] { return current_is(*b, "known", "1") && b->listening(); }));
  b->load("acme", "known", "1");  // as a request would: the bytes are now in B's cache
  const int64_t resyncs = b->resyncs();

  pg_->stop();
  ASSERT_TRUE(wait_until([&] { return !b->listening(); }));
  // Known adapters resolve and load (from the local cache) with the database down.
  EXPECT_TRUE(current_is(*b, "known", "1"));
  EXPECT_TRUE(b->load("acme", "known", "1").state_offset.equal(constant_adapter(0.1f).state_offset));
  EXPECT_EQ(b->list("acme").size(), 1u);
  // Writes fail with "unavailable" and change nothing.
  EXPECT_THROW(a->put("acme", "known", adapter_bytes(0.2f)), engine::AdapterStorageUnavailable);
  EXPECT_THROW(a->remove("acme", "known"), engine::AdapterStorageUnavailable);
  EXPECT_TRUE(current_is(*a, "known", "1"));

  pg_->start();
  ASSERT_TRUE(wait_until([&] { return b->listening() && b->resyncs() > resyncs; })) << "B never resynced";
  std::string v;
  ASSERT_TRUE(wait_until([&] {
    try {
      v = a->put("acme", "known", adapter_bytes(0.2f));
      return true;
    } catch (const engine::AdapterStorageUnavailable&) {
      return false;  // A's pool is still backing off
    }
  }));
  EXPECT_EQ(v, "2");
  ASSERT_TRUE(wait_until([&] { return current_is(*b, "known", "2"); }));
}

TEST_F(PgAdapterStoreTest, AChangeMadeWhileAReplicaIsDisconnectedReachesItThroughTheResync) {
  // B connects as a role of its own, so that it alone can be kept out of the database.
  const std::string role = "rb_" + db_name_;
  pg_->psql("CREATE ROLE " + role + " LOGIN PASSWORD '" + pg_->password() + "'", db_name_);
  pg_->psql("GRANT ALL ON ALL TABLES IN SCHEMA public TO " + role, db_name_);
  DatabaseOptions ob = db_options();
  ob.url = pg_->url(db_name_, role);
  auto a = replica(db_a_, "a");
  auto b = replica(std::make_shared<Database>(ob), "b");
  ASSERT_TRUE(wait_until([&] { return b->listening(); }));
  const int64_t resyncs = b->resyncs();

  pg_->psql("ALTER ROLE " + role + " NOLOGIN", db_name_);
  pg_->psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '" + role + "'", db_name_);
  ASSERT_TRUE(wait_until([&] { return !b->listening(); }));
  EXPECT_EQ(a->put("acme", "missed", adapter_bytes(0.4f)), "1");  // its NOTIFY reaches nobody in B
  EXPECT_FALSE(b->get("acme", "missed").has_value());

  pg_->psql("ALTER ROLE " + role + " LOGIN", db_name_);
  ASSERT_TRUE(wait_until([&] { return b->listening() && b->resyncs() > resyncs; }));
  EXPECT_TRUE(current_is(*b, "missed", "1"));
}

TEST_F(PgAdapterStoreTest, ANewReplicaReadsEverythingAtStart) {
  {
    auto a = replica(db_a_, "a");
    a->put("acme", "x", adapter_bytes(0.1f));
    a->put("acme", "y", adapter_bytes(0.2f));
    a->remove("acme", "y");
  }
  auto fresh = replica(db_b_, "fresh", {}, /*follow=*/false);
  EXPECT_TRUE(current_is(*fresh, "x", "1"));
  EXPECT_TRUE(current_is(*fresh, "y", ""));
  EXPECT_EQ(fresh->list("acme").size(), 1u);
}

}  // namespace
}  // namespace statetune::storage
