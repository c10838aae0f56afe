// One real PostgreSQL per test binary (started on first use, stopped when the binary ends, failed or
// not), a fresh database per test, and waiting on a condition with a deadline.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "server/storage/postgres/database.h"
#include "tests/support/postgres_server.h"

namespace statetune::test_support {

class PostgresEnvironment : public ::testing::Environment {
 public:
  static PostgresServer* server() {
    if (!instance_) instance_ = std::make_unique<PostgresServer>();
    return instance_.get();
  }
  void TearDown() override { instance_.reset(); }

 private:
  static inline std::unique_ptr<PostgresServer> instance_;
};

// Registered once per binary so the server is stopped after the last test.
inline const bool kPostgresEnvironmentRegistered = [] {
  ::testing::AddGlobalTestEnvironment(new PostgresEnvironment);
  return true;
}();

class PostgresTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (PostgresServer::bin_dir().empty()) {
      GTEST_SKIP() << "PostgreSQL 15 is not installed (/usr/lib/postgresql/*/bin/initdb); scripts/setup.sh "
                      "installs postgresql-15";
    }
    pg_ = PostgresEnvironment::server();
    if (!pg_->running()) pg_->start();  // a failed outage test may have left it stopped
    static std::atomic<int> n{0};
    db_name_ = "t" + std::to_string(::getpid()) + "_" + std::to_string(n++);
    url_ = pg_->create_database(db_name_);
  }

  storage::DatabaseOptions db_options() const {
    storage::DatabaseOptions o;
    o.url = url_;
    o.password_file = pg_->password_file().string();
    o.pool_size = 4;
    o.max_backoff = std::chrono::milliseconds(500);
    return o;
  }
  std::shared_ptr<storage::Database> open_db() const { return std::make_shared<storage::Database>(db_options()); }

  PostgresServer* pg_ = nullptr;
  std::string db_name_, url_;
};

// Polls `done` until it holds or `timeout` passes; returns whether it held.
inline bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

}  // namespace statetune::test_support
