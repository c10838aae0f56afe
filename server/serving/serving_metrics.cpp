#include "server/serving/serving_metrics.h"

#include <set>

#include "server/common/metrics.h"
#include "server/engine/adapters/adapter_id.h"

namespace statetune::serving {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

// An AdapterId key -> labels; "" -> the base model.
std::map<std::string, std::string> adapter_labels(const std::string& key, const std::string& state) {
  std::map<std::string, std::string> labels{{"state", state}, {"tenant", ""}, {"adapter", ""}, {"version", ""}};
  if (const auto id = engine::AdapterId::parse(key)) {
    labels["tenant"] = id->tenant;
    labels["adapter"] = id->name;
    labels["version"] = id->version;
  } else if (!key.empty()) {
    labels["adapter"] = key;
  }
  return labels;
}

}  // namespace

ServingMetrics::ServingMetrics(prometheus::Registry& r)
    : requests_(BuildCounter().Name("statetune_requests_total").Help("Generate requests by tenant and final status").Register(r)),
      ttft_(BuildHistogram().Name("statetune_time_to_first_token_seconds").Help("Submit to first generated token").Register(r)),
      itl_(BuildHistogram().Name("statetune_inter_token_latency_seconds").Help("Time between a request's consecutive tokens").Register(r)
               .Add({}, common::token_latency_buckets_seconds())),
      e2e_(BuildHistogram().Name("statetune_request_duration_seconds").Help("Generate requests end to end").Register(r)),
      queue_(BuildHistogram().Name("statetune_queue_time_seconds").Help("Submit to joining the running batch").Register(r)
                 .Add({}, common::latency_buckets_seconds())),
      prompt_tokens_(BuildCounter().Name("statetune_prompt_tokens_total").Help("Prompt tokens prefilled").Register(r)),
      generated_tokens_(BuildCounter().Name("statetune_generated_tokens_total").Help("Tokens generated").Register(r)),
      running_(BuildGauge().Name("statetune_requests_running").Help("Requests in the decode batch").Register(r).Add({})),
      waiting_(BuildGauge().Name("statetune_requests_waiting").Help("Requests in the waiting queue").Register(r).Add({})),
      batch_(BuildHistogram().Name("statetune_batch_size").Help("Rows per decode step").Register(r)
                 .Add({}, common::power_of_two_buckets(1024))),
      resident_(BuildGauge().Name("statetune_adapters_resident").Help("Adapters loaded in device slots").Register(r).Add({})),
      slots_(BuildGauge().Name("statetune_adapter_slots").Help("Device adapter slots (base slot excluded)").Register(r).Add({})),
      pinned_(BuildGauge().Name("statetune_adapter_slots_pinned").Help("Slots pinned by queued or running requests").Register(r).Add({})),
      loads_(BuildCounter().Name("statetune_adapter_loads_total").Help("Adapter loads into device slots").Register(r).Add({})),
      load_failures_(BuildCounter().Name("statetune_adapter_load_failures_total").Help("Failed adapter loads").Register(r).Add({})),
      evictions_(BuildCounter().Name("statetune_adapter_evictions_total").Help("Adapters evicted (LRU)").Register(r).Add({})),
      load_seconds_(BuildCounter().Name("statetune_adapter_load_seconds_total").Help("Seconds spent loading adapters").Register(r).Add({})),
      adapter_requests_(BuildGauge().Name("statetune_adapter_requests").Help("Running/waiting requests per adapter (routing info)").Register(r)),
      uploads_(BuildCounter().Name("statetune_adapter_uploads_total").Help("Adapter uploads by tenant and status").Register(r)),
      rpc_errors_(BuildCounter().Name("statetune_rpc_errors_total").Help("Failed RPCs by method and status code").Register(r)),
      uploads_running_(BuildGauge().Name("statetune_adapter_uploads_running").Help("Adapter uploads admitted and not finished").Register(r).Add({})),
      up_(BuildGauge().Name("statetune_up").Help("1 while serving, 0 while loading or draining").Register(r).Add({})),
      storage_adapters_(BuildGauge().Name("statetune_adapter_storage_adapters").Help("Adapters this replica knows from the shared database").Register(r).Add({})),
      storage_connections_(BuildGauge().Name("statetune_adapter_storage_connections").Help("Open request connections to the shared database").Register(r).Add({})),
      storage_listening_(BuildGauge().Name("statetune_adapter_storage_listening").Help("1 while the replica hears the database's adapter changes").Register(r).Add({})),
      storage_resyncs_(BuildCounter().Name("statetune_adapter_storage_resyncs_total").Help("Full re-reads of the adapters after a (re)connect").Register(r).Add({})),
      storage_errors_(BuildCounter().Name("statetune_adapter_storage_unavailable_total").Help("Adapter storage calls that failed: database unreachable").Register(r).Add({})),
      storage_in_use_(BuildGauge().Name("statetune_adapter_storage_connections_in_use").Help("Request connections a call holds now").Register(r).Add({})),
      storage_idle_(BuildGauge().Name("statetune_adapter_storage_connections_idle").Help("Request connections open and idle").Register(r).Add({})),
      storage_statement_errors_(BuildCounter().Name("statetune_adapter_storage_statement_errors_total").Help("Adapter storage calls that failed on a statement").Register(r).Add({})),
      storage_notify_lag_(BuildHistogram().Name("statetune_adapter_storage_notify_lag_seconds").Help("An adapter change's NOTIFY (database clock) to this replica having applied it").Register(r)
                              .Add({}, common::latency_buckets_seconds())) {}

void ServingMetrics::request_finished(const std::string& tenant, const std::string& status, const char* api) {
  requests_.Add({{"tenant", tenant}, {"status", status}, {"api", api}}).Increment();
}
void ServingMetrics::first_token(const std::string& tenant, double seconds) {
  ttft_.Add({{"tenant", tenant}}, common::latency_buckets_seconds()).Observe(seconds);
}
void ServingMetrics::inter_token(double seconds) { itl_.Observe(seconds); }
void ServingMetrics::request_duration(const std::string& tenant, double seconds) {
  e2e_.Add({{"tenant", tenant}}, common::latency_buckets_seconds()).Observe(seconds);
}
void ServingMetrics::queue_time(double seconds) { queue_.Observe(seconds); }
void ServingMetrics::tokens(const std::string& tenant, int64_t prompt, int64_t generated) {
  prompt_tokens_.Add({{"tenant", tenant}}).Increment(static_cast<double>(prompt));
  generated_tokens_.Add({{"tenant", tenant}}).Increment(static_cast<double>(generated));
}
void ServingMetrics::batch(int64_t rows) { batch_.Observe(static_cast<double>(rows)); }
void ServingMetrics::upload(const std::string& tenant, const std::string& status) {
  uploads_.Add({{"tenant", tenant}, {"status", status}}).Increment();
}
void ServingMetrics::rpc_failed(const std::string& method, const std::string& code) {
  rpc_errors_.Add({{"method", method}, {"code", code}}).Increment();
}
void ServingMetrics::set_uploads_running(int64_t n) { uploads_running_.Set(static_cast<double>(n)); }
void ServingMetrics::set_up(bool serving) { up_.Set(serving ? 1 : 0); }

void ServingMetrics::set_load(int64_t running, int64_t waiting, const std::map<std::string, int64_t>& running_by_key,
                              const std::map<std::string, int64_t>& waiting_by_key) {
  running_.Set(static_cast<double>(running));
  waiting_.Set(static_cast<double>(waiting));
  std::lock_guard<std::mutex> lock(mu_);
  std::set<std::map<std::string, std::string>> seen;
  auto put = [&](const std::map<std::string, int64_t>& by_key, const char* state) {
    for (const auto& [key, n] : by_key) {
      auto labels = adapter_labels(key, state);
      auto it = adapter_gauges_.find(labels);
      if (it == adapter_gauges_.end()) it = adapter_gauges_.emplace(labels, &adapter_requests_.Add(labels)).first;
      it->second->Set(static_cast<double>(n));
      seen.insert(labels);
    }
  };
  put(running_by_key, "running");
  put(waiting_by_key, "waiting");
  // Adapters no longer running or waiting leave the info metric instead of lingering at 0.
  for (auto it = adapter_gauges_.begin(); it != adapter_gauges_.end();) {
    if (!seen.count(it->first)) {
      adapter_requests_.Remove(it->second);
      it = adapter_gauges_.erase(it);
    } else {
      ++it;
    }
  }
}

void ServingMetrics::set_pool(const PoolSnapshot& s) {
  std::lock_guard<std::mutex> lock(mu_);
  slots_.Set(static_cast<double>(s.capacity));
  resident_.Set(static_cast<double>(s.resident));
  pinned_.Set(static_cast<double>(s.pinned));
  // Prometheus counters only grow: add what the pool counted since the last snapshot.
  if (s.loads > last_pool_.loads) loads_.Increment(static_cast<double>(s.loads - last_pool_.loads));
  if (s.load_failures > last_pool_.load_failures) {
    load_failures_.Increment(static_cast<double>(s.load_failures - last_pool_.load_failures));
  }
  if (s.evictions > last_pool_.evictions) evictions_.Increment(static_cast<double>(s.evictions - last_pool_.evictions));
  if (s.total_load_seconds > last_pool_.total_load_seconds) {
    load_seconds_.Increment(s.total_load_seconds - last_pool_.total_load_seconds);
  }
  last_pool_ = s;
}

void ServingMetrics::set_storage(const StorageSnapshot& s) {
  std::lock_guard<std::mutex> lock(mu_);
  storage_adapters_.Set(static_cast<double>(s.adapters_known));
  storage_connections_.Set(static_cast<double>(s.connections));
  storage_listening_.Set(s.listening ? 1 : 0);
  if (s.resyncs > last_storage_.resyncs) storage_resyncs_.Increment(static_cast<double>(s.resyncs - last_storage_.resyncs));
  if (s.unavailable_errors > last_storage_.unavailable_errors) {
    storage_errors_.Increment(static_cast<double>(s.unavailable_errors - last_storage_.unavailable_errors));
  }
  storage_in_use_.Set(static_cast<double>(s.connections_in_use));
  storage_idle_.Set(static_cast<double>(s.connections_idle));
  if (s.statement_errors > last_storage_.statement_errors) {
    storage_statement_errors_.Increment(static_cast<double>(s.statement_errors - last_storage_.statement_errors));
  }
  last_storage_ = s;
}

void ServingMetrics::notify_lag(double seconds) { storage_notify_lag_.Observe(seconds); }

}  // namespace statetune::serving
