// Checks of the per-row indices a batched kernel call carries: cache rows (which state row each
// batch row reads and writes) and adapter slots (which tenant's adapter it reads). A row outside
// the cache writes another sequence's state, two batch rows on one cache row race (the kernels
// update rows in parallel), a slot outside the pool reads another tenant's adapter. The indices are
// checked on the host where they are built, before they go to a device (a device-side check would
// need a synchronisation); the CUDA kernels also get the counts and leave a row whose index is out
// of range untouched, so an unchecked index can never reach memory it does not own.
#pragma once

#include <cstdint>
#include <string>

#include <ATen/ATen.h>

namespace statetune::kernels {

// "" when every rows[b] lies in [0, capacity) and no two are equal, else what is wrong.
std::string describe_bad_rows(const int64_t* rows, int64_t batch, int64_t capacity);
// "" when every slots[b] lies in [0, num_slots), else what is wrong (rows may share a slot).
std::string describe_bad_slots(const int32_t* slots, int64_t batch, int64_t num_slots);

// The same on index tensors ([B], any integer dtype) that live on the CPU; throws c10::Error
// (TORCH_CHECK) naming `what`. Tensors already on a device are not read (see above).
void check_rows_on_host(const at::Tensor& rows, int64_t capacity, const char* what);
void check_slots_on_host(const at::Tensor& slots, int64_t num_slots, const char* what);

}  // namespace statetune::kernels
