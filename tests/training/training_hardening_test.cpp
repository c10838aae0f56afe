// Failure paths of statetune-train through the real binaries on loopback: hostile inputs get a
// precise, bounded status (never UNKNOWN) that is logged and counted; a full disk (a real
// RLIMIT_FSIZE on the service process) changes nothing and leaves no temporary files; a stored
// record that cannot be read is skipped at start-up; publishing retries while statetune-serve is
// down and fails after the bounded time with a message naming no server path.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "client/statetune_client.h"
#include "client/training_client.h"
#include "server/common/status_codes.h"
#include "server/engine/util/sha256.h"
#include "tests/support/loopback_http.h"
#include "tests/support/serving_fixture.h"
#include "tests/support/service_process.h"

namespace statetune::training {
namespace {
namespace fs = std::filesystem;
namespace v1 = ::statetune::v1;
using client::Client;
using client::TrainingClient;
using grpc::StatusCode;
using Process = test_support::ServiceProcess;

using test_support::kAcmeKey;
using test_support::kAdminKey;

// Failed RPCs of `method` with `code` in the service's metrics.
double rpc_errors(const Process& p, const std::string& method, const std::string& code) {
  return test_support::metric_value(test_support::http_get(p.metrics_port(), "/metrics"),
                                    "statetune_train_rpc_errors_total",
                                    {"code=\"" + code + "\"", "method=\"" + method + "\""});
}

std::string dataset_text(int n) {
  const char* words[] = {"zero", "one", "two", "three", "four",
                         "five", "six", "seven", "eight", "nine"};
  std::string out;
  for (int i = 0; i < n; ++i) {
    out += nlohmann::json({{"prompt", "Spell the digit " + std::to_string(i % 10)},
                           {"completion", words[i % 10]}})
               .dump() +
           "\n";
  }
  return out;
}

// A loopback port nothing listens on (the kernel picked it free; it is closed again).
int unused_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// Every `*.tmp` file under `root`.
std::vector<fs::path> temporary_files(const fs::path& root) {
  std::vector<fs::path> out;
  if (!fs::exists(root)) return out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (e.path().extension() == ".tmp") out.push_back(e.path());
  }
  return out;
}

size_t count_files(const fs::path& dir, const std::string& extension) {
  size_t n = 0;
  if (!fs::exists(dir)) return 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) n += e.path().extension() == extension;
  return n;
}

class TrainingHardeningTest : public ::testing::Test {
 public:
  static void SetUpTestSuite() {
    work_ = new fs::path(fs::temp_directory_path() /
                         ("statetune_harden_" + std::to_string(::getpid())));
    fs::remove_all(*work_);
    fs::create_directories(*work_);
    test_support::write_serving_files(*work_, /*adapters=*/0);  // model/ and tenants.json
  }
  static void TearDownTestSuite() {
    fs::remove_all(*work_);
    delete work_;
  }

  static std::string tokenizer() {
    return std::string(STATETUNE_SHARED_DIR) + "/models/gpt-neox-20b-tokenizer.json";
  }
  // statetune-train on its own data dir `name`, publishing to `serving_port`.
  static void start_train(Process& p, const std::string& name, int serving_port,
                          std::vector<std::string> extra = {}) {
    std::vector<std::string> flags = {"--model", (*work_ / "model").string(),
                                      "--tokenizer", tokenizer(),
                                      "--data-dir", (*work_ / name).string(),
                                      "--tenants-file", (*work_ / "tenants.json").string(),
                                      "--serving-addr", "127.0.0.1:" + std::to_string(serving_port),
                                      "--serving-admin-key", kAdminKey,
                                      "--min-examples", "4",
                                      "--max-example-tokens", "64",
                                      "--max-active-jobs", "8"};
    flags.insert(flags.end(), extra.begin(), extra.end());
    ASSERT_NO_FATAL_FAILURE(p.start(*work_, flags));
    ASSERT_NO_FATAL_FAILURE(p.wait_serving());
  }
  static void start_serve(Process& p, const std::string& name, int port) {
    ASSERT_NO_FATAL_FAILURE(p.start(
        *work_, {"--model", (*work_ / "model").string(), "--tokenizer", tokenizer(),
                 "--adapters-dir", (*work_ / name).string(), "--tenants-file",
                 (*work_ / "tenants.json").string(), "--drain-seconds", "1", "--listen",
                 "127.0.0.1:" + std::to_string(port)}));
  }
  static v1::CreateJobRequest job_request(const std::string& dataset, const std::string& adapter,
                                          int64_t steps) {
    v1::CreateJobRequest r;
    r.set_dataset_id(dataset);
    r.set_adapter_name(adapter);
    r.mutable_hyperparameters()->set_batch_size(2);
    r.mutable_hyperparameters()->set_max_steps(steps);
    r.mutable_hyperparameters()->set_max_length(32);
    return r;
  }
  static std::string upload(TrainingClient& c, const std::string& name, const std::string& text) {
    v1::DatasetInfo info;
    auto st = c.upload_dataset(name, text, &info);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return info.id();
  }
  static std::vector<v1::JobEvent> watch_all(TrainingClient& c, const std::string& id) {
    std::vector<v1::JobEvent> events;
    auto st = c.watch_job(id, 0, [&](const v1::JobEvent& e) {
      events.push_back(e);
      return true;
    });
    EXPECT_TRUE(st.ok()) << st.error_message();
    return events;
  }

  static fs::path* work_;
};
fs::path* TrainingHardeningTest::work_ = nullptr;

TEST_F(TrainingHardeningTest, HostileInputsGetPreciseBoundedStatusesThatAreLoggedAndCounted) {
  Process train(std::string(STATETUNE_BINARY_DIR) + "/server/training/statetune-train", "hostile");
  ASSERT_NO_FATAL_FAILURE(start_train(train, "hostile-data", unused_port(),
                                      {"--max-dataset-bytes", "64MiB", "--tenant-storage-bytes",
                                       "256MiB", "--max-example-tokens", "4096"}));
  TrainingClient c(train.options(kAcmeKey));
  v1::DatasetInfo info;
  int invalid_uploads = 0;

  // A number beyond double's range (nlohmann throws out_of_range, not parse_error).
  auto st = c.upload_dataset("huge-number",
                             dataset_text(4) + "{\"prompt\": 1e999999, \"completion\": \"x\"}\n",
                             &info);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_NE(st.error_message().find("line 5: "), std::string::npos) << st.error_message();
  ++invalid_uploads;

  // A value nested 100,000 deep in a line: a clean report, and the service is still up.
  const std::string deep = "{\"prompt\": " + std::string(100000, '[') + std::string(100000, ']') +
                           ", \"completion\": \"x\"}\n";
  st = c.upload_dataset("deep", dataset_text(4) + deep, &info);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_NE(st.error_message().find("line 5: nests deeper than"), std::string::npos)
      << st.error_message().substr(0, 500);
  ++invalid_uploads;

  // 2,000 invalid lines: the first problems with their lines and a count of the rest, and a
  // status small enough for gRPC metadata (not RESOURCE_EXHAUSTED from the transport).
  std::string bad_lines;
  for (int i = 0; i < 2000; ++i) {
    bad_lines += "{\"" + std::string(300, 'k') + std::to_string(i) + "\": \"v\"}\n";
  }
  st = c.upload_dataset("many-bad", bad_lines, &info);
  ASSERT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << st.error_message().substr(0, 500);
  EXPECT_LE(st.error_message().size(), 4096u);
  EXPECT_NE(st.error_message().find("the data set has 6000 problems: line 1: "),
            std::string::npos)
      << st.error_message();
  EXPECT_NE(st.error_message().find(" more"), std::string::npos) << st.error_message();
  EXPECT_NE(st.error_message().find("line 2: "), std::string::npos) << st.error_message();
  ++invalid_uploads;

  // A 20 MB single line: rejected on its length (before parsing or tokenizing it whole).
  const std::string long_line =
      "{\"prompt\": \"" + std::string(20 << 20, 'a') + "\", \"completion\": \"x\"}\n";
  st = c.upload_dataset("long-line", dataset_text(4) + long_line, &info);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("line 5: the line is 20971"), std::string::npos)
      << st.error_message().substr(0, 500);
  ++invalid_uploads;

  // Headers the client library never sends, through a raw stub: one message, then the answer.
  auto raw_upload = [&train](const v1::UploadDatasetRequest& msg) {
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(train.port()),
                                       grpc::InsecureChannelCredentials());
    auto stub = v1::Training::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", std::string("Bearer ") + kAcmeKey);
    v1::DatasetInfo reply;
    auto writer = stub->UploadDataset(&ctx, &reply);
    writer->Write(msg);
    writer->WritesDone();
    return writer->Finish();
  };
  // total_bytes 2^64-1 in the header (the client library always sends the real size).
  {
    v1::UploadDatasetRequest header;
    header.mutable_header()->set_name("max-size");
    header.mutable_header()->set_total_bytes(std::numeric_limits<uint64_t>::max());
    st = raw_upload(header);
    EXPECT_EQ(st.error_code(), StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  }

  // A header sha256 that is not the data's: refused, nothing stored.
  {
    const std::string text = dataset_text(8);
    v1::UploadDatasetRequest msg;
    msg.mutable_header()->set_name("wrong-sha");
    msg.mutable_header()->set_total_bytes(text.size());
    msg.mutable_header()->set_sha256(engine::Sha256::hex(text + "x"));
    msg.set_data(text);
    st = raw_upload(msg);
    EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << st.error_message();
    EXPECT_NE(st.error_message().find("sha256 mismatch"), std::string::npos) << st.error_message();
    ++invalid_uploads;
    v1::ListDatasetsResponse list;
    ASSERT_TRUE(c.list_datasets(&list).ok());
    for (const auto& d : list.datasets()) EXPECT_NE(d.name(), "wrong-sha");
  }

  // A stored data set records the digest its bytes have (computed once, as the chunks arrived).
  {
    const std::string text = dataset_text(8);
    v1::DatasetInfo info;
    ASSERT_TRUE(c.upload_dataset("digest", text, &info, /*chunk_bytes=*/100).ok());
    EXPECT_EQ(info.sha256(), engine::Sha256::hex(text));
  }

  // A uint64 seed at or above 2^63 is a valid seed.
  const std::string ds = upload(c, "ok", dataset_text(8));
  auto req = job_request(ds, "seeded", 1000000);
  req.mutable_hyperparameters()->set_seed(std::numeric_limits<uint64_t>::max());
  v1::Job job;
  st = c.create_job(req, &job);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(job.request().hyperparameters().seed(), std::numeric_limits<uint64_t>::max());
  ASSERT_TRUE(c.cancel_job(job.id(), &job).ok());

  // Counted by method and code, logged, and never UNKNOWN.
  EXPECT_EQ(rpc_errors(train, "UploadDataset", "invalid_argument"), invalid_uploads);
  EXPECT_EQ(rpc_errors(train, "UploadDataset", "resource_exhausted"), 1);
  const std::string m = test_support::http_get(train.metrics_port(), "/metrics");
  EXPECT_EQ(m.find("code=\"UNKNOWN\""), std::string::npos) << m;
  EXPECT_NE(train.log().find("rpc.failed"), std::string::npos);
}

// With the storage under `data` running out after `first` was stored: failed writes answer a real
// status naming no path, change nothing on disk or in the listings, leave no temporary file, are
// counted and logged; after a restart with room again, a leftover temporary file is gone and
// nothing is lost. `make_room` runs between the stop and the restart.
void full_storage_scenario(Process& train, TrainingClient& c, const fs::path& data,
                           const std::string& first, const std::function<void()>& make_room,
                           const std::function<void()>& restart) {
  // A data set too large for what is left: its write fails part way.
  v1::DatasetInfo info;
  std::string big;
  while (big.size() < (600u << 10)) big += dataset_text(100);
  auto st = c.upload_dataset("too-big-for-the-disk", big, &info);
  EXPECT_EQ(st.error_code(), StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_EQ(st.error_message().find('/'), std::string::npos) << st.error_message();
  EXPECT_TRUE(temporary_files(data).empty());

  // Small uploads until the database's writes fail too.
  std::vector<std::string> stored = {first};
  StatusCode failed = StatusCode::OK;
  for (int i = 0; i < 400 && failed == StatusCode::OK; ++i) {
    st = c.upload_dataset("small", dataset_text(4), &info);
    if (st.ok()) {
      stored.push_back(info.id());
    } else {
      failed = st.error_code();
    }
  }
  // ENOSPC is SQLITE_FULL (RESOURCE_EXHAUSTED); SQLite reports a write past a file-size limit
  // as a plain write error (INTERNAL). Either way a real status that names no path.
  ASSERT_TRUE(failed == StatusCode::RESOURCE_EXHAUSTED || failed == StatusCode::INTERNAL)
      << failed << " " << st.error_message() << "\n" << train.log();
  EXPECT_EQ(st.error_message().find('/'), std::string::npos) << st.error_message();
  const std::string code = common::status_code_name(failed);
  // Memory and disk as they were: every stored data set listed, one file each, no leftovers.
  v1::ListDatasetsResponse list;
  ASSERT_TRUE(c.list_datasets(&list).ok());
  EXPECT_EQ(list.datasets_size(), static_cast<int>(stored.size()));
  EXPECT_EQ(count_files(data / "datasets", ".jsonl"), stored.size());
  EXPECT_TRUE(temporary_files(data).empty());

  // Database writes of other RPCs fail the same way, changing nothing.
  v1::Job job;
  st = c.create_job(TrainingHardeningTest::job_request(first, "after", 1000000), &job);
  EXPECT_EQ(st.error_code(), failed) << st.error_message();
  v1::ListJobsResponse jobs;
  ASSERT_TRUE(c.list_jobs(&jobs).ok());
  EXPECT_EQ(jobs.jobs_size(), 0);
  st = c.delete_dataset(first);
  EXPECT_EQ(st.error_code(), failed) << st.error_message();
  ASSERT_TRUE(c.get_dataset(first, &info).ok()) << "a failed delete keeps the data set";
  EXPECT_TRUE(fs::exists(data / "datasets" / "acme" / (first + ".jsonl")));

  EXPECT_GE(rpc_errors(train, "UploadDataset", "resource_exhausted"), 1);
  EXPECT_GE(rpc_errors(train, "UploadDataset", code), 1);
  EXPECT_EQ(rpc_errors(train, "CreateJob", code), 1);
  EXPECT_EQ(rpc_errors(train, "DeleteDataset", code), 1);
  EXPECT_NE(train.log().find("rpc.storage_error"), std::string::npos);

  // A leftover of a write a crash interrupted is removed at the next start; nothing is lost.
  EXPECT_EQ(train.stop(), 0) << train.log();
  make_room();
  const fs::path leftover = data / "datasets" / "acme" / "ds-interrupted.jsonl.tmp";
  std::ofstream(leftover) << "{\"prompt\": \"half";
  ASSERT_TRUE(fs::exists(leftover));
  ASSERT_NO_FATAL_FAILURE(restart());
  EXPECT_FALSE(fs::exists(leftover));
  TrainingClient again(train.options(kAcmeKey));
  ASSERT_TRUE(again.list_datasets(&list).ok());
  EXPECT_EQ(list.datasets_size(), static_cast<int>(stored.size()));
  st = again.create_job(TrainingHardeningTest::job_request(first, "after", 1000000), &job);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_TRUE(again.cancel_job(job.id(), &job).ok());
}

TEST_F(TrainingHardeningTest, FileSizeLimitChangesNothingAnswersRealStatusesAndLeavesNoTemporaryFiles) {
  Process train(std::string(STATETUNE_BINARY_DIR) + "/server/training/statetune-train", "fsize");
  // A real limit on the service process: its writes past 256 KiB in any file fail with EFBIG
  // (SIGXFSZ, which would kill it, must be ignored by the service). The child inherits the limit;
  // this process restores its own once the service runs.
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  rlimit limited = saved;
  limited.rlim_cur = 256 << 10;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limited), 0);
  start_train(train, "fsize-data", unused_port());
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &saved), 0);
  ASSERT_FALSE(HasFatalFailure());
  TrainingClient c(train.options(kAcmeKey));
  const std::string first = upload(c, "first", dataset_text(8));
  ASSERT_FALSE(first.empty());
  full_storage_scenario(
      train, c, *work_ / "fsize-data", first, [] {},
      [&] { start_train(train, "fsize-data", unused_port()); });
}

TEST_F(TrainingHardeningTest, FullFilesystemChangesNothingAnswersRealStatusesAndLeavesNoTemporaryFiles) {
  // A real, small filesystem (tmpfs) under the data dir: needs root (CAP_SYS_ADMIN).
  const fs::path data = *work_ / "tmpfs-data";
  fs::create_directories(data);
  if (std::system(("mount -t tmpfs -o size=512k tmpfs " + data.string() + " 2>/dev/null").c_str()) !=
      0) {
    GTEST_SKIP() << "cannot mount a tmpfs here (not root); the file-size-limit test covers the path";
  }
  struct Unmount {
    fs::path at;
    ~Unmount() { (void)std::system(("umount " + at.string()).c_str()); }
  } unmount{data};
  Process train(std::string(STATETUNE_BINARY_DIR) + "/server/training/statetune-train", "tmpfs");
  ASSERT_NO_FATAL_FAILURE(start_train(train, "tmpfs-data", unused_port()));
  TrainingClient c(train.options(kAcmeKey));
  const std::string first = upload(c, "first", dataset_text(8));
  ASSERT_FALSE(first.empty());
  full_storage_scenario(
      train, c, data, first,
      [&] {
        ASSERT_EQ(std::system(("mount -o remount,size=16m " + data.string()).c_str()), 0);
      },
      [&] { start_train(train, "tmpfs-data", unused_port()); });
}

TEST_F(TrainingHardeningTest, UnreadableStoredRecordsAreSkippedAtStartup) {
  const fs::path data = *work_ / "bad-records";
  Process train(std::string(STATETUNE_BINARY_DIR) + "/server/training/statetune-train", "records");
  ASSERT_NO_FATAL_FAILURE(start_train(train, "bad-records", unused_port()));
  std::string broken_job, lost_data_job;
  {
    TrainingClient c(train.options(kAcmeKey));
    const std::string ds = upload(c, "keep", dataset_text(8));
    const std::string lost = upload(c, "lost", dataset_text(8));
    v1::Job job;
    // The worker runs one job at a time: the first blocks it, the others stay queued.
    ASSERT_TRUE(c.create_job(job_request(ds, "blocker", 1000000), &job).ok());
    ASSERT_TRUE(c.create_job(job_request(ds, "broken", 2), &job).ok());
    broken_job = job.id();
    ASSERT_TRUE(c.create_job(job_request(lost, "lost", 2), &job).ok());
    lost_data_job = job.id();
  }
  EXPECT_EQ(train.stop(), 0) << train.log();

  // A job row whose spec nests 100,000 deep, and a data set file that no longer parses.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((data / "jobs.db").c_str(), &db), SQLITE_OK);
  const std::string spec = std::string(100000, '[') + std::string(100000, ']');
  sqlite3_stmt* q = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "UPDATE jobs SET spec=? WHERE id=?", -1, &q, nullptr), SQLITE_OK);
  sqlite3_bind_text(q, 1, spec.c_str(), static_cast<int>(spec.size()), SQLITE_TRANSIENT);
  sqlite3_bind_text(q, 2, broken_job.c_str(), -1, SQLITE_TRANSIENT);
  ASSERT_EQ(sqlite3_step(q), SQLITE_DONE);
  sqlite3_finalize(q);
  sqlite3_close(db);
  for (const auto& e : fs::directory_iterator(data / "datasets" / "acme")) {
    // Both files are damaged; the "keep" job (running, cancelled below) does not matter.
    std::ofstream(e.path(), std::ios::trunc) << "{not json\n";
  }

  ASSERT_NO_FATAL_FAILURE(start_train(train, "bad-records", unused_port()));
  TrainingClient c(train.options(kAcmeKey));
  v1::ListJobsResponse jobs;
  ASSERT_TRUE(c.list_jobs(&jobs).ok());
  EXPECT_EQ(jobs.jobs_size(), 2) << "the unreadable job is skipped, the others are listed";
  EXPECT_NE(train.log().find("store.bad_record"), std::string::npos) << train.log();
  // The job whose data set no longer loads fails with a reason that names no server path.
  const auto events = watch_all(c, lost_data_job);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), v1::JOB_STATE_FAILED);
  v1::Job job;
  ASSERT_TRUE(c.get_job(lost_data_job, &job).ok());
  EXPECT_EQ(job.error().code(), "FAILED_PRECONDITION");
  EXPECT_EQ(job.error().message().find(work_->string()), std::string::npos)
      << job.error().message();
  EXPECT_EQ(job.error().message().find('/'), std::string::npos) << job.error().message();
}

TEST_F(TrainingHardeningTest, PublishingRetriesUntilServingIsUpThenFailsAfterTheBoundWithoutPaths) {
  const int serving_port = unused_port();
  Process train(std::string(STATETUNE_BINARY_DIR) + "/server/training/statetune-train", "publish");
  ASSERT_NO_FATAL_FAILURE(start_train(train, "publish-data", serving_port,
                                      {"--publish-retry-seconds", "300"}));
  TrainingClient c(train.options(kAcmeKey));
  const std::string ds = upload(c, "pub", dataset_text(8));
  v1::Job job;
  ASSERT_TRUE(c.create_job(job_request(ds, "late", 2), &job).ok());
  // Training finishes; publishing fails (nothing listens) and the job says it will try again.
  bool retrying = false;
  auto st = c.watch_job(job.id(), 0, [&](const v1::JobEvent& e) {
    retrying = e.state() == v1::JOB_STATE_RUNNING &&
               e.state_change().find("publishing to the serving service failed (UNAVAILABLE)") !=
                   std::string::npos;
    return !retrying;
  });
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_TRUE(retrying) << train.log();
  ASSERT_TRUE(c.get_job(job.id(), &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_RUNNING);

  // Serving comes up on that port: the job publishes there.
  Process serve(std::string(STATETUNE_BINARY_DIR) + "/server/serving/statetune-serve", "serve");
  ASSERT_NO_FATAL_FAILURE(start_serve(serve, "publish-adapters", serving_port));
  const auto events = watch_all(c, job.id());
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), v1::JOB_STATE_SUCCEEDED) << train.log();
  ASSERT_TRUE(c.get_job(job.id(), &job).ok());
  Client serving(serve.options(kAcmeKey));
  v1::AdapterInfo adapter;
  ASSERT_TRUE(serving.get_adapter("late", &adapter).ok());
  EXPECT_EQ(adapter.current_version(), job.adapter_version());

  // With serving never up, the job fails once the retry time is spent, naming no server path.
  Process lonely(std::string(STATETUNE_BINARY_DIR) + "/server/training/statetune-train", "lonely");
  ASSERT_NO_FATAL_FAILURE(start_train(lonely, "lonely-data", unused_port(),
                                      {"--publish-retry-seconds", "2"}));
  TrainingClient l(lonely.options(kAcmeKey));
  const std::string lds = upload(l, "pub", dataset_text(8));
  ASSERT_TRUE(l.create_job(job_request(lds, "never", 2), &job).ok());
  const auto lonely_events = watch_all(l, job.id());
  ASSERT_FALSE(lonely_events.empty());
  EXPECT_EQ(lonely_events.back().state(), v1::JOB_STATE_FAILED) << lonely.log();
  ASSERT_TRUE(l.get_job(job.id(), &job).ok());
  EXPECT_EQ(job.error().code(), "UNAVAILABLE");
  EXPECT_NE(job.error().message().find("publishing the adapter to the serving service failed"),
            std::string::npos)
      << job.error().message();
  EXPECT_EQ(job.error().message().find('/'), std::string::npos) << job.error().message();
}

}  // namespace
}  // namespace statetune::training
