// Helpers shared by the CPU kernels (cpu_conv.cpp, cpu_scan.cpp, cpu_scan_backward.cpp); private to
// them. Include it LAST in those files: it switches on the instruction set of the level being built.
//
// The inner loops use GCC/Clang vector extensions (8 x fp32) rather than hoping the auto-vectoriser
// copes with exp and a float reduction: without -ffast-math the compiler may neither call a vector
// exp nor reorder a sum, and we do not want -ffast-math (NaN/inf handling, reproducibility).
// On x86-64-v3 and v4 one v8f is one AVX2 register; on v2 GCC splits it into two SSE halves.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/batch_indices.h"
#include "kernels/cpu_backend.h"
#include "kernels/ssm_kernels.h"

// Per-level builds (kernels/CMakeLists.txt, cpu_level.h): from here on, code is compiled for the
// level's instruction set, and lives in its namespace cpu::<level>. The headers above stay at the
// baseline on purpose: the inline functions and templates they define are compiled into every
// level's object files and the linker keeps ONE copy of each, which must run on every CPU (an
// AVX-512 copy of an ATen helper, kept by chance, would crash a v2 machine). tests/kernels'
// cpu_level_isolation_test checks that no shared symbol of the v3/v4 objects uses AVX registers.
#if !defined(STATETUNE_CPU_LEVEL) || !defined(STATETUNE_CPU_LEVEL_NUMBER)
#error "the CPU kernels are compiled per level by kernels/CMakeLists.txt"
#elif STATETUNE_CPU_LEVEL_NUMBER == 2
#define STATETUNE_CPU_TARGET "arch=x86-64-v2"
#elif STATETUNE_CPU_LEVEL_NUMBER == 3
#define STATETUNE_CPU_TARGET "arch=x86-64-v3"
#elif STATETUNE_CPU_LEVEL_NUMBER == 4
#define STATETUNE_CPU_TARGET "arch=x86-64-v4"
#endif
// Each cpu_*.cpp ends with STATETUNE_CPU_LEVEL_END (clang's attribute push must be popped).
#define STATETUNE_CPU_PRAGMA_(text) _Pragma(#text)
#define STATETUNE_CPU_PRAGMA(text) STATETUNE_CPU_PRAGMA_(text)
#if !defined(STATETUNE_CPU_TARGET)
#define STATETUNE_CPU_LEVEL_END
#elif defined(__clang__)
STATETUNE_CPU_PRAGMA(clang attribute push(__attribute__((target(STATETUNE_CPU_TARGET))),
                                          apply_to = function))
#define STATETUNE_CPU_LEVEL_END _Pragma("clang attribute pop")
#else
STATETUNE_CPU_PRAGMA(GCC target(STATETUNE_CPU_TARGET))
#define STATETUNE_CPU_LEVEL_END
#endif

namespace statetune::kernels::cpu::STATETUNE_CPU_LEVEL::detail {

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

inline v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void store8(float* p, v8f v) { std::memcpy(p, &v, sizeof(v)); }
inline v8f splat8(float x) { return v8f{x, x, x, x, x, x, x, x}; }

// exp(x) for fp32, Cephes' expf: x = k*ln2 + r with |r| <= ln2/2, a degree-6 polynomial for exp(r),
// 2^k through the exponent bits. Relative error ~2e-7 on [-87.3, 88.4]; below that the result is
// the smallest normal float instead of a denormal or 0 (immaterial for exp(delta*A) and silu).
inline v8f exp8(v8f x) {
  const v8f hi = splat8(88.3762626647949f), lo = splat8(-87.3365447504f);
  x = x > hi ? hi : x;
  x = x < lo ? lo : x;
  // Round x*log2(e) to nearest with the 1.5*2^23 trick (exact under the default rounding mode).
  const v8f magic = splat8(12582912.0f);
  const v8f k = (x * splat8(1.44269504088896341f) + magic) - magic;
  v8f r = x - k * splat8(0.693359375f);
  r = r - k * splat8(-2.12194440e-4f);
  v8f p = splat8(1.9875691500e-4f);
  p = p * r + splat8(1.3981999507e-3f);
  p = p * r + splat8(8.3334519073e-3f);
  p = p * r + splat8(4.1665795894e-2f);
  p = p * r + splat8(1.6666665459e-1f);
  p = p * r + splat8(5.0000001201e-1f);
  p = p * r * r + r + splat8(1.0f);
  const v8i ki = __builtin_convertvector(k, v8i);
  const v8i bits = (ki + 127) << 23;
  v8f scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// The scalar counterpart, for the tails of loops that are not a multiple of 8.
inline float exp1(float x) {
  x = std::min(std::max(x, -87.3365447504f), 88.3762626647949f);
  const float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// silu(v) = v * sigmoid(v) over n values in place.
inline void silu_inplace(float* v, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const v8f x = load8(v + i);
    store8(v + i, x / (splat8(1.0f) + exp8(-x)));
  }
  for (; i < n; ++i) v[i] = v[i] / (1.0f + exp1(-v[i]));
}

// log(x) for positive normal fp32, Cephes' logf: x = m * 2^e with m in [sqrt(1/2), sqrt(2)), a
// degree-9 polynomial in m-1. Relative error ~2e-7 (absolute ~1e-7 near x = 1).
inline v8f log8(v8f x) {
  v8i bits;
  std::memcpy(&bits, &x, sizeof(bits));
  v8i e = ((bits >> 23) & 0xff) - 126;
  const v8i mbits = (bits & static_cast<int32_t>(0x807fffff)) | 0x3f000000;  // m in [0.5, 1)
  v8f m;
  std::memcpy(&m, &mbits, sizeof(m));
  const v8i small = m < splat8(0.707106781186547524f);  // -1 where true
  e = e + small;
  m = (small ? m + m : m) - splat8(1.0f);
  const v8f ef = __builtin_convertvector(e, v8f);
  const v8f z = m * m;
  v8f y = splat8(7.0376836292e-2f);
  y = y * m + splat8(-1.1514610310e-1f);
  y = y * m + splat8(1.1676998740e-1f);
  y = y * m + splat8(-1.2420140846e-1f);
  y = y * m + splat8(1.4249322787e-1f);
  y = y * m + splat8(-1.6668057665e-1f);
  y = y * m + splat8(2.0000714765e-1f);
  y = y * m + splat8(-2.4999993993e-1f);
  y = y * m + splat8(3.3333331174e-1f);
  y = y * m * z;
  y = y + ef * splat8(-2.12194440e-4f);
  y = y - splat8(0.5f) * z;
  return m + y + ef * splat8(0.693359375f);
}

// PyTorch's softplus with beta 1, threshold 20.
inline float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

// softplus over n values in place. log1p(e) is computed as log(u) * e / (u - 1) with u = 1 + e
// (exact where u rounds to 1), which keeps full relative accuracy for very negative inputs.
inline void softplus_inplace(float* v, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const v8f x = load8(v + i);
    const v8f e = exp8(x);
    const v8f u = splat8(1.0f) + e;
    const v8f d = u - splat8(1.0f);
    const v8f l = d == splat8(0.0f) ? e : log8(u) * (e / (d == splat8(0.0f) ? splat8(1.0f) : d));
    store8(v + i, x > splat8(20.0f) ? x : l);
  }
  for (; i < n; ++i) v[i] = softplus(v[i]);
}

inline float to_f(float x) { return x; }
inline float to_f(c10::BFloat16 x) { return static_cast<float>(x); }
template <typename T>
inline T from_f(float x) {
  return static_cast<T>(x);
}

// A [B, L, D] (or [B, D]) activation with unit stride on its last dimension: element (b, t, i) is
// at p + b*sb + t*st + i. Views such as the halves of in_proj's output need no copy.
template <typename T>
struct Act {
  const T* p = nullptr;
  int64_t sb = 0, st = 0;
  const T* at(int64_t b, int64_t t) const { return p + b * sb + t * st; }
};

// Keeps a contiguous copy alive when the caller's tensor has no unit stride on its last dimension.
template <typename T>
Act<T> act_of(const at::Tensor& t, at::Tensor& keep) {
  keep = t.stride(t.dim() - 1) == 1 ? t : t.contiguous();
  Act<T> a;
  a.p = keep.data_ptr<T>();
  a.sb = keep.stride(0);
  a.st = keep.dim() == 3 ? keep.stride(1) : 0;
  return a;
}

// fp32 and contiguous, copying only when it is not already.
inline at::Tensor f32c(const at::Tensor& t) {
  if (!t.defined()) return t;
  return t.scalar_type() == at::kFloat ? t.contiguous() : t.to(at::kFloat).contiguous();
}

// The output tensor, re-allocated only when its shape, dtype or layout does not fit.
inline void prepare_out(at::Tensor& out, at::IntArrayRef sizes, const at::Tensor& like) {
  if (!out.defined() || out.sizes() != sizes || out.scalar_type() != like.scalar_type() ||
      !out.device().is_cpu() || !out.is_contiguous()) {
    out = at::empty(sizes, like.options().memory_format(at::MemoryFormat::Contiguous));
  }
}

// Lengths as int64 values, checked against L.
inline const int64_t* lengths_of(const at::Tensor& lengths, int64_t B, int64_t L,
                                 at::Tensor& keep) {
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == B, "lengths must be [B]");
  keep = lengths.to(at::kCPU).to(at::kLong).contiguous();
  const int64_t* p = keep.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(p[b] >= 0 && p[b] <= L, "lengths must lie in [0, L], got ", p[b]);
  return p;
}

inline const int64_t* rows_of(const LayerCache& cache, int64_t B, at::Tensor& keep) {
  TORCH_CHECK(cache.rows.defined() && cache.rows.dim() == 1 && cache.rows.size(0) == B,
              "cache.rows must be [B]");
  keep = cache.rows.to(at::kLong).contiguous();
  return keep.data_ptr<int64_t>();
}

// A cache tensor [C, D, X]: rows may be strided, but each row must be contiguous since the kernels
// write into it in place. Returns the row stride.
inline int64_t cache_row_stride(const at::Tensor& t, int64_t D, int64_t X, const char* what) {
  TORCH_CHECK(t.defined() && t.dim() == 3 && t.size(1) == D && t.size(2) == X &&
                  t.scalar_type() == at::kFloat && t.device().is_cpu(),
              what, " must be a CPU fp32 [C, ", D, ", ", X, "] tensor");
  TORCH_CHECK(X == 0 || ((X == 1 || t.stride(2) == 1) && (D <= 1 || t.stride(1) == X)), what,
              " must be contiguous inside each cache row");
  return t.stride(0);
}

// Whether t is contiguous in every dimension but the first (a slot or cache row), checked on the
// strides alone so that the decode step creates no tensor views.
inline bool contiguous_inside_rows(const at::Tensor& t) {
  int64_t expected = 1;
  for (int64_t i = t.dim() - 1; i >= 1; --i) {
    if (t.size(i) != 1 && t.stride(i) != expected) return false;
    expected *= t.size(i);
  }
  return true;
}

// Rows in range and unique: the batch rows run in parallel, two on one cache row would race.
inline void check_rows(const int64_t* rows, int64_t B, int64_t C) {
  const std::string bad = describe_bad_rows(rows, B, C);
  TORCH_CHECK(bad.empty(), bad);
}

// Work split: batch rows x chunks of channels.
constexpr int64_t kChunk = 64;

}  // namespace statetune::kernels::cpu::STATETUNE_CPU_LEVEL::detail
