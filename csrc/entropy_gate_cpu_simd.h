/*
 * entropy_gate_cpu_simd.h: the vectorised inner loops of the CPU kernel.
 *
 * They work on one chunk of at most kChunk floats, small enough to stay in L1 between the two
 * sweeps the kernel makes over it (max first, then the exp sums). Each function is compiled
 * three times (AVX-512, AVX2+FMA, baseline x86-64) and the best one for the running CPU is
 * picked at first use, so the extension runs on any x86-64 machine.
 */
#ifndef EAGER_CORE_ENTROPY_GATE_CPU_SIMD_H
#define EAGER_CORE_ENTROPY_GATE_CPU_SIMD_H

#include <stdint.h>

namespace eager_core {
namespace simd {

constexpr int64_t kChunk = 2048;

/* Max of x[0..n) ignoring NaN (-inf when n == 0 or all NaN); sets *bad when a NaN or +inf
 * is present. */
float chunk_max(const float* x, int64_t n, bool* bad);

/* Max of x[0..n) ignoring NaN, without the NaN check (for the top-k scan's sub-blocks). */
float block_max(const float* x, int64_t n);

/* *s = sum exp(x - m), *t = sum exp(x - m) * (x - m), with m >= every x and m finite.
 * Terms whose exp underflows (x - m < -87, or x = -inf) count as exactly 0. */
void chunk_sums(const float* x, int64_t n, float m, float* s, float* t);

/* Widen n bfloat16 / IEEE half values (raw bits) to float32. */
void widen_bf16(const uint16_t* src, int64_t n, float* dst);
void widen_f16(const uint16_t* src, int64_t n, float* dst);

/* Which instruction set the functions above run with: "avx512", "avx2" or "baseline". */
const char* isa_name();

}  // namespace simd
}  // namespace eager_core

#endif
