// The process's Prometheus registry and the HTTP endpoint that serves it as `/metrics` on its own port
// (so scraping never competes with gRPC traffic and can be firewalled separately). Services register
// their families on registry(); names follow statetune_<subsystem>_<name>_<unit>.
//
// Served by cpp-httplib (the library of the HTTP API, server/http/) over prometheus-cpp's own text
// serializer. Not prometheus::Exposer: its civetweb starts worker threads with a fixed ~100 KiB stack,
// which glibc refuses (EINVAL) in a process whose static TLS is as large as LibTorch's; cpp-httplib's
// threads are std::threads with the default stack.
#pragma once

#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>
#include <thread>

namespace httplib {
class Server;
}

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
  int port() const { return port_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<httplib::Server> server_;
  int port_ = 0;
  std::thread thread_;
};

// Registers `GET /metrics` (the registry in Prometheus' text format) on `server`: the metrics port's
// only route, and on the HTTP API's listener with --http-metrics (where the Gateway API Inference
// Extension's endpoint picker scrapes a model server).
void add_metrics_route(httplib::Server& server, std::shared_ptr<prometheus::Registry> registry);

// Histogram buckets in seconds from 1 ms to 2 min, roughly x2.5 apart: request latencies.
prometheus::Histogram::BucketBoundaries latency_buckets_seconds();
// Finer buckets from 0.5 ms to 2 s: per-token latencies.
prometheus::Histogram::BucketBoundaries token_latency_buckets_seconds();
// 1, 2, 4, ... `max`: counts such as batch sizes.
prometheus::Histogram::BucketBoundaries power_of_two_buckets(double max);

}  // namespace statetune::common
