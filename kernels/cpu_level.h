// Which build of the CPU kernels runs on this machine.
//
// The CPU kernels (cpu_conv.cpp, cpu_scan.cpp, cpu_scan_backward.cpp) are compiled once per x86-64
// micro-architecture level (kernels/CMakeLists.txt), each build in its own namespace cpu::v2 / v3 /
// v4, and the cpu:: entry points (cpu_dispatch.cpp) call the highest level this CPU supports, chosen
// once at start-up, the way PyTorch (ATEN_CPU_CAPABILITY) and ggml pick their kernels:
//   v2: SSE4.2 + POPCNT (any x86-64 CPU since ~2009)     v3: + AVX2, FMA, BMI2 (Haswell, Zen 1)
//   v4: + AVX-512 F/BW/CD/DQ/VL (Skylake-SP, Ice Lake, Zen 4)
// so one binary (one container image) runs on every x86-64-v2 node and uses AVX-512 where present.
// STATETUNE_CPU_LEVEL=v2|v3|v4 caps the level (to test a lower level, or to step around AVX-512
// clock throttling); a cap above what the CPU supports is ignored. Other architectures build the
// kernels once, as the level "generic".
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace statetune::kernels::cpu {

enum class CpuLevel { kGeneric = 0, kV2 = 2, kV3 = 3, kV4 = 4 };

const char* cpu_level_name(CpuLevel level);  // "v2", "v3", "v4", "generic"

// "v2".."v4" or "x86-64-v2".."x86-64-v4"; nullopt for anything else (including "generic").
std::optional<CpuLevel> parse_cpu_level(std::string_view text);

// The highest level this CPU (and its OS: AVX state enabled) supports; nullopt on an x86-64 CPU
// below v2, which the kernels do not support.
std::optional<CpuLevel> detected_cpu_level();

struct CpuLevelChoice {
  CpuLevel level;                  // what runs
  CpuLevel detected;               // the best this CPU supports
  std::optional<CpuLevel> cap;     // from STATETUNE_CPU_LEVEL, when set

  // "v3 (CPU supports v3)" or "v2 (CPU supports v3, capped by STATETUNE_CPU_LEVEL=v2)".
  std::string describe() const;
};

// The choice for a CPU that supports `detected` and a STATETUNE_CPU_LEVEL value `cap` (null or empty:
// none). Throws std::invalid_argument for a cap that names no level, std::runtime_error when the CPU
// is below v2.
CpuLevelChoice choose_cpu_level(std::optional<CpuLevel> detected, const char* cap);

// The choice for this process, made on first use from the CPU and STATETUNE_CPU_LEVEL. Binaries call
// it at start-up to log it (and to fail there, not on the first request, when it throws).
const CpuLevelChoice& active_cpu_level();

}  // namespace statetune::kernels::cpu
