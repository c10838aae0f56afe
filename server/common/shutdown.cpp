#include "server/common/shutdown.h"

#include <pthread.h>
#include <signal.h>

#include <atomic>
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

// Threads that started before main() blocked the signals (library static initialisers start some)
// would take a process-directed SIGTERM with its default action, killing the process. This handler
// runs in such a thread and forwards the signal to the watcher, which takes it with sigwait.
// pthread_kill is async-signal-safe.
std::atomic<bool> g_have_watcher{false};
pthread_t g_watcher;

void forward_to_watcher(int sig) {
  if (g_have_watcher.load()) pthread_kill(g_watcher, sig);
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
  struct sigaction action {};
  action.sa_handler = forward_to_watcher;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  watcher_ = std::thread([this] {
    g_watcher = pthread_self();
    g_have_watcher = true;
    sigset_t set = termination_set();
    int sig = 0;
    if (sigwait(&set, &sig) == 0) {
      request(sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "signal");
    }
  });
}

ShutdownSignal::~ShutdownSignal() {
  if (watcher_.joinable()) {
    g_have_watcher = false;
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
