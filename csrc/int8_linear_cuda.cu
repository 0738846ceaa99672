/*
 * int8_linear_cuda.cu: the CUDA kernel of weight-only int8 linear for decode-sized inputs
 * (M <= I8_CUDA_MAX_ROWS rows). No torch header: launched through i8_cuda_launch
 * (int8_linear_cuda.h); tools/check_cuda_compile.sh compiles this file alone with nvcc.
 *
 * One warp per output column n (weight row), kWarps per block. Each lane reads 16 int8 weights
 * at a time (one 16-byte load; a warp covers 512 consecutive bytes of the row per iteration, so
 * the loads coalesce), widens them to float32, applies the group's scale, and multiplies them by
 * the matching 16 values of every row of x (read through L1/L2: x is at most 8 x K and shared by
 * all blocks). Per-row sums are reduced over the warp with shuffles; lane 0 adds the bias and
 * writes y in x's dtype. The weight is streamed from HBM once, as float never exists in memory.
 * Rows with K or the group not a multiple of 16 (or unaligned pointers) take a scalar loop.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "int8_linear_cuda.h"

namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half(v); }

/* 16 consecutive values of x at a 16-element-aligned position, as float32. */
__device__ __forceinline__ void load16(const float* p, float* out) {
  const float4* v = reinterpret_cast<const float4*>(p);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float4 f = v[i];
    out[4 * i] = f.x, out[4 * i + 1] = f.y, out[4 * i + 2] = f.z, out[4 * i + 3] = f.w;
  }
}

template <typename T>  // bfloat16 or half: two 16-byte loads of 8 values
__device__ __forceinline__ void load16(const T* p, float* out) {
  const uint4* v = reinterpret_cast<const uint4*>(p);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const uint4 u = v[h];
    const T* e = reinterpret_cast<const T*>(&u);
#pragma unroll
    for (int i = 0; i < 8; ++i) out[8 * h + i] = to_f(e[i]);
  }
}

/* A scale or offset: IEEE float16 bits, as stored (eager_core/ops/int8_linear.py). */
__device__ __forceinline__ float half_bits(uint16_t h) { return __half2float(__ushort_as_half(h)); }

template <typename T, bool VEC>
__global__ void __launch_bounds__(kThreads) i8_gemv(const T* __restrict__ x, const int8_t* __restrict__ w,
                                                    const uint16_t* __restrict__ scales,
                                                    const uint16_t* __restrict__ offsets, const T* __restrict__ bias,
                                                    T* __restrict__ y, int M, int64_t N, int64_t K, int64_t group) {
  const int lane = threadIdx.x & 31;
  const int64_t n = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (n >= N) return;  // whole warps exit together: no shuffle below is left with missing lanes
  const int8_t* wr = w + n * K;
  const uint16_t* sr = scales + n * (K / group);
  const uint16_t* zr = offsets ? offsets + n * (K / group) : nullptr;  // weight = q * s + z (z = 0: q * s exactly)
  float acc[I8_CUDA_MAX_ROWS];
#pragma unroll
  for (int m = 0; m < I8_CUDA_MAX_ROWS; ++m) acc[m] = 0.0f;
  if (VEC) {
    for (int64_t k = int64_t(lane) * 16; k < K; k += 32 * 16) {
      const int4 q4 = __ldg(reinterpret_cast<const int4*>(wr + k));
      const int8_t* q = reinterpret_cast<const int8_t*>(&q4);
      const float s = half_bits(sr[k / group]), z = zr ? half_bits(zr[k / group]) : 0.0f;
      float wf[16];
#pragma unroll
      for (int i = 0; i < 16; ++i) wf[i] = fmaf(float(q[i]), s, z);
#pragma unroll
      for (int m = 0; m < I8_CUDA_MAX_ROWS; ++m) {
        if (m < M) {
          float xv[16];
          load16(x + m * K + k, xv);
          float a = 0.0f;
#pragma unroll
          for (int i = 0; i < 16; ++i) a = fmaf(xv[i], wf[i], a);
          acc[m] += a;
        }
      }
    }
  } else {
    for (int64_t k = lane; k < K; k += 32) {
      const float wv = fmaf(float(wr[k]), half_bits(sr[k / group]), zr ? half_bits(zr[k / group]) : 0.0f);
#pragma unroll
      for (int m = 0; m < I8_CUDA_MAX_ROWS; ++m)
        if (m < M) acc[m] = fmaf(to_f(x[m * K + k]), wv, acc[m]);
    }
  }
#pragma unroll
  for (int m = 0; m < I8_CUDA_MAX_ROWS; ++m) {
    if (m >= M) break;
    float v = acc[m];
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    if (lane == 0) y[m * N + n] = from_f<T>(v + (bias ? to_f(bias[n]) : 0.0f));
  }
}

template <typename T>
int launch(const I8CudaArgs& a, cudaStream_t stream) {
  const bool aligned = ((reinterpret_cast<uintptr_t>(a.x) | reinterpret_cast<uintptr_t>(a.w)) & 15) == 0;
  const bool vec = aligned && a.K % 16 == 0 && a.group % 16 == 0;
  const dim3 grid(static_cast<unsigned>((a.N + kWarps - 1) / kWarps));
  const T* x = static_cast<const T*>(a.x);
  const T* b = static_cast<const T*>(a.bias);
  T* y = static_cast<T*>(a.y);
  if (vec)
    i8_gemv<T, true><<<grid, kThreads, 0, stream>>>(x, a.w, a.scales, a.offsets, b, y, int(a.M), a.N, a.K, a.group);
  else
    i8_gemv<T, false><<<grid, kThreads, 0, stream>>>(x, a.w, a.scales, a.offsets, b, y, int(a.M), a.N, a.K, a.group);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

extern "C" int i8_cuda_launch(const I8CudaArgs* a, void* stream) {
  if (a->M < 1 || a->M > I8_CUDA_MAX_ROWS || a->N < 1 || a->K < 1 || a->group < 1 || a->K % a->group != 0)
    return static_cast<int>(cudaErrorInvalidValue);
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (a->dtype) {
    case I8_F32: return launch<float>(*a, s);
    case I8_BF16: return launch<__nv_bfloat16>(*a, s);
    case I8_F16: return launch<__half>(*a, s);
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
}

extern "C" const char* i8_cuda_error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }
