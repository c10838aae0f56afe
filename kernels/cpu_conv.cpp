// The CPU causal conv1d. Temporary: forwards to the reference until the vectorised kernel lands.
#include <ATen/ATen.h>

#include "kernels/ssm_kernels.h"

namespace statetune::kernels::cpu {

void causal_conv1d_prefill(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                           const at::Tensor& lengths, LayerCache& cache, bool resume,
                           at::Tensor& out) {
  ref::causal_conv1d_prefill(x, weight, bias, lengths, cache, resume, out);
}

void causal_conv1d_step(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                        LayerCache& cache, at::Tensor& out) {
  ref::causal_conv1d_step(x, weight, bias, cache, out);
}

}  // namespace statetune::kernels::cpu
