// The PostgreSQL connection for the shared mode (shared/docs/scale-out.md): where to connect
// (--database URL, password from --database-password-file), a small connection pool, reconnection
// with backoff, and the numbered forward migrations applied at start under an advisory lock.
//
// Passwords never reach a log or an error message: describe() names the server without them, and
// every libpq/libpqxx error this module passes on is rewritten without the connection string.
//
// libpqxx 6.4 (Debian 12). A connection that breaks is dropped, never silently re-activated (libpqxx
// would otherwise reconnect behind our back and a LISTEN would miss what happened in between).
#pragma once

#include <pqxx/pqxx>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace statetune::storage {

// The database cannot be reached (down, restarting, refusing connections, or the connection broke
// mid-call). Callers map it to UNAVAILABLE.
class DatabaseUnavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct DatabaseOptions {
  std::string url;            // postgresql://user@host:port/db?... or "host=... dbname=..." (libpq)
  std::string password_file;  // optional: its first line is the password (overrides one in `url`)
  int pool_size = 4;          // connections for requests (a LISTEN connection comes on top)
  std::chrono::seconds connect_timeout{5};
  std::chrono::milliseconds min_backoff{100}, max_backoff{5000};
};

// One forward migration: applied once, in order, each in its own transaction.
struct Migration {
  int number;
  const char* name;
  const char* sql;
};

class Database {
 public:
  // Parses the URL and reads the password file; connects lazily. Throws std::invalid_argument for a
  // malformed URL or an unreadable password file (messages without the password).
  explicit Database(DatabaseOptions options);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // "postgresql://user@host:port/dbname": what to put in logs.
  const std::string& describe() const { return description_; }
  const DatabaseOptions& options() const { return options_; }

  // A new connection of its own (for LISTEN). Throws DatabaseUnavailable.
  std::unique_ptr<pqxx::connection> connect() const;

  // Runs `fn` with a pooled connection (waiting for a free one). A connection that broke is dropped
  // and DatabaseUnavailable thrown; while the database is unreachable, calls fail fast until the
  // backoff (doubling from min_backoff to max_backoff) allows the next connection attempt.
  void with_connection(const std::function<void(pqxx::connection&)>& fn);

  // Applies the migrations not applied yet, holding a session advisory lock so that replicas starting
  // together apply each exactly once (the others wait, then find nothing to do). Returns how many this
  // call applied. A database newer than `migrations` (a rolling upgrade) is accepted with a log line.
  int migrate(const std::vector<Migration>& migrations);

  // Connections currently open in the pool (for metrics and tests).
  int open_connections() const;
  // Of those, how many a call holds right now and how many wait idle (metrics).
  struct PoolUse {
    int in_use = 0, idle = 0;
  };
  PoolUse pool_use() const;

 private:
  std::unique_ptr<pqxx::connection> take(bool* reused);
  void give_back(std::unique_ptr<pqxx::connection> c, bool broken);

  DatabaseOptions options_;
  std::string conninfo_;  // with the password: never logged
  std::string description_;
  mutable std::mutex mu_;
  std::condition_variable free_cv_;
  std::vector<std::unique_ptr<pqxx::connection>> idle_;
  int checked_out_ = 0;
  int open_ = 0;
  std::chrono::steady_clock::time_point next_attempt_{};
  std::chrono::milliseconds backoff_{0};
};

// Runs `fn` again while it throws DatabaseUnavailable, for at most `budget` (then the last error is
// rethrown): a service that starts before its database (a rollout, a database restart, a CNPG
// failover) waits for it instead of exiting. Each failed try is logged with `what`, the
// password-free error and the delay before the next one (doubling from min_backoff to max_backoff).
void retry_while_unavailable(const Database& db, const std::string& what, std::chrono::milliseconds budget,
                             const std::function<void()>& fn);

// True for errors that mean "the database is not reachable right now" (broken connection, server
// shutting down, too many connections, commit outcome unknown) rather than a bad statement.
bool is_unavailable(const std::exception& e);

// The password-free message of a libpqxx exception, for logs and for errors passed on.
std::string safe_message(const std::exception& e);

}  // namespace statetune::storage
