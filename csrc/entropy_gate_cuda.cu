/*
 * entropy_gate_cuda.cu: the CUDA kernel of the fused entropy gate. No torch header: it is
 * launched through the plain-C eg_cuda_launch (entropy_gate.h), and CI compile-checks this
 * file alone with `nvcc -c`.
 *
 * Grid: blockIdx.x = row, blockIdx.y = split. Each block of kThreads reads one slice of a row
 * exactly once, tile by tile (kTile = kThreads * kVec elements, kVec consecutive per thread,
 * vector loads when aligned, the next tile prefetched into registers while this one is used):
 *   - each thread keeps an online (max m, S = sum e^(x-m), T = sum e^(x-m)(x-m)) summary;
 *   - top-k: the block's best list_len keys live in warp 0's registers (lane j holds the
 *     j-th best). The first tile seeds the list with the best thread maxima (bitonic sort per
 *     warp, bitonic merges across warps). Then every thread proposes its elements whose key
 *     beats the list's last entry (the "floor", read from shared memory) into a shared
 *     candidate buffer, and warp 0 inserts them with ballot/shuffle, raising the floor as it
 *     goes. Insertions total about k (1 + ln(tiles)); a tile without candidates costs one
 *     __syncthreads and no merge.
 *   - the summaries are reduced over warps with eg_combine; warp 0 writes the row's outputs
 *     (one split) or a Partial record merged by gate_finalize_kernel (several splits).
 * A sort key packs (value, id) into 64 bits so that "larger key" means larger logit, ties to
 * the lower id; it makes the candidate order irrelevant and the result deterministic.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "entropy_gate.h"
#include "entropy_gate_cuda_warp.cuh"
#include "entropy_gate_math.h"

namespace {

using namespace eg_cuda;  // NOLINT: Key, make_key, load_vec, warp_* helpers

static_assert(EG_MAX_OUT_K <= EG_CUDA_MAX_LIST, "the warp list must hold every entry asked back");
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kVec = 8;
constexpr int kTile = kThreads * kVec;
constexpr int kMaxSplits = 32;  // gate_finalize_kernel reads one split per lane
constexpr int64_t kMinSlice = 4 * kTile;

struct Partial {
  float m, S, T;
  int bad;
  Key keys[EG_CUDA_MAX_LIST];
};

/* Lane 0 of a warp writes row `row` from the warp's list (staged through shared memory). */
__device__ void finalize_from_keys(const EgArgs& a, int64_t row, float m, float S, float T, bool bad,
                                   const Key* keys, int list_len) {
  float vals[EG_CUDA_MAX_LIST];
  int64_t ids[EG_CUDA_MAX_LIST];
  int n = 0;
  for (int j = 0; j < list_len && keys[j] != 0ull; ++j, ++n) {
    vals[j] = key_value(keys[j]);
    ids[j] = key_id(keys[j]);
  }
  eg_finalize_row(a, row, m, double(S), double(T), bad, vals, ids, n, NAN);
}

template <typename T, bool kAligned>
__global__ void __launch_bounds__(kThreads)
gate_rows_kernel(EgArgs a, int splits, int64_t slice, int list_len, Partial* parts) {
  __shared__ Key s_cand[kTile];
  __shared__ int s_count[3];  // rotating candidate counters, see the reset below
  __shared__ Key s_floor;
  __shared__ float s_m[kWarps], s_S[kWarps], s_T[kWarps];
  __shared__ Key s_list[32];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t row = blockIdx.x;
  const int split = blockIdx.y;
  const T* p = static_cast<const T*>(a.logits) + row * a.row_stride;
  const int64_t begin = int64_t(split) * slice;
  const int64_t end = begin + slice < a.vocab ? begin + slice : a.vocab;

  if (tid < 3) s_count[tid] = 0;
  if (tid == 0) s_floor = 0ull;
  Key list = 0ull;  // meaningful in warp 0 only
  __syncthreads();

  float m = -INFINITY, S = 0.0f, T_ = 0.0f;
  bool bad = false;
  float x[kVec], nx[kVec];
  Key seed = 0ull;
  int64_t i0 = begin + tid * kVec;
  load_vec<T, kAligned>(p, i0, end, x);
  int it = 0;
  for (int64_t base = begin; base < end; base += kTile, i0 += kTile, ++it) {
    if (base + kTile < end) load_vec<T, kAligned>(p, i0 + kTile, end, nx);  // in flight meanwhile

    float lm = -INFINITY;
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      lm = fmaxf(lm, x[j]);        // ignores NaN
      bad |= !(x[j] < INFINITY);   // NaN or +inf; padding is -inf
    }
    if (lm > m) {
      if (S > 0.0f) {
        const float d = m - lm, r = __expf(d);
        T_ = r * (T_ + d * S);
        S *= r;
      }
      m = lm;
    }
    if (m > -INFINITY) {
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        const float d = x[j] - m, e = __expf(d);
        S += e;
        T_ += e > 0.0f ? e * d : 0.0f;  // -inf padding/masks: e = 0, never 0 * -inf
      }
    }

    if (it == 0) {
      // Seed the list with the best list_len thread maxima of the first tile: real elements,
      // so the floor starts near the tile's top instead of at 0, and the first tile proposes
      // a handful of candidates instead of all kTile elements.
      for (int j = 0; j < kVec; ++j)
        if (i0 + j < end) seed = max(seed, make_key(x[j], i0 + j));
      s_cand[tid] = warp_sort_desc(seed);
      __syncthreads();
      if (warp == 0) {
        list = lane < list_len ? s_cand[lane] : 0ull;
        for (int w = 1; w < kWarps; ++w) list = warp_merge_sorted(list, s_cand[w * 32 + lane], list_len);
        const Key f = __shfl_sync(kFull, list, list_len - 1);
        if (lane == 0) s_floor = f;
      }
      __syncthreads();
    }

    // Propose candidates, one shared atomic per warp and vector slot. A thread's seed is
    // never proposed: it is in the list already, or below the floor.
    const Key floor = s_floor;
    const bool open = floor == 0ull;  // list not full: everything is a candidate
    const float floor_value = open ? -INFINITY : key_value(floor);
    int* cnt = &s_count[it % 3];
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      bool pass = false;
      Key k = 0ull;
      if (i0 + j < end && (open || x[j] >= floor_value)) {  // cheap float test first
        k = make_key(x[j], i0 + j);
        pass = k > floor && k != seed;
      }
      const unsigned mask = __ballot_sync(kFull, pass);
      if (mask) {
        int first = 0;
        if (lane == 0) first = atomicAdd(cnt, __popc(mask));
        first = __shfl_sync(kFull, first, 0);
        if (pass) s_cand[first + __popc(mask & ((1u << lane) - 1u))] = k;
      }
    }
    seed = 0ull;  // later tiles have no seeds
    __syncthreads();
    const int c = *cnt;
    // Counter it+2 was last read in tile it-1 (before the barrier above) and is next written
    // in tile it+2 (after at least one more barrier), so resetting it here races with nobody.
    if (tid == 0) s_count[(it + 2) % 3] = 0;
    if (c > 0) {  // block-uniform
      if (warp == 0) {
        list = warp_merge(list, s_cand, c, list_len);
        const Key f = __shfl_sync(kFull, list, list_len - 1);
        if (lane == 0) s_floor = f;
      }
      __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < kVec; ++j) x[j] = nx[j];
  }

  warp_combine(m, S, T_);
  if (lane == 0) { s_m[warp] = m; s_S[warp] = S; s_T[warp] = T_; }
  bad = __syncthreads_or(bad) != 0;
  if (warp != 0) return;
  m = lane < kWarps ? s_m[lane] : -INFINITY;
  S = lane < kWarps ? s_S[lane] : 0.0f;
  T_ = lane < kWarps ? s_T[lane] : 0.0f;
  warp_combine(m, S, T_);
  if (splits == 1) {
    s_list[lane] = list;
    __syncwarp();
    if (lane == 0) finalize_from_keys(a, row, m, S, T_, bad, s_list, list_len);
  } else {
    Partial& out = parts[row * splits + split];
    out.keys[lane] = list;
    if (lane == 0) { out.m = m; out.S = S; out.T = T_; out.bad = bad; }
  }
}

/* One warp per row: combine the splits' summaries and lists, then write the outputs. */
__global__ void __launch_bounds__(32) gate_finalize_kernel(EgArgs a, int splits, int list_len, const Partial* parts) {
  __shared__ Key s_list[32];
  const int lane = threadIdx.x;
  const int64_t row = blockIdx.x;
  const Partial* rp = parts + row * splits;
  float m = -INFINITY, S = 0.0f, T = 0.0f;
  int bad = 0;
  if (lane < splits) { m = rp[lane].m; S = rp[lane].S; T = rp[lane].T; bad = rp[lane].bad; }
  warp_combine(m, S, T);
  bad = __any_sync(kFull, bad);
  Key list = 0ull;
  for (int s = 0; s < splits; ++s) list = warp_merge(list, rp[s].keys, list_len, list_len);
  s_list[lane] = list;
  __syncwarp();
  if (lane == 0) finalize_from_keys(a, row, m, S, T, bad != 0, s_list, list_len);
}

template <typename T>
void launch_rows(const EgArgs& a, int splits, int64_t slice, int list_len, Partial* parts, cudaStream_t st) {
  const size_t elem = sizeof(T);
  const bool aligned = reinterpret_cast<uintptr_t>(a.logits) % 16 == 0 && (a.row_stride * elem) % 16 == 0;
  const dim3 grid(unsigned(a.rows), unsigned(splits));
  if (aligned) gate_rows_kernel<T, true><<<grid, kThreads, 0, st>>>(a, splits, slice, list_len, parts);
  else gate_rows_kernel<T, false><<<grid, kThreads, 0, st>>>(a, splits, slice, list_len, parts);
}

int64_t slice_length(int64_t vocab, int splits) {
  const int64_t s = (vocab + splits - 1) / splits;
  return (s + kTile - 1) / kTile * kTile;
}

/* Blocks of gate_rows_kernel one multiprocessor holds at once (registers bound it: 48 per
 * thread gives 5 blocks of 256 threads on sm_90). Asked once per process. */
int resident_blocks_per_sm() {
  static const int blocks = [] {
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, gate_rows_kernel<float, true>, kThreads, 0) != cudaSuccess || n < 1) {
      cudaGetLastError();  // clear the error: the caller's next launch must not see it
      n = 4;
    }
    return n;
  }();
  return blocks;
}

}  // namespace

extern "C" int eg_cuda_splits(int64_t rows, int64_t vocab, int sm_count) {
  // Enough blocks to fill every multiprocessor once (one wave): all of them streaming keeps
  // loads in flight for HBM even while some wait on a top-k merge, and no second partial
  // wave. Splitting a row below kMinSlice elements only adds merge work.
  if (rows <= 0) return 1;
  const int64_t wave = int64_t(resident_blocks_per_sm()) * int64_t(sm_count > 0 ? sm_count : 1);
  int64_t s = wave / rows;  // rounded down: rows * s blocks never exceed one wave
  const int64_t by_len = vocab / kMinSlice;
  if (s > by_len) s = by_len;
  if (s > kMaxSplits) s = kMaxSplits;
  if (s < 1) s = 1;
  return int(s);
}

extern "C" size_t eg_cuda_workspace_bytes(int64_t rows, int splits) {
  return splits > 1 ? size_t(rows) * size_t(splits) * sizeof(Partial) : 0;
}

extern "C" int eg_cuda_launch(const EgArgs* args, int splits, void* workspace, void* stream) {
  const EgArgs& a = *args;
  if (a.rows == 0) return 0;
  if (splits < 1 || splits > kMaxSplits) return int(cudaErrorInvalidValue);
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  const int64_t slice = slice_length(a.vocab, splits);
  const int used = int((a.vocab + slice - 1) / slice);  // rounding the slice up may drop a split
  int list_len = int(a.top_k < 2 ? 2 : (a.top_k > EG_CUDA_MAX_LIST ? EG_CUDA_MAX_LIST : a.top_k));
  if (a.out_k > list_len) list_len = int(a.out_k);  // the entries asked back (<= EG_MAX_OUT_K)
  if (a.out_k < 0 || a.out_k > EG_MAX_OUT_K) return int(cudaErrorInvalidValue);
  Partial* parts = static_cast<Partial*>(workspace);
  switch (a.dtype) {
    case EG_FLOAT32: launch_rows<float>(a, used, slice, list_len, parts, st); break;
    case EG_BFLOAT16: launch_rows<__nv_bfloat16>(a, used, slice, list_len, parts, st); break;
    case EG_FLOAT16: launch_rows<__half>(a, used, slice, list_len, parts, st); break;
    default: return int(cudaErrorInvalidValue);
  }
  if (used > 1) gate_finalize_kernel<<<unsigned(a.rows), 32, 0, st>>>(a, used, list_len, parts);
  return int(cudaGetLastError());
}

extern "C" const char* eg_cuda_error_string(int code) {
  return cudaGetErrorString(static_cast<cudaError_t>(code));
}
