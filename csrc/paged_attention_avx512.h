/*
 * paged_attention_avx512.h: the decode attention of paged_attention_body.h for head_dim 64 and 128,
 * written with AVX-512 intrinsics. Included once, inside paged_attention_cpu.cpp's AVX-512 region
 * and namespace, after the body (it reuses Args and the body's softmax_rows).
 *
 * Why: at 32 sequences the auto-vectorised body spent ~400 us per layer call (a quarter of a bf16
 * decode step of the default model), most of it not on arithmetic: every key and value row was
 * widened into a buffer and read back, and pass 2 loaded and stored each output head's
 * accumulators for every position, since the compiler cannot keep out[] in registers across the
 * position loop. Here a row is widened in registers (bf16 -> float32 is a 16-bit shift), the
 * scores of 4 positions are reduced together (one transposing tree instead of four horizontal
 * sums), and pass 2 keeps up to 16 accumulators (4 heads x 64 dims, or 2 x 128) in registers.
 * Same two passes and the same softmax; the sums run in another order, so results match the body
 * to float32 rounding, not bit for bit.
 */

/* One row of head_dim = 16 * NV values at element `offset` of a cache, as float32 vectors. */
template <int NV, bool BF16>
static inline void load_row16(const void* base, int64_t offset, __m512* out) {
  if (BF16) {
    const uint16_t* p = static_cast<const uint16_t*>(base) + offset;
    for (int i = 0; i < NV; ++i) {
      const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16 * i));
      out[i] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));   // float32's upper half
    }
  } else {
    const float* p = static_cast<const float*>(base) + offset;
    for (int i = 0; i < NV; ++i) out[i] = _mm512_loadu_ps(p + 16 * i);
  }
}

/* Element offsets of a task's rows for positions 0, 1, 2, ... in turn, walking its block table
 * (a counter instead of a division by the block size per row). */
struct RowWalk {
  const int64_t* table;
  int64_t block_size, row_stride, kv_off, block = 0, in_block = 0;
  int64_t next() {
    const int64_t off = (table[block] * block_size + in_block) * row_stride + kv_off;
    if (++in_block == block_size) in_block = 0, ++block;
    return off;
  }
};

/* Pass 2 for query heads [g0, g0 + GN) of a task: out_g = sum_p w_g,p v_p, accumulated in registers. */
template <int NV, bool BF16, int GN>
static inline void weighted_values(const Args& a, const int64_t* table, int64_t ctx, int64_t kv_off,
                                   const float* scores, int64_t g0, float* out) {
  const int64_t D = 16 * NV;
  __m512 acc[GN][NV];
  for (int g = 0; g < GN; ++g)
    for (int i = 0; i < NV; ++i) acc[g][i] = _mm512_setzero_ps();
  RowWalk rows{table, a.block_size, a.kv_heads * D, kv_off};
  for (int64_t p = 0; p < ctx; ++p) {
    __m512 v[NV];
    load_row16<NV, BF16>(a.v_cache, rows.next(), v);
    for (int g = 0; g < GN; ++g) {
      const __m512 w = _mm512_set1_ps(scores[(g0 + g) * ctx + p]);
      for (int i = 0; i < NV; ++i) acc[g][i] = _mm512_fmadd_ps(w, v[i], acc[g][i]);
    }
  }
  for (int g = 0; g < GN; ++g)
    for (int i = 0; i < NV; ++i) _mm512_storeu_ps(out + (g0 + g) * D + 16 * i, acc[g][i]);
}

template <int NV, bool BF16>
static void run_tasks_avx512_t(const Args& a, int64_t task_begin, int64_t task_end, float* scratch) {
  constexpr int64_t D = 16 * NV;
  constexpr int GC = 16 / NV;   // query heads whose pass-2 accumulators fit in 16 registers
  const int64_t group = a.heads / a.kv_heads;
  for (int64_t task = task_begin; task < task_end; ++task) {
    const int64_t b = task / a.kv_heads, kvh = task % a.kv_heads, kv_off = kvh * D;
    const int64_t ctx = a.context_lens[b];
    const int64_t* table = a.tables + b * a.table_width;
    const float* q = a.q + (b * a.heads + kvh * group) * D;
    float* scores = scratch;   // [group, ctx]
    // Pass 1: scores = q . k * scale, four positions at a time per query head.
    RowWalk rows{table, a.block_size, a.kv_heads * D, kv_off};
    for (int64_t p0 = 0; p0 < ctx; p0 += 4) {
      const int n = ctx - p0 < 4 ? static_cast<int>(ctx - p0) : 4;
      __m512 k[4][NV];
      int64_t off = 0;
      for (int j = 0; j < 4; ++j) {
        if (j < n) off = rows.next();   // past the end: repeat the last row, its score unused
        load_row16<NV, BF16>(a.k_cache, off, k[j]);
      }
      for (int64_t g = 0; g < group; ++g) {
        __m512 acc[4];
        for (int j = 0; j < 4; ++j) {
          acc[j] = _mm512_mul_ps(k[j][0], _mm512_loadu_ps(q + g * D));
          for (int i = 1; i < NV; ++i)
            acc[j] = _mm512_fmadd_ps(k[j][i], _mm512_loadu_ps(q + g * D + 16 * i), acc[j]);
        }
        const __m128 s = _mm_mul_ps(sum4(acc[0], acc[1], acc[2], acc[3]), _mm_set1_ps(a.scale));
        _mm_mask_storeu_ps(scores + g * ctx + p0, static_cast<__mmask8>((1u << n) - 1), s);
      }
    }
    softmax_rows(scores, group, ctx);   // the body's softmax
    // Pass 2, GC query heads at a time.
    float* out = a.out + (b * a.heads + kvh * group) * D;
    for (int64_t g0 = 0; g0 < group; g0 += GC) {
      switch (group - g0 >= GC ? GC : group - g0) {
        case 1: weighted_values<NV, BF16, 1>(a, table, ctx, kv_off, scores, g0, out); break;
        case 2: weighted_values<NV, BF16, 2>(a, table, ctx, kv_off, scores, g0, out); break;
        case 3: weighted_values<NV, BF16, (GC >= 3 ? 3 : 1)>(a, table, ctx, kv_off, scores, g0, out); break;
        default: weighted_values<NV, BF16, GC>(a, table, ctx, kv_off, scores, g0, out); break;
      }
    }
  }
}

/* True if it ran the tasks (head_dim 64 or 128); else the caller runs the body's loops. */
static bool run_tasks_avx512(const Args& a, int64_t task_begin, int64_t task_end, float* scratch) {
  if (a.head_dim == 64) {
    a.bf16 ? run_tasks_avx512_t<4, true>(a, task_begin, task_end, scratch)
           : run_tasks_avx512_t<4, false>(a, task_begin, task_end, scratch);
    return true;
  }
  if (a.head_dim == 128) {
    a.bf16 ? run_tasks_avx512_t<8, true>(a, task_begin, task_end, scratch)
           : run_tasks_avx512_t<8, false>(a, task_begin, task_end, scratch);
    return true;
  }
  return false;
}
