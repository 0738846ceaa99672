/*
 * entropy_gate_cuda_warp.cuh: device helpers of the CUDA entropy gate (no torch header):
 * 64-bit sort keys, vector loads, and the warp-level top-k list operations.
 *
 * A sort key packs (value, id) so that a larger key means a larger logit, ties going to the
 * lower id: high word = float bits mapped to unsigned order (-0.0 folded onto +0.0), low word
 * = ~id. Keys are unique within a row and every real key is > 0, so 0 marks an empty slot.
 * Lists live in a warp's registers: lane j holds the j-th best key (list_len <= 32 entries,
 * lanes from list_len on hold 0); the list's "floor" is its last entry.
 */
#ifndef EAGER_CORE_ENTROPY_GATE_CUDA_WARP_CUH
#define EAGER_CORE_ENTROPY_GATE_CUDA_WARP_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "entropy_gate_math.h"

namespace eg_cuda {

constexpr unsigned kFull = 0xffffffffu;
typedef unsigned long long Key;  // the shuffle intrinsics have overloads for this exact type

__device__ __forceinline__ Key make_key(float v, int64_t id) {
  uint32_t u = __float_as_uint(v);
  if ((u << 1) == 0u) u = 0u;                        // -0.0 == +0.0: same key, tie by id
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);    // float order -> unsigned order
  return (Key(u) << 32) | Key(~uint32_t(id));        // lower id -> larger low word
}

__device__ __forceinline__ float key_value(Key k) {
  const uint32_t u = uint32_t(k >> 32);
  return __uint_as_float((u & 0x80000000u) ? (u & 0x7fffffffu) : ~u);
}

__device__ __forceinline__ int64_t key_id(Key k) { return int64_t(~uint32_t(k)); }

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

__device__ __forceinline__ void unpack16(uint32_t w, float* out, const __nv_bfloat16*) {
  out[0] = __uint_as_float(w << 16);
  out[1] = __uint_as_float(w & 0xffff0000u);
}
__device__ __forceinline__ void unpack16(uint32_t w, float* out, const __half*) {
  out[0] = __half2float(__ushort_as_half((unsigned short)(w & 0xffffu)));
  out[1] = __half2float(__ushort_as_half((unsigned short)(w >> 16)));
}

/* x[j] = row[i0 + j] for i0 + j < end, else -inf (neutral for max and sums). Eight elements:
 * one 16-byte load for 16-bit types, two for float, when kAligned (16-byte aligned rows). */
template <typename T, bool kAligned>
__device__ __forceinline__ void load_vec(const T* row, int64_t i0, int64_t end, float (&x)[8]) {
  if (kAligned && i0 + 8 <= end) {
    if constexpr (sizeof(T) == 4) {
      const float4 a = __ldg(reinterpret_cast<const float4*>(row + i0));
      const float4 b = __ldg(reinterpret_cast<const float4*>(row + i0) + 1);
      x[0] = a.x; x[1] = a.y; x[2] = a.z; x[3] = a.w;
      x[4] = b.x; x[5] = b.y; x[6] = b.z; x[7] = b.w;
    } else {
      const uint4 w = __ldg(reinterpret_cast<const uint4*>(row + i0));
      unpack16(w.x, x + 0, row); unpack16(w.y, x + 2, row);
      unpack16(w.z, x + 4, row); unpack16(w.w, x + 6, row);
    }
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j) x[j] = i0 + j < end ? to_float(row[i0 + j]) : -INFINITY;
  }
}

/* Insert into warp-held `list` (lane j = j-th best key, list_len entries, 0 = empty) every
 * candidate key beating the list's floor. Called by a whole warp. */
__device__ Key warp_merge(Key list, const Key* cand, int count, int list_len) {
  const int lane = threadIdx.x & 31;
  Key floor = __shfl_sync(kFull, list, list_len - 1);
  for (int base = 0; base < count; base += 32) {
    const Key mine = base + lane < count ? cand[base + lane] : 0ull;
    unsigned pending = __ballot_sync(kFull, mine > floor);
    while (pending) {
      const Key key = __shfl_sync(kFull, mine, __ffs(pending) - 1);
      // Entries above `key` form a prefix of the sorted list: its length is key's rank.
      const int pos = __popc(__ballot_sync(kFull, lane < list_len && list > key));
      const Key up = __shfl_up_sync(kFull, list, 1);
      if (lane < list_len) list = lane == pos ? key : (lane > pos ? up : list);
      floor = __shfl_sync(kFull, list, list_len - 1);
      pending &= pending - 1;
      pending &= __ballot_sync(kFull, mine > floor);
    }
  }
  return list;
}

/* Combine (m, S, T) across the lanes of a warp; every lane ends with the total. */
__device__ __forceinline__ void warp_combine(float& m, float& S, float& T) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float m2 = __shfl_xor_sync(kFull, m, off);
    const float S2 = __shfl_xor_sync(kFull, S, off);
    const float T2 = __shfl_xor_sync(kFull, T, off);
    eg_combine(m, S, T, m2, S2, T2);
  }
}

/* Sort 32 keys, one per lane, into descending lane order (bitonic network, 15 exchanges). */
__device__ __forceinline__ Key warp_sort_desc(Key v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int k = 2; k <= 32; k <<= 1) {
#pragma unroll
    for (int j = k >> 1; j > 0; j >>= 1) {
      const Key o = __shfl_xor_sync(kFull, v, j);
      // Within each k-run: descending when (lane & k) == 0, else ascending; at k = 32 every
      // lane is in the descending run. The lower lane of a pair takes the max when descending.
      const bool take_max = ((lane & j) == 0) == ((lane & k) == 0);
      v = take_max ? (v > o ? v : o) : (v > o ? o : v);
    }
  }
  return v;
}

/* Top list_len of the union of two descending lane-held lists (bitonic merge); lanes at and
 * beyond list_len come back 0 (empty). */
__device__ __forceinline__ Key warp_merge_sorted(Key list, Key sorted, int list_len) {
  const int lane = threadIdx.x & 31;
  const Key reversed = __shfl_sync(kFull, sorted, 31 - lane);
  Key v = list > reversed ? list : reversed;  // the top 32 of the union, as a bitonic sequence
#pragma unroll
  for (int j = 16; j > 0; j >>= 1) {
    const Key o = __shfl_xor_sync(kFull, v, j);
    v = (lane & j) == 0 ? (v > o ? v : o) : (v > o ? o : v);
  }
  return lane < list_len ? v : 0ull;
}

}  // namespace eg_cuda

#endif
