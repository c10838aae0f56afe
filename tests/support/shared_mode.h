// The serving suites in the shared mode. With STATETUNE_TEST_ADAPTER_STORAGE=postgres (the ctest
// entries *_postgres_test) every statetune-serve a suite starts also gets --database: one real
// PostgreSQL for the test binary, one fresh database per --adapters-dir, so a restart with the same
// folder finds its adapters again (as with the local store) and two servers with their own folders
// share nothing (as with the local store). Without it, nothing changes.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/postgres_server.h"

namespace statetune::test_support {

class SharedModeDatabases {
 public:
  static bool requested() {
    const char* mode = std::getenv("STATETUNE_TEST_ADAPTER_STORAGE");
    return mode != nullptr && std::string(mode) == "postgres";
  }
  static constexpr const char* kNotInstalled =
      "PostgreSQL 15 is not installed (/usr/lib/postgresql/*/bin/initdb); scripts/setup.sh installs postgresql-15";

  // Starts PostgreSQL when the shared mode is requested and installed.
  SharedModeDatabases() {
    if (requested() && !PostgresServer::bin_dir().empty()) pg_ = std::make_unique<PostgresServer>();
  }
  bool active() const { return pg_ != nullptr; }
  // Requested but PostgreSQL is missing: the suite skips its tests.
  bool unavailable() const { return requested() && !active(); }

  // The flags to add for a server whose --adapters-dir is `adapters` (none in the embedded mode).
  std::vector<std::string> flags_for(const std::filesystem::path& adapters) {
    if (!active()) return {};
    return {"--database", pg_->url(database_of(adapters)), "--database-password-file", pg_->password_file().string()};
  }
  // Whether a server's log shows it runs in the mode requested (so a suite cannot pass in the
  // shared mode's ctest entry while its servers quietly run the local store).
  bool log_shows_mode(const std::string& log) const {
    return (log.find("adapters.shared") != std::string::npos) == active();
  }
  // Runs SQL in the database of the server with that --adapters-dir.
  std::string psql(const std::filesystem::path& adapters, const std::string& sql) {
    return pg_->psql(sql, database_of(adapters));
  }

 private:
  std::string database_of(const std::filesystem::path& adapters) {
    auto [it, added] = databases_.emplace(adapters.string(), "");
    if (added) {
      it->second = "serving_" + std::to_string(databases_.size());
      pg_->create_database(it->second);
    }
    return it->second;
  }

  std::unique_ptr<PostgresServer> pg_;
  std::map<std::string, std::string> databases_;  // --adapters-dir -> its database
};

}  // namespace statetune::test_support
