// Graceful shutdown on SIGTERM / SIGINT. block_termination_signals() must run in main() before any
// thread starts, so every thread inherits the mask and the signal is only ever taken by the watcher
// thread (sigwait) instead of interrupting an arbitrary thread inside gRPC or LibTorch. Tests and other
// in-process owners trigger the same path with request().
#pragma once

#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace statetune::common {

// Blocks SIGTERM and SIGINT in the calling thread (and so in every thread it creates afterwards).
void block_termination_signals();

class ShutdownSignal {
 public:
  // Starts the watcher thread when `watch_signals` (the signals must already be blocked).
  explicit ShutdownSignal(bool watch_signals);
  ~ShutdownSignal();
  ShutdownSignal(const ShutdownSignal&) = delete;
  ShutdownSignal& operator=(const ShutdownSignal&) = delete;

  // Blocks until a signal arrives or request() is called. Returns what triggered it ("SIGTERM", ...).
  std::string wait();
  void request(const std::string& reason = "requested");
  bool requested() const;

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool requested_ = false;
  std::string reason_;
  std::thread watcher_;
};

}  // namespace statetune::common
