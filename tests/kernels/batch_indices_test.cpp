// The host-side index checks every backend runs before a batch touches the state cache or the
// adapter pool (kernels/batch_indices.h): the CUDA glue calls check_rows_on_host /
// check_slots_on_host on index tensors built on the CPU, the CPU backend and the model call
// describe_bad_rows. A bad row, a duplicate row or a bad slot is a clear error and nothing is
// written.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <string>

#include "kernels/batch_indices.h"
#include "kernels/ssm_kernels.h"

namespace statetune::kernels {
namespace {

TEST(BatchIndices, RowsMustBeInRangeAndUnique) {
  const int64_t ok[] = {3, 0, 2};
  EXPECT_EQ(describe_bad_rows(ok, 3, 4), "");
  const int64_t past[] = {0, 4};
  EXPECT_EQ(describe_bad_rows(past, 2, 4), "cache row 4 (batch row 1) outside [0, 4)");
  const int64_t negative[] = {-1};
  EXPECT_EQ(describe_bad_rows(negative, 1, 4), "cache row -1 (batch row 0) outside [0, 4)");
  const int64_t dup[] = {1, 3, 1};
  EXPECT_EQ(describe_bad_rows(dup, 3, 4), "cache row 1 appears twice in one batch (rows must be unique)");
  EXPECT_EQ(describe_bad_rows(nullptr, 0, 0), "");
}

TEST(BatchIndices, SlotsMustBeInRangeAndMayRepeat) {
  const int32_t ok[] = {0, 2, 2};
  EXPECT_EQ(describe_bad_slots(ok, 3, 3), "");
  const int32_t bad[] = {0, 3};
  EXPECT_EQ(describe_bad_slots(bad, 2, 3), "adapter slot 3 (batch row 1) outside [0, 3)");
  const int32_t negative[] = {-2};
  EXPECT_EQ(describe_bad_slots(negative, 1, 3), "adapter slot -2 (batch row 0) outside [0, 3)");
}

TEST(BatchIndices, TensorChecksNameTheCallerAndTheIndex) {
  try {
    check_rows_on_host(at::tensor({0, 2, 2}, at::kLong), 3, "statetune cuda kernels");
    FAIL() << "duplicate rows accepted";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("statetune cuda kernels: cache row 2 appears twice"),
              std::string::npos)
        << e.what_without_backtrace();
  }
  EXPECT_THROW(check_rows_on_host(at::tensor({5}, at::kInt), 5, "x"), c10::Error);  // any int dtype
  EXPECT_NO_THROW(check_rows_on_host(at::tensor({4, 0}, at::kLong), 5, "x"));
  EXPECT_THROW(check_slots_on_host(at::tensor({0, 1}, at::kInt), 1, "x"), c10::Error);
  EXPECT_NO_THROW(check_slots_on_host(at::tensor({0, 0}, at::kInt), 1, "x"));
  EXPECT_NO_THROW(check_slots_on_host(at::Tensor(), 1, "x"));  // no slots: every row on slot 0
}

// Through the dispatcher (CPU backend): the call fails before anything is written.
struct ScanCall {
  int64_t B = 3, L = 5, D = 8, N = 4, C = 4, S = 2;
  at::Tensor x = at::randn({B, L, D}), delta = at::randn({B, L, D}), z = at::randn({B, L, D});
  at::Tensor Bm = at::randn({B, L, N}), Cm = at::randn({B, L, N});
  at::Tensor A = -at::rand({D, N}) - 0.1, Dskip = at::randn({D}), dbias = at::randn({D});
  at::Tensor lengths = at::full({B}, L, at::kLong);
  at::Tensor pool = at::randn({S, D, N});
  at::Tensor cache = at::randn({C, D, N});

  // Runs the prefill; returns the error message ("" on success). `out` starts as a sentinel.
  std::string Run(const at::Tensor& rows, const at::Tensor& slots, at::Tensor& out) {
    LayerAdapters ad;
    ad.slots = slots;
    ad.state_offset = pool;
    LayerCache lc;
    lc.ssm_state = cache;
    lc.rows = rows;
    try {
      selective_scan_prefill({x, delta, dbias, A, Bm, Cm, Dskip, z, lengths, ad}, lc, false, out);
    } catch (const c10::Error& e) {
      return e.what_without_backtrace();
    }
    return "";
  }
};

TEST(BatchIndices, BadRowsAndSlotsFailBeforeAnythingIsWritten) {
  at::manual_seed(7);
  ScanCall call;
  const at::Tensor slots = at::tensor({0, 1, 1}, at::kInt);
  struct Case {
    at::Tensor rows, slots;
    std::string expect;
  };
  const Case cases[] = {
      {at::tensor({0, 4, 1}, at::kLong), slots, "cache row 4 (batch row 1) outside [0, 4)"},
      {at::tensor({2, 0, 2}, at::kLong), slots, "cache row 2 appears twice"},
      {at::tensor({0, 1, 2}, at::kLong), at::tensor({0, 2, 1}, at::kInt), "adapter slot 2"},
  };
  for (const Case& c : cases) {
    const at::Tensor cache_before = call.cache.clone();
    at::Tensor out = at::full({call.B, call.L, call.D}, 7.0);
    const std::string err = call.Run(c.rows, c.slots, out);
    EXPECT_NE(err.find(c.expect), std::string::npos) << "got: " << err;
    EXPECT_TRUE(call.cache.equal(cache_before)) << c.expect << ": the cache was written";
    EXPECT_TRUE(out.eq(7.0).all().item<bool>()) << c.expect << ": output was written";
  }
  at::Tensor out;
  EXPECT_EQ(call.Run(at::tensor({3, 0, 1}, at::kLong), slots, out), "");
}

}  // namespace
}  // namespace statetune::kernels
