/*
 * int8_linear.h: y = x (q * s)^T + b with int8 weights q [N, K] and float16 scales s, for few rows
 * of x (a decode step). Weight-only quantization: x, y and b stay float (bf16/f16 models widen x to
 * float32 in the binding and round y once at the end), so the only error is the weights' own.
 *
 * Why: a decode step streams every weight once and the CPU is limited by that stream. int8 weights
 * are half the bytes of bf16 and a quarter of float32. Converting them to float32 in registers
 * (vpmovsxbd + vcvtdq2ps) costs two instructions per 16 weights, shared by every row of x.
 *
 * Scales: scales [N, K / group], one per `group` consecutive weights of a row. group == K is one
 * scale per output channel (applied once, after the dot product); otherwise group must be a
 * multiple of 16 (one scale per 16-lane vector, multiplied into the weights before the FMAs).
 *
 * Offsets (optional, nullptr for none): offsets [N, K / group] like scales, weight = q * s + z (an
 * asymmetric group: 256 levels from its minimum to its maximum, or a 4-bit format's grid). The widened
 * weights take one FMA instead of the multiply, so the offset is free in the inner loop; it needs the
 * grouped layout (group % 16 == 0, group == K included). Why: weights that already sit on a 4-bit grid
 * (llama.cpp's Q4_1, the default checkpoint) are then held exactly (eager_core/ops/int8_linear.py).
 *
 * Scales and offsets are float16 (raw bits, uint16_t), as in llama.cpp's Q8_0: 36 bytes per 32 weights
 * instead of 40 with float32, and q * s is exact in float32, so fma(q, s, z) rounds once, like the
 * reference. The vector kernels widen them with F16C's vcvtph2ps (every AVX2+FMA and AVX-512 CPU has
 * it); the baseline with half_to_float below.
 *
 * No torch header here: the kernels are compiled under target pragmas (see small_linear.h).
 */
#ifndef EAGER_CORE_INT8_LINEAR_H
#define EAGER_CORE_INT8_LINEAR_H

#include <stdint.h>

namespace eager_core {
namespace int8_linear {

/* The raw bits of an IEEE float16: the type of scales and offsets (torch's at::Half, without the header). */
using f16 = uint16_t;

/* IEEE float16 bits -> float32, exactly (subnormals, infinities and NaN included): the portable
 * kernel's widening of a scale or offset. */
inline float half_to_float(f16 h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {  // zero or subnormal: man * 2^-24, exact in float32
    const float f = static_cast<float>(man) * 5.9604644775390625e-8f;
    __builtin_memcpy(&bits, &f, sizeof bits);
    bits |= sign;
  } else {
    bits = sign | (exp == 31 ? 0x7f800000u : (exp + 112u) << 23) | (man << 13);
  }
  float out;
  __builtin_memcpy(&out, &bits, sizeof out);
  return out;
}

/* Most rows of x the kernel takes; more rows go to dequantize + BLAS (eager_core/ops/int8_linear.py). */
constexpr int64_t kMaxRows = 64;

/* Weight rows ahead that the kernels prefetch (one line per 64 bytes of a row, into L1). At one row
 * of x a core streams a row in a few hundred cycles, too fast for 4 rows (~2 KB at K = 576) to hide
 * DRAM latency: 16 rows (~9 KB) took one core from ~21 to ~26 GB/s of weights (7.4 -> 5.8 ms for a
 * SmolLM2-135M step's matmuls, 1 thread) and left 8 and 32 rows unchanged (docs/decode_kernels.md). */
constexpr int64_t kPrefetchRows = 16;

/* Columns [n_begin, n_end) of y [M, N] (row stride ldy) = x [M, K] @ dequant(W)^T + bias (may be
 * null). x, W dense row-major, M <= kMaxRows, group == K or group % 16 == 0 and K % group == 0;
 * offsets null or (group % 16 == 0). */
void rows(const float* x, int64_t M, int64_t K, const int8_t* W, const f16* scales, const f16* offsets,
          int64_t group, const float* bias, float* y, int64_t ldy, int64_t n_begin, int64_t n_end);

/* The implementation rows() runs, chosen once from the CPU and EAGER_CORE_CPU_ISA:
 * "avx512" (AVX-512F/BW/VL), "avx2" (AVX2 + FMA) or "baseline" (portable C++). */
const char* isa_name();

/* bfloat16 x (raw bits): each group's weights are widened, scaled, rounded to bfloat16 in registers
 * and multiplied with AVX512-BF16 dot products (32 products per instruction, float32 accumulation):
 * what F.linear computes with the weight dequantized to bfloat16 (per-channel scales: the int8 values
 * are exact in bfloat16 and the scale is applied in float32 after the sum). Twice the arithmetic rate
 * of rows() at 8+ rows. Needs rows_bf16_supported(), K % 32 == 0, and group == K or group % 32 == 0;
 * y is float32. */
bool rows_bf16_supported();
/* Whether rows_bf16 takes a bfloat16 x against this weight: the CPU, K and the group allow it. Every
 * caller picks between rows_bf16 and widening x to float32 for rows() by this one rule. */
inline bool rows_bf16_applies(int64_t K, int64_t group) {
  return rows_bf16_supported() && K % 32 == 0 && (group == K || group % 32 == 0);
}
void rows_bf16(const uint16_t* x, int64_t M, int64_t K, const int8_t* W, const f16* scales, const f16* offsets,
               int64_t group, const float* bias, float* y, int64_t ldy, int64_t n_begin, int64_t n_end);

}  // namespace int8_linear
}  // namespace eager_core

#endif
