// What the Gateway API Inference Extension's endpoint picker (EPP) reads from a model server's
// /metrics to route a request (its "model server protocol"), beside statetune_requests_waiting and
// statetune_requests_running, which already have the protocol's meaning:
//   statetune_batch_rows_usage_ratio    gauge, 0..1: decode rows in use / --max-batch. A Mamba model
//       keeps one fixed-size state row per running request instead of a growing KV cache, so the rows
//       are the resource that fills up; this is the protocol's "KV cache utilisation".
//   statetune_lora_requests_info{running_lora_adapters, waiting_lora_adapters, max_lora}
//       gauge whose value is the Unix time of the last update (the EPP keeps the series with the
//       largest value); the labels list, comma-separated, the adapter names (as clients put them in
//       `model`) with requests running / waiting, and max_lora is the number of device adapter slots.
// The EPP is told these names by its flags (deploy/gateway/, docs/operations.md).
#pragma once

#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace statetune::serving {

class ModelServerProtocolMetrics {
 public:
  explicit ModelServerProtocolMetrics(prometheus::Registry& registry);

  // Request counts per adapter key ("tenant/name@version"; "" = the base model, which is no adapter).
  void update(int64_t running, int64_t max_rows, const std::map<std::string, int64_t>& running_by_key,
              const std::map<std::string, int64_t>& waiting_by_key, int64_t adapter_slots, double unix_seconds);

 private:
  prometheus::Gauge& rows_usage_;
  prometheus::Family<prometheus::Gauge>& lora_info_;
  std::mutex mu_;
  prometheus::Gauge* current_ = nullptr;  // the one series of lora_info_
  std::map<std::string, std::string> current_labels_;
};

// "a,b" of the distinct adapter names among the keys (sorted; the base model left out).
std::string adapter_name_list(const std::map<std::string, int64_t>& by_key);

}  // namespace statetune::serving
