/*
 * paged_attention_body.h: the loops of paged_attention.h, written for the auto-vectoriser
 * (`omp simd` loops of plain arithmetic) and included once per instruction set by
 * paged_attention_cpu.cpp, so no inline function here is shared between translation units.
 * Two passes per (sequence, kv head): the scores of every context position for the group's
 * query heads, then softmax weights times values.
 */

/* exp(d) for d <= 0, relative error ~2e-7, and exactly 0 below -87 (where expf underflows).
 * d = n ln2 + r, |r| <= ln2/2; exp(r) by a degree-6 Taylor polynomial; 2^n built in the exponent
 * bits. Plain arithmetic, so a simd loop over it vectorises (std::exp would stay a scalar call). */
static inline float exp_nonpositive(float d) {
  const bool tiny = d < -87.0f;
  d = tiny ? -87.0f : d;
  const float shifter = 12582912.0f;            // 1.5 * 2^23: adding it rounds to an integer
  const float n = (d * 1.44269504088896341f + shifter) - shifter;
  const float r = (d - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float scale = __builtin_bit_cast(float, static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);
  return tiny ? 0.0f : p * scale;
}

/* Softmax of each of `rows` score rows of length ctx, in place: max-subtracted, like every reference
 * implementation, then one division per row. Shared by both attention kernels' pass 1 -> pass 2. */
static inline void softmax_rows(float* scores, int64_t rows, int64_t ctx) {
  for (int64_t g = 0; g < rows; ++g) {
    float* sg = scores + g * ctx;
    float m = sg[0];
    for (int64_t p = 1; p < ctx; ++p) m = sg[p] > m ? sg[p] : m;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t p = 0; p < ctx; ++p) {
      sg[p] = exp_nonpositive(sg[p] - m);
      sum += sg[p];
    }
    const float inv = 1.0f / sum;
#pragma omp simd
    for (int64_t p = 0; p < ctx; ++p) sg[p] *= inv;
  }
}

/* Row `offset` of a cache as float32: the row itself, or `buf` holding its widened bf16 values. */
static inline const float* row_f32(const void* base, int64_t offset, int64_t n, bool bf16, float* buf) {
  if (!bf16) return static_cast<const float*>(base) + offset;
  const uint16_t* src = static_cast<const uint16_t*>(base) + offset;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) buf[i] = __builtin_bit_cast(float, static_cast<uint32_t>(src[i]) << 16);
  return buf;
}

/* D_FIXED > 0 makes head_dim a compile-time constant: the per-position dot products and updates
 * then unroll into a few full-width vector instructions with no loop epilogue, which is most of
 * the kernel's time at head_dim 64 or 128. D_FIXED == 0 handles any head_dim. */
template <int D_FIXED>
static void run_tasks_t(const Args& a, int64_t task_begin, int64_t task_end, float* scratch) {
  const int64_t D = D_FIXED > 0 ? D_FIXED : a.head_dim, group = a.heads / a.kv_heads, bs = a.block_size;
  const int64_t row_stride = a.kv_heads * D;   // elements between consecutive slots
  alignas(64) float kv_buf[512];               // head_dim <= 512 (checked by the binding)
  for (int64_t task = task_begin; task < task_end; ++task) {
    const int64_t b = task / a.kv_heads, kvh = task % a.kv_heads;
    const int64_t ctx = a.context_lens[b];
    const int64_t* table = a.tables + b * a.table_width;
    const float* q = a.q + (b * a.heads + kvh * group) * D;    // the group's query heads, contiguous
    float* scores = scratch;                                    // [group, ctx]
    // Pass 1: scores = q . k * scale for every position, per query head of the group.
    for (int64_t p = 0; p < ctx; ++p) {
      const int64_t slot = table[p / bs] * bs + p % bs;
      const float* k = row_f32(a.k_cache, slot * row_stride + kvh * D, D, a.bf16, kv_buf);
      for (int64_t g = 0; g < group; ++g) {
        const float* qg = q + g * D;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t d = 0; d < D; ++d) s += qg[d] * k[d];
        scores[g * ctx + p] = s * a.scale;
      }
    }
    softmax_rows(scores, group, ctx);
    // Pass 2: out = sum_p weight_p * v_p.
    float* out = a.out + (b * a.heads + kvh * group) * D;
    for (int64_t i = 0; i < group * D; ++i) out[i] = 0.0f;
    for (int64_t p = 0; p < ctx; ++p) {
      const int64_t slot = table[p / bs] * bs + p % bs;
      const float* v = row_f32(a.v_cache, slot * row_stride + kvh * D, D, a.bf16, kv_buf);
      for (int64_t g = 0; g < group; ++g) {
        const float w = scores[g * ctx + p];
        float* og = out + g * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) og[d] += w * v[d];
      }
    }
  }
}

static void run_tasks(const Args& a, int64_t task_begin, int64_t task_end, float* scratch) {
  if (a.head_dim == 64) return run_tasks_t<64>(a, task_begin, task_end, scratch);
  if (a.head_dim == 128) return run_tasks_t<128>(a, task_begin, task_end, scratch);
  run_tasks_t<0>(a, task_begin, task_end, scratch);
}
