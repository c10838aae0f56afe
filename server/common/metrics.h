// The process's Prometheus registry and the HTTP exposer that serves it as `/metrics` on its own port
// (so scraping never competes with gRPC traffic and can be firewalled separately). Services register
// their families on registry(); names follow statetune_<subsystem>_<name>_<unit>.
#pragma once

#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>
#include <vector>

namespace prometheus {
class Exposer;
}

namespace statetune::common {

class MetricsServer {
 public:
  // Starts serving on `bind_address` ("0.0.0.0:9090"; port 0 picks a free port). Throws
  // std::runtime_error naming the address when it cannot listen.
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
  std::unique_ptr<prometheus::Exposer> exposer_;
};

// Histogram buckets in seconds from 1 ms to 2 min, roughly x2.5 apart: request latencies.
prometheus::Histogram::BucketBoundaries latency_buckets_seconds();
// Finer buckets from 0.5 ms to 2 s: per-token latencies.
prometheus::Histogram::BucketBoundaries token_latency_buckets_seconds();
// 1, 2, 4, ... `max`: counts such as batch sizes.
prometheus::Histogram::BucketBoundaries power_of_two_buckets(double max);

}  // namespace statetune::common
