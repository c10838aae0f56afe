// The integration tests' way to run a real service binary: fork + exec it on loopback ports chosen by
// the kernel (--listen / --metrics-listen 127.0.0.1:0), wait for the --ready-file it writes once it
// listens, read the ports from it, and SIGTERM it at the end. Output goes to a log file the failure
// messages quote.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "client/statetune_client.h"
#include "tests/support/loopback_http.h"
#include "tests/support/subprocess.h"

namespace statetune::test_support {

class ServiceProcess {
 public:
  // binary: the executable; name: used in file names and failure messages.
  ServiceProcess(std::string binary, std::string name) : binary_(std::move(binary)), name_(std::move(name)) {}
  ServiceProcess(const ServiceProcess&) = delete;
  ServiceProcess& operator=(const ServiceProcess&) = delete;
  ~ServiceProcess() { stop(); }

  // Starts the binary with `flags` after the loopback/ready-file/threads ones and waits (up to
  // `timeout`) until it listens. `tls_ca`: the service runs with TLS (`flags` name its certificate);
  // the client options trust this CA file. Use with ASSERT_NO_FATAL_FAILURE.
  void start(const std::filesystem::path& work, const std::vector<std::string>& flags,
             const std::filesystem::path& tls_ca = {},
             std::chrono::seconds timeout = std::chrono::seconds(90)) {
    tls_ca_ = tls_ca;
    ready_ = work / (name_ + "-ready.json");
    std::filesystem::remove(ready_);
    log_ = work / (name_ + "-" + std::to_string(++starts_) + ".log");
    std::vector<std::string> args = {binary_,     "--listen",       "127.0.0.1:0", "--metrics-listen",
                                     "127.0.0.1:0", "--ready-file", ready_.string(), "--threads", "1"};
    args.insert(args.end(), flags.begin(), flags.end());
    pid_ = spawn_logged(std::move(args), log_);
    deadline_ = std::chrono::steady_clock::now() + timeout;
    while (!std::filesystem::exists(ready_)) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline_) << name_ << " never listened:\n" << log();
      int status = 0;
      ASSERT_EQ(::waitpid(pid_, &status, WNOHANG), 0) << name_ << " exited:\n" << log();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    // The service writes the ready file to a temporary name and renames it, so it is whole here.
    const auto ready = nlohmann::json::parse(slurp(ready_));
    port_ = ready["port"].get<int>();
    metrics_port_ = ready["metrics_port"].get<int>();
  }

  // Waits (within start's deadline) until gRPC health says SERVING: the model is loaded.
  void wait_serving() {
    client::Client c(options(""));
    while (true) {
      grpc::health::v1::HealthCheckResponse::ServingStatus st{};
      if (c.health("", &st).ok() && st == grpc::health::v1::HealthCheckResponse::SERVING) return;
      ASSERT_LT(std::chrono::steady_clock::now(), deadline_) << name_ << " never became SERVING:\n" << log();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  // True once the process has ended on its own; `status` gets its exit status.
  bool exited(int* status) {
    int raw = 0;
    if (pid_ <= 0 || ::waitpid(pid_, &raw, WNOHANG) != pid_) return false;
    pid_ = -1;
    *status = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
    return true;
  }

  // Sends `sig` and waits: returns the exit status (128 + signal when killed by one).
  int stop(int sig = SIGTERM) {
    if (pid_ <= 0) return -1;
    const int status = signal_and_wait(pid_, sig);
    pid_ = -1;
    return status;
  }

  client::ClientOptions options(const std::string& key) const {
    client::ClientOptions o;
    o.address = "127.0.0.1:" + std::to_string(port_);
    o.api_key = key;
    o.timeout = std::chrono::seconds(60);
    o.tls_ca_file = tls_ca_.string();
    return o;
  }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }  // -1 once stopped
  int metrics_port() const { return metrics_port_; }
  std::string log() const { return slurp(log_); }

 private:
  std::string binary_, name_;
  pid_t pid_ = -1;
  int port_ = 0, metrics_port_ = 0, starts_ = 0;
  std::filesystem::path ready_, log_, tls_ca_;
  std::chrono::steady_clock::time_point deadline_;
};

}  // namespace statetune::test_support
