#include "server/storage/postgres/pg_job_store.h"

#include <spdlog/spdlog.h>

#include "server/engine/adapters/adapter.h"
#include "server/engine/util/bounded_json.h"
#include "server/engine/util/durable_file.h"
#include "server/engine/util/sha256.h"
#include "server/storage/postgres/pg_adapter_store.h"
#include "server/storage/postgres/schema.h"

namespace statetune::storage {
namespace fs = std::filesystem;
using training::ClaimedJob;
using training::DatasetRecord;
using training::EventRecord;
using training::JobRecord;
using training::JobState;
using training::LeaseLost;

namespace {

constexpr const char* kJobColumns =
    "id, tenant, state, spec, created_ms, started_ms, finished_ms, step, total_steps, train_loss, val_loss,"
    " error_code, error_message, error_line, adapter_name, adapter_version, eval, resumes, lease_epoch";
constexpr const char* kDatasetColumns =
    "id, tenant, name, sha256, size_bytes, examples, max_example_tokens, created_unix";

nlohmann::json parse_stored(const std::string& text, const char* what) {
  return engine::parse_bounded_json(text, training::kJobJsonLimits, what);
}

JobRecord read_job(const pqxx::row& r) {
  JobRecord j;
  j.id = r[0].as<std::string>();
  j.tenant = r[1].as<std::string>();
  j.state = static_cast<JobState>(r[2].as<int>());
  j.spec = parse_stored(r[3].as<std::string>(), "a stored job spec");
  j.created_ms = r[4].as<int64_t>();
  j.started_ms = r[5].as<int64_t>();
  j.finished_ms = r[6].as<int64_t>();
  j.step = r[7].as<int64_t>();
  j.total_steps = r[8].as<int64_t>();
  j.train_loss = r[9].as<double>();
  j.val_loss = r[10].as<double>();
  j.error_code = r[11].as<std::string>();
  j.error_message = r[12].as<std::string>();
  j.error_line = r[13].as<int64_t>();
  j.adapter_name = r[14].as<std::string>();
  j.adapter_version = r[15].as<std::string>();
  j.eval = parse_stored(r[16].as<std::string>(), "a stored job's evaluation");
  j.resumes = r[17].as<int64_t>();
  j.lease_epoch = r[18].as<int64_t>();
  return j;
}

// The job's mutable columns, only while `job.lease_epoch` is still the job's epoch: the fence.
void write_job(pqxx::work& w, const JobRecord& j) {
  const auto r = w.exec_params(
      "UPDATE train_jobs SET state = $3, started_ms = $4, finished_ms = $5, step = $6, total_steps = $7,"
      " train_loss = $8, val_loss = $9, error_code = $10, error_message = $11, error_line = $12,"
      " adapter_name = $13, adapter_version = $14, eval = $15, resumes = $16"
      " WHERE id = $1 AND lease_epoch = $2",
      j.id, j.lease_epoch, static_cast<int>(j.state), j.started_ms, j.finished_ms, j.step, j.total_steps,
      j.train_loss, j.val_loss, j.error_code, j.error_message, j.error_line, j.adapter_name, j.adapter_version,
      j.eval.dump(), j.resumes);
  if (r.affected_rows() == 0) {
    throw LeaseLost("job " + j.id + ": lease epoch " + std::to_string(j.lease_epoch) +
                    " is no longer the job's (another worker claimed it)");
  }
}

// Locks the job's row while `job.lease_epoch` is current and the job is running, or throws LeaseLost.
void fence(pqxx::work& w, const JobRecord& j) {
  if (w.exec_params("SELECT 1 FROM train_jobs WHERE id = $1 AND lease_epoch = $2 AND state = $3 FOR UPDATE", j.id,
                    j.lease_epoch, static_cast<int>(JobState::kRunning))
          .empty()) {
    throw LeaseLost("job " + j.id + ": lease epoch " + std::to_string(j.lease_epoch) + " is no longer held");
  }
}

// The job's row is locked (written or fenced) in `w`, so its events are numbered one at a time.
int64_t append_event(pqxx::work& w, const JobRecord& job, const std::string& type, const nlohmann::json& payload) {
  const int64_t seq =
      w.exec_params(
           "INSERT INTO train_events (job_id, seq, time_ms, state, type, payload) VALUES"
           " ($1, (SELECT coalesce(max(seq), 0) + 1 FROM train_events WHERE job_id = $1), $2, $3, $4, $5)"
           " RETURNING seq",
           job.id, training::now_ms(), static_cast<int>(job.state), type, payload.dump())[0][0]
          .as<int64_t>();
  w.exec_params("SELECT pg_notify($1, $2)", kJobChannel, job.id);
  return seq;
}

// Checkpoint files are named by the trainer; anything else read back from the database is refused.
bool plain_file_name(const std::string& name) {
  if (name.empty() || name.size() > 128 || name[0] == '.') return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) return false;
  }
  return true;
}

// Takes the tenant's lock for `what` (so one tenant's inserts of it, on every replica, happen one at a
// time), then refuses with `refusal` when the usage (`usage_sql`, $1 the tenant) plus `adding` is above
// `limit`.
void check_tenant_limit(pqxx::work& w, const char* what, const std::string& tenant, const char* usage_sql,
                        int64_t adding, int64_t limit, const std::string& refusal) {
  w.exec_params("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", std::string("statetune.") + what + "/" + tenant);
  if (w.exec_params(usage_sql, tenant)[0][0].as<int64_t>() + adding > limit) {
    throw engine::EngineError(engine::ErrorKind::kResourceExhausted, refusal);
  }
}

class JobEvents : public pqxx::notification_receiver {
 public:
  JobEvents(pqxx::connection& c, bool& heard) : pqxx::notification_receiver(c, kJobChannel), heard_(heard) {}
  void operator()(const std::string&, int) override { heard_ = true; }

 private:
  bool& heard_;
};

}  // namespace

PgJobStore::PgJobStore(std::shared_ptr<Database> db, PgJobStoreOptions options, BadRecordFn on_bad_record)
    : db_(std::move(db)), options_(std::move(options)), on_bad_record_(std::move(on_bad_record)) {
  if (options_.follow_events) listener_thread_ = std::thread([this] { listen_loop(); });
}

PgJobStore::~PgJobStore() {
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (listener_thread_.joinable()) listener_thread_.join();
}

void PgJobStore::set_event_listener(std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(listener_mu_);
  listener_ = std::move(fn);
}

void PgJobStore::run(const char* what, const std::function<void(pqxx::connection&)>& fn) const {
  try {
    db_->with_connection(fn);
  } catch (const DatabaseUnavailable& e) {
    spdlog::warn("job database: {}: {}", what, e.what());
    throw engine::EngineError(engine::ErrorKind::kUnavailable,
                              std::string(what) + ": the job database is unavailable; retry");
  } catch (const pqxx::failure& e) {
    // A statement failed (not the connection): a bug or a schema mismatch, for the log only.
    throw std::runtime_error(std::string(what) + ": " + safe_message(e));
  }
}

void PgJobStore::report_bad_record(const std::string& table, const std::string& id, const std::string& error) {
  std::lock_guard<std::mutex> lock(bad_mu_);
  if (on_bad_record_ && reported_bad_.insert(table + "/" + id).second) on_bad_record_(table, id, error);
}

std::vector<JobRecord> PgJobStore::read_jobs(const pqxx::result& rows) {
  std::vector<JobRecord> out;
  for (const auto& r : rows) {
    try {
      out.push_back(read_job(r));
    } catch (const engine::JsonInputError& e) {
      // One corrupt row must not hide the others.
      report_bad_record("train_jobs", r[0].as<std::string>(), e.what());
    }
  }
  return out;
}

DatasetRecord PgJobStore::read_dataset(const pqxx::row& r) const {
  DatasetRecord d;
  d.id = r[0].as<std::string>();
  d.tenant = r[1].as<std::string>();
  d.name = r[2].as<std::string>();
  d.sha256 = r[3].as<std::string>();
  d.size_bytes = r[4].as<int64_t>();
  d.examples = r[5].as<int64_t>();
  d.max_example_tokens = r[6].as<int64_t>();
  d.created_unix = r[7].as<int64_t>();
  // This replica's copy (ids and tenants are validated names: no separators in them).
  d.path = (options_.datasets_dir / d.tenant / (d.id + ".jsonl")).string();
  return d;
}

void PgJobStore::insert_dataset(const DatasetRecord& d, const std::string& content) {
  run("storing the data set", [&](pqxx::connection& c) {
    pqxx::work w(c);
    if (options_.tenant_storage_bytes > 0) {
      check_tenant_limit(w, "datasets", d.tenant,
                         "SELECT coalesce(sum(size_bytes), 0) FROM train_datasets WHERE tenant = $1", d.size_bytes,
                         options_.tenant_storage_bytes,
                         "the tenant's data sets would exceed --tenant-storage-bytes " +
                             std::to_string(options_.tenant_storage_bytes));
    }
    w.exec_params(std::string("INSERT INTO train_datasets (") + kDatasetColumns +
                      ", content) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                  d.id, d.tenant, d.name, d.sha256, d.size_bytes, d.examples, d.max_example_tokens, d.created_unix,
                  pqxx::binarystring(content.data(), content.size()));
    w.commit();
  });
}

std::optional<DatasetRecord> PgJobStore::dataset(const std::string& tenant, const std::string& id) {
  std::optional<DatasetRecord> out;
  run("reading the data set", [&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    const auto r = tx.exec_params(
        std::string("SELECT ") + kDatasetColumns + " FROM train_datasets WHERE tenant = $1 AND id = $2", tenant, id);
    if (!r.empty()) out = read_dataset(r[0]);
  });
  return out;
}

std::vector<DatasetRecord> PgJobStore::datasets(const std::string& tenant) {
  std::vector<DatasetRecord> out;
  run("listing the data sets", [&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    for (const auto& r : tx.exec_params(std::string("SELECT ") + kDatasetColumns +
                                            " FROM train_datasets WHERE tenant = $1 ORDER BY created_unix, id",
                                        tenant)) {
      out.push_back(read_dataset(r));
    }
  });
  return out;
}

bool PgJobStore::delete_dataset(const std::string& tenant, const std::string& id) {
  bool deleted = false;
  run("deleting the data set", [&](pqxx::connection& c) {
    pqxx::work w(c);
    deleted = w.exec_params("DELETE FROM train_datasets WHERE tenant = $1 AND id = $2", tenant, id).affected_rows() > 0;
    w.commit();
  });
  return deleted;
}

int64_t PgJobStore::tenant_dataset_bytes(const std::string& tenant) {
  int64_t total = 0;
  run("summing the data sets", [&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    total = tx.exec_params("SELECT coalesce(sum(size_bytes), 0) FROM train_datasets WHERE tenant = $1", tenant)[0][0]
                .as<int64_t>();
  });
  return total;
}

fs::path PgJobStore::dataset_file(const DatasetRecord& d) {
  const fs::path path = d.path;
  std::error_code ec;
  if (fs::exists(path, ec)) {
    try {
      if (engine::Sha256::hex(engine::read_file(path)) == d.sha256) return path;
    } catch (const std::exception& e) {
      spdlog::warn("data set cache: cannot read {}: {}", path.string(), e.what());
    }
  }
  std::string content;
  run("reading the data set", [&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    const auto r =
        tx.exec_params("SELECT content FROM train_datasets WHERE tenant = $1 AND id = $2", d.tenant, d.id);
    if (r.empty()) throw std::runtime_error("data set " + d.id + " no longer exists");
    content = pqxx::binarystring(r[0][0]).str();
  });
  if (engine::Sha256::hex(content) != d.sha256) {
    throw std::runtime_error("the stored data set " + d.id + " does not match its sha256");
  }
  engine::create_folders(path.parent_path());
  engine::write_file_durably(path, content);
  return path;
}

void PgJobStore::insert_job(const JobRecord& j, const std::string& message) {
  run("storing the job", [&](pqxx::connection& c) {
    pqxx::work w(c);
    if (options_.max_active_jobs > 0) {
      check_tenant_limit(w, "jobs", j.tenant, "SELECT count(*) FROM train_jobs WHERE tenant = $1 AND state IN (1, 2, 3)",
                         1, options_.max_active_jobs,
                         "the tenant already has " + std::to_string(options_.max_active_jobs) +
                             " queued or running jobs (--max-active-jobs)");
    }
    w.exec_params("INSERT INTO train_jobs (id, tenant, state, spec, created_ms) VALUES ($1, $2, $3, $4, $5)", j.id,
                  j.tenant, static_cast<int>(j.state), j.spec.dump(), j.created_ms);
    write_job(w, j);
    append_event(w, j, "state", {{"message", message}});
    w.commit();
  });
}

std::optional<JobRecord> PgJobStore::job(const std::string& id) {
  std::vector<JobRecord> found;
  run("reading the job", [&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    found = read_jobs(tx.exec_params(std::string("SELECT ") + kJobColumns + " FROM train_jobs WHERE id = $1", id));
  });
  if (found.empty()) return std::nullopt;
  return std::move(found.front());
}

std::vector<JobRecord> PgJobStore::jobs(const std::string& tenant) {
  std::vector<JobRecord> out;
  run("listing the jobs", [&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    out = read_jobs(tx.exec_params(std::string("SELECT ") + kJobColumns +
                                       " FROM train_jobs WHERE tenant = $1 ORDER BY created_ms DESC, id DESC",
                                   tenant));
  });
  return out;
}

std::vector<JobRecord> PgJobStore::jobs_in_state(JobState state) {
  std::vector<JobRecord> out;
  run("listing the jobs", [&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    out = read_jobs(tx.exec_params(
        std::string("SELECT ") + kJobColumns + " FROM train_jobs WHERE state = $1 ORDER BY created_ms, id",
        static_cast<int>(state)));
  });
  return out;
}

int64_t PgJobStore::count_jobs(const std::string& tenant, const std::vector<JobState>& states) {
  int64_t total = 0;
  run("counting the jobs", [&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    for (JobState s : states) {
      total += tx.exec_params("SELECT count(*) FROM train_jobs WHERE tenant = $1 AND state = $2", tenant,
                              static_cast<int>(s))[0][0]
                   .as<int64_t>();
    }
  });
  return total;
}

std::vector<std::pair<JobState, int64_t>> PgJobStore::count_by_state() {
  std::vector<std::pair<JobState, int64_t>> out;
  run("counting the jobs", [&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    for (const auto& r : tx.exec("SELECT state, count(*) FROM train_jobs GROUP BY state")) {
      out.emplace_back(static_cast<JobState>(r[0].as<int>()), r[1].as<int64_t>());
    }
  });
  return out;
}

bool PgJobStore::dataset_in_use(const std::string& tenant, const std::string& dataset_id) {
  bool used = false;
  run("checking the data set's jobs", [&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    for (const auto& r :
         tx.exec_params("SELECT spec FROM train_jobs WHERE tenant = $1 AND state IN (1, 2, 3)", tenant)) {
      try {
        if (training::spec_uses_dataset(parse_stored(r[0].as<std::string>(), "a stored job spec"), dataset_id)) {
          used = true;
        }
      } catch (const engine::JsonInputError&) {
        // an unreadable job uses nothing (jobs() reports it)
      }
    }
  });
  return used;
}

int64_t PgJobStore::update_job(const JobRecord& job, const std::string& type, const nlohmann::json& payload) {
  int64_t seq = 0;
  run("updating the job", [&](pqxx::connection& c) {
    pqxx::work w(c);
    write_job(w, job);
    seq = append_event(w, job, type, payload);
    w.commit();
  });
  return seq;
}

std::vector<EventRecord> PgJobStore::events(const std::string& job_id, int64_t after_seq) {
  std::vector<EventRecord> out;
  run("reading the job's events", [&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    for (const auto& r : tx.exec_params(
             "SELECT seq, time_ms, state, type, payload FROM train_events WHERE job_id = $1 AND seq > $2 ORDER BY seq",
             job_id, after_seq)) {
      EventRecord e;
      e.job_id = job_id;
      e.seq = r[0].as<int64_t>();
      e.time_ms = r[1].as<int64_t>();
      e.state = static_cast<JobState>(r[2].as<int>());
      e.type = r[3].as<std::string>();
      try {
        e.payload = parse_stored(r[4].as<std::string>(), "a stored event");
      } catch (const engine::JsonInputError& err) {
        report_bad_record("train_events", job_id + "#" + std::to_string(e.seq), err.what());
        continue;
      }
      out.push_back(std::move(e));
    }
  });
  return out;
}

std::optional<ClaimedJob> PgJobStore::claim(const std::string& worker, std::chrono::milliseconds lease) {
  std::optional<ClaimedJob> out;
  run("claiming a job", [&](pqxx::connection& c) {
    pqxx::work w(c);
    // SKIP LOCKED: a row another worker is claiming right now is passed over, never handed out twice.
    const auto next = w.exec(
        "SELECT id, state, cancel_requested FROM train_jobs"
        " WHERE state = 2 OR (state = 3 AND lease_expires < clock_timestamp())"
        " ORDER BY created_ms, id LIMIT 1 FOR UPDATE SKIP LOCKED");
    if (next.empty()) return;
    const std::string id = next[0][0].as<std::string>();
    const bool resumed = next[0][1].as<int>() == static_cast<int>(JobState::kRunning);
    const auto rows = w.exec_params(
        std::string("UPDATE train_jobs SET state = 3, lease_epoch = lease_epoch + 1, lease_owner = $2,"
                    " lease_expires = clock_timestamp() + $3 * interval '1 millisecond',"
                    " resumes = resumes + $4 WHERE id = $1 RETURNING ") +
            kJobColumns,
        id, worker, static_cast<int64_t>(lease.count()), resumed ? 1 : 0);
    try {
      ClaimedJob claimed;
      claimed.job = read_job(rows[0]);
      claimed.resumed = resumed;
      claimed.cancel_requested = next[0][2].as<bool>();
      out = std::move(claimed);
    } catch (const engine::JsonInputError& e) {
      // A job that cannot be read cannot run: failed, so that it does not block the queue.
      report_bad_record("train_jobs", id, e.what());
      w.exec_params(
          "UPDATE train_jobs SET state = 5, error_code = 'INTERNAL', error_message = $2, finished_ms = $3"
          " WHERE id = $1",
          id, "the stored job cannot be read", training::now_ms());
    }
    w.commit();
  });
  return out;
}

training::LeaseRenewal PgJobStore::renew(const JobRecord& job, std::chrono::milliseconds lease) {
  training::LeaseRenewal out;
  run("renewing the job's lease", [&](pqxx::connection& c) {
    pqxx::work w(c);
    const auto r = w.exec_params(
        "UPDATE train_jobs SET lease_expires = clock_timestamp() + $3 * interval '1 millisecond'"
        " WHERE id = $1 AND lease_epoch = $2 AND state = 3 RETURNING cancel_requested",
        job.id, job.lease_epoch, static_cast<int64_t>(lease.count()));
    w.commit();
    out.held = !r.empty();
    out.cancel_requested = out.held && r[0][0].as<bool>();
  });
  return out;
}

bool PgJobStore::request_cancel(const std::string& id) {
  bool accepted = false;
  run("cancelling the job", [&](pqxx::connection& c) {
    pqxx::work w(c);
    const auto r = w.exec_params(std::string("SELECT ") + kJobColumns + " FROM train_jobs WHERE id = $1 FOR UPDATE", id);
    if (r.empty()) return;
    const auto state = static_cast<JobState>(r[0][2].as<int>());
    if (training::is_terminal(state)) return;
    accepted = true;
    if (state == JobState::kRunning) {
      // Its worker reads this when it renews its lease, stops at a step boundary and records it.
      w.exec_params("UPDATE train_jobs SET cancel_requested = true WHERE id = $1", id);
    } else {
      JobRecord j = read_job(r[0]);
      j.state = JobState::kCancelled;
      j.finished_ms = training::now_ms();
      write_job(w, j);  // the row is locked and not running: its epoch is current
      append_event(w, j, "state", {{"message", "cancelled before it started"}});
    }
    w.commit();
  });
  return accepted;
}

void PgJobStore::save_checkpoint(const JobRecord& job, const fs::path& dir) {
  std::vector<std::pair<std::string, std::string>> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (!e.is_regular_file() || !plain_file_name(name)) continue;  // temporaries of a write in progress
    files.emplace_back(name, engine::read_file(e.path()));
  }
  run("storing the checkpoint", [&](pqxx::connection& c) {
    pqxx::work w(c);
    fence(w, job);
    w.exec_params("DELETE FROM train_checkpoint_files WHERE job_id = $1", job.id);
    for (const auto& [name, bytes] : files) {
      w.exec_params("INSERT INTO train_checkpoint_files (job_id, name, bytes) VALUES ($1, $2, $3)", job.id, name,
                    pqxx::binarystring(bytes.data(), bytes.size()));
    }
    w.commit();
  });
}

bool PgJobStore::restore_checkpoint(const JobRecord& job, const fs::path& dir) {
  std::vector<std::pair<std::string, std::string>> files;
  run("reading the checkpoint", [&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    for (const auto& r : tx.exec_params("SELECT name, bytes FROM train_checkpoint_files WHERE job_id = $1", job.id)) {
      files.emplace_back(r[0].as<std::string>(), pqxx::binarystring(r[1]).str());
    }
  });
  fs::remove_all(dir);  // a copy from an earlier lease on this worker is older than the database's
  engine::create_folders(dir);
  bool written = false;
  for (const auto& [name, bytes] : files) {
    if (!plain_file_name(name)) {
      spdlog::warn("job database: job {} has a checkpoint file with a bad name; skipped", job.id);
      continue;
    }
    engine::write_file_durably(dir / name, bytes);
    written = true;
  }
  return written;
}

void PgJobStore::save_output(const JobRecord& job, const std::string& adapter_bytes) {
  run("storing the trained adapter", [&](pqxx::connection& c) {
    pqxx::work w(c);
    fence(w, job);
    w.exec_params(
        "INSERT INTO train_outputs (job_id, sha256, bytes) VALUES ($1, $2, $3)"
        " ON CONFLICT (job_id) DO UPDATE SET sha256 = excluded.sha256, bytes = excluded.bytes",
        job.id, engine::Sha256::hex(adapter_bytes), pqxx::binarystring(adapter_bytes.data(), adapter_bytes.size()));
    w.commit();
  });
}

std::string PgJobStore::publish(JobRecord& job, const std::string& adapter_name, const std::string& adapter_bytes) {
  // Validated as an upload to statetune-serve would be (std::invalid_argument).
  const engine::Adapter adapter = engine::parse_adapter_upload(options_.base, job.tenant, adapter_name, adapter_bytes);
  const std::string sha256 = engine::Sha256::hex(adapter_bytes);
  JobRecord done = job;
  run("publishing the trained adapter", [&](pqxx::connection& c) {
    pqxx::work w(c);
    fence(w, job);  // the job's row stays locked: one publish per job, ever
    const int64_t number = insert_adapter_version(w, options_.quota, job.tenant, adapter_name, adapter_bytes, sha256,
                                                  adapter);
    done = job;
    done.adapter_name = adapter_name;
    done.adapter_version = std::to_string(number);
    done.state = JobState::kSucceeded;
    done.finished_ms = training::now_ms();
    write_job(w, done);
    append_event(w, done, "state", {{"message", "published as " + adapter_name + " version " + done.adapter_version}});
    w.commit();
  });
  job = std::move(done);
  return job.adapter_version;
}

void PgJobStore::listen_loop() {
  auto backoff = db_->options().min_backoff;
  while (true) {
    try {
      auto c = db_->connect();
      bool heard = false;
      JobEvents receiver(*c, heard);  // LISTEN
      backoff = db_->options().min_backoff;
      bool first = true;
      auto last_ping = std::chrono::steady_clock::now();
      while (true) {
        {
          std::lock_guard<std::mutex> lock(stop_mu_);
          if (stopping_) return;
        }
        if (heard || first) {  // after a (re)connect: whatever was missed meanwhile
          heard = first = false;
          std::lock_guard<std::mutex> lock(listener_mu_);
          if (listener_) listener_();
        }
        c->await_notification(0, 200000);
        // A broken connection does not always wake await_notification; a query notices it.
        const auto now = std::chrono::steady_clock::now();
        if (now - last_ping > std::chrono::seconds(1)) {
          pqxx::nontransaction(*c).exec("SELECT 1");
          last_ping = now;
        }
      }
    } catch (const std::exception& e) {
      spdlog::warn("job database: lost the event listener on {} ({}); reconnecting", db_->describe(),
                   safe_message(e));
    }
    std::unique_lock<std::mutex> lock(stop_mu_);
    if (stop_cv_.wait_for(lock, backoff, [&] { return stopping_; })) return;
    backoff = std::min(db_->options().max_backoff, backoff * 2);
  }
}

}  // namespace statetune::storage
