/*
 * int8_linear_cpu_bf16.cpp: int8 weights x bfloat16 activations with AVX512-BF16 (int8_linear.h).
 *
 * Why a second kernel: at 8+ rows of x the float32 kernel is bound by its FMAs (16 products per
 * instruction), not by memory. vdpbf16ps does 32 products per instruction with float32
 * accumulation, so once the weights are in bfloat16 the arithmetic takes half as long. Per 32
 * weights of a row: two widening loads (vpmovsxbd from memory), two int->float conversions, the
 * group's scale (two multiplies, grouped layout only) and one vcvtne2ps2bf16, shared by every row
 * of x; then one vdpbf16ps per row of x. Same loop order and prefetch as int8_linear_cpu.cpp.
 */
#include <cstdlib>
#include <cstring>

#include "int8_linear.h"
#include "cpu_features.h"
#include "row_blocks.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define I8B_X86 1
#include <immintrin.h>
#endif

namespace eager_core {
namespace int8_linear {

#ifdef I8B_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512bf16,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512bf16,f16c")
#endif
#include "avx512_sums.h"  // inside the AVX-512 region: its functions take that target
namespace {

/* 32 weights of a row as bfloat16: widened, scaled (grouped layout), rounded to nearest even. */
template <bool GROUPED>
inline __m512bh widen32(const int8_t* p, __m512 scale, __m512 offset) {
  __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16))));
  if (GROUPED) lo = _mm512_fmadd_ps(lo, scale, offset), hi = _mm512_fmadd_ps(hi, scale, offset);
  return _mm512_cvtne2ps_pbh(hi, lo);  // lanes 0-15 from lo, 16-31 from hi: the order of x
}

/* NR weight rows n.. times MB rows of x. (Widening a row once into L1 for all 8-row blocks of x
 * was tried for 32 rows: no faster; the horizontal sums at the end of each block cost more.) */
template <int MB, int NR, bool GROUPED>
void block_bf16(const uint16_t* x, int64_t K, const int8_t* W, const f16* S, const f16* Z, int64_t group,
                const float* bias, float* y, int64_t ldy, int64_t n) {
  const int64_t ng = K / group;
  __m512 acc[NR][MB];
  for (int r = 0; r < NR; ++r)
    for (int j = 0; j < MB; ++j) acc[r][j] = _mm512_setzero_ps();
  for (int64_t g0 = 0; g0 < K; g0 += group) {
    __m512 sv[NR], zv[NR];
    for (int r = 0; r < NR; ++r) {
      const int64_t gi = (n + r) * ng + g0 / group;
      sv[r] = _mm512_set1_ps(GROUPED ? _cvtsh_ss(S[gi]) : 1.0f);
      zv[r] = _mm512_set1_ps(GROUPED && Z ? _cvtsh_ss(Z[gi]) : 0.0f);
    }
    for (int64_t k = g0; k < g0 + group; k += 32) {
      __m512bh w[NR];
      for (int r = 0; r < NR; ++r) {
        const int8_t* p = W + (n + r) * K + k;
        if ((k & 63) == 0) _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchRows * K), _MM_HINT_T0);
        w[r] = widen32<GROUPED>(p, sv[r], zv[r]);
      }
      for (int j = 0; j < MB; ++j) {
        const __m512bh xv = (__m512bh)_mm512_loadu_si512(x + j * K + k);
        for (int r = 0; r < NR; ++r) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], xv, w[r]);
      }
    }
  }
  float sums[NR * MB];  // acc[r][j] summed into sums[r * MB + j]
  horizontal_sums(&acc[0][0], NR * MB, sums);
  for (int r = 0; r < NR; ++r) {
    const float s = GROUPED ? 1.0f : _cvtsh_ss(S[n + r]);
    const float b = bias ? bias[n + r] : 0.0f;
    for (int j = 0; j < MB; ++j) y[j * ldy + n + r] = sums[r * MB + j] * s + b;
  }
}

template <int NR, bool GROUPED>
void rows_of_bf16(const uint16_t* x, int64_t M, int64_t K, const int8_t* W, const f16* S, const f16* Z,
                  int64_t group, const float* bias, float* y, int64_t ldy, int64_t n) {
  for_row_blocks<8>(M, [&](auto mb, int64_t m0) {
    block_bf16<decltype(mb)::value, NR, GROUPED>(x + m0 * K, K, W, S, Z, group, bias, y + m0 * ldy, ldy, n);
  });
}

template <bool GROUPED>
void rows_bf16_t(const uint16_t* x, int64_t M, int64_t K, const int8_t* W, const f16* S, const f16* Z,
                 int64_t group, const float* bias, float* y, int64_t ldy, int64_t n_begin, int64_t n_end) {
  int64_t n = n_begin;
  if (M <= 2)  // as in int8_linear_cpu.cpp: four weight rows at a time for one or two rows of x
    for (; n + 4 <= n_end; n += 4) rows_of_bf16<4, GROUPED>(x, M, K, W, S, Z, group, bias, y, ldy, n);
  for (; n + 2 <= n_end; n += 2) rows_of_bf16<2, GROUPED>(x, M, K, W, S, Z, group, bias, y, ldy, n);
  if (n < n_end) rows_of_bf16<1, GROUPED>(x, M, K, W, S, Z, group, bias, y, ldy, n);
}

}  // namespace

void rows_bf16_avx512(const uint16_t* x, int64_t M, int64_t K, const int8_t* W, const f16* S, const f16* Z,
                      int64_t group, const float* bias, float* y, int64_t ldy, int64_t n_begin, int64_t n_end) {
  if (group == K && Z == nullptr)
    rows_bf16_t<false>(x, M, K, W, S, Z, K, bias, y, ldy, n_begin, n_end);
  else
    rows_bf16_t<true>(x, M, K, W, S, Z, group, bias, y, ldy, n_begin, n_end);
}
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // I8B_X86

/* Only at the top level: EAGER_CORE_CPU_ISA=avx2 / baseline turn it off (read once), like rows(). */
bool rows_bf16_supported() {
#ifdef I8B_X86
  static const bool ok = cpu::avx512_bf16();
  return ok;
#else
  return false;
#endif
}

void rows_bf16(const uint16_t* x, int64_t M, int64_t K, const int8_t* W, const f16* scales, const f16* offsets,
               int64_t group, const float* bias, float* y, int64_t ldy, int64_t n_begin, int64_t n_end) {
#ifdef I8B_X86
  rows_bf16_avx512(x, M, K, W, scales, offsets, group, bias, y, ldy, n_begin, n_end);
#else
  (void)x, (void)M, (void)K, (void)W, (void)scales, (void)offsets, (void)group, (void)bias, (void)y, (void)ldy,
   (void)n_begin, (void)n_end;
#endif
}

}  // namespace int8_linear
}  // namespace eager_core
