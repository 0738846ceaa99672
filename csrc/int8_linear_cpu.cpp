/*
 * int8_linear_cpu.cpp: the CPU kernels behind int8_linear.h, one per x86-64 ISA level, and the
 * dispatch between them (chosen once, like the entropy gate's: csrc/entropy_gate_cpu_simd.cpp).
 *
 * Loop order (every level): for NR weight rows at a time, for each block of up to MB rows of x,
 * walk K one scale group at a time; per vector of weights: load the int8 lanes, widen them to
 * float32 in registers, multiply by the group's scale (grouped layout only), then one FMA per row
 * of x. The widening is shared by all MB rows, so at 8 rows it is 2 instructions in 10. Each
 * weight row is read from memory once, however many rows x has. Per-channel scales are applied
 * once to the finished dot product.
 */
#include "int8_linear.h"
#include "cpu_features.h"
#include "row_blocks.h"

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define I8_X86 1
#include <immintrin.h>
#endif

namespace eager_core {
namespace int8_linear {
namespace {

/* Portable kernel: any CPU, and the oracle the vector kernels are tested against (via the op). */
void rows_baseline(const float* x, int64_t M, int64_t K, const int8_t* W, const f16* S, const f16* Z, int64_t group,
                   const float* bias, float* y, int64_t ldy, int64_t n_begin, int64_t n_end) {
  const int64_t ng = K / group;
  for (int64_t n = n_begin; n < n_end; ++n) {
    const int8_t* w = W + n * K;
    const f16* s = S + n * ng;
    const f16* z = Z ? Z + n * ng : nullptr;
    for (int64_t m = 0; m < M; ++m) {
      const float* xr = x + m * K;
      float total = 0.0f;
      for (int64_t g = 0; g < ng; ++g) {
        float acc = 0.0f, xsum = 0.0f;  // sum_k x q, and sum_k x for the group's offset
        for (int64_t k = g * group; k < (g + 1) * group; ++k) {
          acc += xr[k] * static_cast<float>(w[k]);
          xsum += xr[k];
        }
        total += acc * half_to_float(s[g]) + (z ? xsum * half_to_float(z[g]) : 0.0f);
      }
      y[m * ldy + n] = total + (bias ? bias[n] : 0.0f);
    }
  }
}

}  // namespace

#ifdef I8_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,f16c")
#endif
#include "avx512_sums.h"  // inside the AVX-512 region: its functions take that target
namespace {

/* NR weight rows n.. times MB rows of x. GROUPED: scales per `group` (multiple of 16) multiplied
 * into the widened weights; else one scale per row, applied after the reduction. */
template <int MB, int NR, bool GROUPED>
void block512(const float* x, int64_t K, const int8_t* W, const f16* S, const f16* Z, int64_t group,
              const float* bias, float* y, int64_t ldy, int64_t n) {
  const int64_t ng = K / group;
  __m512 acc[NR][MB];
  for (int r = 0; r < NR; ++r)
    for (int j = 0; j < MB; ++j) acc[r][j] = _mm512_setzero_ps();
  const int64_t full = K & ~int64_t(15);
  for (int64_t g0 = 0; g0 < full; g0 += group) {
    __m512 sv[NR], zv[NR];
    if (GROUPED)
      for (int r = 0; r < NR; ++r) {
        const int64_t gi = (n + r) * ng + g0 / group;
        sv[r] = _mm512_set1_ps(_cvtsh_ss(S[gi]));
        zv[r] = _mm512_set1_ps(Z ? _cvtsh_ss(Z[gi]) : 0.0f);  // 0: fma(q, s, 0) rounds exactly as q * s
      }
    const int64_t g1 = g0 + group < full ? g0 + group : full;
    for (int64_t k = g0; k < g1; k += 16) {
      __m512 w[NR];
      for (int r = 0; r < NR; ++r) {
        const int8_t* p = W + (n + r) * K + k;
        // One prefetch per 64-byte line of the row kPrefetchRows rows down: its latency hides behind this row.
        if ((k & 63) == 0) _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchRows * K), _MM_HINT_T0);
        w[r] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
        if (GROUPED) w[r] = _mm512_fmadd_ps(w[r], sv[r], zv[r]);
      }
      for (int j = 0; j < MB; ++j) {
        const __m512 xv = _mm512_loadu_ps(x + j * K + k);
        for (int r = 0; r < NR; ++r) acc[r][j] = _mm512_fmadd_ps(xv, w[r], acc[r][j]);
      }
    }
  }
  if (full < K) {  // per-channel only (grouped K is a multiple of 16): masked loads read zeros past the row
    const __mmask16 m = static_cast<__mmask16>((1u << (K - full)) - 1);
    __m512 w[NR];
    for (int r = 0; r < NR; ++r)
      w[r] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, W + (n + r) * K + full)));
    for (int j = 0; j < MB; ++j) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + j * K + full);
      for (int r = 0; r < NR; ++r) acc[r][j] = _mm512_fmadd_ps(xv, w[r], acc[r][j]);
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
void rows_of512(const float* x, int64_t M, int64_t K, const int8_t* W, const f16* S, const f16* Z, int64_t group,
                const float* bias, float* y, int64_t ldy, int64_t n) {
  for_row_blocks<8>(M, [&](auto mb, int64_t m0) {
    block512<decltype(mb)::value, NR, GROUPED>(x + m0 * K, K, W, S, Z, group, bias, y + m0 * ldy, ldy, n);
  });
}

template <bool GROUPED>
void rows512_t(const float* x, int64_t M, int64_t K, const int8_t* W, const f16* S, const f16* Z, int64_t group,
               const float* bias, float* y, int64_t ldy, int64_t n_begin, int64_t n_end) {
  int64_t n = n_begin;
  // One or two rows of x: four weight rows at a time, so more loads and FMA chains are in flight.
  if (M <= 2)
    for (; n + 4 <= n_end; n += 4) rows_of512<4, GROUPED>(x, M, K, W, S, Z, group, bias, y, ldy, n);
  for (; n + 2 <= n_end; n += 2) rows_of512<2, GROUPED>(x, M, K, W, S, Z, group, bias, y, ldy, n);
  if (n < n_end) rows_of512<1, GROUPED>(x, M, K, W, S, Z, group, bias, y, ldy, n);
}

void rows_avx512(const float* x, int64_t M, int64_t K, const int8_t* W, const f16* S, const f16* Z, int64_t group,
                 const float* bias, float* y, int64_t ldy, int64_t n_begin, int64_t n_end) {
  if (group == K && Z == nullptr)
    rows512_t<false>(x, M, K, W, S, Z, K, bias, y, ldy, n_begin, n_end);
  else
    rows512_t<true>(x, M, K, W, S, Z, group, bias, y, ldy, n_begin, n_end);
}

}  // namespace
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif
namespace {

inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* The AVX2 version of block512: 8 lanes, 16 registers (so at most 4 rows of x per block); the
 * K % 8 tail of a per-channel row is summed in scalar code. */
template <int MB, int NR, bool GROUPED>
void block256(const float* x, int64_t K, const int8_t* W, const f16* S, const f16* Z, int64_t group,
              const float* bias, float* y, int64_t ldy, int64_t n) {
  const int64_t ng = K / group;
  __m256 acc[NR][MB];
  for (int r = 0; r < NR; ++r)
    for (int j = 0; j < MB; ++j) acc[r][j] = _mm256_setzero_ps();
  const int64_t full = K & ~int64_t(7);
  for (int64_t g0 = 0; g0 < full; g0 += group) {
    __m256 sv[NR], zv[NR];
    if (GROUPED)
      for (int r = 0; r < NR; ++r) {
        const int64_t gi = (n + r) * ng + g0 / group;
        sv[r] = _mm256_set1_ps(_cvtsh_ss(S[gi]));
        zv[r] = _mm256_set1_ps(Z ? _cvtsh_ss(Z[gi]) : 0.0f);  // 0: fma(q, s, 0) rounds exactly as q * s
      }
    const int64_t g1 = g0 + group < full ? g0 + group : full;
    for (int64_t k = g0; k < g1; k += 8) {
      __m256 w[NR];
      for (int r = 0; r < NR; ++r) {
        const int8_t* p = W + (n + r) * K + k;
        if ((k & 63) == 0) _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchRows * K), _MM_HINT_T0);
        w[r] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
        if (GROUPED) w[r] = _mm256_fmadd_ps(w[r], sv[r], zv[r]);
      }
      for (int j = 0; j < MB; ++j) {
        const __m256 xv = _mm256_loadu_ps(x + j * K + k);
        for (int r = 0; r < NR; ++r) acc[r][j] = _mm256_fmadd_ps(xv, w[r], acc[r][j]);
      }
    }
  }
  for (int r = 0; r < NR; ++r) {
    const int8_t* wr = W + (n + r) * K;
    const float s = GROUPED ? 1.0f : _cvtsh_ss(S[n + r]);
    const float b = bias ? bias[n + r] : 0.0f;
    for (int j = 0; j < MB; ++j) {
      float tail = 0.0f;
      for (int64_t k = full; k < K; ++k) tail += x[j * K + k] * static_cast<float>(wr[k]);
      y[j * ldy + n + r] = (hsum256(acc[r][j]) + tail) * s + b;
    }
  }
}

template <int NR, bool GROUPED>
void rows_of256(const float* x, int64_t M, int64_t K, const int8_t* W, const f16* S, const f16* Z, int64_t group,
                const float* bias, float* y, int64_t ldy, int64_t n) {
  for_row_blocks<4>(M, [&](auto mb, int64_t m0) {
    block256<decltype(mb)::value, NR, GROUPED>(x + m0 * K, K, W, S, Z, group, bias, y + m0 * ldy, ldy, n);
  });
}

template <bool GROUPED>
void rows256_t(const float* x, int64_t M, int64_t K, const int8_t* W, const f16* S, const f16* Z, int64_t group,
               const float* bias, float* y, int64_t ldy, int64_t n_begin, int64_t n_end) {
  int64_t n = n_begin;
  for (; n + 2 <= n_end; n += 2) rows_of256<2, GROUPED>(x, M, K, W, S, Z, group, bias, y, ldy, n);
  if (n < n_end) rows_of256<1, GROUPED>(x, M, K, W, S, Z, group, bias, y, ldy, n);
}

void rows_avx2(const float* x, int64_t M, int64_t K, const int8_t* W, const f16* S, const f16* Z, int64_t group,
               const float* bias, float* y, int64_t ldy, int64_t n_begin, int64_t n_end) {
  if (group == K && Z == nullptr)
    rows256_t<false>(x, M, K, W, S, Z, K, bias, y, ldy, n_begin, n_end);
  else
    rows256_t<true>(x, M, K, W, S, Z, group, bias, y, ldy, n_begin, n_end);
}

}  // namespace
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // I8_X86

namespace {

using RowsFn = void (*)(const float*, int64_t, int64_t, const int8_t*, const f16*, const f16*, int64_t,
                        const float*, float*, int64_t, int64_t, int64_t);
struct Impl {
  RowsFn rows;
  const char* name;
};

/* EAGER_CORE_CPU_ISA=avx2 or =baseline caps the choice (read once, at the first call), so the
 * slower paths can be tested on an AVX-512 machine; the same switch as the entropy gate's. */
Impl pick() {
#ifdef I8_X86
  if (cpu::avx512()) return Impl{rows_avx512, "avx512"};
  if (cpu::avx2_fma()) return Impl{rows_avx2, "avx2"};
#endif
  return Impl{rows_baseline, "baseline"};
}

const Impl& impl() {
  static const Impl chosen = pick();  // thread-safe one-time initialisation
  return chosen;
}

}  // namespace

void rows(const float* x, int64_t M, int64_t K, const int8_t* W, const f16* scales, const f16* offsets,
          int64_t group, const float* bias, float* y, int64_t ldy, int64_t n_begin, int64_t n_end) {
  impl().rows(x, M, K, W, scales, offsets, group, bias, y, ldy, n_begin, n_end);
}

const char* isa_name() { return impl().name; }

}  // namespace int8_linear
}  // namespace eager_core
