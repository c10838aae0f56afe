#include "server/engine/adapters/adapter_pool.h"

#include <chrono>
#include <limits>
#include <sstream>
#include <utility>

namespace statetune::engine {

// ---------------------------------------------------------------------------------------------
// SlotLease

SlotLease::SlotLease(SlotLease&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)), slot_(std::exchange(other.slot_, kBaseSlot)) {}

SlotLease& SlotLease::operator=(SlotLease&& other) noexcept {
  if (this != &other) {
    release();
    pool_ = std::exchange(other.pool_, nullptr);
    slot_ = std::exchange(other.slot_, kBaseSlot);
  }
  return *this;
}

void SlotLease::release() {
  if (pool_ != nullptr) {
    pool_->unpin(slot_);
    pool_ = nullptr;
    slot_ = kBaseSlot;
  }
}

// ---------------------------------------------------------------------------------------------
// AdapterPool

int64_t AdapterPool::bytes_per_slot(const ModelFingerprint& base,
                                    const std::vector<std::string>& methods) {
  const int64_t per_layer_state = base.d_inner * base.d_state;
  int64_t floats = 0;
  for (const auto& m : normalize_methods(methods)) {
    floats += base.n_layer * (m == kOutputOffset ? base.d_inner : per_layer_state);
  }
  return floats * static_cast<int64_t>(sizeof(float));
}

AdapterPool::AdapterPool(const ModelFingerprint& base, const AdapterPoolOptions& options)
    : base_(base), methods_(normalize_methods(options.methods)) {
  if (methods_.empty()) {
    throw std::invalid_argument(
        "adapter pool: no adapter kinds to allocate; enable at least one of state_offset, "
        "output_offset, initial_state");
  }
  if (base_.n_layer <= 0 || base_.d_inner <= 0 || base_.d_state <= 0) {
    throw std::invalid_argument("adapter pool: base fingerprint has no dimensions (n_layer, d_inner, "
                                "d_state must be positive)");
  }
  bytes_per_slot_ = bytes_per_slot(base_, methods_);
  int64_t slot_count = options.budget_bytes / bytes_per_slot_;
  if (options.max_slots > 0) slot_count = std::min(slot_count, options.max_slots);
  if (slot_count < 2) {
    std::ostringstream msg;
    msg << "adapter pool: budget " << options.budget_bytes << " bytes"
        << (options.max_slots > 0 ? " (max_slots " + std::to_string(options.max_slots) + ")" : "")
        << " holds fewer than 2 slots of " << bytes_per_slot_
        << " bytes (slot 0 is the base model); raise the budget to at least " << 2 * bytes_per_slot_
        << " bytes";
    throw std::invalid_argument(msg.str());
  }
  // Zero-filled: slot 0 must be the zero adapter, and never-written slots stay harmless.
  const auto opts = at::TensorOptions().dtype(at::kFloat).device(options.device);
  const int64_t L = base_.n_layer, D = base_.d_inner, N = base_.d_state;
  for (const auto& m : methods_) {
    if (m == kStateOffset) view_.state_offset = at::zeros({slot_count, L, D, N}, opts);
    if (m == kOutputOffset) view_.output_offset = at::zeros({slot_count, L, D}, opts);
    if (m == kInitialState) view_.initial_state = at::zeros({slot_count, L, D, N}, opts);
  }
  slots_.resize(static_cast<size_t>(slot_count));
  counters_.capacity = slot_count - 1;
  counters_.bytes_per_slot = bytes_per_slot_;
}

AdapterPool::~AdapterPool() = default;

SlotLease AdapterPool::acquire(const std::string& key, const Loader& loader) {
  if (key.empty()) {
    throw std::invalid_argument("adapter pool: empty key; use kBaseSlot for the base model");
  }
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    auto it = index_.find(key);
    if (it == index_.end()) break;
    Slot& slot = slots_[static_cast<size_t>(it->second)];
    if (slot.loading) {
      // Another thread is loading this key: wait for it rather than load a second copy. If that load
      // fails (or the key is invalidated meanwhile) the key disappears and we load it ourselves.
      load_done_.wait(lock);
      continue;
    }
    ++slot.refs;
    slot.last_used = ++tick_;
    ++counters_.hits;
    return SlotLease(this, it->second);
  }

  ++counters_.misses;
  const int32_t index = take_victim_locked();
  if (index < 0) {
    ++counters_.exhausted;
    throw AdapterPoolExhausted("adapter pool: all " + std::to_string(slots_.size() - 1) +
                               " adapter slots are in use by running requests; retry later or "
                               "raise the adapter pool budget");
  }
  Slot& slot = slots_[static_cast<size_t>(index)];
  slot.key = key;
  slot.refs = 1;  // the caller's lease; keeps the slot from being evicted while it loads
  slot.loading = true;
  slot.resolvable = true;
  slot.last_used = ++tick_;
  index_[key] = index;
  lock.unlock();

  const auto start = std::chrono::steady_clock::now();
  try {
    const Adapter adapter = loader();
    write_slot(index, adapter);
  } catch (...) {
    lock.lock();
    if (slot.resolvable) index_.erase(key);
    free_slot_locked(index);
    ++counters_.load_failures;
    load_done_.notify_all();
    throw;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  lock.lock();
  slot.loading = false;
  ++counters_.loads;
  counters_.last_load_seconds = seconds;
  counters_.total_load_seconds += seconds;
  load_done_.notify_all();
  return SlotLease(this, index);
}

bool AdapterPool::preload(const std::string& key, const Adapter& adapter) {
  {
    // Checked first so that a full pool costs neither an eviction nor an "exhausted" count.
    std::lock_guard<std::mutex> lock(mu_);
    if (index_.count(key) > 0) return true;
    bool room = false;
    for (size_t i = 1; i < slots_.size() && !room; ++i) room = slots_[i].refs == 0 && !slots_[i].loading;
    if (!room) return false;
  }
  try {
    // The lease ends right away: the slot stays resident and evictable, like any cached adapter.
    acquire(key, [&adapter] { return adapter; });
  } catch (const AdapterPoolExhausted&) {
    return false;  // requests pinned the last free slot meanwhile
  }
  return true;
}

int32_t AdapterPool::take_victim_locked() {
  int32_t lru = -1;
  uint64_t lru_tick = std::numeric_limits<uint64_t>::max();
  for (size_t i = 1; i < slots_.size(); ++i) {
    const Slot& s = slots_[i];
    if (s.refs > 0 || s.loading) continue;
    if (s.key.empty()) return static_cast<int32_t>(i);  // free slot: no eviction needed
    if (s.last_used < lru_tick) {
      lru_tick = s.last_used;
      lru = static_cast<int32_t>(i);
    }
  }
  if (lru >= 0) {
    Slot& victim = slots_[static_cast<size_t>(lru)];
    if (victim.resolvable) index_.erase(victim.key);
    free_slot_locked(lru);
    ++counters_.evictions;
  }
  return lru;
}

void AdapterPool::free_slot_locked(int32_t index) {
  Slot& s = slots_[static_cast<size_t>(index)];
  s.key.clear();
  s.refs = 0;
  s.loading = false;
  s.resolvable = false;
  s.last_used = 0;
}

void AdapterPool::write_slot(int32_t index, const Adapter& adapter) {
  // The pool is the last gate before the kernels read the tensors: refuse anything for another base
  // or of the wrong shape here, whatever the loader did.
  check_compatible(adapter, base_);
  validate_adapter(adapter, "adapter '" + adapter.name + "' version '" + adapter.version + "'");
  for (const auto& m : adapter.methods) {
    bool allocated = false;
    for (const auto& have : methods_) allocated = allocated || have == m;
    if (!allocated) {
      throw std::runtime_error("adapter '" + adapter.name + "' uses " + m +
                               ", but the adapter pool was created without it (kinds: " +
                               join_methods(methods_) + "); enable " + m + " in the pool options");
    }
  }
  // The slot is pinned only by this caller and no batch references it (see the locking rule in the
  // header), so it can be written in place without the pool lock.
  auto fill = [&](const at::Tensor& pool_tensor, const at::Tensor& src) {
    if (!pool_tensor.defined()) return;
    at::Tensor dst = pool_tensor.select(0, index);
    if (src.defined()) {
      dst.copy_(src);
    } else {
      dst.zero_();
    }
  };
  fill(view_.state_offset, adapter.state_offset);
  fill(view_.output_offset, adapter.output_offset);
  fill(view_.initial_state, adapter.initial_state);
}

void AdapterPool::unpin(int32_t index) {
  std::lock_guard<std::mutex> lock(mu_);
  Slot& s = slots_[static_cast<size_t>(index)];
  if (s.refs > 0) --s.refs;
  // An invalidated slot is freed once its last lease ends; a resolvable one stays cached for LRU.
  if (s.refs == 0 && !s.resolvable && !s.loading) free_slot_locked(index);
}

bool AdapterPool::invalidate(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = index_.find(key);
  if (it == index_.end()) return false;
  const int32_t index = it->second;
  index_.erase(it);
  Slot& s = slots_[static_cast<size_t>(index)];
  s.resolvable = false;
  if (s.refs == 0 && !s.loading) free_slot_locked(index);
  // Waiters on a loading key must re-check: the key no longer resolves to that load.
  load_done_.notify_all();
  return true;
}

bool AdapterPool::contains(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = index_.find(key);
  return it != index_.end() && !slots_[static_cast<size_t>(it->second)].loading;
}

AdapterPoolStats AdapterPool::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  AdapterPoolStats out = counters_;
  out.resident = 0;
  out.pinned = 0;
  for (size_t i = 1; i < slots_.size(); ++i) {
    if (slots_[i].resolvable && !slots_[i].loading) ++out.resident;
    if (slots_[i].refs > 0) ++out.pinned;
  }
  return out;
}

}  // namespace statetune::engine
