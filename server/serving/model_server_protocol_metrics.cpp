#include "server/serving/model_server_protocol_metrics.h"

#include <algorithm>
#include <set>

#include "server/engine/adapters/adapter_id.h"

namespace statetune::serving {

std::string adapter_name_list(const std::map<std::string, int64_t>& by_key) {
  // The EPP matches these against the request's `model`, which names an adapter without its tenant
  // (the tenant comes from the key). Two tenants' adapters of one name are one entry: the EPP only
  // uses the list to prefer replicas that already hold the adapter.
  std::set<std::string> names;
  for (const auto& [key, n] : by_key) {
    if (n <= 0) continue;
    if (const auto id = engine::AdapterId::parse(key)) names.insert(id->name);
  }
  std::string out;
  for (const auto& name : names) {
    if (!out.empty()) out += ',';
    out += name;
  }
  return out;
}

ModelServerProtocolMetrics::ModelServerProtocolMetrics(prometheus::Registry& r)
    : rows_usage_(prometheus::BuildGauge()
                      .Name("statetune_batch_rows_usage_ratio")
                      .Help("Decode batch rows in use / --max-batch (0..1): the model-server protocol's cache utilisation")
                      .Register(r)
                      .Add({})),
      lora_info_(prometheus::BuildGauge()
                     .Name("statetune_lora_requests_info")
                     .Help("Adapters with running / waiting requests and the adapter slot count (labels); "
                           "value: Unix time of the update")
                     .Register(r)) {}

void ModelServerProtocolMetrics::update(int64_t running, int64_t max_rows,
                                        const std::map<std::string, int64_t>& running_by_key,
                                        const std::map<std::string, int64_t>& waiting_by_key, int64_t adapter_slots,
                                        double unix_seconds) {
  rows_usage_.Set(max_rows > 0 ? std::clamp(static_cast<double>(running) / static_cast<double>(max_rows), 0.0, 1.0) : 0.0);
  const std::map<std::string, std::string> labels{{"running_lora_adapters", adapter_name_list(running_by_key)},
                                                  {"waiting_lora_adapters", adapter_name_list(waiting_by_key)},
                                                  {"max_lora", std::to_string(adapter_slots)}};
  std::lock_guard<std::mutex> lock(mu_);
  // One series at a time: the previous label set goes, so a scrape never shows adapters that left.
  if (current_ == nullptr || labels != current_labels_) {
    if (current_ != nullptr) lora_info_.Remove(current_);
    current_ = &lora_info_.Add(labels);
    current_labels_ = labels;
  }
  current_->Set(unix_seconds);
}

}  // namespace statetune::serving
