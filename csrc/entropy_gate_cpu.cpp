/*
 * entropy_gate_cpu.cpp: the CPU kernel of the fused entropy gate.
 *
 * Work items are (row, segment) pairs run with at::parallel_for; a row is split into segments
 * only when there are fewer rows than threads (B = 1 decode), since the per-segment summaries
 * combine exactly (eg_combine) and the top-k lists merge.
 *
 * One pass over memory per segment, chunk by chunk (kChunk floats = 8 KiB, L1-resident):
 *   1. chunk max (and NaN/+inf detection), vectorised;
 *   2. if the max grew, rescale the running (S, T) once, then the vectorised exp sums;
 *   3. top-k: the chunk is scanned for insertions only if its max beats the k-th best value
 *      seen so far (the floor), and then only its kScanBlock sub-blocks whose max (vectorised)
 *      beats the floor are scanned element by element. On a typical row the floor soon rises
 *      above almost everything: insertions number about k (1 + ln(V / k)).
 * bf16 / fp16 chunks are widened to float into a per-thread scratch buffer first.
 *
 * Top-k: a best-first insertion-sorted list of capacity min(top_k, kListMax), at least 2 (top-2)
 * and at least out_k (the entries written back for logprobs and confidence). Scanning in index
 * order and inserting only on strictly greater values keeps equal values in index order, so ties
 * resolve to the lower token id, deterministically.
 * For kListMax < top_k < vocab the list keeps only the top 2, and entropy_topk is computed
 * after the pass by std::nth_element over a float copy of the row (O(V) but a second read).
 */
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "entropy_gate.h"
#include "entropy_gate_cpu_simd.h"
#include "entropy_gate_math.h"

namespace eager_core {
namespace {

using simd::kChunk;
constexpr int64_t kListMax = 64;
static_assert(EG_MAX_OUT_K <= kListMax, "the list must hold every entry asked back");
constexpr int64_t kScanBlock = 128;  // top-k scan granularity inside a chunk
constexpr int64_t kMinSegment = 16 * kChunk;  // below 32K elements a split costs more than it saves
constexpr int64_t kMinParallelWork = 64 * 1024;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

/* Best-first list of (value, id); see the file comment for the tie rule. */
struct TopList {
  float* vals;
  int64_t* ids;
  int64_t cap;
  int64_t n = 0;

  bool full() const { return n == cap; }
  float floor_value() const { return vals[cap - 1]; }

  void offer(float v, int64_t id) {
    int64_t pos;
    if (n == cap) {
      if (!(v > vals[cap - 1])) return;
      pos = cap - 1;
    } else {
      pos = n++;
    }
    while (pos > 0 && vals[pos - 1] < v) {
      vals[pos] = vals[pos - 1];
      ids[pos] = ids[pos - 1];
      --pos;
    }
    vals[pos] = v;
    ids[pos] = id;
  }
};

/* Summary of one segment of a row. */
struct Segment {
  float m = kNegInf;
  double S = 0.0, T = 0.0;
  bool bad = false;
};

const float* chunk_as_float(const EgArgs& a, int64_t row, int64_t begin, int64_t n, float* scratch) {
  const int64_t offset = row * a.row_stride + begin;
  if (a.dtype == EG_FLOAT32) return static_cast<const float*>(a.logits) + offset;
  const uint16_t* src = static_cast<const uint16_t*>(a.logits) + offset;
  if (a.dtype == EG_BFLOAT16) simd::widen_bf16(src, n, scratch);
  else simd::widen_f16(src, n, scratch);
  return scratch;
}

void scan_segment(const EgArgs& a, int64_t row, int64_t begin, int64_t end, Segment& seg,
                  TopList& list, float* scratch) {
  for (int64_t c = begin; c < end; c += kChunk) {
    const int64_t n = std::min(kChunk, end - c);
    const float* x = chunk_as_float(a, row, c, n, scratch);
    const float cmax = simd::chunk_max(x, n, &seg.bad);
    if (cmax > kNegInf) {
      if (cmax > seg.m) {
        if (seg.S > 0.0) {
          const double d = double(seg.m) - double(cmax);
          const double r = std::exp(d);
          seg.T = r * (seg.T + d * seg.S);
          seg.S *= r;
        }
        seg.m = cmax;
      }
      float s, t;
      simd::chunk_sums(x, n, seg.m, &s, &t);
      seg.S += s;
      seg.T += t;
    }
    if (!list.full() || cmax > list.floor_value()) {
      // Narrow the scalar scan down to the sub-blocks that can still beat the floor.
      for (int64_t b = 0; b < n; b += kScanBlock) {
        const int64_t nb = std::min(kScanBlock, n - b);
        if (list.full() && !(simd::block_max(x + b, nb) > list.floor_value())) continue;
        for (int64_t i = b; i < b + nb; ++i) list.offer(x[i], c + i);
      }
    }
  }
}

/* entropy_topk for kListMax < top_k < vocab: the k largest values by selection, not a list. */
float topk_entropy_by_selection(const EgArgs& a, int64_t row, std::vector<float>& buf) {
  buf.resize(a.vocab);
  for (int64_t c = 0; c < a.vocab; c += kChunk) {
    const int64_t n = std::min(kChunk, a.vocab - c);
    const float* x = chunk_as_float(a, row, c, n, buf.data() + c);
    if (x != buf.data() + c) std::copy(x, x + n, buf.data() + c);
  }
  // Only called for NaN-free rows: NaN would break nth_element's strict weak ordering.
  std::nth_element(buf.begin(), buf.begin() + (a.top_k - 1), buf.end(), std::greater<float>());
  std::swap(buf[0], *std::max_element(buf.begin(), buf.begin() + a.top_k));
  return eg_list_entropy(buf.data(), a.top_k);
}

}  // namespace

void entropy_gate_cpu_run(const EgArgs& a) {
  const int64_t B = a.rows, V = a.vocab;
  if (B == 0) return;
  const bool select_after = a.top_k > kListMax && a.top_k < V;
  // The list also holds the out_k entries asked back (out_k <= EG_MAX_OUT_K <= kListMax).
  const int64_t wanted = std::max<int64_t>(2, a.out_k);
  const int64_t cap = select_after ? wanted : std::max(wanted, std::min(a.top_k, kListMax));

  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  int64_t nseg = 1;
  if (B < threads) nseg = std::min((threads + B - 1) / B, std::max<int64_t>(1, V / kMinSegment));
  int64_t seg_len = (V + nseg - 1) / nseg;
  seg_len = (seg_len + kChunk - 1) / kChunk * kChunk;
  nseg = (V + seg_len - 1) / seg_len;

  std::vector<Segment> segs(B * nseg);
  std::vector<float> vals(B * nseg * cap);
  std::vector<int64_t> ids(B * nseg * cap);
  std::vector<int64_t> counts(B * nseg);

  auto finish_row = [&](int64_t row, std::vector<float>& select_buf) {
    Segment total = segs[row * nseg];
    TopList merged{&vals[row * nseg * cap], &ids[row * nseg * cap], cap, counts[row * nseg]};
    for (int64_t s = 1; s < nseg; ++s) {
      const int64_t w = row * nseg + s;
      eg_combine(total.m, total.S, total.T, segs[w].m, segs[w].S, segs[w].T);
      total.bad = total.bad || segs[w].bad;
      // Later segments hold larger ids: offering them after keeps ties in id order.
      for (int64_t j = 0; j < counts[w]; ++j) merged.offer(vals[w * cap + j], ids[w * cap + j]);
    }
    float hk_outside = NAN;
    if (select_after && !total.bad && total.S > 0.0) hk_outside = topk_entropy_by_selection(a, row, select_buf);
    eg_finalize_row(a, row, total.m, total.S, total.T, total.bad, merged.vals, merged.ids,
                    static_cast<int>(merged.n), hk_outside);
  };

  // At least kMinParallelWork elements per task: below that, waking threads costs more.
  const int64_t grain = std::max<int64_t>(1, kMinParallelWork / seg_len);
  at::parallel_for(0, B * nseg, grain, [&](int64_t lo, int64_t hi) {
    std::vector<float> scratch(kChunk);
    std::vector<float> select_buf;
    for (int64_t w = lo; w < hi; ++w) {
      const int64_t row = w / nseg, s = w % nseg;
      TopList list{&vals[w * cap], &ids[w * cap], cap};
      scan_segment(a, row, s * seg_len, std::min(V, (s + 1) * seg_len), segs[w], list, scratch.data());
      counts[w] = list.n;
      if (nseg == 1) finish_row(row, select_buf);
    }
  });
  if (nseg > 1) {
    at::parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
      std::vector<float> select_buf;
      for (int64_t row = lo; row < hi; ++row) finish_row(row, select_buf);
    });
  }
}

}  // namespace eager_core
