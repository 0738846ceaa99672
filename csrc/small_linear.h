/*
 * small_linear.h: y = x W^T + b for float32 with few rows in x (a decode step: 1-16 tokens).
 *
 * Why: at a decode step every weight is read once for a handful of rows, so the matmul is
 * limited by how fast weights stream from memory. The BLAS library's small-M paths leave much of
 * that bandwidth unused (its matrix-vector product runs one thread; for 8 rows the vocabulary
 * projection reached a third of the machine's bandwidth). This kernel streams each weight row
 * exactly once from DRAM and uses it for every row of x while it is in registers.
 *
 * No torch header here (compiled under an AVX-512 target pragma; see entropy_gate_cpu_simd.cpp).
 */
#ifndef EAGER_CORE_SMALL_LINEAR_H
#define EAGER_CORE_SMALL_LINEAR_H

#include <stdint.h>

namespace eager_core {
namespace small_linear {

/* Most rows of x the kernel takes (more rows: the BLAS path is as fast or faster). */
constexpr int64_t kMaxRows = 64;

/* Weight rows per parallel task for K columns: about 2^16 weights (and an even count, for
 * the kernels' row pairs), so a thread's start-up cost stays small. Shared by every caller that
 * splits a matrix's rows across threads (the bindings, the one-call decode stack). */
inline int64_t column_grain(int64_t K) {
  const int64_t rows = (int64_t(1) << 16) / (K > 1 ? K : 1);
  return (rows > 2 ? rows : 2) & ~int64_t(1);
}

/* True when the running CPU has the instructions the kernel needs (AVX-512F). */
bool supported();

/* Columns [n_begin, n_end) of y [M, N] (row stride ldy) = x [M, K] @ W[N, K]^T + bias (may be
 * null). x and W are dense row-major; M <= kMaxRows. Each W row is read once. */
void rows(const float* x, int64_t M, int64_t K, const float* W, const float* bias, float* y, int64_t ldy,
          int64_t n_begin, int64_t n_end);

/* bfloat16 operands (raw bits), float32 accumulation (AVX512-BF16 dot products), bfloat16 output
 * rounded to nearest even. Needs supported_bf16(). */
bool supported_bf16();
void rows_bf16(const uint16_t* x, int64_t M, int64_t K, const uint16_t* W, const uint16_t* bias, uint16_t* y,
               int64_t ldy, int64_t n_begin, int64_t n_end);

}  // namespace small_linear
}  // namespace eager_core

#endif
