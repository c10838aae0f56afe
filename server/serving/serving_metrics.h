// The Prometheus families statetune-serve exports (all on the --metrics-port exposer):
//   statetune_requests_total{tenant,status,api}        counter; status = ok | cancelled | a gRPC code name
//                                                      (HTTP statuses mapped to theirs); api = grpc | http
//   statetune_time_to_first_token_seconds{tenant}       histogram (submit -> first token)
//   statetune_inter_token_latency_seconds               histogram (between a request's tokens)
//   statetune_request_duration_seconds{tenant}          histogram (end to end)
//   statetune_queue_time_seconds                        histogram (submit -> joined the batch)
//   statetune_prompt_tokens_total{tenant}, statetune_generated_tokens_total{tenant}   counters
//   statetune_requests_running, statetune_requests_waiting                           gauges
//   statetune_batch_size                                histogram (rows per decode step)
//   statetune_adapters_resident, statetune_adapter_slots, statetune_adapter_slots_pinned   gauges
//   statetune_adapter_loads_total, statetune_adapter_load_failures_total,
//   statetune_adapter_evictions_total, statetune_adapter_load_seconds_total                counters
//   statetune_adapter_requests{tenant,adapter,version,state}   info gauge: running / waiting requests
//       per adapter, for a gateway to route tenants to replicas that already hold their adapters
//   statetune_adapter_uploads_total{tenant,status}      counter
//   statetune_adapter_uploads_running                   gauge: uploads admitted and not finished
//   statetune_rpc_errors_total{method,code}             counter: every failed RPC of every service, by
//       method and status code (unauthenticated ones, and those gRPC refused before any handler ran)
//   statetune_up                                        gauge: 1 serving, 0 loading or draining
//   shared mode (--database), all zero otherwise:
//   statetune_adapter_storage_adapters, statetune_adapter_storage_connections,
//   statetune_adapter_storage_listening                 gauges: adapters known, open connections,
//       1 while the replica hears the database's changes
//   statetune_adapter_storage_connections_in_use, statetune_adapter_storage_connections_idle
//                                                       gauges: the open connections split
//   statetune_adapter_storage_resyncs_total, statetune_adapter_storage_unavailable_total,
//   statetune_adapter_storage_statement_errors_total    counters (statement: failed on a query, not on
//       reaching the database)
//   statetune_adapter_storage_notify_lag_seconds        histogram: a change's NOTIFY (database clock)
//       to this replica having applied it
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace statetune::serving {

struct PoolSnapshot {
  int64_t capacity = 0, resident = 0, pinned = 0;
  int64_t loads = 0, load_failures = 0, evictions = 0;
  double total_load_seconds = 0;
};

// engine::AdapterStorageStats without the engine headers (this library has no LibTorch in it).
struct StorageSnapshot {
  int64_t adapters_known = 0, resyncs = 0, unavailable_errors = 0, connections = 0;
  bool listening = false;
  int64_t connections_in_use = 0, connections_idle = 0, statement_errors = 0;
};

class ServingMetrics {
 public:
  explicit ServingMetrics(prometheus::Registry& registry);

  void request_finished(const std::string& tenant, const std::string& status, const char* api = "grpc");
  void first_token(const std::string& tenant, double seconds);
  void inter_token(double seconds);
  void request_duration(const std::string& tenant, double seconds);
  void queue_time(double seconds);
  void tokens(const std::string& tenant, int64_t prompt, int64_t generated);
  void batch(int64_t rows);
  void upload(const std::string& tenant, const std::string& status);
  void rpc_failed(const std::string& method, const std::string& code);
  void set_uploads_running(int64_t n);
  void set_up(bool serving);
  // Running / waiting totals and per-adapter counts (pool keys "tenant/name@version"; "" = base).
  void set_load(int64_t running, int64_t waiting, const std::map<std::string, int64_t>& running_by_key,
                const std::map<std::string, int64_t>& waiting_by_key);
  void set_pool(const PoolSnapshot& s);
  // The shared (PostgreSQL) adapter storage's view; all zero with the local store.
  void set_storage(const StorageSnapshot& s);
  void notify_lag(double seconds);

 private:
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& ttft_;
  prometheus::Histogram& itl_;
  prometheus::Family<prometheus::Histogram>& e2e_;
  prometheus::Histogram& queue_;
  prometheus::Family<prometheus::Counter>& prompt_tokens_;
  prometheus::Family<prometheus::Counter>& generated_tokens_;
  prometheus::Gauge& running_;
  prometheus::Gauge& waiting_;
  prometheus::Histogram& batch_;
  prometheus::Gauge& resident_;
  prometheus::Gauge& slots_;
  prometheus::Gauge& pinned_;
  prometheus::Counter& loads_;
  prometheus::Counter& load_failures_;
  prometheus::Counter& evictions_;
  prometheus::Counter& load_seconds_;
  prometheus::Family<prometheus::Gauge>& adapter_requests_;
  prometheus::Family<prometheus::Counter>& uploads_;
  prometheus::Family<prometheus::Counter>& rpc_errors_;
  prometheus::Gauge& uploads_running_;
  prometheus::Gauge& up_;
  prometheus::Gauge& storage_adapters_;
  prometheus::Gauge& storage_connections_;
  prometheus::Gauge& storage_listening_;
  prometheus::Counter& storage_resyncs_;
  prometheus::Counter& storage_errors_;
  prometheus::Gauge& storage_in_use_;
  prometheus::Gauge& storage_idle_;
  prometheus::Counter& storage_statement_errors_;
  prometheus::Histogram& storage_notify_lag_;
  StorageSnapshot last_storage_;

  std::mutex mu_;
  PoolSnapshot last_pool_;
  std::map<std::map<std::string, std::string>, prometheus::Gauge*> adapter_gauges_;
};

}  // namespace statetune::serving
