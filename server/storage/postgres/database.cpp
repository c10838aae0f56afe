#include "server/storage/postgres/database.h"

#include <libpq-fe.h>
#include <spdlog/spdlog.h>

#include <fstream>
#include <map>
#include <thread>

namespace statetune::storage {

namespace {

// One advisory lock key for "schema migration in progress" (any constant; this one spells "stmigrat").
constexpr int64_t kMigrationLockKey = 0x73746d6967726174;

std::string quote_conninfo_value(const std::string& v) {
  std::string out = "'";
  for (char c : v) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

std::string read_password_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::invalid_argument("cannot read --database-password-file " + path);
  std::string line;
  std::getline(in, line);
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n' || line.back() == ' ')) line.pop_back();
  if (line.empty()) throw std::invalid_argument("--database-password-file " + path + " is empty");
  return line;
}

}  // namespace

bool is_unavailable(const std::exception& e) {
  if (dynamic_cast<const DatabaseUnavailable*>(&e) || dynamic_cast<const pqxx::broken_connection*>(&e) ||
      dynamic_cast<const pqxx::in_doubt_error*>(&e)) {
    return true;
  }
  if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e)) {
    const std::string state = sql->sqlstate();
    // 08: connection exception; 57P: operator intervention (shutdown, crash); 53300: too many
    // connections; 25P03 idle-in-transaction timeout; 40001/40P01 never reach here (retried).
    return state.rfind("08", 0) == 0 || state.rfind("57P", 0) == 0 || state == "53300" || state == "25P03";
  }
  return false;
}

std::string safe_message(const std::exception& e) {
  std::string m = e.what();
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  return m;
}

Database::Database(DatabaseOptions options) : options_(std::move(options)) {
  if (options_.url.empty()) throw std::invalid_argument("--database is empty");
  if (options_.pool_size < 1) throw std::invalid_argument("--database-pool-size must be >= 1");
  char* err = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(options_.url.c_str(), &err);
  if (parsed == nullptr) {
    // libpq's message names the syntax problem, not the value; still, never echo the URL.
    std::string why = err != nullptr ? err : "out of memory";
    if (err != nullptr) PQfreemem(err);
    while (!why.empty() && why.back() == '\n') why.pop_back();
    throw std::invalid_argument("--database is not a PostgreSQL connection URL or string: " + why);
  }
  std::map<std::string, std::string> kv;
  for (PQconninfoOption* o = parsed; o->keyword != nullptr; ++o) {
    if (o->val != nullptr && *o->val != '\0') kv[o->keyword] = o->val;
  }
  PQconninfoFree(parsed);
  if (!options_.password_file.empty()) kv["password"] = read_password_file(options_.password_file);
  if (!kv.count("connect_timeout")) kv["connect_timeout"] = std::to_string(options_.connect_timeout.count());
  if (!kv.count("application_name")) kv["application_name"] = "statetune";
  for (const auto& [k, v] : kv) conninfo_ += k + "=" + quote_conninfo_value(v) + " ";
  const auto get = [&](const char* k, const char* fallback) { return kv.count(k) ? kv[k] : std::string(fallback); };
  description_ = "postgresql://" + (kv.count("user") ? kv["user"] + "@" : std::string()) +
                 get("host", "localhost") + ":" + get("port", "5432") + "/" + get("dbname", "");
}

Database::~Database() = default;

std::unique_ptr<pqxx::connection> Database::connect() const {
  try {
    auto c = std::make_unique<pqxx::connection>(conninfo_);
    // Deprecated in libpqxx 6 because 7 never reactivates; 6.4 (Debian 12) still would.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    c->inhibit_reactivation(true);
#pragma GCC diagnostic pop
    return c;
  } catch (const std::exception& e) {
    throw DatabaseUnavailable("cannot connect to " + description_ + ": " + safe_message(e));
  }
}

std::unique_ptr<pqxx::connection> Database::take(bool* reused) {
  std::unique_lock<std::mutex> lock(mu_);
  free_cv_.wait(lock, [&] { return checked_out_ < options_.pool_size; });
  ++checked_out_;
  *reused = !idle_.empty();
  if (!idle_.empty()) {
    auto c = std::move(idle_.back());
    idle_.pop_back();
    return c;
  }
  const auto now = std::chrono::steady_clock::now();
  if (now < next_attempt_) {
    --checked_out_;
    free_cv_.notify_one();
    throw DatabaseUnavailable(
        "the database " + description_ + " is unreachable; next connection attempt in " +
        std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(next_attempt_ - now).count()) + " ms");
  }
  lock.unlock();
  try {
    auto c = connect();
    lock.lock();
    ++open_;
    backoff_ = std::chrono::milliseconds(0);
    return c;
  } catch (...) {
    lock.lock();
    --checked_out_;
    backoff_ = std::min(options_.max_backoff, std::max(options_.min_backoff, backoff_ * 2));
    next_attempt_ = std::chrono::steady_clock::now() + backoff_;
    free_cv_.notify_one();
    throw;
  }
}

void Database::give_back(std::unique_ptr<pqxx::connection> c, bool broken) {
  std::lock_guard<std::mutex> lock(mu_);
  --checked_out_;
  if (broken || !c->is_open()) {
    --open_;
    c.reset();  // closes it; the next take() opens a fresh one
  } else {
    idle_.push_back(std::move(c));
  }
  free_cv_.notify_one();
}

void Database::with_connection(const std::function<void(pqxx::connection&)>& fn) {
  for (int attempt = 0;; ++attempt) {
    bool reused = false;
    auto c = take(&reused);
    try {
      fn(*c);
    } catch (const pqxx::in_doubt_error& e) {
      give_back(std::move(c), true);
      throw DatabaseUnavailable("the database " + description_ +
                                " went away during a commit; its outcome is unknown: " + safe_message(e));
    } catch (const std::exception& e) {
      const bool broken = is_unavailable(e);
      give_back(std::move(c), broken);
      if (!broken) throw;
      // A pooled connection that broke while idle (the server restarted since): nothing was
      // committed (a commit that broke is in_doubt_error above), so one retry on a fresh one is safe.
      if (reused && attempt == 0 && dynamic_cast<const pqxx::broken_connection*>(&e)) continue;
      if (dynamic_cast<const DatabaseUnavailable*>(&e)) throw;
      throw DatabaseUnavailable("the database " + description_ + " is unavailable: " + safe_message(e));
    }
    give_back(std::move(c), false);
    return;
  }
}

int Database::open_connections() const {
  std::lock_guard<std::mutex> lock(mu_);
  return open_;
}

Database::PoolUse Database::pool_use() const {
  std::lock_guard<std::mutex> lock(mu_);
  const int idle = static_cast<int>(idle_.size());
  return PoolUse{open_ - idle, idle};
}

void retry_while_unavailable(const Database& db, const std::string& what, std::chrono::milliseconds budget,
                             const std::function<void()>& fn) {
  const auto deadline = std::chrono::steady_clock::now() + budget;
  auto backoff = db.options().min_backoff;
  for (int attempt = 1;; ++attempt) {
    try {
      fn();
      if (attempt > 1) spdlog::info("database {}: {} succeeded on try {}", db.describe(), what, attempt);
      return;
    } catch (const DatabaseUnavailable& e) {
      const auto left = deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::milliseconds(0)) {
        spdlog::error("database {}: {} failed on try {}; giving up after {} s: {}", db.describe(), what, attempt,
                      std::chrono::duration_cast<std::chrono::seconds>(budget).count(), safe_message(e));
        throw;
      }
      const auto wait = std::min(backoff, std::chrono::duration_cast<std::chrono::milliseconds>(left));
      spdlog::warn("database {}: {} failed on try {} (retrying in {} ms): {}", db.describe(), what, attempt,
                   wait.count(), safe_message(e));
      std::this_thread::sleep_for(wait);
      backoff = std::min(db.options().max_backoff, backoff * 2);
    }
  }
}

int Database::migrate(const std::vector<Migration>& migrations) {
  // A connection of its own: the session lock is released when it closes, even if we die here.
  auto c = connect();
  int applied = 0;
  try {
    pqxx::nontransaction(*c).exec("SELECT pg_advisory_lock(" + std::to_string(kMigrationLockKey) + ")");
    {
      pqxx::work w(*c);
      w.exec(
          "CREATE TABLE IF NOT EXISTS statetune_schema_migrations ("
          " number integer PRIMARY KEY, name text NOT NULL,"
          " applied_at timestamptz NOT NULL DEFAULT now())");
      w.commit();
    }
    int newest = 0;
    {
      pqxx::work w(*c);
      newest = w.exec("SELECT coalesce(max(number), 0) FROM statetune_schema_migrations")[0][0].as<int>();
      w.commit();
    }
    for (const auto& m : migrations) {
      if (m.number <= newest) continue;
      pqxx::work w(*c);
      w.exec(m.sql);
      w.exec_params("INSERT INTO statetune_schema_migrations (number, name) VALUES ($1, $2)", m.number, m.name);
      w.commit();
      ++applied;
      spdlog::info("database {}: applied migration {} ({})", description_, m.number, m.name);
    }
    if (!migrations.empty() && newest > migrations.back().number) {
      spdlog::warn("database {}: schema is at migration {}, newer than this binary's {} (rolling upgrade?)",
                   description_, newest, migrations.back().number);
    }
    pqxx::nontransaction(*c).exec("SELECT pg_advisory_unlock(" + std::to_string(kMigrationLockKey) + ")");
  } catch (const std::exception& e) {
    if (is_unavailable(e)) {
      throw DatabaseUnavailable("migrating " + description_ + " failed: " + safe_message(e));
    }
    throw std::runtime_error("migrating " + description_ + " failed: " + safe_message(e));
  }
  return applied;
}

}  // namespace statetune::storage
