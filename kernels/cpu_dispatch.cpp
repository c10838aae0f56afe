// The cpu:: entry points: each forwards to the build of the kernels for the level chosen at start-up
// (cpu_level.h). One indirect call per kernel call: immaterial next to the kernel's own work.
#include <ATen/ATen.h>

#include "kernels/cpu_backend.h"
#include "kernels/cpu_level.h"

namespace statetune::kernels::cpu {

#if defined(STATETUNE_CPU_LEVELS_X86)
namespace v2 { extern const CpuBackend backend; }
namespace v3 { extern const CpuBackend backend; }
namespace v4 { extern const CpuBackend backend; }
#else
namespace generic { extern const CpuBackend backend; }
#endif

namespace {

const CpuBackend& backend_for(CpuLevel level) {
  switch (level) {
#if defined(STATETUNE_CPU_LEVELS_X86)
    case CpuLevel::kV2: return v2::backend;
    case CpuLevel::kV3: return v3::backend;
    case CpuLevel::kV4: return v4::backend;
#else
    case CpuLevel::kGeneric: return generic::backend;
#endif
    default: break;
  }
  TORCH_CHECK(false, "statetune: no CPU kernels built for level ", cpu_level_name(level));
}

const CpuBackend& active() {
  static const CpuBackend& chosen = backend_for(active_cpu_level().level);
  return chosen;
}

}  // namespace

void causal_conv1d_prefill(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                           const at::Tensor& lengths, LayerCache& cache, bool resume,
                           at::Tensor& out) {
  active().conv_prefill(x, weight, bias, lengths, cache, resume, out);
}

void causal_conv1d_step(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                        LayerCache& cache, at::Tensor& out) {
  active().conv_step(x, weight, bias, cache, out);
}

void selective_scan_prefill(const CheckedScan& scan, LayerCache& cache, bool resume,
                            at::Tensor& out) {
  active().scan_prefill(scan, cache, resume, out);
}

void selective_scan_step(const CheckedScan& scan, LayerCache& cache, at::Tensor& out) {
  active().scan_step(scan, cache, out);
}

ConvGrads causal_conv1d_backward(const at::Tensor& x, const at::Tensor& weight,
                                 const at::Tensor& bias, const at::Tensor& lengths,
                                 const at::Tensor& grad_out, bool need_weight_grads) {
  return active().conv_backward(x, weight, bias, lengths, grad_out, need_weight_grads);
}

ScanGrads selective_scan_backward(const CheckedScan& scan, const at::Tensor& grad_out,
                                  const ScanBackwardOptions& options) {
  return active().scan_backward(scan, grad_out, options);
}

}  // namespace statetune::kernels::cpu
