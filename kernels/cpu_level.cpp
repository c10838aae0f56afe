#include "kernels/cpu_level.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>

namespace statetune::kernels::cpu {

const char* cpu_level_name(CpuLevel level) {
  switch (level) {
    case CpuLevel::kV2: return "v2";
    case CpuLevel::kV3: return "v3";
    case CpuLevel::kV4: return "v4";
    case CpuLevel::kGeneric: break;
  }
  return "generic";
}

std::optional<CpuLevel> parse_cpu_level(std::string_view text) {
  if (text.substr(0, 7) == "x86-64-") text.remove_prefix(7);
  for (const CpuLevel l : {CpuLevel::kV2, CpuLevel::kV3, CpuLevel::kV4}) {
    if (text == cpu_level_name(l)) return l;
  }
  return std::nullopt;
}

std::optional<CpuLevel> detected_cpu_level() {
#if defined(__x86_64__)
  // The compiler's runtime reads CPUID and XGETBV: AVX / AVX-512 count only when the OS saves their
  // registers. GCC 12 knows the levels by name; clang 14 only single features, which are the levels'
  // except for ones every CPU with them has too (MOVBE, F16C, LZCNT with AVX2; CX16, LAHF with SSE4.2).
  __builtin_cpu_init();
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
  if (__builtin_cpu_supports("x86-64-v4")) return CpuLevel::kV4;
  if (__builtin_cpu_supports("x86-64-v3")) return CpuLevel::kV3;
  if (__builtin_cpu_supports("x86-64-v2")) return CpuLevel::kV2;
#else
  const bool v2 = __builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("ssse3") &&
                  __builtin_cpu_supports("sse4.1") && __builtin_cpu_supports("popcnt");
  const bool v3 = v2 && __builtin_cpu_supports("avx") && __builtin_cpu_supports("avx2") &&
                  __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi") &&
                  __builtin_cpu_supports("bmi2");
  const bool v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
                  __builtin_cpu_supports("avx512vl");
  if (v4) return CpuLevel::kV4;
  if (v3) return CpuLevel::kV3;
  if (v2) return CpuLevel::kV2;
#endif
  return std::nullopt;
#else
  return CpuLevel::kGeneric;
#endif
}

std::string CpuLevelChoice::describe() const {
  std::string s = std::string(cpu_level_name(level)) + " (CPU supports " + cpu_level_name(detected);
  if (cap) s += std::string(", capped by STATETUNE_CPU_LEVEL=") + cpu_level_name(*cap);
  return s + ")";
}

CpuLevelChoice choose_cpu_level(std::optional<CpuLevel> detected, const char* cap) {
  std::optional<CpuLevel> capped;
  if (cap != nullptr && *cap != '\0') {
    capped = parse_cpu_level(cap);
    // Bounded echo: the value comes from the environment, but an error message has no need for more.
    if (!capped) {
      throw std::invalid_argument("STATETUNE_CPU_LEVEL='" + std::string(cap).substr(0, 32) +
                                  "' names no CPU level: use v2, v3 or v4");
    }
  }
  if (!detected) {
    throw std::runtime_error(
        "this CPU lacks x86-64-v2 (SSE4.2, POPCNT), the least the statetune CPU kernels need");
  }
  CpuLevelChoice c{*detected, *detected, capped};
  if (capped && *detected != CpuLevel::kGeneric) {
    c.level = std::min(*detected, *capped);
  }
  return c;
}

const CpuLevelChoice& active_cpu_level() {
  // Initialised once; when it throws, the next call tries again (and throws again).
  static const CpuLevelChoice choice =
      choose_cpu_level(detected_cpu_level(), std::getenv("STATETUNE_CPU_LEVEL"));
  return choice;
}

}  // namespace statetune::kernels::cpu
