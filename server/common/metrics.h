// The process's Prometheus registry and the HTTP endpoint that serves it as `/metrics` on its own port
// (so scraping never competes with gRPC traffic and can be firewalled separately). Services register
// their families on registry(); names follow statetune_<subsystem>_<name>_<unit>.
//
// Why not prometheus::Exposer: its civetweb starts worker threads with a fixed ~100 KiB stack, which
// glibc refuses (EINVAL) in a process whose static TLS is as large as LibTorch's, so the exposer cannot
// start inside statetune-serve. The endpoint here is a minimal HTTP/1.0 responder over
// prometheus-cpp's own text serializer, on one thread.
#pragma once

#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>
#include <vector>

#include <atomic>
#include <thread>

namespace statetune::common {

class MetricsServer {
 public:
  // Starts serving on `bind_address` ("0.0.0.0:9090", "[::1]:9090"; port 0 picks a free port).
  // Throws std::runtime_error naming the address when it cannot listen.
  explicit MetricsServer(const std::string& bind_address);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  prometheus::Registry& registry() { return *registry_; }
  const std::shared_ptr<prometheus::Registry>& shared_registry() const { return registry_; }
  // The port actually listened on (resolves port 0).
  int port() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  void serve();
  void answer(int fd);

  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Histogram buckets in seconds from 1 ms to 2 min, roughly x2.5 apart: request latencies.
prometheus::Histogram::BucketBoundaries latency_buckets_seconds();
// Finer buckets from 0.5 ms to 2 s: per-token latencies.
prometheus::Histogram::BucketBoundaries token_latency_buckets_seconds();
// 1, 2, 4, ... `max`: counts such as batch sizes.
prometheus::Histogram::BucketBoundaries power_of_two_buckets(double max);

}  // namespace statetune::common
