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

// The scan's arguments from the autograd inputs, in Input order.
kernels::ScanArgs args_of(const variable_list& in) {
  return kernels::ScanArgs{in[kX],     in[kDeltaIn], in[kDeltaBias], in[kA],
                           in[kBm],    in[kCm],      in[kDskip],     in[kZ],
                           in[kLengths],
                           kernels::LayerAdapters{in[kSlots], in[kStateOffset], in[kOutputOffset],
                                                  in[kInitialState]}};
}

class SelectiveScanFunction : public torch::autograd::Function<SelectiveScanFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, at::Tensor x, at::Tensor delta_in,
                            at::Tensor delta_bias, at::Tensor A, at::Tensor Bm, at::Tensor Cm,
                            at::Tensor Dskip, at::Tensor z, at::Tensor state_offset,
                            at::Tensor output_offset, at::Tensor initial_state, at::Tensor lengths,
                            at::Tensor slots, int64_t chunk) {
    const kernels::ScanArgs args = args_of({x, delta_in, delta_bias, A, Bm, Cm, Dskip, z,
                                            state_offset, output_offset, initial_state, lengths,
                                            slots});
    const int64_t B = x.size(0), D = x.size(-1), N = A.size(-1);
    // A scratch cache: training never resumes, and the final state is not needed.
    kernels::LayerCache cache;
    cache.ssm_state = at::empty({B, D, N}, x.options().dtype(at::kFloat));
    cache.rows = at::arange(B, x.options().dtype(at::kLong));
    at::Tensor out;
    kernels::selective_scan_prefill(args, cache, /*resume=*/false, out);
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
    kernels::ScanBackwardOptions options;
    options.need_dA = ctx->needs_input_grad(kA);
    options.chunk = ctx->saved_data["chunk"].toInt();
    kernels::ScanGrads g =
        kernels::selective_scan_backward(args_of(saved), grad_out.contiguous(), options);
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

at::Tensor selective_scan(const kernels::ScanArgs& args, const ScanAutogradOptions& options) {
  const kernels::LayerAdapters& ad = args.adapters;
  return SelectiveScanFunction::apply(args.x, args.delta_in, args.delta_bias, args.A, args.Bm,
                                      args.Cm, args.Dskip, args.z, ad.state_offset,
                                      ad.output_offset, ad.initial_state, args.lengths, ad.slots,
                                      options.chunk);
}

}  // namespace statetune::engine::trainer
