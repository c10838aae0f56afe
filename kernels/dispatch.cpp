// The device dispatch of the kernel interface (forward and backward): CPU tensors go to the fast CPU
// backend, CUDA tensors to the CUDA kernels when they were compiled in. A scan's arguments are
// checked here, once, for whichever backend runs it (CheckedScan).
#include <ATen/ATen.h>

#include "kernels/ssm_backward.h"
#include "kernels/ssm_kernels.h"

#ifdef STATETUNE_WITH_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace statetune::kernels {
namespace {

[[noreturn]] void unsupported(const char* what, const at::Tensor& x) {
  TORCH_CHECK(false, "statetune kernels: ", what, " has no backend for tensors on ", x.device(),
#ifdef STATETUNE_WITH_CUDA
              " (built with CPU and CUDA kernels)"
#else
              " (built without the CUDA kernels: configure with a CUDA LibTorch and nvcc)"
#endif
  );
}

}  // namespace

void causal_conv1d_prefill(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                           const at::Tensor& lengths, LayerCache& cache, bool resume,
                           at::Tensor& out) {
  if (x.device().is_cpu())
    return cpu::causal_conv1d_prefill(x, weight, bias, lengths, cache, resume, out);
#ifdef STATETUNE_WITH_CUDA
  if (x.device().is_cuda())
    return cuda::causal_conv1d_prefill(x, weight, bias, lengths, cache, resume, out);
#endif
  unsupported("causal_conv1d_prefill", x);
}

void causal_conv1d_step(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                        LayerCache& cache, at::Tensor& out) {
  if (x.device().is_cpu()) return cpu::causal_conv1d_step(x, weight, bias, cache, out);
#ifdef STATETUNE_WITH_CUDA
  if (x.device().is_cuda()) return cuda::causal_conv1d_step(x, weight, bias, cache, out);
#endif
  unsupported("causal_conv1d_step", x);
}

void selective_scan_prefill(const ScanArgs& args, LayerCache& cache, bool resume, at::Tensor& out) {
  const CheckedScan scan = CheckedScan::prefill(args, cache);
  if (args.x.device().is_cpu()) return cpu::selective_scan_prefill(scan, cache, resume, out);
#ifdef STATETUNE_WITH_CUDA
  if (args.x.device().is_cuda()) return cuda::selective_scan_prefill(scan, cache, resume, out);
#endif
  unsupported("selective_scan_prefill", args.x);
}

void selective_scan_step(const ScanArgs& args, LayerCache& cache, at::Tensor& out) {
  const CheckedScan scan = CheckedScan::step(args, cache);
  if (args.x.device().is_cpu()) return cpu::selective_scan_step(scan, cache, out);
#ifdef STATETUNE_WITH_CUDA
  if (args.x.device().is_cuda()) return cuda::selective_scan_step(scan, cache, out);
#endif
  unsupported("selective_scan_step", args.x);
}

#ifdef STATETUNE_WITH_CUDA
namespace {
// The backward has a CUDA implementation for fp32 / bf16 activations. Everything else (fp64 gradient
// checks, devices without kernels) runs on the CPU backward, which copies the inputs to the CPU and
// returns the gradients in the inputs' options: slow off the CPU, but correct.
bool use_cuda_backward(const at::Tensor& x) {
  return x.device().is_cuda() &&
         (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16);
}
}  // namespace
#endif

ScanGrads selective_scan_backward(const ScanArgs& args, const at::Tensor& grad_out,
                                  const ScanBackwardOptions& options) {
  const CheckedScan scan = CheckedScan::backward(args, grad_out);
#ifdef STATETUNE_WITH_CUDA
  if (use_cuda_backward(args.x)) return cuda::selective_scan_backward(scan, grad_out, options);
#endif
  return cpu::selective_scan_backward(scan, grad_out, options);
}

ConvGrads causal_conv1d_backward(const at::Tensor& x, const at::Tensor& weight,
                                 const at::Tensor& bias, const at::Tensor& lengths,
                                 const at::Tensor& grad_out, bool need_weight_grads) {
#ifdef STATETUNE_WITH_CUDA
  if (use_cuda_backward(x))
    return cuda::causal_conv1d_backward(x, weight, bias, lengths, grad_out, need_weight_grads);
#endif
  return cpu::causal_conv1d_backward(x, weight, bias, lengths, grad_out, need_weight_grads);
}

bool cuda_kernels_available() {
#ifdef STATETUNE_WITH_CUDA
  return at::hasCUDA();
#else
  return false;
#endif
}

}  // namespace statetune::kernels
