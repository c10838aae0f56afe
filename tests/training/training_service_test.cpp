// Integration tests: the real statetune-train and statetune-serve binaries on loopback ports with a
// tiny random model and the GPT-NeoX tokenizer, driven through the client libraries over gRPC:
// upload -> train -> watch -> published adapter served; malformed data; cancel; kill -9 and
// restart; tenants.
//
// The same suite runs twice (two ctest entries): in the embedded mode (SQLite, publishing through
// --serving-addr) and, with STATETUNE_TEST_SHARED_MODE=1, in the shared mode: both services over a
// real PostgreSQL 15 (--database, tests/support/postgres_server.h), publishing through the database.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "client/statetune_client.h"
#include "tests/storage/postgres_fixture.h"
#include "tests/support/loopback_http.h"
#include "tests/support/service_process.h"
#include "tests/support/serving_fixture.h"
#include "tests/support/shell.h"
#include "tests/support/test_tls.h"
#include "tests/support/training_requests.h"
#include "client/training_client.h"
#include "server/engine/adapters/adapter.h"
#include "server/engine/model/mamba_model.h"
#include "server/engine/model/model_init.h"
#include "server/engine/util/sha256.h"

namespace statetune::training {
namespace {
namespace fs = std::filesystem;
namespace v1 = ::statetune::v1;
using client::Client;
using client::ClientOptions;
using client::TrainingClient;
using grpc::StatusCode;

const char* kAcmeKey = "acme-train-key";
const char* kBetaKey = "beta-train-key";
const char* kAdminKey = "admin-train-key";

using test_support::dataset_text;
using test_support::http_get;
using test_support::job_request;
using test_support::slurp;
using test_support::upload;
using test_support::watch_all;

// The value of the first sample line that starts with `prefix` (name plus labels), or -1.
double metric(const std::string& text, const std::string& prefix) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.compare(0, prefix.size(), prefix) == 0 && line.size() > prefix.size() &&
        (line[prefix.size()] == ' ' || line[prefix.size()] == '{')) {
      return std::stod(line.substr(line.rfind(' ') + 1));
    }
  }
  return -1;
}

// Runs a command, its stdout and exit status.
std::pair<std::string, int> run_command(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return {"", -1};
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

using Process = test_support::ServiceProcess;

// Every test runs against its own statetune-serve and statetune-train with their own stores, so that
// each passes alone and in any order; the model and the tenants file are shared inputs no test changes.
class TrainingServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    suite_ =
        new fs::path(fs::temp_directory_path() / ("statetune_train_" + std::to_string(::getpid())));
    fs::remove_all(*suite_);
    fs::create_directories(*suite_);
    engine::write_random_checkpoint(model_dir(), test_support::tiny_service_model_config(), 91);
    nlohmann::json tenants = {
        {"admin_key_sha256", engine::Sha256::hex(kAdminKey)},
        {"tenants",
         {{{"name", "acme"}, {"api_keys_sha256", {engine::Sha256::hex(kAcmeKey)}}},
          {{"name", "beta"}, {"api_keys_sha256", {engine::Sha256::hex(kBetaKey)}}}}}};
    std::ofstream(*suite_ / "tenants.json") << tenants.dump(2);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*suite_);
    delete suite_;
  }
  static bool shared_mode() { return std::getenv("STATETUNE_TEST_SHARED_MODE") != nullptr; }
  void SetUp() override {
    work_ = *suite_ / ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::create_directories(work_);
    if (shared_mode()) {
      if (test_support::PostgresServer::bin_dir().empty()) GTEST_SKIP() << "PostgreSQL 15 is not installed";
      pg_ = test_support::PostgresEnvironment::server();
      static int databases = 0;
      db_name_ = "train" + std::to_string(::getpid()) + "_" + std::to_string(databases++);
      database_flags_ = {"--database", pg_->create_database(db_name_), "--database-password-file",
                         pg_->password_file().string()};
    }
    serve_ = std::make_unique<Process>(std::string(STATETUNE_BINARY_DIR) + "/server/serving/statetune-serve",
                                       "serve");
    std::vector<std::string> serve_flags = {
        "--model", model_dir().string(), "--tokenizer", tokenizer(), "--adapters-dir",
        (work_ / "adapters").string(), "--tenants-file", (*suite_ / "tenants.json").string(),
        "--max-new-tokens", "64", "--drain-seconds", "1"};
    serve_flags.insert(serve_flags.end(), database_flags_.begin(), database_flags_.end());
    ASSERT_NO_FATAL_FAILURE(serve_->start(work_, serve_flags));
    // Listening is not ready: the model loads and (shared mode) the database is reached after the
    // port opens, and until then every call is UNAVAILABLE. A test whose job finishes quickly asked
    // serving too early on a loaded CI machine.
    ASSERT_NO_FATAL_FAILURE(serve_->wait_serving());
    train_ = std::make_unique<Process>(std::string(STATETUNE_BINARY_DIR) + "/server/training/statetune-train",
                                       "train");
    ASSERT_NO_FATAL_FAILURE(start_train());
  }
  void TearDown() override {
    train_.reset();
    serve_.reset();
    fs::remove_all(work_);
  }
  // Shared mode: the database, and a short lease so that a killed worker's job is resumed soon.
  std::vector<std::string> train_mode_flags() const {
    std::vector<std::string> flags = database_flags_;
    if (shared_mode()) flags.insert(flags.end(), {"--lease-seconds", "2"});
    return flags;
  }
  void start_train() {
    std::vector<std::string> flags = train_mode_flags();
    flags.insert(flags.end(), {"--model",
                          model_dir().string(),
                          "--tokenizer",
                          tokenizer(),
                          "--data-dir",
                          (work_ / "train-data").string(),
                          "--tenants-file",
                          (*suite_ / "tenants.json").string(),
                          "--serving-addr",
                          "127.0.0.1:" + std::to_string(serve_->port()),
                          "--serving-admin-key",
                          kAdminKey,
                          "--min-examples",
                          "4",
                          "--max-example-tokens",
                          "64",
                          "--checkpoint-every",
                          "2",
                          "--max-active-jobs",
                          "3",
                          "--tenant-storage-bytes",
                          "48KiB",
                          "--max-dataset-bytes",
                          "40KiB"});
    ASSERT_NO_FATAL_FAILURE(train_->start(work_, flags));
    ASSERT_NO_FATAL_FAILURE(train_->wait_serving());
  }
  static fs::path model_dir() { return *suite_ / "model"; }
  static std::string tokenizer() {
    return std::string(STATETUNE_SHARED_DIR) + "/models/gpt-neox-20b-tokenizer.json";
  }
  TrainingClient trainer(const char* key) const { return TrainingClient(train_->options(key)); }

  // Blocks until the job reports at least `step` steps.
  static void wait_for_step(TrainingClient& c, const std::string& id, int64_t step) {
    auto st = c.watch_job(
        id, 0, [&](const v1::JobEvent& e) { return !(e.has_step() && e.step().step() >= step); });
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  static v1::GenerateRequest sample(const std::string& adapter) {
    v1::GenerateRequest r;
    r.set_text("Spell the digit 7\n###\n");
    if (!adapter.empty()) r.mutable_adapter()->set_name(adapter);
    r.set_max_tokens(24);
    r.set_stop_at_eos(false);
    r.set_temperature(1.0f);
    r.set_seed(1234);
    return r;
  }

  static fs::path* suite_;
  fs::path work_;
  std::unique_ptr<Process> serve_, train_;
  test_support::PostgresServer* pg_ = nullptr;  // shared mode only
  std::string db_name_;
  std::vector<std::string> database_flags_;
};
fs::path* TrainingServiceTest::suite_ = nullptr;

TEST_F(TrainingServiceTest, UploadTrainWatchPublishAndServe) {
  auto c = trainer(kAcmeKey);
  const std::string ds = upload(c, "digits", dataset_text(16));
  ASSERT_FALSE(ds.empty());
  v1::DatasetInfo info;
  ASSERT_TRUE(c.get_dataset(ds, &info).ok());
  EXPECT_EQ(info.examples(), 16);
  EXPECT_EQ(info.tenant(), "acme");
  EXPECT_GT(info.max_example_tokens(), 3);

  auto req = job_request(ds, "digits", 12);
  req.set_validation_split(0.25);
  req.mutable_hyperparameters()->set_eval_every(6);
  v1::Job job;
  auto st = c.create_job(req, &job);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);

  const auto events = watch_all(c, job.id());
  ASSERT_FALSE(events.empty());
  std::vector<v1::JobState> states;
  std::vector<double> losses;
  int evals = 0;
  int64_t last_seq = 0;
  for (const auto& e : events) {
    EXPECT_GT(e.seq(), last_seq) << "events arrive in order, once";
    last_seq = e.seq();
    if (e.kind_case() == v1::JobEvent::kStateChange) states.push_back(e.state());
    if (e.has_step()) {
      losses.push_back(e.step().loss());
      EXPECT_EQ(e.step().step(), static_cast<int64_t>(losses.size()));
      EXPECT_EQ(e.step().total_steps(), 12);
      EXPECT_GE(e.step().eta_seconds(), 0);
      EXPECT_GT(e.step().tokens_per_second(), 0);
    }
    if (e.has_eval()) {
      ++evals;
      EXPECT_GT(e.eval().val_loss(), 0);
    }
  }
  ASSERT_EQ(states.size(), 3u) << train_->log();
  EXPECT_EQ(states[0], v1::JOB_STATE_QUEUED);
  EXPECT_EQ(states[1], v1::JOB_STATE_RUNNING);
  EXPECT_EQ(states[2], v1::JOB_STATE_SUCCEEDED) << train_->log();
  ASSERT_EQ(losses.size(), 12u);
  EXPECT_LT(losses.back(), losses.front())
      << "training lowers the loss on this tiny, repetitive data";
  EXPECT_GE(evals, 2);

  ASSERT_TRUE(c.get_job(job.id(), &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.step(), 12);
  EXPECT_EQ(job.adapter_name(), "digits");
  EXPECT_FALSE(job.adapter_version().empty());
  EXPECT_GT(job.eval_metrics().at("val_loss"), 0);

  // Published to statetune-serve without a restart, with the evaluation in its metadata.
  Client serving(serve_->options(kAcmeKey));
  v1::AdapterInfo adapter;
  ASSERT_TRUE(serving.get_adapter("digits", &adapter).ok());
  EXPECT_EQ(adapter.current_version(), job.adapter_version());
  ASSERT_FALSE(adapter.versions().empty());
  const auto& version = adapter.versions(adapter.versions_size() - 1);
  EXPECT_DOUBLE_EQ(version.eval_metrics().at("val_loss"), job.eval_metrics().at("val_loss"));
  EXPECT_NE(version.metadata_json().find(job.id()), std::string::npos);

  // Serving stores, byte for byte, the adapter the job trained (the file the job runner wrote for the
  // job, outputs/<tenant>/<job id>.safetensors), as its new current version.
  const fs::path trained = work_ / "train-data" / "outputs" / "acme" / (job.id() + ".safetensors");
  ASSERT_TRUE(fs::exists(trained)) << trained;
  const std::string trained_bytes = slurp(trained);
  if (shared_mode()) {  // the version's bytes are in the database
    EXPECT_EQ(pg_->psql("SELECT encode(sha256(bytes), 'hex') FROM adapter_versions WHERE tenant = 'acme' AND"
                        " name = 'digits' AND version = " + job.adapter_version(), db_name_),
              engine::Sha256::hex(trained_bytes) + "\n")
        << "the published adapter is not the trained one";
  } else {
    const fs::path stored = work_ / "adapters" / "acme" / "digits" / (job.adapter_version() + ".safetensors");
    ASSERT_TRUE(fs::exists(stored)) << stored;
    EXPECT_EQ(slurp(stored), trained_bytes) << "the published adapter is not the trained one";
  }
  EXPECT_EQ(version.size_bytes(), static_cast<int64_t>(trained_bytes.size()));
  const engine::Adapter a = engine::load_adapter(trained);
  EXPECT_EQ(a.methods, (std::vector<std::string>{"state_offset", "output_offset"}));
  EXPECT_EQ(a.extra_metadata.at("job").at("job_id").get<std::string>(), job.id());
  EXPECT_GT(a.state_offset.abs().max().item<float>(), 0.0f) << "12 steps left the state offsets at zero";
  // And serves it: the greedy stream with the adapter equals the offline engine's with that file.
  v1::GenerateRequest greedy = sample("digits");
  greedy.set_temperature(0);
  greedy.clear_seed();
  greedy.set_stop_at_eos(true);  // as statetune-engine generate does
  auto served = serving.generate(greedy);
  ASSERT_TRUE(served.status.ok()) << served.status.error_message();
  const auto offline = test_support::run_shell(
      std::string(STATETUNE_ENGINE_BIN) + " generate --threads 1 --model " +
          test_support::quote(model_dir().string()) + " --tokenizer " + test_support::quote(tokenizer()) +
          " --adapter " + test_support::quote(trained.string()) + " --max-tokens 24 --prompt " +
          test_support::quote(greedy.text()),
      work_);
  ASSERT_EQ(offline.code, 0) << test_support::describe(offline);
  EXPECT_EQ(served.text + "\n", offline.out);

  // Usable: the same seeded request samples differently with the trained adapter than without it.
  auto base = serving.generate(sample(""));
  auto tuned = serving.generate(sample("digits"));
  ASSERT_TRUE(base.status.ok()) << base.status.error_message();
  ASSERT_TRUE(tuned.status.ok()) << tuned.status.error_message();
  EXPECT_NE(base.token_ids, tuned.token_ids);

  // Listed, and in use no more: deletable.
  v1::ListJobsResponse jobs;
  ASSERT_TRUE(c.list_jobs(&jobs).ok());
  bool listed = false;
  for (const auto& j : jobs.jobs()) listed = listed || j.id() == job.id();
  EXPECT_TRUE(listed);

  const std::string m = http_get(train_->metrics_port(), "/metrics");
  EXPECT_GE(metric(m, "statetune_train_jobs{state=\"succeeded\"}"), 1) << m;
  EXPECT_GE(metric(m, "statetune_train_steps_total"), 12) << m;
  EXPECT_EQ(metric(m, "statetune_train_tokens_per_second"), 0) << "no job is running: " << m;
  EXPECT_GE(metric(m, "statetune_train_step_seconds_count"), 11) << m;
  EXPECT_GE(metric(m, "statetune_train_queue_wait_seconds_count"), 1) << m;
  EXPECT_GE(metric(m, "statetune_train_dataset_uploads_total{result=\"ok\"}"), 1) << m;
}

TEST_F(TrainingServiceTest, MalformedDatasetGivesLineNumberedReportAndNoJob) {
  auto c = trainer(kAcmeKey);
  v1::ListDatasetsResponse before;
  ASSERT_TRUE(c.list_datasets(&before).ok());
  std::string text = dataset_text(6);
  text += "{\"prompt\": \"no completion\"}\n";                           // line 7
  text += "{\"prompt\": \"a\", \"completion\": \"b\", \"label\": 1}\n";  // line 8
  text += "not json at all\n";                                           // line 9
  text += "{\"prompt\": \"" + std::string(400, 'x') + " " + std::string(400, 'y') +
          "\", \"completion\": \"z\"}\n";  // 10
  v1::DatasetInfo info;
  auto st = c.upload_dataset("broken", text, &info);
  ASSERT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT);
  const std::string& m = st.error_message();
  EXPECT_NE(m.find("4 problem"), std::string::npos) << m;
  EXPECT_NE(m.find("line 7: missing field \"completion\""), std::string::npos) << m;
  EXPECT_NE(m.find("line 8: unexpected field \"label\""), std::string::npos) << m;
  EXPECT_NE(m.find("line 9: not valid JSON"), std::string::npos) << m;
  EXPECT_NE(m.find("line 10: prompt + completion are"), std::string::npos) << m;
  v1::ListDatasetsResponse after;
  ASSERT_TRUE(c.list_datasets(&after).ok());
  EXPECT_EQ(after.datasets_size(), before.datasets_size()) << "a rejected upload stores nothing";

  // Too few examples for the service's minimum; a job on an unknown data set is refused without a
  // job.
  EXPECT_EQ(c.upload_dataset("tiny", dataset_text(2), &info).error_code(),
            StatusCode::INVALID_ARGUMENT);
  v1::ListJobsResponse jobs_before, jobs_after;
  ASSERT_TRUE(c.list_jobs(&jobs_before).ok());
  v1::Job job;
  EXPECT_EQ(c.create_job(job_request("ds-missing", "x", 2), &job).error_code(),
            StatusCode::NOT_FOUND);
  const std::string ds = upload(c, "small", dataset_text(4));
  auto bad = job_request(ds, "x", 2);
  bad.set_validation_split(0.5);  // leaves 2 training examples, below --min-examples 4
  EXPECT_EQ(c.create_job(bad, &job).error_code(), StatusCode::INVALID_ARGUMENT);
  bad = job_request(ds, "x", 2);
  bad.add_methods("no_such_method");
  EXPECT_EQ(c.create_job(bad, &job).error_code(), StatusCode::INVALID_ARGUMENT);
  bad = job_request(ds, "bad/name", 2);
  EXPECT_EQ(c.create_job(bad, &job).error_code(), StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(c.list_jobs(&jobs_after).ok());
  EXPECT_EQ(jobs_after.jobs_size(), jobs_before.jobs_size());
}

TEST_F(TrainingServiceTest, CancelRunningAndQueuedJobs) {
  auto c = trainer(kAcmeKey);
  const std::string ds = upload(c, "cancel-me", dataset_text(8));
  v1::Job running, queued;
  ASSERT_TRUE(c.create_job(job_request(ds, "long", 100000), &running).ok());
  ASSERT_TRUE(c.create_job(job_request(ds, "later", 5), &queued).ok());
  wait_for_step(c, running.id(), 2);
  // The dataset is in use while jobs on it are active.
  EXPECT_EQ(c.delete_dataset(ds).error_code(), StatusCode::FAILED_PRECONDITION);
  v1::Job after;
  ASSERT_TRUE(c.cancel_job(queued.id(), &after).ok());
  EXPECT_EQ(after.state(), v1::JOB_STATE_CANCELLED);
  ASSERT_TRUE(c.cancel_job(running.id(), &after).ok());
  const auto events = watch_all(c, running.id());
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), v1::JOB_STATE_CANCELLED);
  ASSERT_TRUE(c.get_job(running.id(), &after).ok());
  EXPECT_EQ(after.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_LT(after.step(), 100000);
  EXPECT_EQ(c.cancel_job(running.id(), &after).error_code(), StatusCode::FAILED_PRECONDITION);
  ASSERT_TRUE(c.get_job(queued.id(), &after).ok());
  EXPECT_EQ(after.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(after.step(), 0) << "a job cancelled while queued never ran";
  EXPECT_TRUE(c.delete_dataset(ds).ok());
  v1::DatasetInfo gone;
  EXPECT_EQ(c.get_dataset(ds, &gone).error_code(), StatusCode::NOT_FOUND);
}

TEST_F(TrainingServiceTest, KillNineMidJobThenRestartResumesFromCheckpoint) {
  const std::string ds = [&] {
    auto c = trainer(kAcmeKey);
    return upload(c, "crash", dataset_text(12));
  }();
  std::string job_id, queued_id;
  {
    auto c = trainer(kAcmeKey);
    v1::Job job;
    ASSERT_TRUE(c.create_job(job_request(ds, "crash", 40), &job).ok());
    job_id = job.id();
    ASSERT_TRUE(c.create_job(job_request(ds, "crash-next", 3), &job).ok());
    queued_id = job.id();
    wait_for_step(c, job_id, 5);
  }
  EXPECT_EQ(train_->stop(SIGKILL), 128 + SIGKILL);
  ASSERT_NO_FATAL_FAILURE(start_train());
  auto c = trainer(kAcmeKey);
  v1::Job job;
  ASSERT_TRUE(c.get_job(queued_id, &job).ok()) << "a queued job survives the crash";
  const auto events = watch_all(c, job_id);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), v1::JOB_STATE_SUCCEEDED) << train_->log();
  // After the restart the job's steps continue from a checkpoint (every 2 steps), not from step 1.
  // (Shared mode: the restarted worker claims the job once the dead one's lease expired.)
  const char* restart_marker = shared_mode() ? "resuming from the last checkpoint" : "service stopped";
  bool restarted = false;
  int64_t first_after_restart = -1, max_before = 0;
  for (const auto& e : events) {
    if (e.kind_case() == v1::JobEvent::kStateChange &&
        e.state_change().find(restart_marker) != std::string::npos) {
      restarted = true;
    }
    if (e.has_step()) {
      if (!restarted) max_before = std::max(max_before, e.step().step());
      if (restarted && first_after_restart < 0) first_after_restart = e.step().step();
    }
  }
  ASSERT_TRUE(restarted);
  EXPECT_GE(max_before, 5);
  EXPECT_GT(first_after_restart, 1) << "resumed from its last checkpoint";
  EXPECT_LE(first_after_restart, max_before + 1);
  ASSERT_TRUE(c.get_job(job_id, &job).ok());
  EXPECT_EQ(job.resumes(), 1);
  EXPECT_EQ(job.step(), 40);
  // The job that was queued before the crash runs afterwards.
  const auto next = watch_all(c, queued_id);
  ASSERT_FALSE(next.empty());
  EXPECT_EQ(next.back().state(), v1::JOB_STATE_SUCCEEDED) << train_->log();
}

TEST_F(TrainingServiceTest, UnreadableCheckpointAfterCrashFailsTheJobWithTheReason) {
  std::string job_id;
  {
    auto c = trainer(kAcmeKey);
    const std::string ds = upload(c, "broken-ckpt", dataset_text(8));
    v1::Job job;
    ASSERT_TRUE(c.create_job(job_request(ds, "broken", 100000), &job).ok());
    job_id = job.id();
    wait_for_step(c, job_id, 3);
  }
  EXPECT_EQ(train_->stop(SIGKILL), 128 + SIGKILL);
  const fs::path state =
      work_ / "train-data" / "checkpoints" / job_id / "trainer_state.safetensors";
  ASSERT_TRUE(fs::exists(state));
  std::ofstream(state, std::ios::trunc) << "not a checkpoint";
  if (shared_mode()) {  // where the next worker reads it from
    pg_->psql("UPDATE train_checkpoint_files SET bytes = 'not a checkpoint'::bytea WHERE job_id = '" + job_id +
                  "' AND name = 'trainer_state.safetensors'",
              db_name_);
  }
  ASSERT_NO_FATAL_FAILURE(start_train());
  auto c = trainer(kAcmeKey);
  const auto events = watch_all(c, job_id);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), v1::JOB_STATE_FAILED) << train_->log();
  v1::Job job;
  ASSERT_TRUE(c.get_job(job_id, &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.error().code(), "INTERNAL");
  EXPECT_NE(job.error().message().find("trainer_state.safetensors"), std::string::npos)
      << job.error().message();
  EXPECT_EQ(job.resumes(), 1);
}

TEST_F(TrainingServiceTest, SigtermMidJobLeavesItResumable) {
  auto c = trainer(kAcmeKey);
  const std::string ds = upload(c, "term", dataset_text(10));
  v1::Job job;
  ASSERT_TRUE(c.create_job(job_request(ds, "term", 30), &job).ok());
  wait_for_step(c, job.id(), 4);
  EXPECT_EQ(train_->stop(SIGTERM), 0) << train_->log();
  ASSERT_NO_FATAL_FAILURE(start_train());
  auto again = trainer(kAcmeKey);
  const auto events = watch_all(again, job.id());
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), v1::JOB_STATE_SUCCEEDED) << train_->log();
  ASSERT_TRUE(again.get_job(job.id(), &job).ok());
  EXPECT_EQ(job.resumes(), 1);
  EXPECT_EQ(job.step(), 30);
}

TEST_F(TrainingServiceTest, PerTenantLimitsOnStorageAndActiveJobs) {
  auto c = trainer(kAcmeKey);
  v1::DatasetInfo info;
  // Above --max-dataset-bytes (40 KiB).
  std::string big = dataset_text(1000);
  ASSERT_GT(big.size(), 40u << 10);
  EXPECT_EQ(c.upload_dataset("big", big, &info).error_code(), StatusCode::RESOURCE_EXHAUSTED);
  // Within it, but the tenant's data sets would pass --tenant-storage-bytes (48 KiB) after two.
  std::string medium = dataset_text(500);
  ASSERT_LT(medium.size(), 40u << 10);
  ASSERT_GT(medium.size(), 16u << 10);
  auto st = c.upload_dataset("m1", medium, &info);
  ASSERT_TRUE(st.ok()) << st.error_message();
  const std::string m1 = info.id();
  EXPECT_EQ(c.upload_dataset("m2", medium, &info).error_code(), StatusCode::RESOURCE_EXHAUSTED);
  // Another tenant's storage is its own.
  auto beta = trainer(kBetaKey);
  st = beta.upload_dataset("m1", medium, &info);
  EXPECT_TRUE(st.ok()) << st.error_message();
  ASSERT_TRUE(c.delete_dataset(m1).ok());

  // --max-active-jobs 3 queued or running jobs per tenant.
  const std::string ds = upload(c, "limits", dataset_text(8));
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    v1::Job job;
    const auto created = c.create_job(job_request(ds, "lim", 100000), &job);
    ASSERT_TRUE(created.ok()) << created.error_message();
    ids.push_back(job.id());
  }
  v1::Job job;
  EXPECT_EQ(c.create_job(job_request(ds, "lim", 100000), &job).error_code(),
            StatusCode::RESOURCE_EXHAUSTED);
  for (const auto& id : ids) ASSERT_TRUE(c.cancel_job(id, &job).ok());
  for (const auto& id : ids) {
    const auto events = watch_all(c, id);
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().state(), v1::JOB_STATE_CANCELLED);
  }
}

TEST_F(TrainingServiceTest, CommandLineUploadsTrainsAndWatches) {
  const fs::path file = work_ / "cli.jsonl";
  std::ofstream(file) << dataset_text(8);
  const std::string cli = std::string(STATETUNE_BINARY_DIR) + "/client/statetune";
  const std::string common =
      " --train-addr 127.0.0.1:" + std::to_string(train_->port()) + " --api-key " + kAcmeKey;
  auto [up, rc] = run_command(cli + " datasets upload --name cli --file " + file.string() + common);
  ASSERT_EQ(rc, 0) << up;
  const std::string id = up.substr(0, up.find(' '));
  ASSERT_EQ(id.rfind("ds-", 0), 0u) << up;
  auto [out, rc2] =
      run_command(cli + " jobs create --dataset " + id +
                  " --adapter cli --max-steps 4 --batch-size 2 --max-length 32 --watch" + common);
  EXPECT_EQ(rc2, 0) << out;
  EXPECT_NE(out.find("step 4/4"), std::string::npos) << out;
  EXPECT_NE(out.find("loss "), std::string::npos) << out;
  EXPECT_NE(out.find("ETA "), std::string::npos) << out;
  EXPECT_NE(out.find("succeeded: published as cli"), std::string::npos) << out;
  auto [list, rc3] = run_command(cli + " jobs list" + common);
  EXPECT_EQ(rc3, 0);
  EXPECT_NE(list.find("succeeded"), std::string::npos) << list;
  auto [bad, rc4] = run_command(cli + " datasets get --id ds-none" + common + " 2>&1");
  EXPECT_EQ(rc4, 2);
  EXPECT_NE(bad.find("NOT_FOUND"), std::string::npos) << bad;
}

TEST_F(TrainingServiceTest, TenantsCannotSeeOrUseEachOthersDataJobsOrAdapters) {
  auto acme = trainer(kAcmeKey);
  auto beta = trainer(kBetaKey);
  const std::string ds = upload(acme, "private", dataset_text(8));
  v1::Job job;
  ASSERT_TRUE(acme.create_job(job_request(ds, "secret", 2), &job).ok());
  const auto done = watch_all(acme, job.id());
  ASSERT_FALSE(done.empty());
  ASSERT_EQ(done.back().state(), v1::JOB_STATE_SUCCEEDED) << train_->log();

  v1::DatasetInfo info;
  EXPECT_EQ(beta.get_dataset(ds, &info).error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(beta.delete_dataset(ds).error_code(), StatusCode::NOT_FOUND);
  v1::ListDatasetsResponse list;
  ASSERT_TRUE(beta.list_datasets(&list).ok());
  for (const auto& d : list.datasets()) EXPECT_NE(d.id(), ds);
  v1::Job other;
  EXPECT_EQ(beta.get_job(job.id(), &other).error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(beta.cancel_job(job.id(), &other).error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(beta.watch_job(job.id(), 0, [](const v1::JobEvent&) { return true; }).error_code(),
            StatusCode::NOT_FOUND);
  EXPECT_EQ(beta.create_job(job_request(ds, "stolen", 2), &other).error_code(),
            StatusCode::NOT_FOUND);
  v1::ListJobsResponse jobs;
  ASSERT_TRUE(beta.list_jobs(&jobs).ok());
  for (const auto& j : jobs.jobs()) EXPECT_NE(j.id(), job.id());

  Client beta_serving(serve_->options(kBetaKey));
  v1::AdapterInfo adapter;
  EXPECT_EQ(beta_serving.get_adapter("secret", &adapter).error_code(), StatusCode::NOT_FOUND);
  auto gen = beta_serving.generate(sample("secret"));
  EXPECT_EQ(gen.status.error_code(), StatusCode::NOT_FOUND);
  Client acme_serving(serve_->options(kAcmeKey));
  EXPECT_TRUE(acme_serving.get_adapter("secret", &adapter).ok());

  // No key / the admin key get nothing from the training service.
  auto anon = trainer("");
  EXPECT_EQ(anon.list_jobs(&jobs).error_code(), StatusCode::UNAUTHENTICATED);
  auto admin = trainer(kAdminKey);
  EXPECT_EQ(admin.list_jobs(&jobs).error_code(), StatusCode::PERMISSION_DENIED);
  auto wrong = trainer("not-a-key");
  EXPECT_EQ(wrong.get_dataset(ds, &info).error_code(), StatusCode::UNAUTHENTICATED);
}

}  // namespace
}  // namespace statetune::training

namespace statetune::training {
namespace {

// statetune-train with TLS, as statetune-serve has it (--tls-cert/--tls-key): clients that trust its
// CA are served; plaintext and wrong-CA clients are refused with UNAVAILABLE.
TEST_F(TrainingServiceTest, TlsServesClientsThatTrustItsCaOnly) {
  if (!test_support::have_openssl()) GTEST_SKIP() << "openssl is not installed (scripts/setup.sh installs it)";
  const fs::path dir = work_ / "tls";
  ASSERT_NO_FATAL_FAILURE(test_support::make_test_certificates(dir));
  Process tls(std::string(STATETUNE_BINARY_DIR) + "/server/training/statetune-train", "train-tls");
  std::vector<std::string> flags = train_mode_flags();
  flags.insert(flags.end(),
               {"--model", model_dir().string(), "--tokenizer", tokenizer(), "--data-dir", (dir / "train-data").string(),
                "--tenants-file", (*suite_ / "tenants.json").string(), "--serving-addr",
                "127.0.0.1:" + std::to_string(serve_->port()), "--serving-admin-key", kAdminKey, "--tls-cert",
                (dir / "server.pem").string(), "--tls-key", (dir / "server.key").string()});
  ASSERT_NO_FATAL_FAILURE(tls.start(dir, flags, dir / "ca.pem"));
  EXPECT_NE(tls.log().find("tls=true"), std::string::npos) << tls.log();

  // (a) The CA's holder: an authenticated call and an upload go through.
  TrainingClient good(tls.options(kAcmeKey));
  v1::ListDatasetsResponse list;
  ASSERT_TRUE(good.list_datasets(&list).ok()) << tls.log();
  EXPECT_FALSE(upload(good, "over-tls", dataset_text(8)).empty());

  // (b) Plaintext against the TLS port: UNAVAILABLE, not a hang or a garbled answer.
  ClientOptions plain = tls.options(kAcmeKey);
  plain.tls_ca_file.clear();
  plain.timeout = std::chrono::seconds(20);
  EXPECT_EQ(TrainingClient(plain).list_datasets(&list).error_code(), StatusCode::UNAVAILABLE);

  // (c) TLS with a CA that did not sign the server certificate: the handshake fails, UNAVAILABLE.
  ClientOptions wrong = tls.options(kAcmeKey);
  wrong.tls_ca_file = (dir / "other-ca.pem").string();
  wrong.timeout = std::chrono::seconds(20);
  EXPECT_EQ(TrainingClient(wrong).list_datasets(&list).error_code(), StatusCode::UNAVAILABLE);
  EXPECT_EQ(tls.stop(), 0) << tls.log();
}

}  // namespace
}  // namespace statetune::training
