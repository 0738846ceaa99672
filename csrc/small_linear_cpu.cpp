/*
 * small_linear_cpu.cpp: the AVX-512 kernel behind small_linear.h.
 *
 * Loop order: for two weight rows at a time, for each block of up to 8 rows of x, run along K
 * with 2 x MB vector accumulators (MB <= 8 is a template parameter, so they live in registers),
 * then reduce each accumulator horizontally. Per 16 floats of K that is 2 weight loads, MB loads
 * of x (L1-resident: x is at most 16 x K floats) and 2 x MB FMAs, so the weights stream at close
 * to the memory bandwidth for MB up to 8. For MB <= 2 each accumulator is split in two (U = 2,
 * alternate vectors of K): with a single chain per row the bfloat16 loop waited on vdpbf16ps's
 * latency and streamed 31 GB/s; with two it streams 44-45 GB/s (30 layers of distinct weights,
 * 2 threads, AMD EPYC; float32 reads twice the bytes per FMA and was at ~52 GB/s either way).
 */
#include "small_linear.h"
#include "row_blocks.h"
#include "cpu_features.h"

#include <cstdlib>
#include <cstring>

// Weight rows ahead to prefetch (docs/decode_kernels.md). The bfloat16 kernel looks further ahead
// at 4+ rows of x: see block_bf16.
#ifndef SL_AHEAD
#define SL_AHEAD 2
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SL_X86 1
#include <immintrin.h>
#endif

namespace eager_core {
namespace small_linear {

#ifdef SL_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f")
#endif
namespace {

template <int MB, int NR>
void block(const float* x, int64_t K, const float* W, const float* bias, float* y, int64_t ldy, int64_t n) {
  constexpr int U = MB <= 2 ? 2 : 1;  // independent accumulators for few x rows (see block_bf16)
  __m512 acc[U][NR][MB];
  for (int u = 0; u < U; ++u)
    for (int r = 0; r < NR; ++r)
      for (int j = 0; j < MB; ++j) acc[u][r][j] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 * U <= K; k += 16 * U) {
    for (int u = 0; u < U; ++u) {
      const int64_t ku = k + 16 * u;
      __m512 w[NR];
      for (int r = 0; r < NR; ++r) {
        // Ask for the next rows' line now: memory latency hides behind this row's FMAs.
        _mm_prefetch(reinterpret_cast<const char*>(W + (n + r + SL_AHEAD) * K + ku), _MM_HINT_T0);
        w[r] = _mm512_loadu_ps(W + (n + r) * K + ku);
      }
      for (int j = 0; j < MB; ++j) {
        const __m512 xv = _mm512_loadu_ps(x + j * K + ku);
        for (int r = 0; r < NR; ++r) acc[u][r][j] = _mm512_fmadd_ps(xv, w[r], acc[u][r][j]);
      }
    }
  }
  for (; k < K; k += 16) {  // the tail: masked loads read zeros past the end of each row
    const __mmask16 m = K - k >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (K - k)) - 1);
    __m512 w[NR];
    for (int r = 0; r < NR; ++r) w[r] = _mm512_maskz_loadu_ps(m, W + (n + r) * K + k);
    for (int j = 0; j < MB; ++j) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + j * K + k);
      for (int r = 0; r < NR; ++r) acc[0][r][j] = _mm512_fmadd_ps(xv, w[r], acc[0][r][j]);
    }
  }
  for (int r = 0; r < NR; ++r) {
    const float b = bias ? bias[n + r] : 0.0f;
    for (int j = 0; j < MB; ++j) {
      __m512 sum = acc[0][r][j];
      for (int u = 1; u < U; ++u) sum = _mm512_add_ps(sum, acc[u][r][j]);
      y[j * ldy + n + r] = _mm512_reduce_add_ps(sum) + b;
    }
  }
}

template <int NR>
void rows_of(const float* x, int64_t M, int64_t K, const float* W, const float* bias, float* y, int64_t ldy,
             int64_t n) {
  for_row_blocks<8>(M, [&](auto mb, int64_t m0) {
    block<decltype(mb)::value, NR>(x + m0 * K, K, W, bias, y + m0 * ldy, ldy, n);
  });
}

}  // namespace

void rows_avx512(const float* x, int64_t M, int64_t K, const float* W, const float* bias, float* y,
                 int64_t ldy, int64_t n_begin, int64_t n_end) {
  int64_t n = n_begin;
  for (; n + 2 <= n_end; n += 2) rows_of<2>(x, M, K, W, bias, y, ldy, n);
  if (n < n_end) rows_of<1>(x, M, K, W, bias, y, ldy, n);
}
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // SL_X86

#ifdef SL_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512bf16"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512bf16")
#endif
namespace {

/* float32 -> bfloat16 bits, round to nearest even (NaN stays a quiet NaN). */
inline uint16_t to_bf16(float f) {
  uint32_t bits;
  __builtin_memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline float from_bf16(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  __builtin_memcpy(&f, &bits, sizeof f);
  return f;
}

/* The same loop as block<> with bfloat16 operands: each vdpbf16ps multiplies 32 pairs and adds
 * them into 16 float32 lanes, so accumulation stays in float32 as in oneDNN's bf16 GEMM. */
template <int MB, int NR>
void block_bf16(const uint16_t* x, int64_t K, const uint16_t* W, const uint16_t* bias, uint16_t* y, int64_t ldy,
                int64_t n) {
  // U independent accumulators per (row, x row) for few x rows: one chain of dot products per row
  // would wait on vdpbf16ps's latency instead of on memory (measured: 31 -> 4x GB/s at M = 1).
  constexpr int U = MB <= 2 ? 2 : 1;
  // 8 rows ahead from 4 rows of x up: at 8 rows (n8 decode) the prefetch 2 rows ahead came too late
  // (15 -> 22 GB/s on one core, ~9% at 2 threads); at 1 row 8 ahead was ~5% slower than 2.
  constexpr int64_t kAhead = MB >= 4 ? 8 : SL_AHEAD;
  __m512 acc[U][NR][MB];
  for (int u = 0; u < U; ++u)
    for (int r = 0; r < NR; ++r)
      for (int j = 0; j < MB; ++j) acc[u][r][j] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 * U <= K; k += 32 * U) {  // full vectors: plain loads
    for (int u = 0; u < U; ++u) {
      const int64_t ku = k + 32 * u;
      __m512bh w[NR];
      for (int r = 0; r < NR; ++r) {
        _mm_prefetch(reinterpret_cast<const char*>(W + (n + r + kAhead) * K + ku), _MM_HINT_T0);
        w[r] = (__m512bh)_mm512_loadu_si512(W + (n + r) * K + ku);
      }
      for (int j = 0; j < MB; ++j) {
        const __m512bh xv = (__m512bh)_mm512_loadu_si512(x + j * K + ku);
        for (int r = 0; r < NR; ++r) acc[u][r][j] = _mm512_dpbf16_ps(acc[u][r][j], xv, w[r]);
      }
    }
  }
  for (; k < K; k += 32) {  // the tail: masked loads read zeros past the end of each row
    const __mmask32 m = K - k >= 32 ? ~__mmask32(0) : static_cast<__mmask32>((1u << (K - k)) - 1);
    __m512bh w[NR];
    for (int r = 0; r < NR; ++r) w[r] = (__m512bh)_mm512_maskz_loadu_epi16(m, W + (n + r) * K + k);
    for (int j = 0; j < MB; ++j) {
      const __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(m, x + j * K + k);
      for (int r = 0; r < NR; ++r) acc[0][r][j] = _mm512_dpbf16_ps(acc[0][r][j], xv, w[r]);
    }
  }
  for (int r = 0; r < NR; ++r) {
    const float b = bias ? from_bf16(bias[n + r]) : 0.0f;
    for (int j = 0; j < MB; ++j) {
      __m512 sum = acc[0][r][j];
      for (int u = 1; u < U; ++u) sum = _mm512_add_ps(sum, acc[u][r][j]);
      y[j * ldy + n + r] = to_bf16(_mm512_reduce_add_ps(sum) + b);
    }
  }
}

template <int NR>
void rows_of_bf16(const uint16_t* x, int64_t M, int64_t K, const uint16_t* W, const uint16_t* bias, uint16_t* y,
                  int64_t ldy, int64_t n) {
  for_row_blocks<8>(M, [&](auto mb, int64_t m0) {
    block_bf16<decltype(mb)::value, NR>(x + m0 * K, K, W, bias, y + m0 * ldy, ldy, n);
  });
}

}  // namespace

void rows_bf16_avx512(const uint16_t* x, int64_t M, int64_t K, const uint16_t* W, const uint16_t* bias, uint16_t* y,
                      int64_t ldy, int64_t n_begin, int64_t n_end) {
  int64_t n = n_begin;
  for (; n + 2 <= n_end; n += 2) rows_of_bf16<2>(x, M, K, W, bias, y, ldy, n);
  if (n < n_end) rows_of_bf16<1>(x, M, K, W, bias, y, ldy, n);
}
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // SL_X86

/* EAGER_CORE_CPU_ISA set to anything but "avx512" turns the kernel off (read once): callers then
 * take F.linear, as on a CPU without AVX-512 (cpu_features.h). */
bool supported_bf16() {
#ifdef SL_X86
  static const bool ok = cpu::avx512_bf16();
  return ok;
#else
  return false;
#endif
}

void rows_bf16(const uint16_t* x, int64_t M, int64_t K, const uint16_t* W, const uint16_t* bias, uint16_t* y,
               int64_t ldy, int64_t n_begin, int64_t n_end) {
#ifdef SL_X86
  rows_bf16_avx512(x, M, K, W, bias, y, ldy, n_begin, n_end);
#else
  (void)x, (void)M, (void)K, (void)W, (void)bias, (void)y, (void)ldy, (void)n_begin, (void)n_end;
#endif
}

bool supported() {
#ifdef SL_X86
  static const bool ok = cpu::avx512();
  return ok;
#else
  return false;
#endif
}

void rows(const float* x, int64_t M, int64_t K, const float* W, const float* bias, float* y, int64_t ldy,
          int64_t n_begin, int64_t n_end) {
#ifdef SL_X86
  rows_avx512(x, M, K, W, bias, y, ldy, n_begin, n_end);
#else
  (void)x, (void)M, (void)K, (void)W, (void)bias, (void)y, (void)ldy, (void)n_begin, (void)n_end;
#endif
}

}  // namespace small_linear
}  // namespace eager_core
