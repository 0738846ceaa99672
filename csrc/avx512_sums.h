/*
 * avx512_sums.h: horizontal sums of several AVX-512 float vectors at once, by a transposing tree.
 * Include it inside a region compiled for AVX-512F (the kernels' target pragmas); AVX-512F only.
 *
 * Why: a small-M matmul ends each block with one horizontal sum per (weight row, row of x): 16 of
 * them for 2 weight rows x 8 rows of x. _mm512_reduce_add_ps costs ~8 shuffles and adds each
 * (128 for 16 vectors); summing 4 vectors per tree level shares the shuffles: 45 for 16.
 * The sums run in another order than _mm512_reduce_add_ps: results agree to float32 rounding.
 */
#ifndef EAGER_CORE_AVX512_SUMS_H
#define EAGER_CORE_AVX512_SUMS_H

#include <immintrin.h>

/* The four horizontal sums of a, b, c, d per 128-bit lane: lane l of the result holds the sums of
 * a, b, c, d over their own lane l (an interleaving tree: 6 shuffles and 3 adds). */
static inline __m512 lane_sums4(__m512 a, __m512 b, __m512 c, __m512 d) {
  // Per 128-bit lane: ab = a0+a2, b0+b2, a1+a3, b1+b3; then the four sums of that lane.
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  return _mm512_add_ps(_mm512_shuffle_ps(ab, cd, 0x44), _mm512_shuffle_ps(ab, cd, 0xEE));
}

/* The four horizontal sums of a, b, c, d in lanes 0..3 of the result. */
static inline __m128 sum4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 abcd = lane_sums4(a, b, c, d);
  const __m256 lo = _mm512_castps512_ps256(abcd);
  const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(abcd), 1));
  const __m256 half = _mm256_add_ps(lo, hi);
  return _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
}

/* out[i] = the sum of v[i]'s 16 lanes, for i < n (1 <= n <= 16). */
static inline void horizontal_sums16(const __m512* v, int n, float* out) {
  const __m512 zero = _mm512_setzero_ps();
  auto at = [&](int i) { return i < n ? v[i] : zero; };
  if (n <= 4) {
    float four[4];
    _mm_storeu_ps(four, sum4(v[0], at(1), at(2), at(3)));
    for (int i = 0; i < n; ++i) out[i] = four[i];
    return;
  }
  __m512 quad[4];
  for (int k = 0; k < 4; ++k)
    quad[k] = 4 * k < n ? lane_sums4(at(4 * k), at(4 * k + 1), at(4 * k + 2), at(4 * k + 3)) : zero;
  // 128-bit lanes: 0x88 picks lanes 0, 2 of each operand and 0xDD lanes 1, 3, so each add halves
  // the lanes a quad's partial sums are spread over; the last leaves quad k's four sums in lane k.
  const __m512 g01 = _mm512_add_ps(_mm512_shuffle_f32x4(quad[0], quad[1], 0x88),
                                   _mm512_shuffle_f32x4(quad[0], quad[1], 0xDD));
  const __m512 g23 = _mm512_add_ps(_mm512_shuffle_f32x4(quad[2], quad[3], 0x88),
                                   _mm512_shuffle_f32x4(quad[2], quad[3], 0xDD));
  const __m512 all = _mm512_add_ps(_mm512_shuffle_f32x4(g01, g23, 0x88), _mm512_shuffle_f32x4(g01, g23, 0xDD));
  _mm512_mask_storeu_ps(out, static_cast<__mmask16>((1u << n) - 1u), all);
}

/* out[i] = the sum of v[i]'s 16 lanes, for i < n (any n >= 0), 16 vectors per tree. */
static inline void horizontal_sums(const __m512* v, int n, float* out) {
  for (int i = 0; i < n; i += 16) horizontal_sums16(v + i, n - i < 16 ? n - i : 16, out + i);
}

#endif
