// RMSNorm (kernels/rmsnorm.h): the reference against the formula written out in double, the CPU
// backend and the dispatching entry point against the reference (fp32 and bf16 out, widths that
// are and are not multiples of 8, one row and many, strided rows, out == x), and the argument
// checks.
#include "kernels/rmsnorm.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>

namespace statetune::kernels {
namespace {

constexpr double kEps = 1e-5;

// Rows of very different sizes: a small row (mean(x^2) ~ 1e-6, below eps) shows whether eps is
// added, a large one whether the scale is a reciprocal square root of the mean.
at::Tensor random_rows(int64_t T, int64_t M, int64_t row_stride) {
  at::Tensor base = at::randn({T, row_stride});
  base.mul_(at::exp(at::randn({T, 1}) * 2));
  if (T > 1) base[0].mul_(1e-3);
  return base.narrow(1, 0, M);
}

// |got - want| <= rtol * (|want| + mean|want|) + 1e-6 elementwise.
void expect_close(const at::Tensor& got, const at::Tensor& want, double rtol, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const at::Tensor g = got.to(at::kDouble), w = want.to(at::kDouble);
  const double scale = w.numel() > 0 ? w.abs().mean().item<double>() : 0.0;
  const at::Tensor err = (g - w).abs();
  const at::Tensor bad = err.gt((w.abs() + scale) * rtol + 1e-6);
  EXPECT_FALSE(bad.any().item<bool>()) << what << ": max abs diff " << err.max().item<double>()
                                       << ", " << bad.sum().item<int64_t>() << " of " << g.numel()
                                       << " off (rtol " << rtol << ")";
}

TEST(RmsNorm, ReferenceMatchesTheFormula) {
  at::manual_seed(1);
  const int64_t T = 5, M = 37;
  const at::Tensor x = random_rows(T, M, M).contiguous();
  const at::Tensor w = at::randn({M});
  at::Tensor out = at::empty({T, M});
  ref::rmsnorm(x, w, kEps, out);
  at::Tensor want = at::empty({T, M}, at::kDouble);
  for (int64_t r = 0; r < T; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < M; ++i) ss += std::pow(x[r][i].item<double>(), 2);
    const double scale = 1.0 / std::sqrt(ss / M + kEps);
    for (int64_t i = 0; i < M; ++i) want[r][i] = x[r][i].item<double>() * scale * w[i].item<double>();
  }
  expect_close(out, want, 1e-6, "ref");
}

// The CPU backend and the dispatch, fp32 within 1e-4 and bf16 within 1e-2 of the reference, with
// x and out as row-strided views whose neighbours must stay untouched.
TEST(RmsNorm, CpuMatchesReference) {
  at::manual_seed(2);
  for (const int64_t M : {1, 7, 64, 100, 768, 2560, 5120}) {
    for (const int64_t T : {1, 3, 40}) {
      for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
        for (const bool dispatch : {false, true}) {
          const std::string what = std::string(dispatch ? "dispatch" : "cpu") + " M=" +
                                   std::to_string(M) + " T=" + std::to_string(T) + " " +
                                   c10::toString(dtype);
          const at::Tensor x = random_rows(T, M, M + 3);
          const at::Tensor w = at::randn({M}) * 0.5 + 1.0;
          at::Tensor out_base = at::full({T, M + 2}, 7.0, dtype);
          at::Tensor out = out_base.narrow(1, 1, M);
          if (dispatch) {
            rmsnorm(x, w, kEps, out);
          } else {
            check_rmsnorm_args(x, w, out);
            cpu::rmsnorm(x, w, kEps, out);
          }
          at::Tensor want = at::empty({T, M}, dtype);
          ref::rmsnorm(x, w, kEps, want);
          expect_close(out, want, dtype == at::kFloat ? 1e-4 : 1e-2, what);
          EXPECT_TRUE(out_base.narrow(1, 0, 1).eq(7.0).all().item<bool>()) << what;
          EXPECT_TRUE(out_base.narrow(1, M + 1, 1).eq(7.0).all().item<bool>()) << what;
        }
      }
    }
  }
}

TEST(RmsNorm, OutMayBeX) {
  at::manual_seed(3);
  at::Tensor x = random_rows(9, 100, 100).contiguous();
  const at::Tensor w = at::randn({100});
  at::Tensor want = at::empty_like(x);
  ref::rmsnorm(x, w, kEps, want);
  rmsnorm(x, w, kEps, x);
  expect_close(x, want, 1e-4, "in place");
}

TEST(RmsNorm, EmptyInputsWriteNothing) {
  const at::Tensor w = at::ones({8});
  at::Tensor out = at::empty({0, 8});
  rmsnorm(at::empty({0, 8}), w, kEps, out);
  at::Tensor out0 = at::empty({3, 0});
  rmsnorm(at::empty({3, 0}), at::empty({0}), kEps, out0);
}

void expect_rejected(const at::Tensor& x, const at::Tensor& w, at::Tensor out, const std::string& words) {
  try {
    rmsnorm(x, w, kEps, out);
    ADD_FAILURE() << "accepted; expected an error mentioning '" << words << "'";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
  }
}

TEST(RmsNorm, RejectsArgumentsItCannotHandle) {
  const at::Tensor x = at::randn({4, 16}), w = at::randn({16});
  expect_rejected(x, w, at::Tensor(), "required");
  expect_rejected(at::randn({16}), w, at::empty({16}), "x must be [T, M]");
  expect_rejected(x.to(at::kBFloat16), w, at::empty({4, 16}), "x must be float32");
  expect_rejected(at::randn({16, 4}).t(), w, at::empty({4, 16}), "rows of x must be contiguous");
  expect_rejected(x, at::randn({15}), at::empty({4, 16}), "weight has shape");
  expect_rejected(x, w.to(at::kDouble), at::empty({4, 16}), "weight must be float32");
  expect_rejected(x, at::randn({32}).slice(0, 0, 32, 2), at::empty({4, 16}), "weight must be contiguous");
  expect_rejected(x, w, at::empty({4, 17}), "out has shape");
  expect_rejected(x, w, at::empty({4, 16}, at::kHalf), "out must be float32 or bfloat16");
  expect_rejected(x, w, at::empty({16, 4}).t(), "rows of out must be contiguous");
  expect_rejected(x, w, at::empty({16}).expand({4, 16}), "share memory");
  // out shifted by one element inside x's storage: rows would be written before they are read.
  at::Tensor storage = at::randn({4 * 16 + 1});
  expect_rejected(storage.narrow(0, 0, 64).view({4, 16}), w, storage.narrow(0, 1, 64).view({4, 16}),
                  "partly overlaps x");
}

}  // namespace
}  // namespace statetune::kernels
