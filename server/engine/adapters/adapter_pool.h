// The device-resident adapter pool: a fixed number of slots, each holding one adapter's tensors for
// every layer, that the model's scan kernels index per batch row (AdapterPoolView). Slot 0 is the zero
// adapter (the base model) and is never handed out or overwritten.
//
// Keys are opaque strings chosen by the caller (e.g. "tenant/name@version"); a key resolves to at most
// one slot. acquire() returns a SlotLease that pins its slot for as long as the lease lives (a request
// keeps its lease until it ends); a miss loads into a free slot or evicts the least recently used
// UNPINNED one.
//
// Locking rule (why the scheduler can read the view without a lock): the pool tensors are allocated
// once and never reallocated, so view() is immutable. A slot's contents are only written while no
// lease pins it, i.e. while no queued or running batch row references it; the writer then pins it
// before anyone else can resolve its key. A batch therefore never observes a slot change under it.
// Pool metadata (key -> slot, refcounts, LRU order) is guarded by one mutex; loader calls and the
// device copy run outside it, so one slow disk read does not block hits on other keys.
#pragma once

#include <ATen/ATen.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "server/engine/adapters/adapter.h"
#include "server/engine/model/adapter_pool_view.h"
#include "server/engine/model/model_config.h"
#include "server/engine/util/engine_error.h"

namespace statetune::engine {

inline constexpr int32_t kBaseSlot = 0;

// Every slot is pinned: retry later or raise the budget.
class AdapterPoolExhausted : public EngineError {
 public:
  explicit AdapterPoolExhausted(const std::string& message) : EngineError(ErrorKind::kResourceExhausted, message) {}
};

struct AdapterPoolOptions {
  at::Device device = at::kCPU;
  // Device bytes for all slots together, slot 0 included; the slot count is budget / bytes_per_slot.
  int64_t budget_bytes = int64_t{256} << 20;
  // Upper bound on the slot count (0 = only the budget limits it). Tests use it for tiny pools.
  int64_t max_slots = 0;
  // Which adapter kinds get device tensors. An adapter using a kind that is not allocated is refused.
  std::vector<std::string> methods = {kStateOffset, kOutputOffset, kInitialState};
};

struct AdapterPoolStats {
  int64_t capacity = 0;        // slots adapters can use (slot 0 excluded)
  int64_t resident = 0;        // slots holding a resolvable key
  int64_t pinned = 0;          // slots with at least one lease (invalidated-but-leased included)
  int64_t bytes_per_slot = 0;  // device bytes one slot costs
  int64_t hits = 0, misses = 0, loads = 0, load_failures = 0, evictions = 0, exhausted = 0;
  double last_load_seconds = 0, total_load_seconds = 0;
};

class AdapterPool;

// Pins one slot while alive. Move-only; destroying or release()-ing it unpins. The pool must outlive
// its leases.
class SlotLease {
 public:
  SlotLease() = default;
  SlotLease(SlotLease&& other) noexcept;
  SlotLease& operator=(SlotLease&& other) noexcept;
  SlotLease(const SlotLease&) = delete;
  SlotLease& operator=(const SlotLease&) = delete;
  ~SlotLease() { release(); }

  // The slot to put in the batch's `slots` tensor; kBaseSlot for an empty lease.
  int32_t slot() const { return slot_; }
  bool valid() const { return pool_ != nullptr; }
  void release();

 private:
  friend class AdapterPool;
  SlotLease(AdapterPool* pool, int32_t slot) : pool_(pool), slot_(slot) {}
  AdapterPool* pool_ = nullptr;
  int32_t slot_ = kBaseSlot;
};

class AdapterPool {
 public:
  // Produces the adapter for a key on a miss (typically: read it from the AdapterStore). May throw;
  // the error reaches the caller of acquire() and the slot is returned to the free list.
  using Loader = std::function<Adapter()>;

  // Allocates the zero-filled pool tensors. Throws std::invalid_argument if the budget holds fewer
  // than two slots (slot 0 plus one adapter) or `methods` is empty or unknown.
  AdapterPool(const ModelFingerprint& base, const AdapterPoolOptions& options);
  ~AdapterPool();
  AdapterPool(const AdapterPool&) = delete;
  AdapterPool& operator=(const AdapterPool&) = delete;

  // Device bytes one slot costs for a model of these dims with these kinds allocated.
  static int64_t bytes_per_slot(const ModelFingerprint& base, const std::vector<std::string>& methods);

  // The tensors to pass to MambaModel::prefill/decode. Immutable for the pool's life.
  AdapterPoolView view() const { return view_; }
  int64_t capacity() const { return static_cast<int64_t>(slots_.size()) - 1; }
  const std::vector<std::string>& methods() const { return methods_; }

  // Resolves `key` to a pinned slot, calling `loader` (outside the pool lock) on a miss. Concurrent
  // acquires of a key that is being loaded wait for that load instead of loading twice.
  // Throws AdapterPoolExhausted when every slot is pinned, std::runtime_error when the loaded adapter
  // does not fit this pool's base model or kinds, and whatever `loader` throws.
  SlotLease acquire(const std::string& key, const Loader& loader);

  // Makes `key` resident from an adapter already in memory (one just uploaded), so the first request
  // naming it finds it in a slot instead of reading the file. Takes a slot the way a miss in acquire()
  // does (a free one, else the least recently used unpinned one) and leaves it unpinned; never evicts
  // a pinned slot: returns false, changing nothing, when every slot is pinned (the first request then
  // loads it). Returns true when the key is resident. Throws like acquire() for an adapter that does
  // not fit this pool.
  bool preload(const std::string& key, const Adapter& adapter);

  // The key stops resolving (its adapter was replaced or deleted). A slot still leased keeps its
  // contents until the last lease ends and is freed then; the next acquire(key) loads afresh.
  // Returns whether the key was resident.
  bool invalidate(const std::string& key);
  bool contains(const std::string& key) const;

  AdapterPoolStats stats() const;

 private:
  friend class SlotLease;
  struct Slot {
    std::string key;         // empty = free
    int64_t refs = 0;        // live leases
    bool loading = false;    // a loader is filling it (pinned by the loading caller)
    bool resolvable = false; // `key` maps to this slot in index_
    uint64_t last_used = 0;  // LRU tick
  };

  void unpin(int32_t slot);
  // With mu_ held: a free slot, else the least recently used unpinned one (evicted), else -1.
  int32_t take_victim_locked();
  void free_slot_locked(int32_t slot);
  // Copies `adapter` into slot `slot` (zeroing allocated kinds it lacks). Outside the lock.
  void write_slot(int32_t slot, const Adapter& adapter);

  ModelFingerprint base_;
  std::vector<std::string> methods_;
  AdapterPoolView view_;
  int64_t bytes_per_slot_ = 0;

  mutable std::mutex mu_;
  std::condition_variable load_done_;
  std::vector<Slot> slots_;
  std::unordered_map<std::string, int32_t> index_;
  uint64_t tick_ = 0;
  AdapterPoolStats counters_;
};

}  // namespace statetune::engine
