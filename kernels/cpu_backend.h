// One build of the CPU kernels, as a table of functions (see cpu_level.h). The cpu_*.cpp files are
// compiled once per level with STATETUNE_CPU_LEVEL set to the level's namespace (v2, v3, v4 or
// generic); cpu_backend_table.cpp, compiled with them, fills in that level's table.
#pragma once

#include "kernels/ssm_backward.h"
#include "kernels/ssm_kernels.h"

namespace statetune::kernels::cpu {

struct CpuBackend {
  decltype(&cpu::causal_conv1d_prefill) conv_prefill;
  decltype(&cpu::causal_conv1d_step) conv_step;
  decltype(&cpu::selective_scan_prefill) scan_prefill;
  decltype(&cpu::selective_scan_step) scan_step;
  decltype(&cpu::causal_conv1d_backward) conv_backward;
  decltype(&cpu::selective_scan_backward) scan_backward;
};

#ifdef STATETUNE_CPU_LEVEL
// The kernels of the level being compiled, with the signatures of the cpu:: entry points.
namespace STATETUNE_CPU_LEVEL {
decltype(cpu::causal_conv1d_prefill) causal_conv1d_prefill;
decltype(cpu::causal_conv1d_step) causal_conv1d_step;
decltype(cpu::selective_scan_prefill) selective_scan_prefill;
decltype(cpu::selective_scan_step) selective_scan_step;
decltype(cpu::causal_conv1d_backward) causal_conv1d_backward;
decltype(cpu::selective_scan_backward) selective_scan_backward;
extern const CpuBackend backend;
}  // namespace STATETUNE_CPU_LEVEL
#endif

}  // namespace statetune::kernels::cpu
