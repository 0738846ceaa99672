/*
 * cpu_features.h: what the CPU reports and what EAGER_CORE_CPU_ISA allows, in one place for every
 * kernel's dispatch (the entropy gate, small-M and int8 linears, paged attention).
 *
 * Why a cap: the slower levels must be testable on an AVX-512 machine. EAGER_CORE_CPU_ISA unset,
 * empty or "avx512" allows everything; "avx2" allows AVX2 + FMA code at most; anything else (e.g.
 * "baseline") only the portable loops. Kernels read it once, at their first call, so a process
 * keeps one choice. Plain inline functions, no target pragmas: __builtin_cpu_supports runs on any
 * x86-64 CPU.
 */
#ifndef EAGER_CORE_CPU_FEATURES_H
#define EAGER_CORE_CPU_FEATURES_H

#include <cstdlib>
#include <cstring>

namespace eager_core {
namespace cpu {

enum class Level { baseline = 0, avx2 = 1, avx512 = 2 };

/* The highest level EAGER_CORE_CPU_ISA allows (read at each call; callers cache their choice). */
inline Level allowed_level() {
  const char* cap = std::getenv("EAGER_CORE_CPU_ISA");
  if (cap == nullptr || *cap == '\0' || std::strcmp(cap, "avx512") == 0) return Level::avx512;
  return std::strcmp(cap, "avx2") == 0 ? Level::avx2 : Level::baseline;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* AVX-512 F, BW, DQ and VL: what every AVX-512 kernel here is compiled for (any AVX-512 CPU since
 * Skylake-SP has all four), and allowed by the cap. */
inline bool avx512() {
  __builtin_cpu_init();
  return allowed_level() == Level::avx512 && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl");
}
/* avx512() plus the BF16 dot products (vdpbf16ps). */
inline bool avx512_bf16() { return avx512() && __builtin_cpu_supports("avx512bf16"); }
/* AVX2 and FMA, allowed by the cap. */
inline bool avx2_fma() {
  __builtin_cpu_init();
  return allowed_level() >= Level::avx2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
inline bool avx512() { return false; }
inline bool avx512_bf16() { return false; }
inline bool avx2_fma() { return false; }
#endif

}  // namespace cpu
}  // namespace eager_core

#endif
