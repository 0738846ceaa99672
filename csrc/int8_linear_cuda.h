/*
 * int8_linear_cuda.h: plain-C launch interface of the CUDA weight-only int8 kernel
 * (int8_linear_cuda.cu), so the .cu file needs no torch header and CI can compile it alone.
 *
 * y [M, N] = x [M, K] @ (qweight [N, K] * scales [N, K / group] + offsets)^T + bias, for few rows
 * (M <= I8_CUDA_MAX_ROWS: decode steps). x, bias and y share one dtype (float32, bfloat16 or
 * float16); accumulation is float32. More rows: the caller dequantizes and runs cuBLAS.
 */
#ifndef EAGER_CORE_INT8_LINEAR_CUDA_H
#define EAGER_CORE_INT8_LINEAR_CUDA_H

#include <stdint.h>

#define I8_CUDA_MAX_ROWS 8

#ifdef __cplusplus
extern "C" {
#endif

enum I8Dtype { I8_F32 = 0, I8_BF16 = 1, I8_F16 = 2 };

typedef struct I8CudaArgs {
  const void* x;        /* [M, K], dtype */
  const int8_t* w;      /* [N, K] */
  const uint16_t* scales;  /* [N, K / group], IEEE float16 bits */
  const uint16_t* offsets; /* like the scales, or NULL: weight = q * scale + offset */
  const void* bias;     /* [N], dtype, or NULL */
  void* y;              /* [M, N], dtype */
  int64_t M, N, K, group;
  int dtype;            /* I8Dtype */
} I8CudaArgs;

/* Launches on `stream` (a cudaStream_t). Returns 0, or a cudaError_t value (see i8_cuda_error_string). */
int i8_cuda_launch(const I8CudaArgs* args, void* stream);
const char* i8_cuda_error_string(int code);

#ifdef __cplusplus
}
#endif

#endif
