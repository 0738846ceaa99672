/*
 * row_blocks.h: walk the rows of x in blocks of at most MaxRows, calling a kernel whose block size
 * is a template parameter, so its accumulators live in registers.
 *
 * Why: the small-M matmul kernels (small_linear_cpu.cpp, int8_linear_cpu*.cpp) each take `MB`, the
 * rows of x in a block, as a template parameter. Each used to spell out the same switch from the
 * run-time count to the instantiation; this is that switch, once.
 *
 * Usage: for_row_blocks<8>(M, [&](auto mb, int64_t m0) { block<decltype(mb)::value, NR>(x + m0 * K, ...); });
 * mb is std::integral_constant<int, MB> with 1 <= MB <= MaxRows; m0 is the block's first row.
 * Header-only, no intrinsics: the lambda (defined inside a kernel's target pragma) carries the ISA.
 */
#ifndef EAGER_CORE_ROW_BLOCKS_H
#define EAGER_CORE_ROW_BLOCKS_H

#include <stdint.h>

#include <type_traits>

namespace eager_core {

/* f(integral_constant<MB>, m0) for the block of `rows` rows (1 <= rows <= MB) starting at m0. */
template <int MB, typename F>
inline void call_row_block(int64_t rows, int64_t m0, F& f) {
  if constexpr (MB == 1) {
    f(std::integral_constant<int, 1>{}, m0);
  } else {
    if (rows >= MB)
      f(std::integral_constant<int, MB>{}, m0);
    else
      call_row_block<MB - 1>(rows, m0, f);
  }
}

/* Blocks of MaxRows rows of x, the last one shorter: M = 19 at MaxRows 8 is 8, 8, 3. */
template <int MaxRows, typename F>
inline void for_row_blocks(int64_t M, F&& f) {
  for (int64_t m0 = 0; m0 < M; m0 += MaxRows) call_row_block<MaxRows>(M - m0, m0, f);
}

}  // namespace eager_core

#endif
