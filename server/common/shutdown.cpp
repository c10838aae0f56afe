#include "server/common/shutdown.h"

#include <pthread.h>
#include <signal.h>

#include <cstring>
#include <stdexcept>

namespace statetune::common {
namespace {

sigset_t termination_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

void block_termination_signals() {
  sigset_t set = termination_set();
  if (int rc = pthread_sigmask(SIG_BLOCK, &set, nullptr); rc != 0) {
    throw std::runtime_error(std::string("pthread_sigmask failed: ") + std::strerror(rc));
  }
}

ShutdownSignal::ShutdownSignal(bool watch_signals) {
  if (!watch_signals) return;
  watcher_ = std::thread([this] {
    sigset_t set = termination_set();
    int sig = 0;
    if (sigwait(&set, &sig) == 0) {
      request(sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "signal");
    }
  });
}

ShutdownSignal::~ShutdownSignal() {
  if (watcher_.joinable()) {
    request("shutdown");
    // The watcher is parked in sigwait; a thread-directed SIGTERM wakes only it.
    pthread_kill(watcher_.native_handle(), SIGTERM);
    watcher_.join();
  }
}

std::string ShutdownSignal::wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return requested_; });
  return reason_;
}

void ShutdownSignal::request(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (requested_) return;
    requested_ = true;
    reason_ = reason;
  }
  cv_.notify_all();
}

bool ShutdownSignal::requested() const {
  std::lock_guard<std::mutex> lock(mu_);
  return requested_;
}

}  // namespace statetune::common
