// The PostgreSQL module against a real PostgreSQL 15: password handling (never in messages), forward
// migrations (idempotent, applied once when many replicas start together), the pool across a restart.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "server/storage/postgres/database.h"
#include "server/storage/postgres/schema.h"
#include "tests/storage/postgres_fixture.h"

namespace statetune::storage {
namespace {
using test_support::PostgresTest;
using test_support::wait_until;

int count(const std::string& out) { return std::stoi(out); }

TEST(DatabaseUrl, DescriptionAndErrorsNeverShowThePassword) {
  DatabaseOptions o;
  o.url = "postgresql://alice:SeCrEtPw@127.0.0.1:1/app?connect_timeout=2";
  Database db(o);
  EXPECT_EQ(db.describe(), "postgresql://alice@127.0.0.1:1/app");
  try {
    db.with_connection([](pqxx::connection&) {});
    FAIL() << "port 1 has no PostgreSQL";
  } catch (const DatabaseUnavailable& e) {
    EXPECT_EQ(std::string(e.what()).find("SeCrEtPw"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("127.0.0.1"), std::string::npos) << e.what();
  }
  // Within the backoff the next call fails at once, without another connection attempt.
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(db.with_connection([](pqxx::connection&) {}), DatabaseUnavailable);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(50));
}

TEST(DatabaseUrl, MalformedUrlIsRefusedWithoutEchoingIt) {
  DatabaseOptions o;
  o.url = "postgresql://bob:Hunter2@host:notaport/db";
  try {
    Database db(o);
    // libpq accepts some odd ports at parse time; then the description still hides the password.
    EXPECT_EQ(db.describe().find("Hunter2"), std::string::npos);
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()).find("Hunter2"), std::string::npos) << e.what();
  }
  o.url = "";
  EXPECT_THROW(Database{o}, std::invalid_argument);
  o.url = "postgresql://x@h/db";
  o.password_file = "/nonexistent/password";
  EXPECT_THROW(Database{o}, std::invalid_argument);
}

TEST_F(PostgresTest, PasswordFileAuthenticatesAndAWrongOneIsNotEchoed) {
  Database db(db_options());
  int one = 0;
  db.with_connection([&](pqxx::connection& c) { one = pqxx::nontransaction(c).exec("SELECT 1")[0][0].as<int>(); });
  EXPECT_EQ(one, 1);
  EXPECT_EQ(db.open_connections(), 1);

  const auto wrong = std::filesystem::path(::testing::TempDir()) / ("wrong-password-" + db_name_);
  std::ofstream(wrong) << "NotThePassword42\n";
  DatabaseOptions o = db_options();
  o.password_file = wrong.string();
  Database bad(o);
  try {
    bad.with_connection([](pqxx::connection&) {});
    FAIL() << "a wrong password connected";
  } catch (const DatabaseUnavailable& e) {
    EXPECT_EQ(std::string(e.what()).find("NotThePassword42"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find(pg_->password()), std::string::npos) << e.what();
  }
}

TEST_F(PostgresTest, MigrationsApplyOnceAndAreIdempotent) {
  const int n = static_cast<int>(statetune_migrations().size());
  Database db(db_options());
  EXPECT_EQ(db.migrate(statetune_migrations()), n);
  EXPECT_EQ(db.migrate(statetune_migrations()), 0);
  EXPECT_EQ(count(pg_->psql("SELECT count(*) FROM statetune_schema_migrations", db_name_)), n);
  EXPECT_EQ(count(pg_->psql("SELECT count(*) FROM adapters", db_name_)), 0);
}

TEST_F(PostgresTest, ReplicasStartingTogetherMigrateExactlyOnce) {
  const int n = static_cast<int>(statetune_migrations().size());
  constexpr int kReplicas = 8;
  std::vector<std::thread> threads;
  std::vector<int> applied(kReplicas, -1);
  std::vector<std::string> errors(kReplicas);
  for (int i = 0; i < kReplicas; ++i) {
    threads.emplace_back([&, i] {
      try {
        Database db(db_options());
        applied[i] = db.migrate(statetune_migrations());
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  int total = 0;
  for (int i = 0; i < kReplicas; ++i) {
    EXPECT_EQ(errors[i], "") << "replica " << i;
    total += applied[i];
  }
  EXPECT_EQ(total, n);
  EXPECT_EQ(count(pg_->psql("SELECT count(*) FROM statetune_schema_migrations", db_name_)), n);
}

TEST_F(PostgresTest, PoolDropsBrokenConnectionsAndReconnectsAfterARestart) {
  Database db(db_options());
  const auto ping = [&] {
    db.with_connection([](pqxx::connection& c) { pqxx::nontransaction(c).exec("SELECT 1"); });
  };
  ping();
  pg_->stop();
  EXPECT_THROW(ping(), DatabaseUnavailable);  // the pooled connection broke: dropped, UNAVAILABLE
  EXPECT_THROW(ping(), DatabaseUnavailable);  // no server: connecting fails
  pg_->start();
  EXPECT_TRUE(wait_until([&] {
    try {
      ping();
      return true;
    } catch (const DatabaseUnavailable&) {
      return false;
    }
  })) << "the pool never reconnected";
  EXPECT_EQ(db.open_connections(), 1);
}

}  // namespace
}  // namespace statetune::storage
