// at::Tensor glue for the CUDA kernels: checks shapes, dtypes and devices, brings inputs into the
// layouts the kernels accept (copying only when a tensor's innermost layout does not fit), and
// launches on the current CUDA stream of x's device. Cache tensors are written in place, so they
// are checked, never copied.
#include "kernels/cuda/cuda_backend.h"

#include <cstdint>
#include <initializer_list>
#include <vector>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/batch_indices.h"
#include "kernels/cuda/rmsnorm_cuda.cuh"
#include "kernels/cuda/ssm_cuda.cuh"
#include "kernels/cuda/ssm_cuda_backward.cuh"

namespace statetune::kernels::cuda {
namespace {

namespace raw = statetune::kernels::cuda_raw;

raw::DType act_dtype(const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
              "statetune cuda kernels: activations must be float32 or bfloat16, got ",
              x.scalar_type());
  return x.scalar_type() == at::kBFloat16 ? raw::DType::kBFloat16 : raw::DType::kFloat32;
}

// Whether the last `inner` dims are laid out as in a contiguous tensor (size-1 dims ignored; an
// empty block, e.g. the [C, D, 0] conv state of d_conv = 1, has no layout to get wrong).
bool inner_contiguous(const at::Tensor& t, int inner) {
  for (int i = 0; i < inner; ++i) {
    if (t.size(t.dim() - 1 - i) == 0) return true;
  }
  int64_t expected = 1;
  for (int i = 0; i < inner; ++i) {
    const int64_t dim = t.dim() - 1 - i;
    if (t.size(dim) != 1 && t.stride(dim) != expected) return false;
    expected *= t.size(dim);
  }
  return true;
}

// t itself when its innermost stride is 1 (views of a fused projection output pass through
// untouched), else a contiguous copy.
at::Tensor unit_inner(const at::Tensor& t) { return inner_contiguous(t, 1) ? t : t.contiguous(); }

// An activation of the conv on x's device in x's dtype with a unit innermost stride.
at::Tensor activation(const at::Tensor& t, const at::Tensor& x, const char* name,
                      at::IntArrayRef sizes) {
  TORCH_CHECK(t.defined(), "statetune cuda kernels: ", name, " is required");
  TORCH_CHECK(t.sizes() == sizes, "statetune cuda kernels: ", name, " has shape ", t.sizes(),
              ", expected ", sizes);
  TORCH_CHECK(t.device() == x.device(), "statetune cuda kernels: ", name, " is on ", t.device(),
              ", x on ", x.device());
  at::Tensor r = t.scalar_type() == x.scalar_type() ? t : t.to(x.scalar_type());
  if (!inner_contiguous(r, 1)) r = r.contiguous();
  return r;
}

// t on `device` in `dtype`, contiguous. Checked here first: Tensor::to() goes through the
// dispatcher even when it has nothing to do, and a decode step calls this ~10 times per layer.
at::Tensor on_as(const at::Tensor& t, at::Device device, at::ScalarType dtype) {
  if (t.device() == device && t.scalar_type() == dtype) return t.contiguous();  // no dispatch when contiguous
  return t.to(device, dtype).contiguous();
}

// An fp32 parameter, fully contiguous (small: A, Dskip, delta_bias); CheckedScan checked its shape.
at::Tensor param_f32(const at::Tensor& t) {
  return t.defined() ? on_as(t, t.device(), at::kFloat) : t;
}

// A pool view [S, inner...] as fp32, contiguous inside a slot, any slot stride (CheckedScan checked
// its shape and device).
raw::SlotTensor slot_tensor(const at::Tensor& t, int inner_dims, at::Tensor& keep) {
  raw::SlotTensor s;
  if (!t.defined()) return s;
  keep = t.scalar_type() == at::kFloat ? t : t.to(at::kFloat);
  if (!inner_contiguous(keep, inner_dims)) keep = keep.contiguous();
  s.ptr = keep.data_ptr<float>();
  // The real stride even for a one-slot pool: slot validation, not a zero stride, keeps a bad
  // slot from reading someone else's adapter.
  s.slot_stride = keep.stride(0);
  return s;
}

// Cache tensors are updated in place: they must already be fp32 on x's device, contiguous in a row.
float* cache_tensor(at::Tensor& t, const at::Tensor& x, const char* name,
                    at::IntArrayRef inner_sizes, int64_t* row_stride) {
  TORCH_CHECK(t.defined(), "statetune cuda kernels: cache ", name, " is required");
  TORCH_CHECK(t.dim() == static_cast<int64_t>(inner_sizes.size()) + 1 &&
                  t.sizes().slice(1) == inner_sizes,
              "statetune cuda kernels: cache ", name, " has shape ", t.sizes(), ", expected [C, ",
              inner_sizes, "]");
  TORCH_CHECK(t.scalar_type() == at::kFloat, "statetune cuda kernels: cache ", name,
              " must be float32");
  TORCH_CHECK(t.device() == x.device(), "statetune cuda kernels: cache ", name, " is on ",
              t.device(), ", x on ", x.device());
  TORCH_CHECK(inner_contiguous(t, static_cast<int>(inner_sizes.size())),
              "statetune cuda kernels: cache ", name, " must be contiguous inside a row");
  *row_stride = t.stride(0);
  return t.data_ptr<float>();
}

// Index tensors ([B]) on x's device. Callers that run many kernels per forward (the model) build
// and validate them once on the host and move them to the device once; a CPU tensor given here is
// validated and copied per call (kernels/batch_indices.h). A device tensor is not read back (that
// would synchronise): the kernels skip rows whose index is out of range.
at::Tensor rows_on_device(const at::Tensor& rows, const at::Tensor& x, int64_t batch,
                          int64_t capacity) {
  TORCH_CHECK(rows.defined(), "statetune cuda kernels: cache.rows is required");
  TORCH_CHECK(rows.dim() == 1 && rows.size(0) == batch, "statetune cuda kernels: rows must be [B]");
  check_rows_on_host(rows, capacity, "statetune cuda kernels");
  return on_as(rows, x.device(), at::kLong);
}

// An index tensor [B] on x's device (CheckedScan checked it where it was on the host).
at::Tensor index_on_device(const at::Tensor& t, const at::Tensor& x, at::ScalarType dtype) {
  return t.defined() ? on_as(t, x.device(), dtype) : t;
}

at::Tensor lengths_on_device(const at::Tensor& lengths, const at::Tensor& x, int64_t batch,
                             int64_t seqlen) {
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == batch,
              "statetune cuda kernels: lengths must be [B]");
  if (lengths.device().is_cpu()) {  // cheap to validate before it goes to the device
    const at::Tensor l = lengths.to(at::kLong).contiguous();
    const int64_t* v = l.data_ptr<int64_t>();
    for (int64_t b = 0; b < batch; ++b) {
      TORCH_CHECK(v[b] >= 0 && v[b] <= seqlen, "statetune cuda kernels: lengths[", b, "] = ", v[b],
                  " outside [0, ", seqlen, "]");
    }
  }
  return on_as(lengths, x.device(), at::kLong);
}

// `out` is re-allocated only when its shape, dtype or device does not fit, so callers can reuse it.
void prepare_out(at::Tensor& out, at::IntArrayRef sizes, const at::Tensor& x) {
  if (!out.defined() || out.sizes() != sizes || out.scalar_type() != x.scalar_type() ||
      out.device() != x.device()) {
    out = at::empty(sizes, x.options());
  }
}

// The tensor the kernel writes: `out` itself when its innermost stride is 1, else a temporary
// that finish_out copies back.
at::Tensor writable_out(const at::Tensor& out) {
  return inner_contiguous(out, 1) ? out : at::empty(out.sizes(), out.options());
}

void finish_out(at::Tensor& out, const at::Tensor& written) {
  if (!written.is_same(out)) out.copy_(written);
}

cudaStream_t stream_of(const at::Tensor& x) {
  return c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
}

void check_x(const at::Tensor& x, int64_t dims, const char* what) {
  TORCH_CHECK(x.defined() && x.is_cuda(), "statetune cuda kernels: ", what,
              " needs x on a CUDA device");
  TORCH_CHECK(x.dim() == dims, "statetune cuda kernels: ", what, ": x must have ", dims,
              " dims, got ", x.sizes());
}

// The kernels' limits (CheckedScan has checked everything else).
void check_scan_limits(const CheckedScan& scan) {
  TORCH_CHECK(scan.N <= raw::kMaxDState, "statetune cuda kernels: d_state ", scan.N,
              " is outside [1, ", raw::kMaxDState, "]");
  TORCH_CHECK(scan.B <= 65535, "statetune cuda kernels: batch ", scan.B, " is too large");
  TORCH_CHECK(scan.L <= INT32_MAX, "statetune cuda kernels: sequence too long");
}

// A scan's inputs in the layouts the kernels take, kept alive for the launch.
struct ScanInputs {
  at::Tensor x, delta, z, Bm, Cm, A, Dskip, delta_bias, slots, rows, lengths;
  at::Tensor so, oo, is;  // adapter tensors kept alive when converted
  raw::ScanParams p;
};

// What prefill and step share (prefill adds lengths and, unless resuming, initial_state).
void fill_scan(ScanInputs& in, const CheckedScan& scan, LayerCache& cache, bool with_initial_state) {
  const ScanArgs& a = scan.args;
  check_scan_limits(scan);
  in.x = unit_inner(a.x);
  in.delta = unit_inner(a.delta_in);
  in.z = unit_inner(a.z);
  in.Bm = unit_inner(a.Bm);
  in.Cm = unit_inner(a.Cm);
  in.A = param_f32(a.A);
  in.Dskip = param_f32(a.Dskip);
  in.delta_bias = param_f32(a.delta_bias);

  raw::ScanParams& p = in.p;
  p.dtype = act_dtype(a.x);
  p.batch = static_cast<int>(scan.B);
  p.dim = static_cast<int>(scan.D);
  p.dstate = static_cast<int>(scan.N);
  const bool prefill = a.x.dim() == 3;
  auto act_view = [prefill](const at::Tensor& t) {
    raw::ActTensor v;
    v.ptr = t.data_ptr();
    v.batch_stride = t.stride(0);
    v.time_stride = prefill ? t.stride(1) : 0;
    return v;
  };
  p.x = act_view(in.x);
  p.delta = act_view(in.delta);
  p.z = act_view(in.z);
  p.Bm = act_view(in.Bm);
  p.Cm = act_view(in.Cm);
  p.A = in.A.data_ptr<float>();
  p.Dskip = in.Dskip.defined() ? in.Dskip.data_ptr<float>() : nullptr;
  p.delta_bias = in.delta_bias.defined() ? in.delta_bias.data_ptr<float>() : nullptr;
  p.state_offset = slot_tensor(a.adapters.state_offset, 2, in.so);
  p.output_offset = slot_tensor(a.adapters.output_offset, 1, in.oo);
  if (with_initial_state) p.initial_state = slot_tensor(a.adapters.initial_state, 2, in.is);
  p.ssm_state = cache.ssm_state.data_ptr<float>();
  p.ssm_state_row_stride = cache.ssm_state.stride(0);
  p.num_rows = cache.ssm_state.size(0);
  in.rows = index_on_device(cache.rows, a.x, at::kLong);
  p.rows = in.rows.data_ptr<int64_t>();
  // The slot count of the tensors this call reads (a resumed prefill does not read initial_state).
  p.num_slots = in.so.defined() || in.oo.defined() || in.is.defined() ? static_cast<int>(scan.S) : 0;
  in.slots = index_on_device(a.adapters.slots, a.x, at::kInt);
  p.slots = in.slots.defined() ? in.slots.data_ptr<int32_t>() : nullptr;
  if (prefill) {
    in.lengths = index_on_device(a.lengths, a.x, at::kLong);
    p.lengths = in.lengths.data_ptr<int64_t>();
    p.seqlen = static_cast<int>(scan.L);
  }
}

struct ConvInputs {
  at::Tensor x, weight, bias, rows;
  raw::ConvParams p;
};

void fill_conv(ConvInputs& in, const at::Tensor& x, const at::Tensor& weight,
               const at::Tensor& bias, LayerCache& cache, bool prefill) {
  const int64_t batch = x.size(0);
  const int64_t D = x.size(-1);
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == D,
              "statetune cuda kernels: conv weight must be [D, K]");
  const int64_t K = weight.size(1);
  TORCH_CHECK(K >= 1 && K <= raw::kMaxConvWidth, "statetune cuda kernels: conv width ", K,
              " is outside [1, ", raw::kMaxConvWidth, "]");
  TORCH_CHECK(batch <= 65535, "statetune cuda kernels: batch ", batch, " is too large");
  TORCH_CHECK(weight.device() == x.device(), "statetune cuda kernels: conv weight is on ",
              weight.device(), ", x on ", x.device());
  raw::ConvParams& p = in.p;
  p.dtype = act_dtype(x);
  in.x = inner_contiguous(x, 1) ? x : x.contiguous();
  // The weight/bias stay in their dtype when it is fp32 or x's dtype (no per-call conversion).
  auto keep_dtype = [&x](const at::Tensor& t) {
    return t.scalar_type() == at::kFloat || t.scalar_type() == x.scalar_type() ? t.contiguous()
                                                                               : t.to(at::kFloat).contiguous();
  };
  in.weight = keep_dtype(weight);
  p.weight = in.weight.data_ptr();
  p.weight_dtype = in.weight.scalar_type() == at::kBFloat16 ? raw::DType::kBFloat16 : raw::DType::kFloat32;
  if (bias.defined()) {
    TORCH_CHECK(bias.dim() == 1 && bias.size(0) == D, "statetune cuda kernels: conv bias must be [D]");
    TORCH_CHECK(bias.device() == x.device(), "statetune cuda kernels: conv bias is on ",
                bias.device(), ", x on ", x.device());
    in.bias = keep_dtype(bias);
    p.bias = in.bias.data_ptr();
    p.bias_dtype = in.bias.scalar_type() == at::kBFloat16 ? raw::DType::kBFloat16 : raw::DType::kFloat32;
  }
  p.conv_state = cache_tensor(cache.conv_state, x, "conv_state", {D, K - 1}, &p.conv_state_row_stride);
  p.num_rows = cache.conv_state.size(0);
  in.rows = rows_on_device(cache.rows, x, batch, p.num_rows);
  p.rows = in.rows.data_ptr<int64_t>();
  p.batch = static_cast<int>(batch);
  p.dim = static_cast<int>(D);
  p.width = static_cast<int>(K);
  p.x.ptr = in.x.data_ptr();
  p.x.batch_stride = in.x.stride(0);
  p.x.time_stride = prefill ? in.x.stride(1) : 0;
}

}  // namespace

void causal_conv1d_prefill(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                           const at::Tensor& lengths, LayerCache& cache, bool resume,
                           at::Tensor& out) {
  check_x(x, 3, "causal_conv1d_prefill");
  act_dtype(x);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2);
  TORCH_CHECK(L <= INT32_MAX, "statetune cuda kernels: sequence too long");
  ConvInputs in;
  fill_conv(in, x, weight, bias, cache, /*prefill=*/true);
  const at::Tensor len = lengths_on_device(lengths, x, B, L);
  prepare_out(out, {B, L, D}, x);
  at::Tensor o = writable_out(out);
  in.p.seqlen = static_cast<int>(L);
  in.p.lengths = len.data_ptr<int64_t>();
  in.p.resume = resume;
  in.p.out.ptr = o.data_ptr();
  in.p.out.batch_stride = o.stride(0);
  in.p.out.time_stride = o.stride(1);
  C10_CUDA_CHECK(raw::causal_conv1d_prefill(in.p, stream_of(x)));
  finish_out(out, o);
}

void causal_conv1d_step(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                        LayerCache& cache, at::Tensor& out) {
  check_x(x, 2, "causal_conv1d_step");
  act_dtype(x);
  const c10::cuda::CUDAGuard guard(x.device());
  ConvInputs in;
  fill_conv(in, x, weight, bias, cache, /*prefill=*/false);
  prepare_out(out, {x.size(0), x.size(1)}, x);
  at::Tensor o = writable_out(out);
  in.p.out.ptr = o.data_ptr();
  in.p.out.batch_stride = o.stride(0);
  C10_CUDA_CHECK(raw::causal_conv1d_step(in.p, stream_of(x)));
  finish_out(out, o);
}

void selective_scan_prefill(const CheckedScan& scan, LayerCache& cache, bool resume,
                            at::Tensor& out) {
  const at::Tensor& x = scan.args.x;
  check_x(x, 3, "selective_scan_prefill");
  const c10::cuda::CUDAGuard guard(x.device());
  ScanInputs in;
  fill_scan(in, scan, cache, /*with_initial_state=*/!resume);
  prepare_out(out, {scan.B, scan.L, scan.D}, x);
  at::Tensor o = writable_out(out);
  in.p.resume = resume;
  in.p.out.ptr = o.data_ptr();
  in.p.out.batch_stride = o.stride(0);
  in.p.out.time_stride = o.stride(1);
  C10_CUDA_CHECK(raw::selective_scan_prefill(in.p, stream_of(x)));
  finish_out(out, o);
}

void selective_scan_step(const CheckedScan& scan, LayerCache& cache, at::Tensor& out) {
  const at::Tensor& x = scan.args.x;
  check_x(x, 2, "selective_scan_step");
  const c10::cuda::CUDAGuard guard(x.device());
  ScanInputs in;
  fill_scan(in, scan, cache, /*with_initial_state=*/false);
  prepare_out(out, {scan.B, scan.D}, x);
  at::Tensor o = writable_out(out);
  in.p.out.ptr = o.data_ptr();
  in.p.out.batch_stride = o.stride(0);
  C10_CUDA_CHECK(raw::selective_scan_step(in.p, stream_of(x)));
  finish_out(out, o);
}

// ---------------------------------------------------------------------------------------------
// Backward. Gradients come back in the dtypes the CPU backward uses (activation gradients in the
// activations' dtype, sums in their input's dtype), so the autograd glue does not care which
// backend ran. The kernels zero the fp32 sums themselves, so everything is allocated uninitialised.

namespace {

raw::ActTensor act_view3(const at::Tensor& t) {
  return raw::ActTensor{t.data_ptr(), t.stride(0), t.stride(1)};
}

float* f32_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

}  // namespace

ScanGrads selective_scan_backward(const CheckedScan& scan, const at::Tensor& grad_out,
                                  const ScanBackwardOptions& options) {
  const ScanArgs& a = scan.args;
  const LayerAdapters& adapters = a.adapters;
  const at::Tensor& x = a.x;
  check_x(x, 3, "selective_scan_backward");
  act_dtype(x);
  const c10::cuda::CUDAGuard guard(x.device());
  check_scan_limits(scan);
  const int64_t B = scan.B, L = scan.L, D = scan.D, N = scan.N, S = scan.S;
  TORCH_CHECK(options.chunk >= 1 && options.chunk <= INT32_MAX,
              "statetune cuda kernels: backward chunk must be positive");

  const at::Tensor xa = unit_inner(x), da = unit_inner(a.delta_in), za = unit_inner(a.z),
                   ga = unit_inner(grad_out.to(x.scalar_type())), Ba = unit_inner(a.Bm), Ca = unit_inner(a.Cm);
  const at::Tensor Af = param_f32(a.A), Df = param_f32(a.Dskip), dbf = param_f32(a.delta_bias);
  const at::Tensor len = index_on_device(a.lengths, x, at::kLong);
  at::Tensor so, oo, is;
  raw::ScanBackwardParams p;
  p.state_offset = slot_tensor(adapters.state_offset, 2, so);
  p.output_offset = slot_tensor(adapters.output_offset, 1, oo);
  p.initial_state = slot_tensor(adapters.initial_state, 2, is);
  const at::Tensor slots = index_on_device(adapters.slots, x, at::kInt);

  const auto f32 = x.options().dtype(at::kFloat);
  ScanGrads g;
  g.dx = at::empty({B, L, D}, x.options());
  g.ddelta_in = at::empty({B, L, D}, x.options());
  g.dz = at::empty({B, L, D}, x.options());
  at::Tensor dBm = at::empty({B, L, N}, f32), dCm = at::empty({B, L, N}, f32);
  at::Tensor dA = options.need_dA ? at::empty({D, N}, f32) : at::Tensor();
  at::Tensor ddb = dbf.defined() ? at::empty({D}, f32) : at::Tensor();
  at::Tensor dDs = Df.defined() ? at::empty({D}, f32) : at::Tensor();
  at::Tensor dso = so.defined() ? at::empty({S, D, N}, f32) : at::Tensor();
  at::Tensor doo = oo.defined() ? at::empty({S, D}, f32) : at::Tensor();
  at::Tensor dis = is.defined() ? at::empty({S, D, N}, f32) : at::Tensor();

  p.dtype = act_dtype(x);
  p.batch = static_cast<int>(B);
  p.seqlen = static_cast<int>(L);
  p.dim = static_cast<int>(D);
  p.dstate = static_cast<int>(N);
  p.chunk = static_cast<int>(options.chunk);
  p.x = act_view3(xa);
  p.delta = act_view3(da);
  p.z = act_view3(za);
  p.grad_out = act_view3(ga);
  p.Bm = act_view3(Ba);
  p.Cm = act_view3(Ca);
  p.A = Af.data_ptr<float>();
  p.Dskip = f32_or_null(Df);
  p.delta_bias = f32_or_null(dbf);
  p.lengths = len.data_ptr<int64_t>();
  p.slots = slots.defined() ? slots.data_ptr<int32_t>() : nullptr;
  p.dx = raw::OutTensor{g.dx.data_ptr(), g.dx.stride(0), g.dx.stride(1)};
  p.ddelta = raw::OutTensor{g.ddelta_in.data_ptr(), g.ddelta_in.stride(0), g.ddelta_in.stride(1)};
  p.dz = raw::OutTensor{g.dz.data_ptr(), g.dz.stride(0), g.dz.stride(1)};
  p.dBm = dBm.data_ptr<float>();
  p.dCm = dCm.data_ptr<float>();
  p.dA = f32_or_null(dA);
  p.ddelta_bias = f32_or_null(ddb);
  p.dDskip = f32_or_null(dDs);
  p.dstate_offset = f32_or_null(dso);
  p.doutput_offset = f32_or_null(doo);
  p.dinitial_state = f32_or_null(dis);
  p.num_slots = static_cast<int>(S);
  const at::Tensor workspace =
      at::empty({static_cast<int64_t>(raw::selective_scan_backward_workspace_floats(p))}, f32);
  p.workspace = workspace.numel() > 0 ? workspace.data_ptr<float>() : nullptr;
  C10_CUDA_CHECK(raw::selective_scan_backward(p, stream_of(x)));

  g.ddelta_in = g.ddelta_in.to(a.delta_in.options());
  g.dz = g.dz.to(a.z.options());
  g.dBm = dBm.to(a.Bm.options());
  g.dCm = dCm.to(a.Cm.options());
  if (dA.defined()) g.dA = dA.to(a.A.options());
  if (ddb.defined()) g.ddelta_bias = ddb.to(a.delta_bias.options());
  if (dDs.defined()) g.dDskip = dDs.to(a.Dskip.options());
  if (dso.defined()) g.dstate_offset = dso.to(adapters.state_offset.options());
  if (doo.defined()) g.doutput_offset = doo.to(adapters.output_offset.options());
  if (dis.defined()) g.dinitial_state = dis.to(adapters.initial_state.options());
  return g;
}

ConvGrads causal_conv1d_backward(const at::Tensor& x, const at::Tensor& weight,
                                 const at::Tensor& bias, const at::Tensor& lengths,
                                 const at::Tensor& grad_out, bool need_weight_grads) {
  check_x(x, 3, "causal_conv1d_backward");
  act_dtype(x);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2);
  TORCH_CHECK(L <= INT32_MAX, "statetune cuda kernels: sequence too long");
  TORCH_CHECK(B <= 65535, "statetune cuda kernels: batch ", B, " is too large");
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == D,
              "statetune cuda kernels: conv weight must be [D, K]");
  const int64_t K = weight.size(1);
  TORCH_CHECK(K >= 1 && K <= raw::kMaxConvWidth, "statetune cuda kernels: conv width ", K,
              " is outside [1, ", raw::kMaxConvWidth, "]");
  TORCH_CHECK(weight.device() == x.device(), "statetune cuda kernels: conv weight is on ",
              weight.device(), ", x on ", x.device());
  const at::Tensor xa = activation(x, x, "x", {B, L, D});
  const at::Tensor ga = activation(grad_out, x, "grad_out", {B, L, D});
  // As in the forward: weight / bias stay in their dtype when it is fp32 or x's dtype.
  auto keep_dtype = [&x](const at::Tensor& t) {
    return t.scalar_type() == at::kFloat || t.scalar_type() == x.scalar_type()
               ? t.contiguous()
               : t.to(at::kFloat).contiguous();
  };
  auto dtype_of = [](const at::Tensor& t) {
    return t.scalar_type() == at::kBFloat16 ? raw::DType::kBFloat16 : raw::DType::kFloat32;
  };
  const at::Tensor wk = keep_dtype(weight);
  at::Tensor bk;
  if (bias.defined()) {
    TORCH_CHECK(bias.dim() == 1 && bias.size(0) == D, "statetune cuda kernels: conv bias must be [D]");
    TORCH_CHECK(bias.device() == x.device(), "statetune cuda kernels: conv bias is on ",
                bias.device(), ", x on ", x.device());
    bk = keep_dtype(bias);
  }
  const at::Tensor len = lengths_on_device(lengths, x, B, L);
  const auto f32 = x.options().dtype(at::kFloat);
  ConvGrads g;
  g.dx = at::empty({B, L, D}, x.options());
  at::Tensor dw = need_weight_grads ? at::empty({D, K}, f32) : at::Tensor();
  at::Tensor db = need_weight_grads && bias.defined() ? at::empty({D}, f32) : at::Tensor();

  raw::ConvBackwardParams p;
  p.dtype = act_dtype(x);
  p.batch = static_cast<int>(B);
  p.seqlen = static_cast<int>(L);
  p.dim = static_cast<int>(D);
  p.width = static_cast<int>(K);
  p.x = act_view3(xa);
  p.grad_out = act_view3(ga);
  p.dx = raw::OutTensor{g.dx.data_ptr(), g.dx.stride(0), g.dx.stride(1)};
  p.weight = wk.data_ptr();
  p.weight_dtype = dtype_of(wk);
  if (bk.defined()) {
    p.bias = bk.data_ptr();
    p.bias_dtype = dtype_of(bk);
  }
  p.lengths = len.data_ptr<int64_t>();
  p.dweight = f32_or_null(dw);
  p.dbias = f32_or_null(db);
  C10_CUDA_CHECK(raw::causal_conv1d_backward(p, stream_of(x)));

  if (dw.defined()) g.dweight = dw.to(weight.options());
  if (db.defined()) g.dbias = db.reshape(bias.sizes()).to(bias.options());
  return g;
}

// The arguments were checked by check_rmsnorm_args (kernels/rmsnorm.cpp): fp32 x and weight with
// contiguous rows, out on x's device in fp32 or bf16.
void rmsnorm(const at::Tensor& x, const at::Tensor& weight, double eps, at::Tensor& out) {
  TORCH_CHECK(x.is_cuda(), "statetune cuda kernels: rmsnorm needs x on a CUDA device");
  TORCH_CHECK(x.size(0) <= INT32_MAX, "statetune cuda kernels: rmsnorm: ", x.size(0),
              " rows are too many for one launch");
  const c10::cuda::CUDAGuard guard(x.device());
  raw::RmsNormParams p;
  p.out_dtype = out.scalar_type() == at::kBFloat16 ? raw::DType::kBFloat16 : raw::DType::kFloat32;
  p.rows = x.size(0);
  p.dim = x.size(1);
  p.eps = static_cast<float>(eps);
  p.x = x.data_ptr<float>();
  p.x_row_stride = x.stride(0);
  p.weight = weight.data_ptr<float>();
  p.out = out.data_ptr();
  p.out_row_stride = out.stride(0);
  C10_CUDA_CHECK(raw::rmsnorm(p, stream_of(x)));
}

}  // namespace statetune::kernels::cuda
