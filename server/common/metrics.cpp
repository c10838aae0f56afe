#include "server/common/metrics.h"

#include <prometheus/exposer.h>

#include <stdexcept>

namespace statetune::common {

MetricsServer::MetricsServer(const std::string& bind_address)
    : registry_(std::make_shared<prometheus::Registry>()) {
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(bind_address, /*num_threads=*/1);
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot serve metrics on " + bind_address + ": " + e.what() +
                             " (choose another --metrics-port)");
  }
  exposer_->RegisterCollectable(registry_);
}

MetricsServer::~MetricsServer() {
  if (exposer_) exposer_->RemoveCollectable(registry_);
}

int MetricsServer::port() const {
  const auto ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

prometheus::Histogram::BucketBoundaries latency_buckets_seconds() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120};
}

prometheus::Histogram::BucketBoundaries token_latency_buckets_seconds() {
  return {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2};
}

prometheus::Histogram::BucketBoundaries power_of_two_buckets(double max) {
  prometheus::Histogram::BucketBoundaries out;
  for (double b = 1; b <= max; b *= 2) out.push_back(b);
  return out;
}

}  // namespace statetune::common
