// The table of one level's CPU kernels (compiled once per level, like the kernels themselves).
#include "kernels/cpu_backend.h"

namespace statetune::kernels::cpu::STATETUNE_CPU_LEVEL {

const CpuBackend backend = {&causal_conv1d_prefill,  &causal_conv1d_step,
                            &selective_scan_prefill, &selective_scan_step,
                            &causal_conv1d_backward, &selective_scan_backward};

}  // namespace statetune::kernels::cpu::STATETUNE_CPU_LEVEL
