/*
 * paged_attention.h: decode attention straight from the paged KV cache (CPU).
 *
 * Why: the PyTorch path gathers every decoding sequence's whole context into a padded
 * [B, C, kv_heads, head_dim] copy per layer (and masks the padding) before attention; for
 * 32 sequences of a few hundred tokens that copy costs as much as the attention itself. Here
 * each (sequence, kv head) task walks its own block table and reads each key and value once,
 * where it lies in the pool, for all the query heads that share that kv head (GQA).
 *
 * No torch header here (compiled under an AVX-512 target pragma; see entropy_gate_cpu_simd.cpp).
 */
#ifndef EAGER_CORE_PAGED_ATTENTION_H
#define EAGER_CORE_PAGED_ATTENTION_H

#include <stdint.h>

namespace eager_core {
namespace paged_attention {

struct Args {
  const float* q;            // [B, heads, head_dim]
  const void* k_cache;       // [slots, kv_heads, head_dim], float32 or bfloat16 (raw bits)
  const void* v_cache;
  bool bf16;                 // cache element type
  const int64_t* tables;     // [B, table_width] physical block ids
  const int64_t* context_lens;  // [B] positions to read (the new token's included)
  float* out;                // [B, heads, head_dim]
  int64_t heads, kv_heads, head_dim, block_size, table_width;
  float scale;
};

/* Attention for (sequence, kv head) tasks [task_begin, task_end), task = b * kv_heads + kvh.
 * scratch must hold (heads / kv_heads) * max(context_lens) floats. */
void run(const Args& a, int64_t task_begin, int64_t task_end, float* scratch);

/* Which instruction set run() uses: "avx512" or "baseline". */
const char* isa_name();

}  // namespace paged_attention
}  // namespace eager_core

#endif
