// The only translation unit of the scan-autograd library that needs the autograd C++ frontend.
#include "server/engine/trainer/scan_autograd.h"

#include <torch/csrc/autograd/custom_function.h>

#include "kernels/ssm_backward.h"

namespace statetune::engine::trainer {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Inputs in this order; backward returns one gradient per input (undefined for the integer ones).
enum Input : size_t {
  kX, kDeltaIn, kDeltaBias, kA, kBm, kCm, kDskip, kZ, kStateOffset, kOutputOffset, kInitialState,
  kLengths, kSlots, kNumTensorInputs
};

class SelectiveScanFunction : public torch::autograd::Function<SelectiveScanFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, at::Tensor x, at::Tensor delta_in,
                            at::Tensor delta_bias, at::Tensor A, at::Tensor Bm, at::Tensor Cm,
                            at::Tensor Dskip, at::Tensor z, at::Tensor state_offset,
                            at::Tensor output_offset, at::Tensor initial_state, at::Tensor lengths,
                            at::Tensor slots, int64_t chunk) {
    TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
                "selective_scan: activations must be fp32 or bf16, got ", x.scalar_type());
    const int64_t B = x.size(0), D = x.size(2), N = A.size(1);
    kernels::LayerAdapters adapters{slots, state_offset, output_offset, initial_state};
    // A scratch cache: training never resumes, and the final state is not needed.
    kernels::LayerCache cache;
    cache.ssm_state = at::empty({B, D, N}, x.options().dtype(at::kFloat));
    cache.rows = at::arange(B, x.options().dtype(at::kLong));
    at::Tensor out;
    kernels::selective_scan_prefill(x, delta_in, delta_bias, A, Bm, Cm, Dskip, z, lengths, adapters,
                                    cache, /*resume=*/false, out);
    ctx->save_for_backward({x, delta_in, delta_bias, A, Bm, Cm, Dskip, z, state_offset,
                            output_offset, initial_state, lengths, slots});
    ctx->saved_data["chunk"] = chunk;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    variable_list grads(kNumTensorInputs + 1);  // + the chunk argument
    const at::Tensor& grad_out = grad_outputs[0];
    if (!grad_out.defined()) return grads;
    const variable_list saved = ctx->get_saved_variables();
    kernels::LayerAdapters adapters{saved[kSlots], saved[kStateOffset], saved[kOutputOffset],
                                    saved[kInitialState]};
    kernels::ScanBackwardOptions options;
    options.need_dA = ctx->needs_input_grad(kA);
    options.chunk = ctx->saved_data["chunk"].toInt();
    kernels::ScanGrads g = kernels::selective_scan_backward(
        saved[kX], saved[kDeltaIn], saved[kDeltaBias], saved[kA], saved[kBm], saved[kCm],
        saved[kDskip], saved[kZ], saved[kLengths], adapters, grad_out.contiguous(), options);
    grads[kX] = g.dx;
    grads[kDeltaIn] = g.ddelta_in;
    grads[kDeltaBias] = g.ddelta_bias;
    grads[kA] = g.dA;
    grads[kBm] = g.dBm;
    grads[kCm] = g.dCm;
    grads[kDskip] = g.dDskip;
    grads[kZ] = g.dz;
    grads[kStateOffset] = g.dstate_offset;
    grads[kOutputOffset] = g.doutput_offset;
    grads[kInitialState] = g.dinitial_state;
    return grads;
  }
};

class CausalConv1dFunction : public torch::autograd::Function<CausalConv1dFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, at::Tensor x, at::Tensor weight, at::Tensor bias,
                            at::Tensor lengths) {
    TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
                "causal_conv1d: activations must be fp32 or bf16, got ", x.scalar_type());
    TORCH_CHECK(x.dim() == 3 && weight.dim() == 2, "causal_conv1d: x [B, L, D], weight [D, K]");
    const int64_t B = x.size(0), D = x.size(2), K = weight.size(1);
    kernels::LayerCache cache;  // scratch: training never resumes
    cache.conv_state = at::empty({B, D, K - 1}, x.options().dtype(at::kFloat));
    cache.rows = at::arange(B, x.options().dtype(at::kLong));
    at::Tensor out;
    kernels::causal_conv1d_prefill(x, weight, bias, lengths, cache, /*resume=*/false, out);
    ctx->save_for_backward({x, weight, bias, lengths});
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    variable_list grads(4);
    const at::Tensor& grad_out = grad_outputs[0];
    if (!grad_out.defined()) return grads;
    const variable_list saved = ctx->get_saved_variables();
    const bool need_weight_grads = ctx->needs_input_grad(1) || ctx->needs_input_grad(2);
    kernels::ConvGrads g = kernels::causal_conv1d_backward(saved[0], saved[1], saved[2], saved[3],
                                                           grad_out, need_weight_grads);
    grads[0] = g.dx;
    grads[1] = g.dweight;
    grads[2] = g.dbias;
    return grads;
  }
};

}  // namespace

at::Tensor causal_conv1d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                         const at::Tensor& lengths) {
  return CausalConv1dFunction::apply(x, weight, bias, lengths);
}

at::Tensor selective_scan(const at::Tensor& x, const at::Tensor& delta_in,
                          const at::Tensor& delta_bias, const at::Tensor& A, const at::Tensor& Bm,
                          const at::Tensor& Cm, const at::Tensor& Dskip, const at::Tensor& z,
                          const at::Tensor& lengths, const kernels::LayerAdapters& adapters,
                          const ScanAutogradOptions& options) {
  return SelectiveScanFunction::apply(x, delta_in, delta_bias, A, Bm, Cm, Dskip, z,
                                      adapters.state_offset, adapters.output_offset,
                                      adapters.initial_state, lengths, adapters.slots,
                                      options.chunk);
}

}  // namespace statetune::engine::trainer
