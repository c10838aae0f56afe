// The reference kernels: LibTorch ops, one time step at a time, computed in fp32. They are the
// definition the CPU and CUDA backends are tested against, so they favour the obvious over the
// fast.
#include <ATen/ATen.h>

#include "kernels/rmsnorm.h"
#include "kernels/ssm_kernels.h"

namespace statetune::kernels::ref {
namespace {

at::Tensor f32(const at::Tensor& t) { return t.to(at::kFloat); }

// `out` is resized (re-allocated) only when its shape or dtype does not fit, so callers can reuse
// it.
void prepare_out(at::Tensor& out, at::IntArrayRef sizes, const at::Tensor& like) {
  if (!out.defined() || out.sizes() != sizes || out.scalar_type() != like.scalar_type() ||
      out.device() != like.device()) {
    out = at::empty(sizes, like.options());
  }
}

at::Tensor slot_index(const LayerAdapters& adapters, int64_t batch, const at::Device& device) {
  if (adapters.slots.defined()) return adapters.slots.to(at::kLong);
  return at::zeros({batch}, at::TensorOptions().dtype(at::kLong).device(device));
}

// [B] bool: row b has position t (right padding).
at::Tensor valid_at(const at::Tensor& lengths, int64_t t, const at::Device& device) {
  return lengths.to(device).gt(t);
}

void check_lengths(const at::Tensor& lengths, int64_t B, int64_t L) {
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == B, "lengths must be [B]");
  const auto l = lengths.to(at::kCPU).to(at::kLong);
  TORCH_CHECK(l.min().item<int64_t>() >= 0 && l.max().item<int64_t>() <= L,
              "lengths must lie in [0, L]");
}

}  // namespace

void causal_conv1d_prefill(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                           const at::Tensor& lengths, LayerCache& cache, bool resume,
                           at::Tensor& out) {
  TORCH_CHECK(x.dim() == 3, "conv prefill: x must be [B, L, D]");
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2), K = weight.size(1);
  check_lengths(lengths, B, L);
  const at::Tensor w = f32(weight);  // [D, K]
  const at::Tensor rows = cache.rows.to(at::kLong);
  // The K-1 inputs before t = 0, as [B, K-1, D].
  at::Tensor hist = resume ? cache.conv_state.index_select(0, rows).transpose(1, 2)
                           : at::zeros({B, K - 1, D}, x.options().dtype(at::kFloat));
  const at::Tensor xin = at::cat({hist, f32(x)}, 1);  // [B, K-1+L, D]
  prepare_out(out, {B, L, D}, x);
  for (int64_t t = 0; t < L; ++t) {
    // Window ending at input t: xin positions t .. t+K-1.
    at::Tensor acc = (xin.narrow(1, t, K) * w.t().unsqueeze(0)).sum(1);  // [B, D]
    if (bias.defined()) acc = acc + f32(bias);
    acc = at::silu(acc);
    acc = acc * valid_at(lengths, t, x.device()).unsqueeze(1).to(at::kFloat);
    out.select(1, t).copy_(acc);
  }
  const auto len_cpu = lengths.to(at::kCPU).to(at::kLong);
  const auto rows_cpu = rows.to(at::kCPU);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t len = len_cpu[b].item<int64_t>();
    // The last K-1 inputs of the row, history included: xin positions len .. len+K-2.
    at::Tensor last = xin[b].narrow(0, len, K - 1).t();  // [D, K-1]
    cache.conv_state[rows_cpu[b].item<int64_t>()].copy_(last);
  }
}

void causal_conv1d_step(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                        LayerCache& cache, at::Tensor& out) {
  TORCH_CHECK(x.dim() == 2, "conv step: x must be [B, D]");
  const int64_t B = x.size(0), D = x.size(1);
  const at::Tensor rows = cache.rows.to(at::kLong);
  const at::Tensor state = cache.conv_state.index_select(0, rows);     // [B, D, K-1]
  const at::Tensor window = at::cat({state, f32(x).unsqueeze(2)}, 2);  // [B, D, K]
  at::Tensor acc = (window * f32(weight).unsqueeze(0)).sum(2);         // [B, D]
  if (bias.defined()) acc = acc + f32(bias);
  prepare_out(out, {B, D}, x);
  out.copy_(at::silu(acc));
  cache.conv_state.index_copy_(0, rows, window.narrow(2, 1, window.size(2) - 1).contiguous());
}

void selective_scan_prefill(const CheckedScan& scan, LayerCache& cache, bool resume,
                            at::Tensor& out) {
  const ScanArgs& a = scan.args;
  const at::Tensor &x = a.x, &lengths = a.lengths;
  const LayerAdapters& adapters = a.adapters;
  const int64_t B = scan.B, L = scan.L, D = scan.D, N = scan.N;
  const at::Tensor rows = cache.rows.to(at::kLong);
  const at::Tensor slots = slot_index(adapters, B, x.device());
  const at::Tensor xf = f32(x), zf = f32(a.z), Bf = f32(a.Bm), Cf = f32(a.Cm), Af = f32(a.A);
  at::Tensor delta_pre = f32(a.delta_in);
  if (a.delta_bias.defined()) delta_pre = delta_pre + f32(a.delta_bias);
  const at::Tensor delta = at::softplus(delta_pre, /*beta=*/1, /*threshold=*/20);  // [B, L, D]

  at::Tensor h;
  if (resume) {
    h = cache.ssm_state.index_select(0, rows);
  } else if (adapters.initial_state.defined()) {
    h = adapters.initial_state.index_select(0, slots).to(at::kFloat);
  } else {
    h = at::zeros({B, D, N}, x.options().dtype(at::kFloat));
  }
  h = h.clone();
  at::Tensor so, oo;
  if (adapters.state_offset.defined())
    so = adapters.state_offset.index_select(0, slots);  // [B,D,N]
  if (adapters.output_offset.defined())
    oo = adapters.output_offset.index_select(0, slots);  // [B,D]

  prepare_out(out, {B, L, D}, x);
  for (int64_t t = 0; t < L; ++t) {
    const at::Tensor valid = valid_at(lengths, t, x.device());  // [B]
    const at::Tensor dt = delta.select(1, t);                   // [B, D]
    const at::Tensor xt = xf.select(1, t);
    const at::Tensor h_new = at::exp(dt.unsqueeze(2) * Af.unsqueeze(0)) * h +
                             (dt * xt).unsqueeze(2) * Bf.select(1, t).unsqueeze(1);
    // Pad positions do not advance the state.
    h = at::where(valid.view({B, 1, 1}), h_new, h);
    at::Tensor read = so.defined() ? h + so : h;
    at::Tensor y = (read * Cf.select(1, t).unsqueeze(1)).sum(2);  // [B, D]
    if (a.Dskip.defined()) y = y + f32(a.Dskip) * xt;
    if (oo.defined()) y = y + oo;
    at::Tensor o = y * at::silu(zf.select(1, t));
    o = at::where(valid.view({B, 1}), o, at::zeros_like(o));
    out.select(1, t).copy_(o);
  }
  cache.ssm_state.index_copy_(0, rows, h);
}

void selective_scan_step(const CheckedScan& scan, LayerCache& cache, at::Tensor& out) {
  const ScanArgs& a = scan.args;
  const LayerAdapters& adapters = a.adapters;
  const int64_t B = scan.B, D = scan.D;
  const at::Tensor rows = cache.rows.to(at::kLong);
  const at::Tensor slots = slot_index(adapters, B, a.x.device());
  const at::Tensor xt = f32(a.x);
  at::Tensor delta_pre = f32(a.delta_in);
  if (a.delta_bias.defined()) delta_pre = delta_pre + f32(a.delta_bias);
  const at::Tensor dt = at::softplus(delta_pre, 1, 20);  // [B, D]
  at::Tensor h = cache.ssm_state.index_select(0, rows);  // [B, D, N]
  h = at::exp(dt.unsqueeze(2) * f32(a.A).unsqueeze(0)) * h +
      (dt * xt).unsqueeze(2) * f32(a.Bm).unsqueeze(1);
  at::Tensor read = h;
  if (adapters.state_offset.defined()) read = h + adapters.state_offset.index_select(0, slots);
  at::Tensor y = (read * f32(a.Cm).unsqueeze(1)).sum(2);
  if (a.Dskip.defined()) y = y + f32(a.Dskip) * xt;
  if (adapters.output_offset.defined()) y = y + adapters.output_offset.index_select(0, slots);
  prepare_out(out, {B, D}, a.x);
  out.copy_(y * at::silu(f32(a.z)));
  cache.ssm_state.index_copy_(0, rows, h);
}

void rmsnorm(const at::Tensor& x, const at::Tensor& weight, double eps, at::Tensor& out) {
  const at::Tensor xf = f32(x);
  const at::Tensor ms = xf.pow(2).mean(-1, /*keepdim=*/true);
  out.copy_(xf * at::rsqrt(ms + eps) * f32(weight));
}

}  // namespace statetune::kernels::ref
