#include "server/common/metrics.h"

#include <httplib.h>
#include <prometheus/text_serializer.h>

#include <stdexcept>
#include <string>

#include "server/common/http_bind.h"

namespace statetune::common {

void add_metrics_route(httplib::Server& server, std::shared_ptr<prometheus::Registry> registry) {
  server.Get("/metrics", [registry](const httplib::Request&, httplib::Response& res) {
    res.set_content(prometheus::TextSerializer().Serialize(registry->Collect()),
                    "text/plain; version=0.0.4; charset=utf-8");
  });
}

MetricsServer::MetricsServer(const std::string& bind_address)
    : registry_(std::make_shared<prometheus::Registry>()), server_(std::make_unique<httplib::Server>()) {
  const auto colon = bind_address.rfind(':');
  const std::string port = colon == std::string::npos ? "" : bind_address.substr(colon + 1);
  if (colon == std::string::npos || port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) > 65535) {
    throw std::runtime_error("metrics address '" + bind_address + "' is not host:port");
  }
  std::string host = bind_address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "0.0.0.0";

  httplib::Server& s = *server_;
  // Scrapes are small GETs: no request body, and a slow scraper cannot hold a thread for long.
  s.set_payload_max_length(0);
  s.set_read_timeout(2);
  s.set_write_timeout(5);
  s.new_task_queue = [] { return new httplib::ThreadPool(2); };
  add_metrics_route(s, registry_);
  s.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    res.set_content(res.status == 404 ? "only /metrics is served here\n" : "GET /metrics\n", "text/plain");
  });
  port_ = bind_http_server(s, host, std::stoi(port));
  if (port_ <= 0) {
    port_ = 0;
    throw std::runtime_error("cannot serve metrics on " + bind_address +
                             ": the address is in use or not local (choose another --metrics-listen)");
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
}

MetricsServer::~MetricsServer() {
  server_->stop();
  if (thread_.joinable()) thread_.join();
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
