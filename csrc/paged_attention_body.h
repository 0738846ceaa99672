/*
 * paged_attention_body.h: the loops of paged_attention.h, written for the auto-vectoriser and
 * included once per instruction set by paged_attention_cpu.cpp (so no inline function here is
 * shared between translation units). Two passes per (sequence, kv head): scores of every context
 * position for the group's query heads, then softmax weights times values.
 */

static inline float load_elem(const void* base, int64_t i, bool bf16) {
  if (!bf16) return static_cast<const float*>(base)[i];
  uint32_t bits = static_cast<uint32_t>(static_cast<const uint16_t*>(base)[i]) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

/* dst[0..n) = row (float32 or widened bf16). */
static inline void widen_row(const void* base, int64_t offset, int64_t n, bool bf16, float* dst) {
  if (!bf16) {
    std::memcpy(dst, static_cast<const float*>(base) + offset, n * sizeof(float));
    return;
  }
  const uint16_t* src = static_cast<const uint16_t*>(base) + offset;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits = static_cast<uint32_t>(src[i]) << 16;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    dst[i] = f;
  }
}

static void run_tasks(const Args& a, int64_t task_begin, int64_t task_end, float* scratch) {
  const int64_t D = a.head_dim, group = a.heads / a.kv_heads, bs = a.block_size;
  const int64_t row_stride = a.kv_heads * D;   // elements between consecutive slots
  float kv_row[512];                           // head_dim <= 512 (checked by the binding)
  for (int64_t task = task_begin; task < task_end; ++task) {
    const int64_t b = task / a.kv_heads, kvh = task % a.kv_heads;
    const int64_t ctx = a.context_lens[b];
    const int64_t* table = a.tables + b * a.table_width;
    const float* q = a.q + (b * a.heads + kvh * group) * D;    // the group's query heads, contiguous
    float* scores = scratch;                                    // [group, ctx]
    // Pass 1: scores = q . k * scale for every position, per query head of the group.
    for (int64_t p = 0; p < ctx; ++p) {
      const int64_t slot = table[p / bs] * bs + p % bs;
      widen_row(a.k_cache, slot * row_stride + kvh * D, D, a.bf16, kv_row);
      for (int64_t g = 0; g < group; ++g) {
        const float* qg = q + g * D;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t d = 0; d < D; ++d) s += qg[d] * kv_row[d];
        scores[g * ctx + p] = s * a.scale;
      }
    }
    // Softmax per query head (max-subtracted, like every reference implementation).
    for (int64_t g = 0; g < group; ++g) {
      float* sg = scores + g * ctx;
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t p = 0; p < ctx; ++p) m = sg[p] > m ? sg[p] : m;
      float sum = 0.0f;
      for (int64_t p = 0; p < ctx; ++p) {
        sg[p] = std::exp(sg[p] - m);
        sum += sg[p];
      }
      const float inv = 1.0f / sum;
      for (int64_t p = 0; p < ctx; ++p) sg[p] *= inv;
    }
    // Pass 2: out = sum_p weight_p * v_p.
    float* out = a.out + (b * a.heads + kvh * group) * D;
    for (int64_t i = 0; i < group * D; ++i) out[i] = 0.0f;
    for (int64_t p = 0; p < ctx; ++p) {
      const int64_t slot = table[p / bs] * bs + p % bs;
      widen_row(a.v_cache, slot * row_stride + kvh * D, D, a.bf16, kv_row);
      for (int64_t g = 0; g < group; ++g) {
        const float w = scores[g * ctx + p];
        float* og = out + g * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) og[d] += w * kv_row[d];
      }
    }
  }
}
