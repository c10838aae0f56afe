// The raw CUDA kernels (kernels/cuda/ssm_cuda.cuh) against the LibTorch reference
// (statetune::kernels::ref, CPU): random shapes, strided activation views, pool views with a slot
// stride, cache views with a row stride, mixed slots, right padding, every adapter combination,
// fp32 and bf16; and prefill == prefix prefill + decode steps == prefix prefill + resumed prefill.
// The backward kernels (ssm_cuda_backward.cuh) are checked against the CPU backward the same way,
// and RMSNorm (rmsnorm_cuda.cuh) against ref::rmsnorm.
// Device memory is managed here with cudaMalloc, so the test needs no CUDA LibTorch. Without a
// device every GPU test skips (the kernels are still compiled and linked).
#include <ATen/ATen.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cuda/rmsnorm_cuda.cuh"
#include "kernels/cuda/ssm_cuda.cuh"
#include "kernels/cuda/ssm_cuda_backward.cuh"
#include "kernels/rmsnorm.h"
#include "kernels/ssm_backward.h"
#include "kernels/ssm_kernels.h"

namespace statetune::kernels {
namespace {

namespace raw = cuda_raw;

bool HaveDevice() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return n > 0;
}

class KernelsCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveDevice()) {
      GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount reports none): the CUDA kernels are "
                      "compiled and linked but not run";
    }
  }
};

// A device copy of a contiguous CPU tensor. Views of `base()` map to device pointers with the
// same strides, so the kernels see exactly the layout the reference sees.
class Mirror {
 public:
  explicit Mirror(at::Tensor base) : base_(std::move(base)) {
    EXPECT_TRUE(base_.is_contiguous());
    bytes_ = static_cast<size_t>(base_.numel()) * base_.element_size();
    EXPECT_EQ(cudaMalloc(&dev_, std::max<size_t>(bytes_, 16)), cudaSuccess);
    upload();
  }
  ~Mirror() { cudaFree(dev_); }
  Mirror(const Mirror&) = delete;
  Mirror& operator=(const Mirror&) = delete;

  void upload() {
    if (bytes_ > 0) {
      EXPECT_EQ(cudaMemcpy(dev_, base_.data_ptr(), bytes_, cudaMemcpyHostToDevice), cudaSuccess);
    }
  }
  const at::Tensor& base() const { return base_; }
  template <typename T = void>
  T* ptr(const at::Tensor& view) const {
    if (view.numel() == 0) return static_cast<T*>(dev_);
    const char* host0 = static_cast<const char*>(base_.data_ptr());
    const char* v = static_cast<const char*>(view.data_ptr());
    return reinterpret_cast<T*>(static_cast<char*>(dev_) + (v - host0));
  }
  at::Tensor fetch() const {
    at::Tensor h = at::empty_like(base_);
    if (bytes_ > 0) {
      EXPECT_EQ(cudaMemcpy(h.data_ptr(), dev_, bytes_, cudaMemcpyDeviceToHost), cudaSuccess);
    }
    return h;
  }

 private:
  at::Tensor base_;
  void* dev_ = nullptr;
  size_t bytes_ = 0;
};

// The view of `view` (a view of a.base()) inside another tensor with a.base()'s shape.
at::Tensor same_view(const at::Tensor& other_base, const at::Tensor& base, const at::Tensor& view) {
  const int64_t offset = view.storage_offset() - base.storage_offset();
  return other_base.as_strided(view.sizes(), view.strides(), other_base.storage_offset() + offset);
}

// |a - e| <= rtol * (|e| + mean|e|) + 1e-6 elementwise; mean|e| absorbs cancellation near zero.
void ExpectClose(const at::Tensor& actual, const at::Tensor& expected, double rtol,
                 const std::string& what) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  const at::Tensor a = actual.to(at::kDouble).contiguous();
  const at::Tensor e = expected.to(at::kDouble).contiguous();
  ASSERT_FALSE(a.isnan().any().item<bool>()) << what << ": NaN in the CUDA result";
  const double scale = e.numel() > 0 ? e.abs().mean().item<double>() : 0.0;
  const at::Tensor err = (a - e).abs();
  const at::Tensor tol = (e.abs() + scale) * rtol + 1e-6;
  const at::Tensor bad = err.gt(tol);
  const int64_t n_bad = bad.sum().item<int64_t>();
  if (n_bad > 0) {
    const int64_t i = (err - tol).flatten().argmax().item<int64_t>();
    ADD_FAILURE() << what << ": " << n_bad << " of " << e.numel() << " elements off; worst at flat "
                  << i << ": got " << a.flatten()[i].item<double>() << ", expected "
                  << e.flatten()[i].item<double>() << " (mean|e| " << scale << ")";
  }
}

struct Shape {
  int64_t B, L, D, N, K, C;
};

constexpr int64_t kSlots = 3;
constexpr int64_t kLayers = 2;
constexpr int64_t kLayer = 1;  // the views read layer 1 of [S|C, layers, ...] pools
constexpr int64_t kDtRank = 3;

Shape RandomShape(std::mt19937& rng) {
  const int64_t Bs[] = {1, 2, 3, 4};
  const int64_t Ls[] = {1, 5, 33, 70};
  const int64_t Ds[] = {8, 37, 160, 300};
  const int64_t Ns[] = {1, 5, 16, 20, 64};
  const int64_t Ks[] = {1, 2, 3, 4, 6};  // 1: no conv state at all
  auto pick = [&rng](const auto& v) { return v[rng() % std::size(v)]; };
  Shape s{pick(Bs), pick(Ls), pick(Ds), pick(Ns), pick(Ks), 0};
  s.C = s.B + 2;
  return s;
}

std::string Describe(const Shape& s, bool bf16, int adapters, bool resume) {
  std::ostringstream o;
  o << "B=" << s.B << " L=" << s.L << " D=" << s.D << " N=" << s.N << " K=" << s.K
    << (bf16 ? " bf16" : " fp32") << " adapters=" << adapters << " resume=" << resume;
  return o.str();
}

at::Tensor RandomLengths(std::mt19937& rng, int64_t B, int64_t L, bool full) {
  at::Tensor len = at::empty({B}, at::kLong);
  for (int64_t b = 0; b < B; ++b) {
    len[b] = full || b == 0 ? L : static_cast<int64_t>(rng() % (L + 1));
  }
  return len;
}

at::Tensor RandomRows(int64_t B, int64_t C) { return at::randperm(C, at::kLong).narrow(0, 0, B).contiguous(); }

at::Tensor RandomSlots(std::mt19937& rng, int64_t B) {
  at::Tensor s = at::empty({B}, at::kInt);
  for (int64_t b = 0; b < B; ++b) s[b] = static_cast<int32_t>(rng() % kSlots);
  return s;
}

enum AdapterBits { kStateOffset = 1, kOutputOffset = 2, kInitialState = 4 };

// Everything one scan call reads, on the host (views as the engine would pass them) and mirrored.
struct ScanData {
  Shape s;
  bool bf16;
  at::ScalarType act;
  std::unique_ptr<Mirror> xdz, bc, A, Dskip, dbias, so, oo, is, cache, rows, slots, lengths, out;
  at::Tensor x, delta, z, Bm, Cm;  // views of xdz / bc
  at::Tensor so_v, oo_v, is_v, cache_v, out_v;

  ScanData(const Shape& shape, bool use_bf16, int adapters, std::mt19937& rng, bool step,
           bool full_lengths)
      : s(shape), bf16(use_bf16), act(use_bf16 ? at::kBFloat16 : at::kFloat) {
    const int64_t B = s.B, L = s.L, D = s.D, N = s.N;
    std::vector<int64_t> lead = step ? std::vector<int64_t>{B} : std::vector<int64_t>{B, L};
    auto with = [&lead](std::initializer_list<int64_t> tail) {
      std::vector<int64_t> v = lead;
      v.insert(v.end(), tail);
      return v;
    };
    // x, delta, z as slices of one fused tensor (strided views); delta ~ typical dt_proj output.
    at::Tensor xdz_f = at::randn(with({3 * D}));
    xdz_f.narrow(-1, D, D).mul_(0.5).sub_(1.0);
    xdz = std::make_unique<Mirror>(xdz_f.to(act).contiguous());
    x = xdz->base().narrow(-1, 0, D);
    delta = xdz->base().narrow(-1, D, D);
    z = xdz->base().narrow(-1, 2 * D, D);
    bc = std::make_unique<Mirror>(at::randn(with({kDtRank + 2 * N})).to(act).contiguous());
    Bm = bc->base().narrow(-1, kDtRank, N);
    Cm = bc->base().narrow(-1, kDtRank + N, N);
    A = std::make_unique<Mirror>(-at::exp(at::rand({D, N}) * 2.5 - 1.0));
    Dskip = std::make_unique<Mirror>(at::randn({D}));
    dbias = std::make_unique<Mirror>(at::randn({D}) * 0.5 - 1.5);
    auto pool = [](std::initializer_list<int64_t> inner, double scale) {
      std::vector<int64_t> sz{kSlots, kLayers};
      sz.insert(sz.end(), inner);
      at::Tensor p = at::randn(sz) * scale;
      p[0].zero_();  // slot 0 = the zero adapter
      return std::make_unique<Mirror>(p);
    };
    if (adapters & kStateOffset) {
      so = pool({D, N}, 0.3);
      so_v = so->base().select(1, kLayer);
    }
    if (adapters & kOutputOffset) {
      oo = pool({D}, 0.5);
      oo_v = oo->base().select(1, kLayer);
    }
    if (adapters & kInitialState) {
      is = pool({D, N}, 0.5);
      is_v = is->base().select(1, kLayer);
    }
    cache = std::make_unique<Mirror>(at::randn({s.C, kLayers, D, N}));
    cache_v = cache->base().select(1, kLayer);
    rows = std::make_unique<Mirror>(RandomRows(B, s.C));
    slots = std::make_unique<Mirror>(RandomSlots(rng, B));
    lengths = std::make_unique<Mirror>(RandomLengths(rng, B, L, full_lengths));
    // Output inside a wider buffer (strided), pre-filled so unwritten padding would show.
    out = std::make_unique<Mirror>(at::full(with({D + 3}), 7.0).to(act).contiguous());
    out_v = out->base().narrow(-1, 1, D);
  }

  LayerAdapters HostAdapters() const {
    LayerAdapters a;
    a.slots = slots->base();
    a.state_offset = so_v;
    a.output_offset = oo_v;
    a.initial_state = is_v;
    return a;
  }

  static raw::ActTensor Act(const Mirror& m, const at::Tensor& v, bool step) {
    raw::ActTensor a;
    a.ptr = m.ptr(v);
    a.batch_stride = v.stride(0);
    a.time_stride = step ? 0 : v.stride(1);
    return a;
  }

  // The views of time step t0 (step) or of time steps [t0, t0 + count) (prefill; count < 0: to
  // the end) of data built as [B, L, ...]; data built for a step ([B, ...]) is used as is.
  at::Tensor Window(const at::Tensor& v, bool step, int64_t t0, int64_t count) const {
    if (v.dim() == 2) return v;
    return step ? v.select(1, t0) : v.narrow(1, t0, count < 0 ? s.L - t0 : count);
  }

  raw::ScanParams Params(bool step, bool resume, int64_t t0 = 0, int64_t count = -1) const {
    auto win = [&](const at::Tensor& v) { return Window(v, step, t0, count); };
    raw::ScanParams p;
    p.dtype = bf16 ? raw::DType::kBFloat16 : raw::DType::kFloat32;
    p.batch = static_cast<int>(s.B);
    p.seqlen = static_cast<int>(step ? 1 : (count < 0 ? s.L - t0 : count));
    p.dim = static_cast<int>(s.D);
    p.dstate = static_cast<int>(s.N);
    p.x = Act(*xdz, win(x), step);
    p.delta = Act(*xdz, win(delta), step);
    p.z = Act(*xdz, win(z), step);
    p.Bm = Act(*bc, win(Bm), step);
    p.Cm = Act(*bc, win(Cm), step);
    const at::Tensor o = win(out_v);
    p.out.ptr = out->ptr(o);
    p.out.batch_stride = o.stride(0);
    p.out.time_stride = step ? 0 : o.stride(1);
    p.A = A->ptr<float>(A->base());
    p.Dskip = Dskip->ptr<float>(Dskip->base());
    p.delta_bias = dbias->ptr<float>(dbias->base());
    p.lengths = lengths->ptr<int64_t>(lengths->base());
    p.slots = slots->ptr<int32_t>(slots->base());
    if (so) p.state_offset = {so->ptr<float>(so_v), so_v.stride(0)};
    if (oo) p.output_offset = {oo->ptr<float>(oo_v), oo_v.stride(0)};
    if (is) p.initial_state = {is->ptr<float>(is_v), is_v.stride(0)};
    p.ssm_state = cache->ptr<float>(cache_v);
    p.ssm_state_row_stride = cache_v.stride(0);
    p.rows = rows->ptr<int64_t>(rows->base());
    p.num_rows = s.C;
    p.num_slots = static_cast<int>(kSlots);
    p.resume = resume;
    return p;
  }
};

void Sync(const std::string& what) {
  const cudaError_t e = cudaDeviceSynchronize();
  ASSERT_EQ(e, cudaSuccess) << what << ": " << cudaGetErrorString(e);
}

void RunScanCase(uint32_t seed, bool bf16, int adapters, bool resume, bool step,
                 int64_t force_n = 0, const Shape* force_shape = nullptr) {
  std::mt19937 rng(seed);
  at::manual_seed(seed);
  Shape s = RandomShape(rng);
  if (force_n > 0) s.N = force_n;
  if (force_shape != nullptr) s = *force_shape;
  ScanData d(s, bf16, adapters, rng, step, /*full_lengths=*/false);
  const std::string what =
      std::string(step ? "scan step " : "scan prefill ") + Describe(s, bf16, adapters, resume);

  // Reference on a copy of the cache (it writes in place).
  LayerCache ref_cache;
  const at::Tensor ref_cache_base = d.cache->base().clone();
  ref_cache.ssm_state = same_view(ref_cache_base, d.cache->base(), d.cache_v);
  ref_cache.rows = d.rows->base();
  at::Tensor ref_out;
  if (step) {
    const ScanArgs args{d.x,    d.delta, d.dbias->base(), d.A->base(),    d.Bm,
                        d.Cm,   d.Dskip->base(), d.z, at::Tensor(), d.HostAdapters()};
    ref::selective_scan_step(CheckedScan::step(args, ref_cache), ref_cache, ref_out);
  } else {
    const ScanArgs args{d.x,  d.delta,         d.dbias->base(), d.A->base(),
                        d.Bm, d.Cm,            d.Dskip->base(), d.z,
                        d.lengths->base(),     d.HostAdapters()};
    ref::selective_scan_prefill(CheckedScan::prefill(args, ref_cache), ref_cache, resume, ref_out);
  }

  const raw::ScanParams p = d.Params(step, resume);
  const cudaError_t e =
      step ? raw::selective_scan_step(p, nullptr) : raw::selective_scan_prefill(p, nullptr);
  ASSERT_EQ(e, cudaSuccess) << what << ": " << cudaGetErrorString(e);
  Sync(what);

  const double rtol = bf16 ? 1e-2 : 1e-4;
  const at::Tensor out = same_view(d.out->fetch(), d.out->base(), d.out_v);
  ExpectClose(out, ref_out, rtol, what + " out");
  ExpectClose(d.cache->fetch(), ref_cache_base, rtol, what + " ssm_state (all rows, all layers)");
  // The bytes around the strided output are not touched.
  const at::Tensor out_all = d.out->fetch();
  EXPECT_TRUE(out_all.narrow(-1, 0, 1).to(at::kFloat).eq(7.0).all().item<bool>()) << what;
  EXPECT_TRUE(out_all.narrow(-1, s.D + 1, 2).to(at::kFloat).eq(7.0).all().item<bool>()) << what;
}

TEST_F(KernelsCuda, ScanPrefillMatchesReference) {
  uint32_t seed = 100;
  for (bool bf16 : {false, true})
    for (int adapters = 0; adapters < 8; ++adapters)
      for (bool resume : {false, true}) RunScanCase(seed++, bf16, adapters, resume, false);
}

TEST_F(KernelsCuda, ScanStepMatchesReference) {
  uint32_t seed = 200;
  for (bool bf16 : {false, true})
    for (int adapters = 0; adapters < 8; ++adapters) RunScanCase(seed++, bf16, adapters, true, true);
}

TEST_F(KernelsCuda, ScanPrefillCoversEveryStateSize) {
  // Each register-array size of the prefill kernel (8, 16, 32, 64), full and partly padded, with
  // all adapters on, fresh and resumed; and the step kernel at the same sizes.
  uint32_t seed = 300;
  for (int64_t n : {1, 8, 9, 16, 17, 32, 33, 64}) {
    for (bool resume : {false, true}) RunScanCase(seed++, false, 7, resume, false, n);
    RunScanCase(seed++, true, 7, true, false, n);
    RunScanCase(seed++, false, 7, true, true, n);
  }
}

// ---------------------------------------------------------------------------------------------
struct ConvData {
  Shape s;
  bool bf16;
  at::ScalarType act;
  std::unique_ptr<Mirror> xz, weight, bias, cache, rows, lengths, out;
  at::Tensor x, cache_v, out_v;

  ConvData(const Shape& shape, bool use_bf16, bool weight_in_act_dtype, bool with_bias,
           std::mt19937& rng, bool step, bool full_lengths)
      : s(shape), bf16(use_bf16), act(use_bf16 ? at::kBFloat16 : at::kFloat) {
    const int64_t B = s.B, L = s.L, D = s.D, K = s.K;
    std::vector<int64_t> lead = step ? std::vector<int64_t>{B} : std::vector<int64_t>{B, L};
    std::vector<int64_t> xz_size = lead, out_size = lead;
    xz_size.push_back(2 * D);
    out_size.push_back(D + 3);
    xz = std::make_unique<Mirror>(at::randn(xz_size).to(act).contiguous());
    x = xz->base().narrow(-1, 0, D);
    at::Tensor w = at::randn({D, K}) * 0.5;
    weight = std::make_unique<Mirror>(weight_in_act_dtype ? w.to(act).contiguous() : w);
    if (with_bias) bias = std::make_unique<Mirror>(at::randn({D}) * 0.2);
    cache = std::make_unique<Mirror>(at::randn({s.C, kLayers, D, K - 1}));
    cache_v = cache->base().select(1, kLayer);
    rows = std::make_unique<Mirror>(RandomRows(B, s.C));
    lengths = std::make_unique<Mirror>(RandomLengths(rng, B, L, full_lengths));
    out = std::make_unique<Mirror>(at::full(out_size, 7.0).to(act).contiguous());
    out_v = out->base().narrow(-1, 1, D);
  }

  at::Tensor Window(const at::Tensor& v, bool step, int64_t t0, int64_t count) const {
    if (v.dim() == 2) return v;
    return step ? v.select(1, t0) : v.narrow(1, t0, count < 0 ? s.L - t0 : count);
  }

  raw::ConvParams Params(bool step, bool resume, int64_t t0 = 0, int64_t count = -1) const {
    raw::ConvParams p;
    p.dtype = bf16 ? raw::DType::kBFloat16 : raw::DType::kFloat32;
    p.batch = static_cast<int>(s.B);
    p.seqlen = static_cast<int>(step ? 1 : (count < 0 ? s.L - t0 : count));
    p.dim = static_cast<int>(s.D);
    p.width = static_cast<int>(s.K);
    const at::Tensor xw = Window(x, step, t0, count);
    p.x.ptr = xz->ptr(xw);
    p.x.batch_stride = xw.stride(0);
    p.x.time_stride = step ? 0 : xw.stride(1);
    const at::Tensor o = Window(out_v, step, t0, count);
    p.out.ptr = out->ptr(o);
    p.out.batch_stride = o.stride(0);
    p.out.time_stride = step ? 0 : o.stride(1);
    p.weight = weight->ptr(weight->base());
    p.weight_dtype = weight->base().scalar_type() == at::kBFloat16 ? raw::DType::kBFloat16
                                                                  : raw::DType::kFloat32;
    if (bias) p.bias = bias->ptr(bias->base());
    p.lengths = lengths->ptr<int64_t>(lengths->base());
    p.conv_state = cache->ptr<float>(cache_v);
    p.conv_state_row_stride = cache_v.stride(0);
    p.rows = rows->ptr<int64_t>(rows->base());
    p.num_rows = s.C;
    p.resume = resume;
    return p;
  }
};

void RunConvCase(uint32_t seed, bool bf16, bool resume, bool step) {
  std::mt19937 rng(seed);
  at::manual_seed(seed);
  const Shape s = RandomShape(rng);
  const bool weight_in_act = bf16 && (seed % 2 == 0);
  const bool with_bias = seed % 3 != 0;
  ConvData d(s, bf16, weight_in_act, with_bias, rng, step, /*full_lengths=*/false);
  std::ostringstream w;
  w << (step ? "conv step " : "conv prefill ") << Describe(s, bf16, 0, resume)
    << " bias=" << with_bias << " weight_bf16=" << weight_in_act;
  const std::string what = w.str();

  LayerCache ref_cache;
  const at::Tensor ref_cache_base = d.cache->base().clone();
  ref_cache.conv_state = same_view(ref_cache_base, d.cache->base(), d.cache_v);
  ref_cache.rows = d.rows->base();
  const at::Tensor bias = d.bias ? d.bias->base() : at::Tensor();
  at::Tensor ref_out;
  if (step) {
    ref::causal_conv1d_step(d.x, d.weight->base(), bias, ref_cache, ref_out);
  } else {
    ref::causal_conv1d_prefill(d.x, d.weight->base(), bias, d.lengths->base(), ref_cache, resume,
                               ref_out);
  }

  const raw::ConvParams p = d.Params(step, resume);
  const cudaError_t e =
      step ? raw::causal_conv1d_step(p, nullptr) : raw::causal_conv1d_prefill(p, nullptr);
  ASSERT_EQ(e, cudaSuccess) << what << ": " << cudaGetErrorString(e);
  Sync(what);

  const double rtol = bf16 ? 1e-2 : 1e-4;
  ExpectClose(same_view(d.out->fetch(), d.out->base(), d.out_v), ref_out, rtol, what + " out");
  // The state holds inputs (exact copies), so it must match exactly.
  ExpectClose(d.cache->fetch(), ref_cache_base, 0.0, what + " conv_state (all rows, all layers)");
  const at::Tensor out_all = d.out->fetch();
  EXPECT_TRUE(out_all.narrow(-1, 0, 1).to(at::kFloat).eq(7.0).all().item<bool>()) << what;
}

TEST_F(KernelsCuda, ConvPrefillMatchesReference) {
  uint32_t seed = 400;
  for (bool bf16 : {false, true})
    for (bool resume : {false, true})
      for (int rep = 0; rep < 6; ++rep) RunConvCase(seed++, bf16, resume, false);
}

TEST_F(KernelsCuda, ConvStepMatchesReference) {
  uint32_t seed = 500;
  for (bool bf16 : {false, true})
    for (int rep = 0; rep < 6; ++rep) RunConvCase(seed++, bf16, true, true);
}

// ---------------------------------------------------------------------------------------------
// Prefill over L tokens (full rows) == prefill over a prefix P, then (a) L-P decode steps, or
// (b) a prefill of the remaining L-P tokens resuming from the cache.
template <typename Data, typename Prefill, typename Step>
void RunChain(const Data& d, int64_t P, double rtol, const std::string& what, Prefill prefill,
              Step step) {
  const int64_t L = d.s.L;
  auto run = [&what](cudaError_t e) {
    ASSERT_EQ(e, cudaSuccess) << what << ": " << cudaGetErrorString(e);
  };
  // Full prompt.
  run(prefill(d.Params(false, false)));
  Sync(what);
  const at::Tensor out_full = d.out->fetch();
  const at::Tensor cache_full = d.cache->fetch();
  // (a) prefix, then steps.
  d.cache->upload();
  d.out->upload();
  run(prefill(d.Params(false, false, 0, P)));
  for (int64_t t = P; t < L; ++t) run(step(d.Params(true, false, t)));
  Sync(what);
  ExpectClose(d.out->fetch(), out_full, rtol, what + " prefix + steps: out");
  ExpectClose(d.cache->fetch(), cache_full, rtol, what + " prefix + steps: state");
  // (b) prefix, then the rest as a resumed prefill.
  d.cache->upload();
  d.out->upload();
  run(prefill(d.Params(false, false, 0, P)));
  run(prefill(d.Params(false, true, P, L - P)));
  Sync(what);
  ExpectClose(d.out->fetch(), out_full, rtol, what + " prefix + resumed prefill: out");
  ExpectClose(d.cache->fetch(), cache_full, rtol, what + " prefix + resumed prefill: state");
}

TEST_F(KernelsCuda, PrefillEqualsPrefixThenStepsOrResume) {
  for (uint32_t seed = 600; seed < 616; ++seed) {
    const bool bf16 = seed % 2 == 1;
    std::mt19937 rng(seed);
    at::manual_seed(seed);
    Shape s = RandomShape(rng);
    s.L = std::max<int64_t>(s.L, 6);
    const int64_t P = 1 + static_cast<int64_t>(rng() % (s.L - 1));  // 1 .. L-1
    const double rtol = bf16 ? 1e-2 : 1e-4;
    const std::string what = Describe(s, bf16, 7, false) + " P=" + std::to_string(P);

    const ScanData sd(s, bf16, kStateOffset | kOutputOffset | kInitialState, rng, false, true);
    RunChain(sd, P, rtol, "scan " + what,
             [](const raw::ScanParams& p) { return raw::selective_scan_prefill(p, nullptr); },
             [](const raw::ScanParams& p) { return raw::selective_scan_step(p, nullptr); });
    const ConvData cd(s, bf16, bf16, true, rng, false, true);
    RunChain(cd, P, rtol, "conv " + what,
             [](const raw::ConvParams& p) { return raw::causal_conv1d_prefill(p, nullptr); },
             [](const raw::ConvParams& p) { return raw::causal_conv1d_step(p, nullptr); });
  }
}

// ---------------------------------------------------------------------------------------------
// Backward kernels (ssm_cuda_backward.cuh) against the CPU backward (kernels::cpu::*_backward),
// which the fp64 gradient checks in tests/kernels_backward validate against finite differences. The sums
// are reduced in a different order (atomics vs per-range partials), so the measure is relative to
// the largest magnitude of each gradient: max|a - e| <= rtol * max|e|.

// The worst relative error seen per dtype, printed at the end of each test for the record.
struct WorstError {
  double value = 0.0;
  std::string where;
  void Print(const char* what) const {
    std::printf("[ worst ] %s: max|a-e|/max|e| = %.3g (%s)\n", what, value, where.c_str());
  }
};

void ExpectCloseToMax(const at::Tensor& actual, const at::Tensor& expected, double rtol,
                      const std::string& what, WorstError& worst) {
  ASSERT_TRUE(actual.defined() && expected.defined()) << what;
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  const at::Tensor a = actual.to(at::kDouble).contiguous();
  const at::Tensor e = expected.to(at::kDouble).contiguous();
  ASSERT_FALSE(a.isnan().any().item<bool>()) << what << ": NaN in the CUDA result";
  const double scale = e.numel() > 0 ? e.abs().max().item<double>() : 0.0;
  const double err = e.numel() > 0 ? (a - e).abs().max().item<double>() : 0.0;
  const double rel = err / std::max(scale, 1e-12);
  if (scale > 1e-12 && rel > worst.value) {
    worst.value = rel;
    worst.where = what;
  }
  EXPECT_LE(err, rtol * scale + 1e-6) << what << ": max abs error " << err << ", max|e| " << scale;
}

// Buffers the kernels must overwrite or zero start as garbage, so a skipped write shows.
constexpr double kGarbage = 7.0;

struct ScanBackwardCase {
  Shape s;
  bool bf16 = false;
  int adapters = 0;
  bool need_dA = false;
  bool with_skip = true;  // Dskip and delta_bias defined
  int chunk = 64;
};

void RunScanBackwardCase(uint32_t seed, const ScanBackwardCase& c, WorstError& worst) {
  std::mt19937 rng(seed);
  at::manual_seed(seed);
  const Shape& s = c.s;
  const int64_t B = s.B, L = s.L, D = s.D, N = s.N;
  const at::ScalarType act = c.bf16 ? at::kBFloat16 : at::kFloat;
  std::ostringstream w;
  w << "scan backward seed=" << seed << " " << Describe(s, c.bf16, c.adapters, false)
    << " need_dA=" << c.need_dA << " skip=" << c.with_skip << " chunk=" << c.chunk;
  const std::string what = w.str();

  // Activations as strided views of fused buffers, as the engine passes them.
  Mirror xdz((at::randn({B, L, 3 * D}) * 0.8).to(act).contiguous());
  at::Tensor x = xdz.base().narrow(2, 0, D), delta = xdz.base().narrow(2, D, D),
             z = xdz.base().narrow(2, 2 * D, D);
  // Moderate delta (around softplus(-1)), and a few past the softplus threshold.
  delta.copy_((at::randn({B, L, D}) * 0.5 - 1.0).to(act));
  delta.select(2, 0).fill_(25.0);
  xdz.upload();
  Mirror bc(at::randn({B, L, 2 * N}).to(act).contiguous());
  const at::Tensor Bm = bc.base().narrow(2, 0, N), Cm = bc.base().narrow(2, N, N);
  Mirror gout(at::randn({B, L, D}).to(act).contiguous());
  Mirror A(-at::exp(at::rand({D, N}) * 2.5 - 1.0));
  Mirror Dskip(at::randn({D})), dbias(at::randn({D}) * 0.5);
  Mirror lengths(RandomLengths(rng, B, L, false));
  Mirror slots(RandomSlots(rng, B));
  auto pool = [&](std::vector<int64_t> inner, double scale) {
    std::vector<int64_t> sz{kSlots, kLayers};
    sz.insert(sz.end(), inner.begin(), inner.end());
    return std::make_unique<Mirror>(at::randn(sz) * scale);
  };
  std::unique_ptr<Mirror> so, oo, is;
  LayerAdapters ad;
  ad.slots = slots.base();
  if (c.adapters & kStateOffset) {
    so = pool({D, N}, 0.3);
    ad.state_offset = so->base().select(1, kLayer);
  }
  if (c.adapters & kOutputOffset) {
    oo = pool({D}, 0.5);
    ad.output_offset = oo->base().select(1, kLayer);
  }
  if (c.adapters & kInitialState) {
    is = pool({D, N}, 0.5);
    ad.initial_state = is->base().select(1, kLayer);
  }
  const at::Tensor Ds = c.with_skip ? Dskip.base() : at::Tensor();
  const at::Tensor db = c.with_skip ? dbias.base() : at::Tensor();

  ScanBackwardOptions opt;
  opt.need_dA = c.need_dA;
  opt.chunk = c.chunk;
  const ScanArgs args{x, delta, db, A.base(), Bm, Cm, Ds, z, lengths.base(), ad};
  const ScanGrads want =
      cpu::selective_scan_backward(CheckedScan::backward(args, gout.base()), gout.base(), opt);

  // Per-position gradients into one wide buffer (strided views, garbage around and in between).
  Mirror dxdz(at::full({B, L, 3 * D + 1}, kGarbage).to(act).contiguous());
  const at::Tensor dx_v = dxdz.base().narrow(2, 0, D), dd_v = dxdz.base().narrow(2, D, D),
                   dz_v = dxdz.base().narrow(2, 2 * D, D);
  auto sum_buf = [](std::vector<int64_t> sz) {
    return std::make_unique<Mirror>(at::full(sz, kGarbage, at::kFloat));
  };
  auto dBm = sum_buf({B, L, N}), dCm = sum_buf({B, L, N}), dA = sum_buf({D, N}),
       ddb = sum_buf({D}), dDs = sum_buf({D}), dso = sum_buf({kSlots, D, N}),
       doo = sum_buf({kSlots, D}), dis = sum_buf({kSlots, D, N});

  raw::ScanBackwardParams p;
  p.dtype = c.bf16 ? raw::DType::kBFloat16 : raw::DType::kFloat32;
  p.batch = static_cast<int>(B);
  p.seqlen = static_cast<int>(L);
  p.dim = static_cast<int>(D);
  p.dstate = static_cast<int>(N);
  p.chunk = c.chunk;
  auto act_of = [](const Mirror& m, const at::Tensor& v) {
    return raw::ActTensor{m.ptr(v), v.stride(0), v.stride(1)};
  };
  auto out_of = [](const Mirror& m, const at::Tensor& v) {
    return raw::OutTensor{m.ptr(v), v.stride(0), v.stride(1)};
  };
  p.x = act_of(xdz, x);
  p.delta = act_of(xdz, delta);
  p.z = act_of(xdz, z);
  p.grad_out = act_of(gout, gout.base());
  p.Bm = act_of(bc, Bm);
  p.Cm = act_of(bc, Cm);
  p.A = A.ptr<float>(A.base());
  if (c.with_skip) {
    p.Dskip = Dskip.ptr<float>(Dskip.base());
    p.delta_bias = dbias.ptr<float>(dbias.base());
    p.dDskip = dDs->ptr<float>(dDs->base());
    p.ddelta_bias = ddb->ptr<float>(ddb->base());
  }
  p.lengths = lengths.ptr<int64_t>(lengths.base());
  p.slots = slots.ptr<int32_t>(slots.base());
  p.num_slots = static_cast<int>(kSlots);
  if (so) {
    p.state_offset = {so->ptr<float>(ad.state_offset), ad.state_offset.stride(0)};
    p.dstate_offset = dso->ptr<float>(dso->base());
  }
  if (oo) {
    p.output_offset = {oo->ptr<float>(ad.output_offset), ad.output_offset.stride(0)};
    p.doutput_offset = doo->ptr<float>(doo->base());
  }
  if (is) {
    p.initial_state = {is->ptr<float>(ad.initial_state), ad.initial_state.stride(0)};
    p.dinitial_state = dis->ptr<float>(dis->base());
  }
  p.dx = out_of(dxdz, dx_v);
  p.ddelta = out_of(dxdz, dd_v);
  p.dz = out_of(dxdz, dz_v);
  p.dBm = dBm->ptr<float>(dBm->base());
  p.dCm = dCm->ptr<float>(dCm->base());
  if (c.need_dA) p.dA = dA->ptr<float>(dA->base());
  Mirror ws(at::empty({static_cast<int64_t>(raw::selective_scan_backward_workspace_floats(p)) + 1},
                      at::kFloat));
  p.workspace = ws.ptr<float>(ws.base());

  const cudaError_t e = raw::selective_scan_backward(p, nullptr);
  ASSERT_EQ(e, cudaSuccess) << what << ": " << cudaGetErrorString(e);
  Sync(what);

  const double rtol = c.bf16 ? 1e-2 : 1e-4;
  const at::Tensor got = dxdz.fetch();
  ExpectCloseToMax(same_view(got, dxdz.base(), dx_v), want.dx, rtol, what + " dx", worst);
  ExpectCloseToMax(same_view(got, dxdz.base(), dd_v), want.ddelta_in, rtol, what + " ddelta", worst);
  ExpectCloseToMax(same_view(got, dxdz.base(), dz_v), want.dz, rtol, what + " dz", worst);
  EXPECT_TRUE(got.narrow(2, 3 * D, 1).to(at::kFloat).eq(kGarbage).all().item<bool>())
      << what << ": wrote outside the gradient views";
  ExpectCloseToMax(dBm->fetch(), want.dBm, rtol, what + " dBm", worst);
  ExpectCloseToMax(dCm->fetch(), want.dCm, rtol, what + " dCm", worst);
  if (c.need_dA) {
    ExpectCloseToMax(dA->fetch(), want.dA, rtol, what + " dA", worst);
  } else {
    EXPECT_FALSE(want.dA.defined());
    EXPECT_TRUE(dA->fetch().eq(kGarbage).all().item<bool>()) << what << ": dA written unasked";
  }
  if (c.with_skip) {
    ExpectCloseToMax(dDs->fetch(), want.dDskip, rtol, what + " dDskip", worst);
    ExpectCloseToMax(ddb->fetch(), want.ddelta_bias, rtol, what + " ddelta_bias", worst);
  }
  if (so) ExpectCloseToMax(dso->fetch(), want.dstate_offset, rtol, what + " dstate_offset", worst);
  if (oo) ExpectCloseToMax(doo->fetch(), want.doutput_offset, rtol, what + " doutput_offset", worst);
  if (is) ExpectCloseToMax(dis->fetch(), want.dinitial_state, rtol, what + " dinitial_state", worst);
}

TEST_F(KernelsCuda, ScanBackwardMatchesCpuBackward) {
  // Every adapter combination, both dtypes, need_dA on and off, N = 16 and another N, odd
  // lengths with padding, chunks smaller and larger than L (several checkpoints, one).
  const int64_t Ls[] = {1, 7, 33, 70};
  const int64_t Ds[] = {8, 37, 160};
  const int64_t other_Ns[] = {1, 5, 20, 64};
  const int chunks[] = {4, 16, 64};
  WorstError worst_fp32, worst_bf16;
  uint32_t seed = 700;
  for (bool bf16 : {false, true})
    for (int adapters = 0; adapters < 8; ++adapters)
      for (bool need_dA : {false, true}) {
        std::mt19937 rng(seed);
        ScanBackwardCase c;
        c.s = Shape{1 + static_cast<int64_t>(rng() % 4), Ls[rng() % 4], Ds[rng() % 3],
                    adapters % 2 == 0 ? 16 : other_Ns[rng() % 4], 4, 0};
        c.bf16 = bf16;
        c.adapters = adapters;
        c.need_dA = need_dA;
        c.with_skip = seed % 3 != 0;
        c.chunk = chunks[rng() % 3];
        RunScanBackwardCase(seed++, c, bf16 ? worst_bf16 : worst_fp32);
      }
  worst_fp32.Print("scan backward fp32");
  worst_bf16.Print("scan backward bf16");
}

TEST_F(KernelsCuda, ScanBackwardCoversEveryStateSize) {
  // Each register-array size of the backward kernel, full and partly padded, all adapters, dA.
  WorstError worst;
  uint32_t seed = 800;
  for (int64_t n : {1, 8, 9, 16, 17, 32, 33, 64}) {
    ScanBackwardCase c;
    c.s = Shape{3, 21, 37, n, 4, 0};
    c.adapters = kStateOffset | kOutputOffset | kInitialState;
    c.need_dA = true;
    c.chunk = 8;
    RunScanBackwardCase(seed++, c, worst);
  }
  worst.Print("scan backward fp32, every N");
}

TEST_F(KernelsCuda, ScanBackwardWarpSumsKeepRowsApart) {
  // dB / dC are summed over each warp's channels with shuffles before the atomics. Several rows
  // with D not a multiple of 32 (a warp whose tail lanes have no channel; with D < 32 a mapping
  // that packed channels of the next row into the same warp would mix rows), every register-array
  // size, and D = 1000 at B = 8, which gets 128-thread blocks (several warps, the last one partly
  // past D) on the emulator's 4 SMs. Row lengths differ (padding), so rows end at different steps.
  struct Case {
    int64_t B, L, D, N;
  };
  const Case cases[] = {{4, 13, 5, 16}, {3, 9, 33, 5},  {2, 11, 31, 20},
                        {5, 6, 8, 64},  {3, 17, 40, 1}, {8, 9, 1000, 16}};
  WorstError worst;
  uint32_t seed = 850;
  for (const Case& k : cases)
    for (bool bf16 : {false, true}) {
      ScanBackwardCase c;
      c.s = Shape{k.B, k.L, k.D, k.N, 4, 0};
      c.bf16 = bf16;
      c.adapters = kStateOffset | kOutputOffset | kInitialState;
      c.need_dA = true;
      c.chunk = 4;
      RunScanBackwardCase(seed++, c, worst);
    }
  worst.Print("scan backward, warp sums over partial warps");
}

void RunConvBackwardCase(uint32_t seed, bool bf16, WorstError& worst) {
  std::mt19937 rng(seed);
  at::manual_seed(seed);
  const Shape s = RandomShape(rng);
  const int64_t B = s.B, L = s.L, D = s.D, K = s.K;
  const at::ScalarType act = bf16 ? at::kBFloat16 : at::kFloat;
  const bool weight_in_act = bf16 && seed % 2 == 0;
  const bool with_bias = seed % 3 != 0;
  const bool weight_grads = seed % 4 != 1;
  std::ostringstream w;
  w << "conv backward seed=" << seed << " " << Describe(s, bf16, 0, false) << " bias=" << with_bias
    << " weight_bf16=" << weight_in_act << " weight_grads=" << weight_grads;
  const std::string what = w.str();

  Mirror xz(at::randn({B, L, 2 * D}).to(act).contiguous());
  const at::Tensor x = xz.base().narrow(2, 0, D);
  Mirror gout(at::randn({B, L, D}).to(act).contiguous());
  const at::Tensor wt = at::randn({D, K}) * 0.5;
  Mirror weight(weight_in_act ? wt.to(act).contiguous() : wt);
  Mirror bias(at::randn({D}) * 0.2);
  Mirror lengths(RandomLengths(rng, B, L, false));
  const at::Tensor b = with_bias ? bias.base() : at::Tensor();
  const ConvGrads want =
      cpu::causal_conv1d_backward(x, weight.base(), b, lengths.base(), gout.base(), weight_grads);

  Mirror dx(at::full({B, L, D + 2}, kGarbage).to(act).contiguous());
  const at::Tensor dx_v = dx.base().narrow(2, 1, D);
  Mirror dw(at::full({D, K}, kGarbage, at::kFloat)), dbias(at::full({D}, kGarbage, at::kFloat));

  raw::ConvBackwardParams p;
  p.dtype = bf16 ? raw::DType::kBFloat16 : raw::DType::kFloat32;
  p.batch = static_cast<int>(B);
  p.seqlen = static_cast<int>(L);
  p.dim = static_cast<int>(D);
  p.width = static_cast<int>(K);
  p.x = {xz.ptr(x), x.stride(0), x.stride(1)};
  p.grad_out = {gout.ptr(gout.base()), gout.base().stride(0), gout.base().stride(1)};
  p.dx = {dx.ptr(dx_v), dx_v.stride(0), dx_v.stride(1)};
  p.weight = weight.ptr(weight.base());
  p.weight_dtype = weight_in_act ? raw::DType::kBFloat16 : raw::DType::kFloat32;
  if (with_bias) p.bias = bias.ptr(bias.base());
  p.lengths = lengths.ptr<int64_t>(lengths.base());
  if (weight_grads) {
    p.dweight = dw.ptr<float>(dw.base());
    if (with_bias) p.dbias = dbias.ptr<float>(dbias.base());
  }
  const cudaError_t e = raw::causal_conv1d_backward(p, nullptr);
  ASSERT_EQ(e, cudaSuccess) << what << ": " << cudaGetErrorString(e);
  Sync(what);

  const double rtol = bf16 ? 1e-2 : 1e-4;
  const at::Tensor got = dx.fetch();
  ExpectCloseToMax(same_view(got, dx.base(), dx_v), want.dx, rtol, what + " dx", worst);
  EXPECT_TRUE(got.narrow(2, 0, 1).to(at::kFloat).eq(kGarbage).all().item<bool>()) << what;
  EXPECT_TRUE(got.narrow(2, D + 1, 1).to(at::kFloat).eq(kGarbage).all().item<bool>()) << what;
  if (weight_grads) {
    ExpectCloseToMax(dw.fetch(), want.dweight, rtol, what + " dweight", worst);
    if (with_bias) ExpectCloseToMax(dbias.fetch(), want.dbias, rtol, what + " dbias", worst);
  }
}

TEST_F(KernelsCuda, ConvBackwardMatchesCpuBackward) {
  WorstError worst_fp32, worst_bf16;
  uint32_t seed = 900;
  for (bool bf16 : {false, true})
    for (int rep = 0; rep < 12; ++rep) RunConvBackwardCase(seed++, bf16, bf16 ? worst_bf16 : worst_fp32);
  worst_fp32.Print("conv backward fp32");
  worst_bf16.Print("conv backward bf16");
}

// ---------------------------------------------------------------------------------------------
// Indices. The host validates rows and slots where it builds them (kernels/batch_indices.h); a
// kernel given an out-of-range index anyway (e.g. indices built on the device) leaves that batch
// row untouched: no state, no output, no adapter read. The other rows are still right.

// Batch row 0 gets cache row -1: layer 1 of row -1 is layer 0 of row 0, inside the cache buffer, so
// an unguarded kernel would silently overwrite another sequence's state. Batch row 1 (scan only)
// gets slot S, past the pool.
TEST_F(KernelsCuda, OutOfRangeRowsAndSlotsTouchNothing) {
  const Shape s{4, 33, 160, 16, 4, 6};
  const int adapters = kStateOffset | kOutputOffset | kInitialState;
  for (bool step : {false, true}) {
    const uint32_t seed = step ? 1001 : 1000;
    std::mt19937 rng(seed);
    at::manual_seed(seed);
    ScanData d(s, /*bf16=*/false, adapters, rng, step, /*full_lengths=*/true);
    d.rows->base()[0] = -1;
    d.rows->upload();
    d.slots->base()[1] = static_cast<int32_t>(kSlots);
    d.slots->upload();
    const std::string what = std::string(step ? "scan step" : "scan prefill") + " with bad indices";

    // The reference over the good batch rows 2..3 only.
    auto good = [](const at::Tensor& t) { return t.narrow(0, 2, 2); };
    LayerCache ref_cache;
    const at::Tensor ref_cache_base = d.cache->base().clone();
    ref_cache.ssm_state = same_view(ref_cache_base, d.cache->base(), d.cache_v);
    ref_cache.rows = good(d.rows->base());
    LayerAdapters ad = d.HostAdapters();
    ad.slots = good(ad.slots);
    at::Tensor ref_out;
    if (step) {
      const ScanArgs args{good(d.x),  good(d.delta), d.dbias->base(), d.A->base(), good(d.Bm),
                          good(d.Cm), d.Dskip->base(), good(d.z), at::Tensor(), ad};
      ref::selective_scan_step(CheckedScan::step(args, ref_cache), ref_cache, ref_out);
    } else {
      const ScanArgs args{good(d.x),  good(d.delta),   d.dbias->base(), d.A->base(),
                          good(d.Bm), good(d.Cm),      d.Dskip->base(), good(d.z),
                          good(d.lengths->base()),     ad};
      ref::selective_scan_prefill(CheckedScan::prefill(args, ref_cache), ref_cache, false, ref_out);
    }
    const raw::ScanParams p = d.Params(step, /*resume=*/false);
    const cudaError_t e =
        step ? raw::selective_scan_step(p, nullptr) : raw::selective_scan_prefill(p, nullptr);
    ASSERT_EQ(e, cudaSuccess) << what << ": " << cudaGetErrorString(e);
    Sync(what);
    const at::Tensor out = same_view(d.out->fetch(), d.out->base(), d.out_v);
    ExpectClose(good(out), ref_out, 1e-4, what + ": the good rows");
    EXPECT_TRUE(out.narrow(0, 0, 2).eq(7.0).all().item<bool>()) << what << ": a bad row wrote output";
    ExpectClose(d.cache->fetch(), ref_cache_base, 1e-4,
                what + ": the cache (bad rows untouched, row 0 layer 0 included)");
  }

  std::mt19937 rng(1002);
  at::manual_seed(1002);
  ConvData d(s, /*bf16=*/false, false, true, rng, /*step=*/false, /*full_lengths=*/true);
  d.rows->base()[0] = -1;
  d.rows->upload();
  LayerCache ref_cache;
  const at::Tensor ref_cache_base = d.cache->base().clone();
  ref_cache.conv_state = same_view(ref_cache_base, d.cache->base(), d.cache_v);
  ref_cache.rows = d.rows->base().narrow(0, 1, 3);
  at::Tensor ref_out;
  ref::causal_conv1d_prefill(d.x.narrow(0, 1, 3), d.weight->base(), d.bias->base(),
                             d.lengths->base().narrow(0, 1, 3), ref_cache, false, ref_out);
  ASSERT_EQ(raw::causal_conv1d_prefill(d.Params(false, false), nullptr), cudaSuccess);
  Sync("conv prefill with a bad row");
  const at::Tensor out = same_view(d.out->fetch(), d.out->base(), d.out_v);
  ExpectClose(out.narrow(0, 1, 3), ref_out, 1e-4, "conv prefill: the good rows");
  EXPECT_TRUE(out.select(0, 0).eq(7.0).all().item<bool>()) << "conv prefill: a bad row wrote output";
  ExpectClose(d.cache->fetch(), ref_cache_base, 0.0, "conv prefill: the cache");
}

// ---------------------------------------------------------------------------------------------
// Large shapes. On a 132-SM H200 every shape above gets 32-thread blocks (B x D is small), so the
// scan prefill's shared-memory staging (__syncthreads between warps) and the backward would only
// ever run as one warp. B = 8, D = 5120 gives 8 x 40 = 320 >= 2 x 132 blocks of 128 threads (4
// warps), on the device and in the emulation (which reports 4 SMs).
TEST(KernelsCudaLaunch, LargeShapeGetsMultiWarpBlocks) {
  EXPECT_EQ(raw::block_threads_for(8, 5120, 128, /*H200*/ 132), 128);
  EXPECT_EQ(raw::block_threads_for(64, 5120, 128, 132), 128);
  EXPECT_EQ(raw::block_threads_for(4, 300, 128, 132), 32);  // the random shapes: one warp
}

TEST_F(KernelsCuda, LargeShapeScanMatchesReference) {
  const Shape big{8, 100, 5120, 16, 4, 10};
  const int all = kStateOffset | kOutputOffset | kInitialState;
  RunScanCase(1100, /*bf16=*/false, all, /*resume=*/false, /*step=*/false, 0, &big);
  RunScanCase(1101, /*bf16=*/true, all, /*resume=*/true, /*step=*/false, 0, &big);
  WorstError worst;
  ScanBackwardCase c;
  c.s = big;
  c.adapters = all;
  c.need_dA = true;
  c.chunk = 10;  // ~sqrt(L)
  RunScanBackwardCase(1102, c, worst);
  c.bf16 = true;
  RunScanBackwardCase(1103, c, worst);
  worst.Print("scan backward, B=8 L=100 D=5120 N=16");
}

// ---------------------------------------------------------------------------------------------
// RMSNorm. Widths 1, 64 and 100 get one-warp blocks, 300 four warps (that do not divide it) and
// 2560 / 5120 (d_model of Mamba-2.8B and twice that) eight warps whose partial sums meet in shared
// memory; one row (decode at B = 1) and several; x and out as row-strided views of wider tensors
// whose other elements must stay untouched; fp32 and bf16 out.
TEST(KernelsCudaLaunch, RmsNormBlockSizes) {
  EXPECT_EQ(raw::rmsnorm_threads_for(1), 32);
  EXPECT_EQ(raw::rmsnorm_threads_for(64), 32);
  EXPECT_EQ(raw::rmsnorm_threads_for(100), 32);
  EXPECT_EQ(raw::rmsnorm_threads_for(300), 128);
  EXPECT_EQ(raw::rmsnorm_threads_for(2560), 256);
  EXPECT_EQ(raw::rmsnorm_threads_for(5120), 256);
}

constexpr double kRmsEps = 1e-5;

// x as [T, M + 3] rows of very different sizes (row 0 small enough that eps matters).
at::Tensor RmsNormRows(int64_t T, int64_t M) {
  at::Tensor x = at::randn({T, M + 3}) * at::exp(at::randn({T, 1}) * 2);
  if (T > 1) x[0].mul_(1e-3);
  return x;
}

void RunRmsNormCase(uint32_t seed, int64_t T, int64_t M, bool bf16) {
  at::manual_seed(seed);
  std::ostringstream o;
  o << "rmsnorm T=" << T << " M=" << M << (bf16 ? " bf16" : " fp32");
  const std::string what = o.str();
  const at::ScalarType odt = bf16 ? at::kBFloat16 : at::kFloat;
  Mirror x(RmsNormRows(T, M));
  Mirror w(at::randn({M}) * 0.5 + 1.0);
  Mirror out(at::full({T, M + 2}, 7.0, odt));
  const at::Tensor xv = x.base().narrow(1, 1, M), ov = out.base().narrow(1, 1, M);

  raw::RmsNormParams p;
  p.out_dtype = bf16 ? raw::DType::kBFloat16 : raw::DType::kFloat32;
  p.rows = T;
  p.dim = M;
  p.eps = static_cast<float>(kRmsEps);
  p.x = x.ptr<float>(xv);
  p.x_row_stride = xv.stride(0);
  p.weight = w.ptr<float>(w.base());
  p.out = out.ptr(ov);
  p.out_row_stride = ov.stride(0);
  const cudaError_t e = raw::rmsnorm(p, nullptr);
  ASSERT_EQ(e, cudaSuccess) << what << ": " << cudaGetErrorString(e);
  Sync(what);

  at::Tensor want = at::empty({T, M}, odt);
  ref::rmsnorm(xv, w.base(), kRmsEps, want);
  const at::Tensor got = out.fetch();
  ExpectClose(same_view(got, out.base(), ov), want, bf16 ? 1e-2 : 1e-4, what);
  EXPECT_TRUE(got.narrow(1, 0, 1).to(at::kFloat).eq(7.0).all().item<bool>()) << what;
  EXPECT_TRUE(got.narrow(1, M + 1, 1).to(at::kFloat).eq(7.0).all().item<bool>()) << what;
}

TEST_F(KernelsCuda, RmsNormMatchesReference) {
  uint32_t seed = 1300;
  for (const int64_t M : {1, 64, 100, 300, 2560, 5120})
    for (const int64_t T : {1, 5})
      for (const bool bf16 : {false, true}) RunRmsNormCase(seed++, T, M, bf16);
}

// out == x (fp32): every thread reads its elements again after the block's barrier, never another
// thread's, so writing in place is safe.
TEST_F(KernelsCuda, RmsNormInPlace) {
  at::manual_seed(1400);
  const int64_t T = 3, M = 2560;
  Mirror x(RmsNormRows(T, M).narrow(1, 0, M).contiguous());
  Mirror w(at::randn({M}));
  raw::RmsNormParams p;
  p.rows = T;
  p.dim = M;
  p.eps = static_cast<float>(kRmsEps);
  p.x = x.ptr<float>(x.base());
  p.x_row_stride = M;
  p.weight = w.ptr<float>(w.base());
  p.out = x.ptr(x.base());
  p.out_row_stride = M;
  ASSERT_EQ(raw::rmsnorm(p, nullptr), cudaSuccess);
  Sync("rmsnorm in place");
  at::Tensor want = at::empty({T, M});
  ref::rmsnorm(x.base(), w.base(), kRmsEps, want);
  ExpectClose(x.fetch(), want, 1e-4, "rmsnorm in place");
}

#ifdef STATETUNE_CUDA_EMULATED
constexpr bool kEmulated = true;
#else
constexpr bool kEmulated = false;
#endif

// A Mamba-2.8B-sized layer (d_inner 5120, d_state 16) at B = 64, L = 2048, bf16: prefill and
// backward run, stay finite, and row 0 matches the CPU kernels. Every row holds the same data with
// a different length, so each row's prefill output must equal row 0's on its valid prefix (and 0
// after): a cross-block fault shows as rows that disagree. Real devices only (the emulation would
// take hours).
TEST_F(KernelsCuda, Mamba28BSizedPrefillAndBackwardSmoke) {
  if (kEmulated) GTEST_SKIP() << "device only: too large to emulate";
  const int64_t B = 64, L = 2048, D = 5120, N = 16;
  const int chunk = 45;  // ~sqrt(L): checkpoints + chunk states = 46 + 45 entries (64: 32 + 64)
  at::manual_seed(1200);
  const at::ScalarType act = at::kBFloat16;
  at::Tensor row = at::randn({1, L, 3 * D}) * 0.8;
  row.narrow(2, D, D).mul_(0.5).sub_(1.0);
  Mirror xdz(row.to(act).repeat({B, 1, 1}).contiguous());
  const at::Tensor x = xdz.base().narrow(2, 0, D), delta = xdz.base().narrow(2, D, D),
                   z = xdz.base().narrow(2, 2 * D, D);
  Mirror bc(at::randn({1, L, 2 * N}).to(act).repeat({B, 1, 1}).contiguous());
  const at::Tensor Bm = bc.base().narrow(2, 0, N), Cm = bc.base().narrow(2, N, N);
  Mirror A(-at::exp(at::rand({D, N}) * 2.5 - 1.0));
  Mirror Dskip(at::randn({D})), dbias(at::randn({D}) * 0.5 - 1.5);
  Mirror so(at::randn({kSlots, D, N}) * 0.3), oo(at::randn({kSlots, D}) * 0.5);
  Mirror slots(at::full({B}, 1, at::kInt));
  at::Tensor len = at::randint(1, L + 1, {B}, at::kLong);
  len[0] = L;
  Mirror lengths(len);
  Mirror cache(at::zeros({B, D, N}));
  Mirror rows(at::arange(B, at::kLong));
  Mirror out(at::empty({B, L, D}, act));

  raw::ScanParams p;
  p.dtype = raw::DType::kBFloat16;
  p.batch = B;
  p.seqlen = L;
  p.dim = D;
  p.dstate = N;
  auto act_of = [](const Mirror& m, const at::Tensor& v) {
    return raw::ActTensor{m.ptr(v), v.stride(0), v.stride(1)};
  };
  p.x = act_of(xdz, x);
  p.delta = act_of(xdz, delta);
  p.z = act_of(xdz, z);
  p.Bm = act_of(bc, Bm);
  p.Cm = act_of(bc, Cm);
  p.out = raw::OutTensor{out.ptr(out.base()), L * D, D};
  p.A = A.ptr<float>(A.base());
  p.Dskip = Dskip.ptr<float>(Dskip.base());
  p.delta_bias = dbias.ptr<float>(dbias.base());
  p.lengths = lengths.ptr<int64_t>(lengths.base());
  p.slots = slots.ptr<int32_t>(slots.base());
  p.num_slots = static_cast<int>(kSlots);
  p.state_offset = {so.ptr<float>(so.base()), D * N};
  p.output_offset = {oo.ptr<float>(oo.base()), D};
  p.ssm_state = cache.ptr<float>(cache.base());
  p.ssm_state_row_stride = D * N;
  p.num_rows = B;
  p.rows = rows.ptr<int64_t>(rows.base());
  cudaEvent_t t0, t1;
  ASSERT_EQ(cudaEventCreate(&t0), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&t1), cudaSuccess);
  cudaEventRecord(t0, nullptr);
  ASSERT_EQ(raw::selective_scan_prefill(p, nullptr), cudaSuccess);
  cudaEventRecord(t1, nullptr);
  Sync("2.8B-sized prefill");
  float ms = 0.f;
  cudaEventElapsedTime(&ms, t0, t1);
  std::printf("2.8B-sized scan prefill B=64 L=2048 D=5120 N=16 bf16: %.2f ms\n", ms);

  const at::Tensor got = out.fetch();
  ASSERT_TRUE(got.isfinite().all().item<bool>()) << "prefill: non-finite output";
  LayerAdapters ad;
  ad.slots = slots.base().narrow(0, 0, 1);
  ad.state_offset = so.base();
  ad.output_offset = oo.base();
  LayerCache ref_cache;
  ref_cache.ssm_state = at::zeros({1, D, N});
  ref_cache.rows = at::zeros({1}, at::kLong);
  at::Tensor want;
  auto first = [](const at::Tensor& t) { return t.narrow(0, 0, 1); };
  const ScanArgs args{first(x),  first(delta), dbias.base(), A.base(), first(Bm),
                      first(Cm), Dskip.base(),  first(z),     first(len), ad};
  cpu::selective_scan_prefill(CheckedScan::prefill(args, ref_cache), ref_cache, false, want);
  ExpectClose(first(got), want, 1e-2, "2.8B-sized prefill, row 0 vs the CPU kernel");
  for (int64_t b = 1; b < B; ++b) {
    const int64_t lb = len[b].item<int64_t>();
    EXPECT_TRUE(got[b].narrow(0, 0, lb).equal(got[0].narrow(0, 0, lb))) << "row " << b;
    EXPECT_TRUE(got[b].narrow(0, lb, L - lb).eq(0).all().item<bool>()) << "row " << b << " padding";
  }

  // Backward with the same inputs.
  Mirror gout(at::randn({1, L, D}).to(act).repeat({B, 1, 1}).contiguous());
  Mirror dxdz(at::empty({B, L, 3 * D}, act));
  Mirror dBm(at::empty({B, L, N})), dCm(at::empty({B, L, N})), dA(at::empty({D, N}));
  Mirror dso(at::empty({kSlots, D, N})), doo(at::empty({kSlots, D}));
  raw::ScanBackwardParams bp;
  bp.dtype = raw::DType::kBFloat16;
  bp.batch = B;
  bp.seqlen = L;
  bp.dim = D;
  bp.dstate = N;
  bp.chunk = chunk;
  bp.x = p.x;
  bp.delta = p.delta;
  bp.z = p.z;
  bp.Bm = p.Bm;
  bp.Cm = p.Cm;
  bp.grad_out = act_of(gout, gout.base());
  bp.A = p.A;
  bp.Dskip = p.Dskip;
  bp.delta_bias = p.delta_bias;
  bp.lengths = p.lengths;
  bp.slots = p.slots;
  bp.num_slots = p.num_slots;
  bp.state_offset = p.state_offset;
  bp.output_offset = p.output_offset;
  const at::Tensor dx_v = dxdz.base().narrow(2, 0, D), dd_v = dxdz.base().narrow(2, D, D),
                   dz_v = dxdz.base().narrow(2, 2 * D, D);
  bp.dx = raw::OutTensor{dxdz.ptr(dx_v), dx_v.stride(0), dx_v.stride(1)};
  bp.ddelta = raw::OutTensor{dxdz.ptr(dd_v), dd_v.stride(0), dd_v.stride(1)};
  bp.dz = raw::OutTensor{dxdz.ptr(dz_v), dz_v.stride(0), dz_v.stride(1)};
  bp.dBm = dBm.ptr<float>(dBm.base());
  bp.dCm = dCm.ptr<float>(dCm.base());
  bp.dA = dA.ptr<float>(dA.base());
  bp.dstate_offset = dso.ptr<float>(dso.base());
  bp.doutput_offset = doo.ptr<float>(doo.base());
  const size_t ws_floats = raw::selective_scan_backward_workspace_floats(bp);
  std::printf("2.8B-sized scan backward workspace at chunk %d: %.2f GB\n", chunk,
              static_cast<double>(ws_floats) * 4 / 1e9);
  float* ws = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&ws), ws_floats * sizeof(float)), cudaSuccess);
  bp.workspace = ws;
  cudaEventRecord(t0, nullptr);
  const cudaError_t e = raw::selective_scan_backward(bp, nullptr);
  cudaEventRecord(t1, nullptr);
  ASSERT_EQ(e, cudaSuccess) << cudaGetErrorString(e);
  Sync("2.8B-sized backward");
  cudaEventElapsedTime(&ms, t0, t1);
  std::printf("2.8B-sized scan backward: %.2f ms\n", ms);
  cudaFree(ws);
  cudaEventDestroy(t0);
  cudaEventDestroy(t1);

  const at::Tensor g = dxdz.fetch();
  ASSERT_TRUE(g.isfinite().all().item<bool>()) << "backward: non-finite gradients";
  ScanBackwardOptions opt;
  opt.need_dA = true;
  opt.chunk = chunk;
  const ScanArgs bargs{first(x),  first(delta), dbias.base(), A.base(), first(Bm),
                       first(Cm), Dskip.base(),  first(z),     first(len), ad};
  const ScanGrads want_g = cpu::selective_scan_backward(
      CheckedScan::backward(bargs, first(gout.base())), first(gout.base()), opt);
  WorstError worst;
  ExpectCloseToMax(first(same_view(g, dxdz.base(), dx_v)), want_g.dx, 1e-2, "row 0 dx", worst);
  ExpectCloseToMax(first(same_view(g, dxdz.base(), dd_v)), want_g.ddelta_in, 1e-2, "row 0 ddelta", worst);
  ExpectCloseToMax(first(same_view(g, dxdz.base(), dz_v)), want_g.dz, 1e-2, "row 0 dz", worst);
  ExpectCloseToMax(first(dBm.fetch()), want_g.dBm, 1e-2, "row 0 dBm", worst);
  ExpectCloseToMax(first(dCm.fetch()), want_g.dCm, 1e-2, "row 0 dCm", worst);
  worst.Print("2.8B-sized backward, row 0");
}

// Runs without a device: the launchers reject sizes the kernels do not support before touching it.
TEST(KernelsCudaParams, RejectsUnsupportedSizes) {
  raw::ScanParams sp;
  sp.batch = 1;
  sp.seqlen = 4;
  sp.dim = 8;
  sp.dstate = raw::kMaxDState + 1;
  float dummy[1];
  sp.A = dummy;
  sp.ssm_state = dummy;
  EXPECT_EQ(raw::selective_scan_prefill(sp, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(raw::selective_scan_step(sp, nullptr), cudaErrorInvalidValue);
  sp.dstate = 0;
  EXPECT_EQ(raw::selective_scan_prefill(sp, nullptr), cudaErrorInvalidValue);
  raw::ConvParams cp;
  cp.batch = 1;
  cp.seqlen = 4;
  cp.dim = 8;
  cp.width = raw::kMaxConvWidth + 1;
  cp.weight = dummy;
  cp.conv_state = dummy;
  EXPECT_EQ(raw::causal_conv1d_prefill(cp, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(raw::causal_conv1d_step(cp, nullptr), cudaErrorInvalidValue);
  cp.width = 4;
  cp.conv_state = nullptr;
  EXPECT_EQ(raw::causal_conv1d_prefill(cp, nullptr), cudaErrorInvalidValue);
}

// Runs without a device: what the RMSNorm launcher refuses, before touching it.
TEST(KernelsCudaParams, RmsNormRejectsBadParams) {
  float dummy[1];
  raw::RmsNormParams p;
  p.rows = 1;
  p.dim = 8;
  p.x = dummy;
  p.weight = dummy;
  p.out = nullptr;
  EXPECT_EQ(raw::rmsnorm(p, nullptr), cudaErrorInvalidValue);
  p.out = dummy;
  p.rows = -1;
  EXPECT_EQ(raw::rmsnorm(p, nullptr), cudaErrorInvalidValue);
  p.rows = int64_t{1} << 31;  // beyond grid.x
  EXPECT_EQ(raw::rmsnorm(p, nullptr), cudaErrorInvalidValue);
  p.rows = 1;
  p.dim = -1;
  EXPECT_EQ(raw::rmsnorm(p, nullptr), cudaErrorInvalidValue);
  p.rows = 0;  // nothing to do: no launch, no error
  p.dim = 8;
  EXPECT_EQ(raw::rmsnorm(p, nullptr), cudaSuccess);
}

}  // namespace
}  // namespace statetune::kernels
