// The CPU selective scan. Temporary: forwards to the reference until the vectorised kernel lands.
#include <ATen/ATen.h>

#include "kernels/ssm_kernels.h"

namespace statetune::kernels::cpu {

void selective_scan_prefill(const at::Tensor& x, const at::Tensor& delta_in,
                            const at::Tensor& delta_bias, const at::Tensor& A, const at::Tensor& Bm,
                            const at::Tensor& Cm, const at::Tensor& Dskip, const at::Tensor& z,
                            const at::Tensor& lengths, const LayerAdapters& adapters,
                            LayerCache& cache, bool resume, at::Tensor& out) {
  ref::selective_scan_prefill(x, delta_in, delta_bias, A, Bm, Cm, Dskip, z, lengths, adapters,
                              cache, resume, out);
}

void selective_scan_step(const at::Tensor& x, const at::Tensor& delta_in,
                         const at::Tensor& delta_bias, const at::Tensor& A, const at::Tensor& Bm,
                         const at::Tensor& Cm, const at::Tensor& Dskip, const at::Tensor& z,
                         const LayerAdapters& adapters, LayerCache& cache, at::Tensor& out) {
  ref::selective_scan_step(x, delta_in, delta_bias, A, Bm, Cm, Dskip, z, adapters, cache, out);
}

}  // namespace statetune::kernels::cpu
