// The argument checks of a selective-scan call, done once per call for every backend (see
// CheckedScan in ssm_kernels.h). What one backend alone needs (the CUDA kernels' size limits, the
// CPU kernels' fp32 adapters) stays with that backend.
#include <ATen/ATen.h>

#include "kernels/batch_indices.h"
#include "kernels/ssm_kernels.h"

namespace statetune::kernels {
namespace {

// An [B, (L,) X] activation in x's dtype on x's device.
void check_activation(const at::Tensor& t, const at::Tensor& x, const char* name,
                      at::IntArrayRef sizes) {
  TORCH_CHECK(t.defined(), "selective scan: ", name, " is required");
  TORCH_CHECK(t.sizes() == sizes, "selective scan: ", name, " has shape ", t.sizes(), ", expected ",
              sizes);
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), "selective scan: ", name, " is ",
              t.scalar_type(), ", x is ", x.scalar_type());
  TORCH_CHECK(t.device() == x.device(), "selective scan: ", name, " is on ", t.device(), ", x on ",
              x.device());
}

// A per-channel parameter ([D], or [S, D] / [S, D, N] for a pool) on x's device; undefined is
// allowed when `optional`.
void check_param(const at::Tensor& t, const at::Tensor& x, const char* name, at::IntArrayRef sizes) {
  if (!t.defined()) return;
  TORCH_CHECK(t.sizes() == sizes, "selective scan: ", name, " has shape ", t.sizes(), ", expected ",
              sizes);
  TORCH_CHECK(t.device() == x.device(), "selective scan: ", name, " is on ", t.device(), ", x on ",
              x.device());
}

// An index tensor [B]: on the CPU or on x's device.
void check_index(const at::Tensor& t, const at::Tensor& x, int64_t B, const char* name) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == B, "selective scan: ", name, " must be [B] (B = ", B,
              "), got ", t.sizes());
  TORCH_CHECK(t.device().is_cpu() || t.device() == x.device(), "selective scan: ", name,
              " is on ", t.device(), ", x on ", x.device());
}

// The slot count the adapter tensors agree on (0 when none is given), their shapes checked.
int64_t check_adapters(const LayerAdapters& a, const at::Tensor& x, int64_t B, int64_t D,
                       int64_t N) {
  int64_t S = 0;
  for (const at::Tensor* t : {&a.state_offset, &a.output_offset, &a.initial_state}) {
    if (!t->defined()) continue;
    TORCH_CHECK(t->dim() >= 1 && t->size(0) >= 1, "selective scan: adapter tensors must be [S, ...]"
                " with S >= 1");
    TORCH_CHECK(S == 0 || S == t->size(0), "selective scan: adapter tensors disagree on S");
    S = t->size(0);
  }
  check_param(a.state_offset, x, "adapters.state_offset", {S, D, N});
  check_param(a.output_offset, x, "adapters.output_offset", {S, D});
  check_param(a.initial_state, x, "adapters.initial_state", {S, D, N});
  if (a.slots.defined()) {
    check_index(a.slots, x, B, "adapters.slots");
    // Without an adapter tensor no slot is read, so there is nothing to check a slot against.
    if (S > 0) check_slots_on_host(a.slots, S, "selective scan");
  }
  return S;
}

void check_lengths(const at::Tensor& lengths, const at::Tensor& x, int64_t B, int64_t L) {
  TORCH_CHECK(lengths.defined(), "selective scan: lengths is required");
  check_index(lengths, x, B, "lengths");
  if (!lengths.device().is_cpu()) return;
  const at::Tensor l = lengths.to(at::kLong).contiguous();
  const int64_t* v = l.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(v[b] >= 0 && v[b] <= L, "selective scan: lengths[", b, "] = ", v[b],
                " outside [0, ", L, "]");
  }
}

// The kernels update cache rows in place, so the cache is checked, never copied.
void check_cache(const LayerCache& cache, const at::Tensor& x, int64_t B, int64_t D, int64_t N) {
  const at::Tensor& s = cache.ssm_state;
  TORCH_CHECK(s.defined() && s.dim() == 3 && s.size(1) == D && s.size(2) == N,
              "selective scan: cache.ssm_state must be [C, ", D, ", ", N, "]");
  TORCH_CHECK(s.scalar_type() == at::kFloat && s.device() == x.device(),
              "selective scan: cache.ssm_state must be fp32 on x's device");
  TORCH_CHECK((N == 1 || s.stride(2) == 1) && (D == 1 || s.stride(1) == N),
              "selective scan: cache.ssm_state must be contiguous inside each cache row");
  TORCH_CHECK(cache.rows.defined(), "selective scan: cache.rows is required");
  check_index(cache.rows, x, B, "cache.rows");
  check_rows_on_host(cache.rows, s.size(0), "selective scan");
}

}  // namespace

CheckedScan CheckedScan::check(const ScanArgs& a, bool step, bool backward) {
  const at::Tensor& x = a.x;
  TORCH_CHECK(x.defined() && x.dim() == (step ? 2 : 3), "selective scan: x must be ",
              step ? "[B, D]" : "[B, L, D]");
  const auto dt = x.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16 || (backward && dt == at::kDouble),
              "selective scan: activations must be fp32 or bf16", backward ? " (or fp64)" : "",
              ", got ", dt);
  const int64_t B = x.size(0), L = step ? 1 : x.size(1), D = x.size(-1);
  TORCH_CHECK(a.A.defined() && a.A.dim() == 2 && a.A.size(0) == D && a.A.size(1) >= 1,
              "selective scan: A must be [D, N] (D = ", D, ")");
  const int64_t N = a.A.size(1);
  check_param(a.A, x, "A", {D, N});
  const std::vector<int64_t> act = step ? std::vector<int64_t>{B, D} : std::vector<int64_t>{B, L, D};
  const std::vector<int64_t> bc = step ? std::vector<int64_t>{B, N} : std::vector<int64_t>{B, L, N};
  check_activation(a.delta_in, x, "delta_in", act);
  check_activation(a.z, x, "z", act);
  check_activation(a.Bm, x, "Bm", bc);
  check_activation(a.Cm, x, "Cm", bc);
  check_param(a.Dskip, x, "Dskip", {D});
  check_param(a.delta_bias, x, "delta_bias", {D});
  if (!step) check_lengths(a.lengths, x, B, L);
  const int64_t S = check_adapters(a.adapters, x, B, D, N);
  return CheckedScan(a, B, L, D, N, S);
}

CheckedScan CheckedScan::prefill(const ScanArgs& args, const LayerCache& cache) {
  CheckedScan s = check(args, /*step=*/false, /*backward=*/false);
  check_cache(cache, args.x, s.B, s.D, s.N);
  return s;
}

CheckedScan CheckedScan::step(const ScanArgs& args, const LayerCache& cache) {
  CheckedScan s = check(args, /*step=*/true, /*backward=*/false);
  check_cache(cache, args.x, s.B, s.D, s.N);
  return s;
}

CheckedScan CheckedScan::backward(const ScanArgs& args, const at::Tensor& grad_out) {
  CheckedScan s = check(args, /*step=*/false, /*backward=*/true);
  // grad_out may come in another floating dtype: the backends compute in their own precision.
  TORCH_CHECK(grad_out.defined() && grad_out.sizes() == args.x.sizes() &&
                  grad_out.device() == args.x.device(),
              "selective scan: grad_out must be [B, L, D] on x's device");
  return s;
}

}  // namespace statetune::kernels
