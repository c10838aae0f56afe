#include "kernels/batch_indices.h"

#include <algorithm>
#include <vector>

namespace statetune::kernels {

std::string describe_bad_rows(const int64_t* rows, int64_t batch, int64_t capacity) {
  for (int64_t b = 0; b < batch; ++b) {
    if (rows[b] < 0 || rows[b] >= capacity) {
      return "cache row " + std::to_string(rows[b]) + " (batch row " + std::to_string(b) +
             ") outside [0, " + std::to_string(capacity) + ")";
    }
  }
  std::vector<int64_t> sorted(rows, rows + batch);
  std::sort(sorted.begin(), sorted.end());
  const auto dup = std::adjacent_find(sorted.begin(), sorted.end());
  if (dup != sorted.end()) {
    return "cache row " + std::to_string(*dup) + " appears twice in one batch (rows must be unique)";
  }
  return "";
}

std::string describe_bad_slots(const int32_t* slots, int64_t batch, int64_t num_slots) {
  for (int64_t b = 0; b < batch; ++b) {
    if (slots[b] < 0 || slots[b] >= num_slots) {
      return "adapter slot " + std::to_string(slots[b]) + " (batch row " + std::to_string(b) +
             ") outside [0, " + std::to_string(num_slots) + ")";
    }
  }
  return "";
}

void check_rows_on_host(const at::Tensor& rows, int64_t capacity, const char* what) {
  if (!rows.defined() || !rows.device().is_cpu()) return;
  const at::Tensor r = rows.to(at::kLong).contiguous();
  const std::string bad = describe_bad_rows(r.data_ptr<int64_t>(), r.numel(), capacity);
  TORCH_CHECK(bad.empty(), what, ": ", bad);
}

void check_slots_on_host(const at::Tensor& slots, int64_t num_slots, const char* what) {
  if (!slots.defined() || !slots.device().is_cpu()) return;
  const at::Tensor s = slots.to(at::kInt).contiguous();
  const std::string bad = describe_bad_slots(s.data_ptr<int32_t>(), s.numel(), num_slots);
  TORCH_CHECK(bad.empty(), what, ": ", bad);
}

}  // namespace statetune::kernels
