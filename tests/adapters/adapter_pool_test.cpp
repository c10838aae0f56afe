#include "server/engine/adapters/adapter_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "tests/adapters/test_fixtures.h"

namespace statetune::engine {
namespace {

using testing::constant_adapter;
using testing::tiny_fingerprint;

AdapterPoolOptions small_pool(int64_t slots) {
  AdapterPoolOptions o;
  o.max_slots = slots;
  o.budget_bytes = int64_t{1} << 30;
  return o;
}

AdapterPool::Loader constant_loader(float value, std::atomic<int>* calls = nullptr) {
  return [value, calls] {
    if (calls) ++*calls;
    return constant_adapter(value);
  };
}

// Every element of the slot's state_offset equals `value`.
bool slot_holds(const AdapterPool& pool, int32_t slot, float value) {
  const auto v = pool.view();
  return v.state_offset.select(0, slot).eq(value).all().item<bool>() &&
         v.output_offset.select(0, slot).eq(value).all().item<bool>() &&
         v.initial_state.select(0, slot).eq(2 * value).all().item<bool>();
}

TEST(AdapterPool, SizesFromBudgetAndShapesView) {
  const auto fp = tiny_fingerprint();
  const int64_t per_slot = AdapterPool::bytes_per_slot(fp, {kStateOffset, kOutputOffset});
  EXPECT_EQ(per_slot, (3 * 8 * 4 + 3 * 8) * 4);
  AdapterPoolOptions o;
  o.methods = {kStateOffset, kOutputOffset};
  o.budget_bytes = per_slot * 5 + per_slot / 2;
  AdapterPool pool(fp, o);
  EXPECT_EQ(pool.capacity(), 4);
  const auto v = pool.view();
  EXPECT_EQ(v.state_offset.sizes(), at::IntArrayRef({5, 3, 8, 4}));
  EXPECT_EQ(v.output_offset.sizes(), at::IntArrayRef({5, 3, 8}));
  EXPECT_FALSE(v.initial_state.defined());
  EXPECT_EQ(pool.stats().bytes_per_slot, per_slot);

  o.budget_bytes = per_slot;  // slot 0 only: useless
  EXPECT_THROW(AdapterPool(fp, o), std::invalid_argument);
  o.methods = {};
  o.budget_bytes = per_slot * 10;
  EXPECT_THROW(AdapterPool(fp, o), std::invalid_argument);
}

TEST(AdapterPool, SlotZeroStaysZeroAndAdaptersLandInTheirSlot) {
  AdapterPool pool(tiny_fingerprint(), small_pool(3));
  auto a = pool.acquire("t/a@1", constant_loader(1.5f));
  auto b = pool.acquire("t/b@1", constant_loader(-2.0f));
  EXPECT_NE(a.slot(), kBaseSlot);
  EXPECT_NE(b.slot(), kBaseSlot);
  EXPECT_NE(a.slot(), b.slot());
  EXPECT_TRUE(slot_holds(pool, kBaseSlot, 0.0f));
  EXPECT_TRUE(slot_holds(pool, a.slot(), 1.5f));
  EXPECT_TRUE(slot_holds(pool, b.slot(), -2.0f));
  // The per-layer views the kernels get point into the same storage.
  at::Tensor slots = at::tensor({a.slot(), b.slot(), 0}, at::kInt);
  const auto layer = pool.view().layer(2, slots);
  EXPECT_EQ(layer.state_offset.sizes(), at::IntArrayRef({3, 8, 4}));
  EXPECT_EQ(layer.state_offset[a.slot()][7][3].item<float>(), 1.5f);
}

TEST(AdapterPool, HitDoesNotReload) {
  AdapterPool pool(tiny_fingerprint(), small_pool(3));
  std::atomic<int> calls{0};
  int32_t slot;
  {
    auto l1 = pool.acquire("k", constant_loader(1, &calls));
    slot = l1.slot();
  }
  auto l2 = pool.acquire("k", constant_loader(1, &calls));
  EXPECT_EQ(l2.slot(), slot);
  EXPECT_EQ(calls.load(), 1);
  const auto s = pool.stats();
  EXPECT_EQ(s.hits, 1);
  EXPECT_EQ(s.misses, 1);
  EXPECT_EQ(s.loads, 1);
  EXPECT_EQ(s.resident, 1);
  EXPECT_EQ(s.pinned, 1);
  EXPECT_GT(s.total_load_seconds, 0.0);
}

TEST(AdapterPool, MissingKindsAreZeroedWhenASlotIsReused) {
  AdapterPool pool(tiny_fingerprint(), small_pool(2));  // one usable slot
  int32_t slot;
  {
    auto full = pool.acquire("full", constant_loader(3.0f));
    slot = full.slot();
  }
  auto partial = pool.acquire("partial", [] { return constant_adapter(4.0f, {kOutputOffset}); });
  ASSERT_EQ(partial.slot(), slot);
  const auto v = pool.view();
  EXPECT_TRUE(v.output_offset.select(0, slot).eq(4.0f).all().item<bool>());
  EXPECT_TRUE(v.state_offset.select(0, slot).eq(0.0f).all().item<bool>());
  EXPECT_TRUE(v.initial_state.select(0, slot).eq(0.0f).all().item<bool>());
  EXPECT_EQ(pool.stats().evictions, 1);
}

TEST(AdapterPool, EvictsLeastRecentlyUsedUnpinned) {
  AdapterPool pool(tiny_fingerprint(), small_pool(4));  // 3 usable slots
  pool.acquire("a", constant_loader(1));
  pool.acquire("b", constant_loader(2));
  pool.acquire("c", constant_loader(3));
  pool.acquire("a", constant_loader(1));  // a is now the most recent; b the least
  pool.acquire("d", constant_loader(4));
  EXPECT_TRUE(pool.contains("a"));
  EXPECT_FALSE(pool.contains("b"));
  EXPECT_TRUE(pool.contains("c"));
  EXPECT_TRUE(pool.contains("d"));
  pool.acquire("e", constant_loader(5));  // next least recent: c
  EXPECT_FALSE(pool.contains("c"));
  EXPECT_TRUE(pool.contains("a"));
  EXPECT_EQ(pool.stats().evictions, 2);
}

TEST(AdapterPool, PinnedSlotsAreNeverEvictedAndFullPoolIsAnError) {
  AdapterPool pool(tiny_fingerprint(), small_pool(3));  // 2 usable slots
  auto oldest = pool.acquire("oldest", constant_loader(7));
  const int32_t pinned_slot = oldest.slot();
  for (int i = 0; i < 5; ++i) {
    auto l = pool.acquire("k" + std::to_string(i), constant_loader(static_cast<float>(i)));
    EXPECT_NE(l.slot(), pinned_slot);
  }
  EXPECT_TRUE(pool.contains("oldest"));
  EXPECT_TRUE(slot_holds(pool, pinned_slot, 7));

  auto second = pool.acquire("second", constant_loader(8));
  std::atomic<int> calls{0};
  EXPECT_THROW(pool.acquire("third", constant_loader(9, &calls)), AdapterPoolExhausted);
  EXPECT_EQ(calls.load(), 0);  // refused before loading anything
  EXPECT_EQ(pool.stats().exhausted, 1);
  second.release();
  auto third = pool.acquire("third", constant_loader(9));
  EXPECT_TRUE(slot_holds(pool, third.slot(), 9));
}

TEST(AdapterPool, PreloadMakesAKeyResidentWithoutPinningOrEvictingPinnedSlots) {
  AdapterPool pool(tiny_fingerprint(), small_pool(3));  // 2 usable slots
  EXPECT_TRUE(pool.preload("t/a@1", constant_adapter(4)));
  EXPECT_TRUE(pool.contains("t/a@1"));
  EXPECT_EQ(pool.stats().loads, 1);
  EXPECT_EQ(pool.stats().pinned, 0);
  // The first request is a hit: its loader never runs.
  std::atomic<int> calls{0};
  auto lease = pool.acquire("t/a@1", constant_loader(5, &calls));
  EXPECT_EQ(calls.load(), 0);
  EXPECT_TRUE(slot_holds(pool, lease.slot(), 4));
  EXPECT_TRUE(pool.preload("t/a@1", constant_adapter(6)));  // already resident: nothing rewritten
  EXPECT_TRUE(slot_holds(pool, lease.slot(), 4));
  EXPECT_EQ(pool.stats().loads, 1);

  // Full of pinned slots: skipped, nothing evicted, nothing counted as a refused request.
  auto other = pool.acquire("t/b@1", constant_loader(7));
  EXPECT_FALSE(pool.preload("t/c@1", constant_adapter(8)));
  EXPECT_FALSE(pool.contains("t/c@1"));
  EXPECT_TRUE(slot_holds(pool, lease.slot(), 4));
  EXPECT_TRUE(slot_holds(pool, other.slot(), 7));
  EXPECT_EQ(pool.stats().evictions, 0);
  EXPECT_EQ(pool.stats().exhausted, 0);

  // With an unpinned slot it takes the least recently used one, like a miss would.
  other.release();
  EXPECT_TRUE(pool.preload("t/c@1", constant_adapter(8)));
  EXPECT_FALSE(pool.contains("t/b@1"));
  EXPECT_EQ(pool.stats().evictions, 1);
  auto c = pool.acquire("t/c@1", constant_loader(9, &calls));
  EXPECT_EQ(calls.load(), 0);
  EXPECT_TRUE(slot_holds(pool, c.slot(), 8));
}

TEST(AdapterPool, InvalidateWhileLeasedKeepsTheOldSlotUntilReleased) {
  AdapterPool pool(tiny_fingerprint(), small_pool(4));
  auto old_lease = pool.acquire("t/a", constant_loader(1));
  const int32_t old_slot = old_lease.slot();
  EXPECT_TRUE(pool.invalidate("t/a"));
  EXPECT_FALSE(pool.contains("t/a"));
  EXPECT_FALSE(pool.invalidate("t/a"));

  auto new_lease = pool.acquire("t/a", constant_loader(2));
  EXPECT_NE(new_lease.slot(), old_slot);
  EXPECT_TRUE(slot_holds(pool, old_slot, 1));  // the running request still reads version 1
  EXPECT_TRUE(slot_holds(pool, new_lease.slot(), 2));
  EXPECT_EQ(pool.stats().pinned, 2);
  EXPECT_EQ(pool.stats().resident, 1);

  old_lease.release();
  EXPECT_EQ(pool.stats().pinned, 1);
  // The freed slot is reused before any resident adapter is evicted.
  auto other = pool.acquire("t/b", constant_loader(3));
  EXPECT_EQ(other.slot(), old_slot);
  EXPECT_EQ(pool.stats().evictions, 0);
}

TEST(AdapterPool, FailedLoadFreesTheSlotAndPropagates) {
  AdapterPool pool(tiny_fingerprint(), small_pool(2));
  EXPECT_THROW(pool.acquire("bad", []() -> Adapter { throw std::runtime_error("disk on fire"); }),
               std::runtime_error);
  EXPECT_FALSE(pool.contains("bad"));
  // Wrong base model: refused by the pool itself.
  EXPECT_THROW(pool.acquire("other-base",
                            [] {
                              Adapter a = constant_adapter(1);
                              a.base.weights_sha256 = std::string(64, 'b');
                              return a;
                            }),
               std::runtime_error);
  const auto s = pool.stats();
  EXPECT_EQ(s.load_failures, 2);
  EXPECT_EQ(s.pinned, 0);
  auto ok = pool.acquire("good", constant_loader(1));  // the only slot is usable again
  EXPECT_EQ(ok.slot(), 1);
}

TEST(AdapterPool, RefusesKindsItDidNotAllocate) {
  AdapterPoolOptions o = small_pool(3);
  o.methods = {kStateOffset};
  AdapterPool pool(tiny_fingerprint(), o);
  try {
    pool.acquire("x", [] { return constant_adapter(1, {kStateOffset, kInitialState}); });
    FAIL() << "expected a refusal";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("initial_state"), std::string::npos) << e.what();
  }
  auto ok = pool.acquire("y", [] { return constant_adapter(1, {kStateOffset}); });
  EXPECT_TRUE(pool.view().state_offset.select(0, ok.slot()).eq(1.0f).all().item<bool>());
}

TEST(AdapterPool, LeasesMoveAndReleaseOnce) {
  AdapterPool pool(tiny_fingerprint(), small_pool(3));
  SlotLease a = pool.acquire("a", constant_loader(1));
  SlotLease b = std::move(a);
  EXPECT_FALSE(a.valid());
  EXPECT_EQ(a.slot(), kBaseSlot);
  EXPECT_EQ(pool.stats().pinned, 1);
  SlotLease c;
  c = std::move(b);
  EXPECT_EQ(pool.stats().pinned, 1);
  c.release();
  c.release();
  EXPECT_EQ(pool.stats().pinned, 0);
}

// Threads acquire random keys while others invalidate; every held lease must show its key's values
// for as long as it is held (a slot is never rewritten under a lease).
TEST(AdapterPool, ConcurrentAcquireReleaseInvalidate) {
  constexpr int kThreads = 4, kKeys = 10, kIters = 300;
  AdapterPool pool(tiny_fingerprint(), small_pool(kThreads + 2));
  std::atomic<int> loads{0}, violations{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(1234 + t);
      for (int i = 0; i < kIters; ++i) {
        const int k = static_cast<int>(rng() % kKeys);
        if (rng() % 10 == 0) {
          pool.invalidate("key" + std::to_string(k));
          continue;
        }
        SlotLease lease =
            pool.acquire("key" + std::to_string(k), constant_loader(static_cast<float>(k + 1), &loads));
        if (!slot_holds(pool, lease.slot(), static_cast<float>(k + 1))) ++violations;
        std::this_thread::yield();
        if (!slot_holds(pool, lease.slot(), static_cast<float>(k + 1))) ++violations;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(violations.load(), 0);
  const auto s = pool.stats();
  EXPECT_EQ(s.pinned, 0);
  EXPECT_EQ(s.loads, loads.load());
  EXPECT_EQ(s.misses, s.loads + s.load_failures + s.exhausted);
  EXPECT_LE(s.resident, pool.capacity());
  EXPECT_TRUE(slot_holds(pool, kBaseSlot, 0.0f));
}

}  // namespace
}  // namespace statetune::engine
