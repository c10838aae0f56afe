// Hostile and malformed calls against the real statetune-serve binary on a loopback port, through the
// real gRPC client: every one must end with a precise status and a short message, be logged and be
// counted; uploads must not be able to pin the server's memory or threads. Run in the shared mode too
// (serving_hardening_postgres_test: tests/support/shared_mode.h).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "client/statetune_client.h"
#include "server/engine/util/sha256.h"
#include "tests/support/serving_fixture.h"
#include "tests/support/shared_mode.h"
#include "tests/support/subprocess.h"

namespace statetune::serving {
namespace {
namespace fs = std::filesystem;
namespace v1 = ::statetune::v1;
using client::Client;
using grpc::StatusCode;
using test_support::http_get;
using test_support::kAcmeKey;
using test_support::kAdminKey;
using test_support::kBetaKey;
using test_support::metric_value;
using test_support::slurp;

// The tiny test model: 2 layers, d_inner 128, d_state 16. The largest adapter file it can have is every
// method in fp32 plus the store's 16 MiB of header room.
constexpr uint64_t kLargestAdapterFile = 4ull * 2 * 128 * (2 * 16 + 1) + (16ull << 20);

// True when one line of `log` contains every one of `parts`.
bool log_has_line(const std::string& log, const std::vector<std::string>& parts) {
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    line += ' ';
    bool all = true;
    for (const auto& p : parts) all = all && line.find(p) != std::string::npos;
    if (all) return true;
  }
  return false;
}

// An upload stream the test drives by hand: it can send a header and stop there.
struct RawUpload {
  grpc::ClientContext ctx;
  v1::AdapterInfo reply;
  std::unique_ptr<v1::Adapters::Stub> stub;
  std::unique_ptr<grpc::ClientWriter<v1::UploadAdapterRequest>> writer;

  RawUpload(const Client& c, const std::string& key, std::chrono::seconds deadline) {
    ctx.AddMetadata("authorization", std::string("Bearer ") + key);
    ctx.set_deadline(std::chrono::system_clock::now() + deadline);
    stub = v1::Adapters::NewStub(c.channel());
    writer = stub->UploadAdapter(&ctx, &reply);
  }
  bool send_header(const std::string& name, uint64_t total_bytes, const std::string& tenant = "") {
    v1::UploadAdapterRequest msg;
    msg.mutable_header()->set_name(name);
    msg.mutable_header()->set_total_bytes(total_bytes);
    msg.mutable_header()->set_sha256(std::string(64, '0'));
    msg.mutable_header()->set_tenant(tenant);
    msg.set_data("x");
    return writer->Write(msg);
  }
  // Ends the call the way the server decided; the stream is not half-closed first, so an answer
  // that comes back shows the server did not wait for the rest of the body.
  grpc::Status finish() { return writer->Finish(); }
};

class ServingHardeningTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    work_ = new fs::path(fs::temp_directory_path() / ("statetune_serving_hardening_" + std::to_string(::getpid())));
    adapter_files_ = test_support::write_serving_files(*work_, 2);
    shared_ = new test_support::SharedModeDatabases();
    server_ = new test_support::ServingProcess();
    if (!shared_->unavailable()) server_->start(*work_, flags(*work_ / "adapters", "60"));
  }
  static void TearDownTestSuite() {
    delete server_;
    delete shared_;
    fs::remove_all(*work_);
    delete work_;
  }
  void SetUp() override {
    if (shared_->unavailable()) GTEST_SKIP() << test_support::SharedModeDatabases::kNotInstalled;
    ASSERT_TRUE(shared_->log_shows_mode(server_->log())) << server_->log();
  }
  // `caps`: --max-concurrent-uploads and --max-concurrent-uploads-per-tenant.
  static std::vector<std::string> flags(const fs::path& adapters, const std::string& idle_seconds,
                                        std::pair<int, int> caps = {6, 4}) {
    std::vector<std::string> f = {
        "--model", (*work_ / "model").string(),
        "--tokenizer", std::string(STATETUNE_SHARED_DIR) + "/models/gpt-neox-20b-tokenizer.json",
        "--adapters-dir", adapters.string(), "--tenants-file", (*work_ / "tenants.json").string(),
        "--max-batch", "4", "--queue-size", "4", "--max-new-tokens", "64",
        "--max-concurrent-uploads", std::to_string(caps.first),
        "--max-concurrent-uploads-per-tenant", std::to_string(caps.second),
        "--upload-idle-seconds", idle_seconds, "--drain-seconds", "2"};
    for (auto& extra : shared_->flags_for(adapters)) f.push_back(std::move(extra));
    return f;
  }
  // The number of threads of the server process whose ready file is in `dir`.
  static long threads_of(const fs::path& dir) {
    const auto ready = nlohmann::json::parse(slurp(dir / "server-ready.json"));
    const fs::path tasks = "/proc/" + std::to_string(ready["pid"].get<int>()) + "/task";
    return static_cast<long>(std::distance(fs::directory_iterator(tasks), fs::directory_iterator{}));
  }
  // Finishes every stream at once (a status the server sent counts only once Finish() asks for it,
  // and a stalled stream's Finish() returns only when it ends) and returns their statuses.
  static std::vector<grpc::Status> finish_all(std::vector<std::unique_ptr<RawUpload>>& streams) {
    std::vector<grpc::Status> outcomes(streams.size());
    std::vector<std::thread> finishers;
    for (size_t i = 0; i < streams.size(); ++i) finishers.emplace_back([&, i] { outcomes[i] = streams[i]->finish(); });
    for (auto& t : finishers) t.join();
    return outcomes;
  }
  static Client client(const char* key) { return Client(server_->options(key)); }
  static std::string metrics() { return http_get(server_->metrics_port(), "/metrics"); }

  // Waits (up to 30 s) until the server's gauge of running uploads reads `n`.
  static bool wait_uploads_running(double n) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      if (metric_value(metrics(), "statetune_adapter_uploads_running") == n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  static v1::GenerateRequest request(const std::string& adapter, const std::string& version = "") {
    v1::GenerateRequest r;
    r.set_text("Hello there");
    r.set_max_tokens(2);
    r.set_temperature(0);
    if (!adapter.empty()) r.mutable_adapter()->set_name(adapter);
    r.mutable_adapter()->set_version(version);
    return r;
  }

  static fs::path* work_;
  static test_support::SharedModeDatabases* shared_;
  static test_support::ServingProcess* server_;
  static std::vector<std::string> adapter_files_;
};
fs::path* ServingHardeningTest::work_ = nullptr;
test_support::SharedModeDatabases* ServingHardeningTest::shared_ = nullptr;
test_support::ServingProcess* ServingHardeningTest::server_ = nullptr;
std::vector<std::string> ServingHardeningTest::adapter_files_;

// Item 6: a version that is not a positive integer is INVALID_ARGUMENT (the proto's promise), never
// UNKNOWN, and the failure is counted.
TEST_F(ServingHardeningTest, EveryMalformedAdapterVersionIsInvalidArgument) {
  Client c = client(kAcmeKey);
  v1::AdapterInfo info;
  ASSERT_TRUE(c.upload_adapter("a1", adapter_files_[0], &info).ok());
  for (const std::string version : {"abc", "0", "-1", "99999999999999999999", "1.5", "01", " 1"}) {
    auto r = c.generate(request("a1", version));
    EXPECT_EQ(r.status.error_code(), StatusCode::INVALID_ARGUMENT)
        << "version '" << version << "': " << client::status_code_name(r.status.error_code()) << " "
        << r.status.error_message();
    EXPECT_NE(r.status.error_message().find("version"), std::string::npos) << r.status.error_message();
  }
  auto ok = c.generate(request("a1", info.current_version()));
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
  auto missing = c.generate(request("a1", "999"));
  EXPECT_EQ(missing.status.error_code(), StatusCode::NOT_FOUND) << missing.status.error_message();
}

// Item 6: statetune_rpc_errors_total{method,code} counts every failed RPC, whatever failed it.
TEST_F(ServingHardeningTest, FailedRpcsAreCountedByMethodAndCode) {
  const std::string before = metrics();
  auto delta = [&](const std::string& after, const std::string& method, const std::string& code) {
    const std::vector<std::string> labels = {"method=\"" + method + "\"", "code=\"" + code + "\""};
    return metric_value(after, "statetune_rpc_errors_total", labels) -
           metric_value(before, "statetune_rpc_errors_total", labels);
  };
  Client c = client(kAcmeKey);
  EXPECT_EQ(c.generate(request("a1", "abc")).status.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(c.generate(request("a1", "-1")).status.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(c.generate(request("no-such-adapter")).status.error_code(), StatusCode::NOT_FOUND);
  v1::AdapterInfo info;
  EXPECT_EQ(c.get_adapter("no-such-adapter", &info).error_code(), StatusCode::NOT_FOUND);
  // Not UTF-8 in a proto3 `string` field: gRPC's own parser refuses it before any handler runs.
  const grpc::Status unparsable = c.get_adapter(std::string("bad\xff"), &info);
  EXPECT_EQ(unparsable.error_code(), StatusCode::INVALID_ARGUMENT) << client::status_code_name(unparsable.error_code());
  EXPECT_NE(unparsable.error_message().find("not valid UTF-8"), std::string::npos) << unparsable.error_message();
  uint32_t n = 0;
  EXPECT_EQ(c.delete_adapter("bad/name", &n).error_code(), StatusCode::INVALID_ARGUMENT);
  v1::ListAdaptersResponse list;
  EXPECT_EQ(client("wrong-key").list_adapters(&list).error_code(), StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(c.upload_adapter("junk", std::string(100, 'x'), &info).error_code(), StatusCode::INVALID_ARGUMENT);
  const std::string after = metrics();
  EXPECT_EQ(delta(after, "Generate", "invalid_argument"), 2) << after;
  EXPECT_EQ(delta(after, "Generate", "not_found"), 1);
  EXPECT_EQ(delta(after, "GetAdapter", "not_found"), 1);
  EXPECT_EQ(delta(after, "GetAdapter", "invalid_argument"), 1);
  EXPECT_EQ(delta(after, "DeleteAdapter", "invalid_argument"), 1);
  EXPECT_EQ(delta(after, "ListAdapters", "unauthenticated"), 1);
  EXPECT_EQ(delta(after, "UploadAdapter", "invalid_argument"), 1);
  EXPECT_EQ(metric_value(after, "statetune_rpc_errors_total", {"code=\"unknown\""}), 0);
  // Each failure is logged with its request id and code.
  EXPECT_TRUE(log_has_line(server_->log(), {"rpc.failed", "method=Generate", "code=not_found", "request_id=r-"}))
      << server_->log();
}

// Item 7: a huge or binary name is refused as INVALID_ARGUMENT with a short message that shows the
// name's start byte for byte (a NUL does not cut it) and says "adapter name" once.
TEST_F(ServingHardeningTest, HugeAndBinaryNamesGetAShortPreciseMessage) {
  Client c = client(kAcmeKey);
  const std::string huge(100000, 'n');
  v1::AdapterInfo info;
  auto st = c.get_adapter(huge, &info);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << client::status_code_name(st.error_code());
  EXPECT_LT(st.error_message().size(), 1100u);
  EXPECT_NE(st.error_message().find("100000 bytes"), std::string::npos) << st.error_message();
  auto r = c.generate(request(huge.substr(0, 60000)));
  EXPECT_EQ(r.status.error_code(), StatusCode::INVALID_ARGUMENT) << r.status.error_message().substr(0, 200);
  EXPECT_LT(r.status.error_message().size(), 1100u);
  st = c.upload_adapter(huge, adapter_files_[0], &info);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << client::status_code_name(st.error_code());
  EXPECT_LT(st.error_message().size(), 1100u);

  const std::string with_nul("evil\0name", 9);
  r = c.generate(request(with_nul));
  EXPECT_EQ(r.status.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(r.status.error_message().find("evil\\x00name"), std::string::npos) << r.status.error_message();
  EXPECT_NE(r.status.error_message().find("is invalid"), std::string::npos) << r.status.error_message();
  EXPECT_EQ(r.status.error_message().find("name name"), std::string::npos) << r.status.error_message();
}

// Item 8: a prompt that is not UTF-8 is INVALID_ARGUMENT naming the byte and its offset; so is a stop
// string. Random bytes never get INTERNAL.
TEST_F(ServingHardeningTest, InvalidUtf8IsInvalidArgumentNamingTheOffset) {
  Client c = client(kAcmeKey);
  v1::GenerateRequest req = request("");
  req.set_text(std::string("hello \xff world"));
  auto r = c.generate(req);
  EXPECT_EQ(r.status.error_code(), StatusCode::INVALID_ARGUMENT) << client::status_code_name(r.status.error_code());
  EXPECT_NE(r.status.error_message().find("UTF-8"), std::string::npos) << r.status.error_message();
  EXPECT_NE(r.status.error_message().find("0xff at offset 6"), std::string::npos) << r.status.error_message();

  req = request("");
  req.add_stop(std::string("\xc3", 1));  // a lead byte without its continuation
  r = c.generate(req);
  EXPECT_EQ(r.status.error_code(), StatusCode::INVALID_ARGUMENT) << r.status.error_message();
  EXPECT_NE(r.status.error_message().find("stop string 0"), std::string::npos) << r.status.error_message();

  std::mt19937 rng(123);
  int invalid = 0;
  for (int i = 0; i < 100; ++i) {
    std::string bytes(1 + rng() % 40, '\0');
    for (auto& b : bytes) b = static_cast<char>(rng());
    req = request("");
    req.set_text(bytes);
    r = c.generate(req);
    ASSERT_TRUE(r.status.ok() || r.status.error_code() == StatusCode::INVALID_ARGUMENT)
        << client::status_code_name(r.status.error_code()) << " '" << r.status.error_message() << "'";
    if (!r.status.ok()) {
      ++invalid;
      EXPECT_FALSE(r.status.error_message().empty());
    }
  }
  EXPECT_GT(invalid, 80);
}

// Item 4: an upload declaring more than any adapter for the served base can be is refused from its
// header alone, without the server reading (or waiting for) the body; --max-upload-bytes stays a cap.
TEST_F(ServingHardeningTest, OversizedUploadIsRefusedFromItsHeader) {
  Client c = client(kAcmeKey);
  RawUpload up(c, kAcmeKey, std::chrono::seconds(20));
  const auto t0 = std::chrono::steady_clock::now();
  up.send_header("too-big", kLargestAdapterFile + 1);  // below --max-upload-bytes (64 MiB)
  const grpc::Status st = up.finish();
  EXPECT_EQ(st.error_code(), StatusCode::RESOURCE_EXHAUSTED) << client::status_code_name(st.error_code()) << " "
                                                              << st.error_message();
  EXPECT_NE(st.error_message().find("largest adapter file for this base model " +
                                    std::to_string(kLargestAdapterFile)),
            std::string::npos)
      << st.error_message();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  // Exactly the largest size is not refused for its size (it fails later, as the bytes never come).
  RawUpload fits(c, kAcmeKey, std::chrono::seconds(3));
  fits.send_header("fits", kLargestAdapterFile);
  EXPECT_NE(fits.finish().error_code(), StatusCode::RESOURCE_EXHAUSTED);
}

// Item 4: uploads running at once are capped per caller and in all; a refused one gets
// RESOURCE_EXHAUSTED naming the flag, and once the others end, uploads work again.
TEST_F(ServingHardeningTest, ConcurrentUploadsBeyondTheCapsAreRefused) {
  ASSERT_TRUE(wait_uploads_running(0));
  Client c = client(kAcmeKey);
  std::vector<std::unique_ptr<RawUpload>> stalled;
  for (int i = 0; i < 4; ++i) {
    stalled.push_back(std::make_unique<RawUpload>(c, kAcmeKey, std::chrono::seconds(60)));
    ASSERT_TRUE(stalled.back()->send_header("stalled" + std::to_string(i), 1000));
  }
  ASSERT_TRUE(wait_uploads_running(4)) << metrics();
  v1::AdapterInfo info;
  auto st = c.upload_adapter("one-more", adapter_files_[0], &info);
  EXPECT_EQ(st.error_code(), StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_NE(st.error_message().find("--max-concurrent-uploads-per-tenant"), std::string::npos) << st.error_message();
  // Another tenant still has room (the total is 6) ...
  Client b = client(kBetaKey);
  for (int i = 0; i < 2; ++i) {
    stalled.push_back(std::make_unique<RawUpload>(b, kBetaKey, std::chrono::seconds(60)));
    ASSERT_TRUE(stalled.back()->send_header("stalled" + std::to_string(i), 1000));
  }
  ASSERT_TRUE(wait_uploads_running(6)) << metrics();
  // ... until the total is reached.
  st = Client(server_->options(kAdminKey)).upload_adapter("one-more", adapter_files_[0], &info, "beta");
  EXPECT_EQ(st.error_code(), StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_NE(st.error_message().find("--max-concurrent-uploads is 6"), std::string::npos) << st.error_message();
  for (auto& s : stalled) s->ctx.TryCancel();
  for (auto& s : stalled) EXPECT_EQ(s->finish().error_code(), StatusCode::CANCELLED);
  ASSERT_TRUE(wait_uploads_running(0)) << metrics();
  st = c.upload_adapter("one-more", adapter_files_[0], &info);
  EXPECT_TRUE(st.ok()) << st.error_message();
}

// Item 10: each upload's reply names the version that upload created, even when uploads of one name
// race (callers refused for the concurrency cap retry, as a client would).
TEST_F(ServingHardeningTest, RacingUploadsOfOneNameEachGetTheirOwnVersion) {
  constexpr int kUploads = 12;
  std::vector<std::string> versions(kUploads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kUploads; ++i) {
    threads.emplace_back([&, i] {
      Client own = client(kAcmeKey);
      v1::AdapterInfo info;
      grpc::Status st;
      do {
        st = own.upload_adapter("raced", adapter_files_[i % 2], &info);
      } while (st.error_code() == StatusCode::RESOURCE_EXHAUSTED);
      if (st.ok()) versions[i] = info.current_version();
    });
  }
  for (auto& t : threads) t.join();
  const std::set<std::string> distinct(versions.begin(), versions.end());
  EXPECT_EQ(distinct.size(), static_cast<size_t>(kUploads));
  EXPECT_EQ(distinct.count(""), 0u) << "an upload failed";
}

// Item 11: the admin key cannot create adapters for a tenant the tenants file does not list.
TEST_F(ServingHardeningTest, AdminCannotActOnATenantNotInTheTenantsFile) {
  Client admin(server_->options(kAdminKey));
  v1::AdapterInfo info;
  auto st = admin.upload_adapter("ghostly", adapter_files_[0], &info, "ghost");
  EXPECT_EQ(st.error_code(), StatusCode::NOT_FOUND) << st.error_message();
  EXPECT_NE(st.error_message().find("tenants file"), std::string::npos) << st.error_message();
  EXPECT_FALSE(fs::exists(*work_ / "adapters" / "ghost"));
  v1::ListAdaptersResponse list;
  EXPECT_EQ(admin.list_adapters(&list, "ghost").error_code(), StatusCode::NOT_FOUND);
  EXPECT_TRUE(admin.list_adapters(&list, "beta").ok());
}

// Item 11: failed authentication is logged (rate-limited) and the presented key never is.
TEST_F(ServingHardeningTest, FailedAuthenticationIsLoggedRateLimitedWithoutTheKey) {
  const std::string key = "presented-but-wrong-key-4f1e";
  const size_t before = server_->log().size();
  v1::ListAdaptersResponse list;
  for (int i = 0; i < 50; ++i) EXPECT_EQ(client(key.c_str()).list_adapters(&list).error_code(), StatusCode::UNAUTHENTICATED);
  const std::string log = server_->log().substr(before);
  size_t lines = 0;
  for (size_t p = log.find("auth.failed"); p != std::string::npos; p = log.find("auth.failed", p + 1)) ++lines;
  EXPECT_GE(lines, 1u) << log;
  EXPECT_LT(lines, 25u) << "not rate-limited:\n" << log;
  EXPECT_EQ(log.find(key), std::string::npos) << log;
  EXPECT_EQ(server_->log().find(key), std::string::npos);
}

// Item 4: an upload that sends nothing for --upload-idle-seconds is cancelled (header sent or not),
// which frees its place. Item 11: the start-up log counts adapters, not tenants. Its own server: a
// short idle deadline.
TEST_F(ServingHardeningTest, IdleUploadsAreCancelledAndStartupCountsAdapters) {
  const fs::path dir = *work_ / "idle";
  fs::create_directories(dir);
  test_support::ServingProcess idle_server;
  idle_server.start(dir, flags(dir / "adapters", "0.5"));
  if (HasFatalFailure()) return;
  Client c(idle_server.options(kAcmeKey));
  const auto t0 = std::chrono::steady_clock::now();
  RawUpload header_only(c, kAcmeKey, std::chrono::seconds(30));
  ASSERT_TRUE(header_only.send_header("idle", 1000));
  RawUpload nothing(c, kAcmeKey, std::chrono::seconds(30));  // never even sends its header
  EXPECT_EQ(header_only.finish().error_code(), StatusCode::CANCELLED);
  EXPECT_EQ(nothing.finish().error_code(), StatusCode::CANCELLED);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(15));
  // Their places are free again (per-tenant cap 4): four uploads of three names succeed.
  v1::AdapterInfo info;
  for (const char* name : {"x1", "x2", "x3", "x3"}) {
    auto st = c.upload_adapter(name, adapter_files_[0], &info);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  EXPECT_NE(idle_server.log().find("--upload-idle-seconds"), std::string::npos) << idle_server.log();
  ASSERT_EQ(idle_server.stop(), 0) << idle_server.log();
  idle_server.start(dir, flags(dir / "adapters", "0.5"));
  if (HasFatalFailure()) return;
  EXPECT_TRUE(log_has_line(idle_server.log(), {"server.serving", " adapters=3 ", " tenants=1 "})) << idle_server.log();
}

// Item 4: open upload streams cannot make the server start a thread each: beyond the caps they are
// refused at once, and gRPC's thread quota bounds the rest.
TEST_F(ServingHardeningTest, StalledUploadsDoNotPinAThreadEach) {
  ASSERT_TRUE(wait_uploads_running(0));
  const long baseline = threads_of(*work_);
  Client c = client(kAcmeKey);
  std::vector<std::unique_ptr<RawUpload>> streams;
  // The four admitted streams end at their 10 s client deadline; the others are refused at once.
  for (int i = 0; i < 60; ++i) {
    streams.push_back(std::make_unique<RawUpload>(c, kAcmeKey, std::chrono::seconds(10)));
    streams.back()->send_header("stall" + std::to_string(i), 1000);
  }
  ASSERT_TRUE(wait_uploads_running(4)) << metrics();
  const long during = threads_of(*work_);
  int refused = 0;
  for (const auto& st : finish_all(streams)) refused += st.error_code() == StatusCode::RESOURCE_EXHAUSTED;
  EXPECT_EQ(refused, 56);
  EXPECT_LT(during - baseline, 20) << "threads " << baseline << " -> " << during;
}

// Item 4: with the upload caps set out of the way, gRPC's thread quota (--max-rpc-threads) still bounds
// the threads open calls hold: calls beyond it are refused (RESOURCE_EXHAUSTED, answered by gRPC
// itself) and counted like every other failure.
TEST_F(ServingHardeningTest, ThreadQuotaBoundsTheThreadsOpenCallsHold) {
  const fs::path dir = *work_ / "threads";
  fs::create_directories(dir);
  test_support::ServingProcess server;
  std::vector<std::string> f = flags(dir / "adapters", "5", {1000, 1000});
  f.insert(f.end(), {"--max-rpc-threads", "24"});
  server.start(dir, f);
  if (HasFatalFailure()) return;
  const long baseline = threads_of(dir);
  Client c(server.options(kAcmeKey));
  std::vector<std::unique_ptr<RawUpload>> streams;
  for (int i = 0; i < 80; ++i) {
    streams.push_back(std::make_unique<RawUpload>(c, kAcmeKey, std::chrono::seconds(20)));
    streams.back()->send_header("held" + std::to_string(i), 1000);
  }
  // Every call has been either admitted (and holds its thread until the 5 s idle deadline) or refused.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(4);
  std::string m;
  do {
    m = http_get(server.metrics_port(), "/metrics");
  } while (metric_value(m, "statetune_adapter_uploads_running") +
                   metric_value(m, "statetune_rpc_errors_total", {"code=\"resource_exhausted\""}) < 80 &&
           std::chrono::steady_clock::now() < deadline);
  const long during = threads_of(dir);
  std::printf("80 stalled uploads, --max-rpc-threads 24: %g admitted, threads %ld -> %ld\n",
              metric_value(m, "statetune_adapter_uploads_running"), baseline, during);
  int refused = 0, idle_cancelled = 0;
  for (const auto& st : finish_all(streams)) {
    refused += st.error_code() == StatusCode::RESOURCE_EXHAUSTED;
    idle_cancelled += st.error_code() == StatusCode::CANCELLED;
  }
  EXPECT_LE(during, baseline + 24) << "threads " << baseline << " -> " << during;
  EXPECT_GT(refused, 0);
  EXPECT_EQ(refused + idle_cancelled, 80);
  m = http_get(server.metrics_port(), "/metrics");
  EXPECT_EQ(metric_value(m, "statetune_rpc_errors_total", {"method=\"UploadAdapter\"", "code=\"resource_exhausted\""}),
            refused)
      << m;
}

// Item 11: the tenants file is parsed with bounds: a deeply nested one stops start-up with a message,
// not a crash.
TEST(ServingTenantsFile, DeeplyNestedTenantsFileIsRefusedAtStartup) {
  const fs::path dir = fs::temp_directory_path() / ("statetune_tenants_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "tenants.json") << std::string(100000, '[') << std::string(100000, ']');
  const fs::path log = dir / "serve.log";
  const pid_t pid = test_support::spawn_logged(
      {std::string(STATETUNE_BINARY_DIR) + "/server/serving/statetune-serve", "--listen", "127.0.0.1:0",
       "--metrics-listen", "off", "--tenants-file", (dir / "tenants.json").string(), "--adapters-dir",
       (dir / "adapters").string()},
      log);
  EXPECT_EQ(test_support::wait_exit_status(pid), 1) << slurp(log);
  EXPECT_NE(slurp(log).find("nest"), std::string::npos) << slurp(log);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace statetune::serving
