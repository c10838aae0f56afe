#include "server/training/job_store.h"

#include <chrono>
#include <stdexcept>

#include "server/engine/util/storage_error.h"

namespace statetune::training {
namespace {

// Migration i (1-based) takes the schema from version i-1 to i. Append only; never edit a shipped
// one.
const char* const kMigrations[] = {
    R"sql(
    CREATE TABLE datasets (
      id TEXT PRIMARY KEY, tenant TEXT NOT NULL, name TEXT NOT NULL, path TEXT NOT NULL,
      sha256 TEXT NOT NULL, size_bytes INTEGER NOT NULL, examples INTEGER NOT NULL,
      max_example_tokens INTEGER NOT NULL, created_unix INTEGER NOT NULL);
    CREATE INDEX datasets_tenant ON datasets(tenant);
    CREATE TABLE jobs (
      id TEXT PRIMARY KEY, tenant TEXT NOT NULL, state INTEGER NOT NULL, spec TEXT NOT NULL,
      created_ms INTEGER NOT NULL, started_ms INTEGER NOT NULL DEFAULT 0,
      finished_ms INTEGER NOT NULL DEFAULT 0, step INTEGER NOT NULL DEFAULT 0,
      total_steps INTEGER NOT NULL DEFAULT 0, train_loss REAL NOT NULL DEFAULT 0,
      val_loss REAL NOT NULL DEFAULT 0, error_code TEXT NOT NULL DEFAULT '',
      error_message TEXT NOT NULL DEFAULT '', error_line INTEGER NOT NULL DEFAULT 0,
      adapter_name TEXT NOT NULL DEFAULT '', adapter_version TEXT NOT NULL DEFAULT '',
      eval TEXT NOT NULL DEFAULT '{}');
    CREATE INDEX jobs_tenant ON jobs(tenant);
    CREATE INDEX jobs_state ON jobs(state);
    CREATE TABLE events (
      job_id TEXT NOT NULL, seq INTEGER NOT NULL, time_ms INTEGER NOT NULL, state INTEGER NOT NULL,
      type TEXT NOT NULL, payload TEXT NOT NULL, PRIMARY KEY (job_id, seq));
    )sql",
    // 2: how often a job was resumed after a restart.
    R"sql(ALTER TABLE jobs ADD COLUMN resumes INTEGER NOT NULL DEFAULT 0;)sql",
};

// SQLITE_FULL: the disk (or the process's file-size limit) ran out; a partial write beyond the
// limit becomes SQLITE_FULL, one wholly beyond it SQLITE_IOERR with errno EFBIG.
[[noreturn]] void throw_sqlite_error(sqlite3* db, int rc, const std::string& step) {
  const bool full = (rc & 0xff) == SQLITE_FULL ||
                    ((rc & 0xff) == SQLITE_IOERR && engine::is_storage_full_errno(sqlite3_system_errno(db)));
  throw engine::StorageError(step + ": " + sqlite3_errmsg(db) + " (sqlite " +
                         std::to_string(sqlite3_extended_errcode(db)) + ", errno " +
                         std::to_string(sqlite3_system_errno(db)) + ")",
                     full);
}

nlohmann::json parse_stored(const std::string& text, const char* what) {
  return engine::parse_bounded_json(text, kJobJsonLimits, what);
}

struct Stmt {
  sqlite3_stmt* s = nullptr;
  sqlite3* db;
  Stmt(sqlite3* d, const std::string& sql) : db(d) {
    if (sqlite3_prepare_v2(d, sql.c_str(), -1, &s, nullptr) != SQLITE_OK) {
      throw std::runtime_error(std::string("sqlite prepare: ") + sqlite3_errmsg(d) + " in " + sql);
    }
  }
  ~Stmt() { sqlite3_finalize(s); }
  Stmt& bind(int i, const std::string& v) {
    sqlite3_bind_text(s, i, v.c_str(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& bind(int i, int64_t v) {
    sqlite3_bind_int64(s, i, v);
    return *this;
  }
  Stmt& bind(int i, double v) {
    sqlite3_bind_double(s, i, v);
    return *this;
  }
  bool step() {
    const int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw_sqlite_error(db, rc, "sqlite step");
  }
  std::string text(int c) {
    auto p = sqlite3_column_text(s, c);
    return p ? std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(s, c))
             : std::string();
  }
  int64_t i64(int c) { return sqlite3_column_int64(s, c); }
  double f64(int c) { return sqlite3_column_double(s, c); }
};

const char* kJobColumns =
    "id, tenant, state, spec, created_ms, started_ms, finished_ms, step, total_steps, train_loss, "
    "val_loss, "
    "error_code, error_message, error_line, adapter_name, adapter_version, eval, resumes";

JobRecord read_job(Stmt& q) {
  JobRecord j;
  j.id = q.text(0);
  j.tenant = q.text(1);
  j.state = static_cast<JobState>(q.i64(2));
  j.spec = parse_stored(q.text(3), "a stored job spec");
  j.created_ms = q.i64(4);
  j.started_ms = q.i64(5);
  j.finished_ms = q.i64(6);
  j.step = q.i64(7);
  j.total_steps = q.i64(8);
  j.train_loss = q.f64(9);
  j.val_loss = q.f64(10);
  j.error_code = q.text(11);
  j.error_message = q.text(12);
  j.error_line = q.i64(13);
  j.adapter_name = q.text(14);
  j.adapter_version = q.text(15);
  j.eval = parse_stored(q.text(16), "a stored job's evaluation");
  j.resumes = q.i64(17);
  return j;
}

DatasetRecord read_dataset(Stmt& q) {
  DatasetRecord d;
  d.id = q.text(0);
  d.tenant = q.text(1);
  d.name = q.text(2);
  d.path = q.text(3);
  d.sha256 = q.text(4);
  d.size_bytes = q.i64(5);
  d.examples = q.i64(6);
  d.max_example_tokens = q.i64(7);
  d.created_unix = q.i64(8);
  return d;
}
const char* kDatasetColumns =
    "id, tenant, name, path, sha256, size_bytes, examples, max_example_tokens, created_unix";

}  // namespace

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

const char* state_name(JobState s) {
  switch (s) {
    case JobState::kValidating:
      return "validating";
    case JobState::kQueued:
      return "queued";
    case JobState::kRunning:
      return "running";
    case JobState::kSucceeded:
      return "succeeded";
    case JobState::kFailed:
      return "failed";
    case JobState::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

bool spec_uses_dataset(const nlohmann::json& spec, const std::string& dataset_id) {
  return spec.value("dataset_id", "") == dataset_id ||
         spec.value("validation_dataset_id", "") == dataset_id;
}

bool is_terminal(JobState s) {
  return s == JobState::kSucceeded || s == JobState::kFailed || s == JobState::kCancelled;
}

SqliteJobStore::SqliteJobStore(const std::filesystem::path& db_path, BadRecordFn on_bad_record)
    : on_bad_record_(std::move(on_bad_record)), path_(db_path) {
  if (sqlite3_open_v2(db_path.c_str(), &db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    const std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw std::runtime_error("cannot open " + db_path.string() + ": " + msg);
  }
  sqlite3_busy_timeout(db_, 5000);
  exec("PRAGMA journal_mode=WAL");
  // FULL: a transaction the service acknowledged (a succeeded job, an upload) survives power loss
  // too.
  exec("PRAGMA synchronous=FULL");
  exec("PRAGMA foreign_keys=ON");
  migrate();
}

SqliteJobStore::~SqliteJobStore() { sqlite3_close(db_); }

void SqliteJobStore::exec(const std::string& sql) {
  const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) throw_sqlite_error(db_, rc, path_.string());
}

void SqliteJobStore::report_bad_record(const std::string& table, const std::string& id,
                                 const std::string& error) {
  // Once per row and process: listings run again and again (the worker polls the queue).
  if (on_bad_record_ && reported_bad_.insert(table + "/" + id).second) {
    on_bad_record_(table, id, error);
  }
}

// After a failed statement SQLite may already have rolled the transaction back itself; a second
// ROLLBACK then fails, and that must not replace the error being handled.
void SqliteJobStore::rollback_locked() {
  if (!sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
}

int SqliteJobStore::schema_version() {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt q(db_, "PRAGMA user_version");
  q.step();
  return static_cast<int>(q.i64(0));
}

void SqliteJobStore::migrate() {
  int version;
  {
    Stmt q(db_, "PRAGMA user_version");
    q.step();
    version = static_cast<int>(q.i64(0));
  }
  const int target = static_cast<int>(sizeof(kMigrations) / sizeof(kMigrations[0]));
  if (version > target) {
    throw std::runtime_error(path_.string() + ": schema version " + std::to_string(version) +
                             " is newer than this binary's " + std::to_string(target));
  }
  for (int v = version; v < target; ++v) {
    exec("BEGIN IMMEDIATE");
    try {
      exec(kMigrations[v]);
      exec("PRAGMA user_version=" + std::to_string(v + 1));
      exec("COMMIT");
    } catch (...) {
      rollback_locked();
      throw;
    }
  }
}

void SqliteJobStore::insert_dataset(const DatasetRecord& d, const std::string&) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt q(db_,
         std::string("INSERT INTO datasets (") + kDatasetColumns + ") VALUES (?,?,?,?,?,?,?,?,?)");
  q.bind(1, d.id)
      .bind(2, d.tenant)
      .bind(3, d.name)
      .bind(4, d.path)
      .bind(5, d.sha256)
      .bind(6, d.size_bytes);
  q.bind(7, d.examples).bind(8, d.max_example_tokens).bind(9, d.created_unix);
  q.step();
}

std::optional<DatasetRecord> SqliteJobStore::dataset(const std::string& tenant, const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt q(db_, std::string("SELECT ") + kDatasetColumns + " FROM datasets WHERE tenant=? AND id=?");
  q.bind(1, tenant).bind(2, id);
  if (!q.step()) return std::nullopt;
  return read_dataset(q);
}

std::vector<DatasetRecord> SqliteJobStore::datasets(const std::string& tenant) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt q(db_, std::string("SELECT ") + kDatasetColumns +
                  " FROM datasets WHERE tenant=? ORDER BY created_unix, id");
  q.bind(1, tenant);
  std::vector<DatasetRecord> out;
  while (q.step()) out.push_back(read_dataset(q));
  return out;
}

bool SqliteJobStore::delete_dataset(const std::string& tenant, const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt q(db_, "DELETE FROM datasets WHERE tenant=? AND id=?");
  q.bind(1, tenant).bind(2, id);
  q.step();
  return sqlite3_changes(db_) > 0;
}

int64_t SqliteJobStore::tenant_dataset_bytes(const std::string& tenant) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt q(db_, "SELECT COALESCE(SUM(size_bytes), 0) FROM datasets WHERE tenant=?");
  q.bind(1, tenant);
  q.step();
  return q.i64(0);
}

void SqliteJobStore::write_job_locked(const JobRecord& j) {
  Stmt q(db_,
         "UPDATE jobs SET state=?, started_ms=?, finished_ms=?, step=?, total_steps=?, "
         "train_loss=?, val_loss=?, "
         "error_code=?, error_message=?, error_line=?, adapter_name=?, adapter_version=?, eval=?, "
         "resumes=? "
         "WHERE id=?");
  q.bind(1, static_cast<int64_t>(j.state))
      .bind(2, j.started_ms)
      .bind(3, j.finished_ms)
      .bind(4, j.step);
  q.bind(5, j.total_steps).bind(6, j.train_loss).bind(7, j.val_loss).bind(8, j.error_code);
  q.bind(9, j.error_message)
      .bind(10, j.error_line)
      .bind(11, j.adapter_name)
      .bind(12, j.adapter_version);
  q.bind(13, j.eval.dump()).bind(14, j.resumes).bind(15, j.id);
  q.step();
}

int64_t SqliteJobStore::append_event_locked(const JobRecord& job, const std::string& type,
                                      const nlohmann::json& payload) {
  Stmt q(
      db_,
      "INSERT INTO events (job_id, seq, time_ms, state, type, payload) "
      "VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id=?1), ?2, ?3, ?4, ?5) "
      "RETURNING seq");
  q.bind(1, job.id)
      .bind(2, now_ms())
      .bind(3, static_cast<int64_t>(job.state))
      .bind(4, type)
      .bind(5, payload.dump());
  q.step();
  return q.i64(0);
}

void SqliteJobStore::insert_job(const JobRecord& j, const std::string& message) {
  std::lock_guard<std::mutex> lock(mu_);
  exec("BEGIN IMMEDIATE");
  try {
    Stmt q(db_, "INSERT INTO jobs (id, tenant, state, spec, created_ms) VALUES (?,?,?,?,?)");
    q.bind(1, j.id).bind(2, j.tenant).bind(3, static_cast<int64_t>(j.state)).bind(4, j.spec.dump());
    q.bind(5, j.created_ms);
    q.step();
    write_job_locked(j);
    append_event_locked(j, "state", {{"message", message}});
    exec("COMMIT");
  } catch (...) {
    rollback_locked();
    throw;
  }
}

std::optional<JobRecord> SqliteJobStore::job(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt q(db_, std::string("SELECT ") + kJobColumns + " FROM jobs WHERE id=?");
  q.bind(1, id);
  if (!q.step()) return std::nullopt;
  return read_job(q);
}

std::vector<JobRecord> SqliteJobStore::jobs(const std::string& tenant) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt q(db_, std::string("SELECT ") + kJobColumns +
                  " FROM jobs WHERE tenant=? ORDER BY created_ms DESC, id DESC");
  q.bind(1, tenant);
  std::vector<JobRecord> out;
  while (q.step()) {
    try {
      out.push_back(read_job(q));
    } catch (const engine::JsonInputError& e) {
      // One corrupt row must not hide the others (or stop the service from starting).
      report_bad_record("jobs", q.text(0), e.what());
    }
  }
  return out;
}

std::vector<JobRecord> SqliteJobStore::jobs_in_state(JobState state) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt q(db_,
         std::string("SELECT ") + kJobColumns + " FROM jobs WHERE state=? ORDER BY created_ms, id");
  q.bind(1, static_cast<int64_t>(state));
  std::vector<JobRecord> out;
  while (q.step()) {
    try {
      out.push_back(read_job(q));
    } catch (const engine::JsonInputError& e) {
      // One corrupt row must not hide the others (or stop the service from starting).
      report_bad_record("jobs", q.text(0), e.what());
    }
  }
  return out;
}

int64_t SqliteJobStore::count_jobs(const std::string& tenant, const std::vector<JobState>& states) {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t total = 0;
  for (JobState s : states) {
    Stmt q(db_, "SELECT COUNT(*) FROM jobs WHERE tenant=? AND state=?");
    q.bind(1, tenant).bind(2, static_cast<int64_t>(s));
    q.step();
    total += q.i64(0);
  }
  return total;
}

std::vector<std::pair<JobState, int64_t>> SqliteJobStore::count_by_state() {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt q(db_, "SELECT state, COUNT(*) FROM jobs GROUP BY state");
  std::vector<std::pair<JobState, int64_t>> out;
  while (q.step()) out.emplace_back(static_cast<JobState>(q.i64(0)), q.i64(1));
  return out;
}

bool SqliteJobStore::dataset_in_use(const std::string& tenant, const std::string& dataset_id) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt q(db_, "SELECT spec FROM jobs WHERE tenant=? AND state IN (1, 2, 3)");
  q.bind(1, tenant);
  while (q.step()) {
    nlohmann::json spec;
    try {
      spec = parse_stored(q.text(0), "a stored job spec");
    } catch (const engine::JsonInputError&) {
      continue;  // an unreadable job uses nothing (jobs() reports it)
    }
    if (spec_uses_dataset(spec, dataset_id)) return true;
  }
  return false;
}

int64_t SqliteJobStore::update_job(const JobRecord& job, const std::string& type,
                             const nlohmann::json& payload) {
  std::lock_guard<std::mutex> lock(mu_);
  exec("BEGIN IMMEDIATE");
  try {
    write_job_locked(job);
    const int64_t seq = append_event_locked(job, type, payload);
    exec("COMMIT");
    return seq;
  } catch (...) {
    rollback_locked();
    throw;
  }
}

std::vector<EventRecord> SqliteJobStore::events(const std::string& job_id, int64_t after_seq) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt q(db_,
         "SELECT seq, time_ms, state, type, payload FROM events WHERE job_id=? AND seq>? ORDER BY "
         "seq");
  q.bind(1, job_id).bind(2, after_seq);
  std::vector<EventRecord> out;
  while (q.step()) {
    EventRecord e;
    e.job_id = job_id;
    e.seq = q.i64(0);
    e.time_ms = q.i64(1);
    e.state = static_cast<JobState>(q.i64(2));
    e.type = q.text(3);
    try {
      e.payload = parse_stored(q.text(4), "a stored event");
    } catch (const engine::JsonInputError& err) {
      report_bad_record("events", job_id + "#" + std::to_string(e.seq), err.what());
      continue;
    }
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace statetune::training
