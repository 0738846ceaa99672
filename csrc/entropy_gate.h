/*
 * entropy_gate.h: the plain-C interface between the torch bindings and the kernels.
 *
 * No torch header may be included here: the CUDA translation unit (entropy_gate_cuda.cu)
 * includes this file and must compile with a bare `nvcc -c`. Everything crosses this
 * boundary as raw pointers and integers.
 *
 * Invariants the callers guarantee:
 *   - logits is a [rows, vocab] matrix whose last dimension is contiguous; row r starts at
 *     element r * row_stride (row_stride >= vocab);
 *   - every output pointer addresses `rows` (or 2 * rows for the top-2 arrays) elements on the
 *     same device as logits;
 *   - thresholds is NULL (then `threshold` applies to every row) or addresses `rows` floats;
 *   - vocab >= 1, top_k >= 1, vocab < 2^31 (token ids fit in 31 bits: the CUDA kernel packs
 *     (value, id) into one 64-bit sort key).
 */
#ifndef EAGER_CORE_ENTROPY_GATE_H
#define EAGER_CORE_ENTROPY_GATE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Element type of the logits. */
enum EgDtype { EG_FLOAT32 = 0, EG_BFLOAT16 = 1, EG_FLOAT16 = 2 };

/* Per-row outputs. Entropies are in nats. top2 arrays are row-major [rows, 2]. */
typedef struct EgOutputs {
  float* entropy;        /* full-vocabulary Shannon entropy */
  float* entropy_topk;   /* entropy of the renormalised top_k tokens */
  int64_t* top2_ids;     /* -1 where the row has a single token */
  float* top2_logprobs;  /* log-probability under the full distribution; -inf for id -1 */
  float* logsumexp;      /* log of the softmax normaliser */
  bool* branch;          /* chosen entropy > threshold, never true for a row with NaN/+inf */
  bool* has_nan;         /* the row holds a NaN or +inf logit */
  /* The best-first list itself, as [rows, out_k] log-probabilities under the full distribution
   * and ids (what logprobs and DeepConf's confidence read); -1 / -inf pad a vocabulary smaller
   * than out_k, NaN marks a has_nan row. Unused (may be NULL) when out_k == 0. */
  int64_t* topk_ids;
  float* topk_logprobs;
} EgOutputs;

typedef struct EgArgs {
  const void* logits;
  int64_t rows;
  int64_t vocab;
  int64_t row_stride;      /* in elements */
  int dtype;               /* an EgDtype */
  const float* thresholds; /* NULL or [rows] */
  float threshold;         /* used when thresholds is NULL */
  int64_t top_k;
  int use_topk;            /* 1: branch on entropy_topk, 0: on the full entropy */
  int64_t out_k;           /* 0 .. EG_MAX_OUT_K entries of the top list written per row */
  EgOutputs out;
} EgArgs;

/* Most top-list entries a call may ask back (out_k). Both kernels keep a list at least this long
 * (the CUDA one holds EG_CUDA_MAX_LIST), so asking for them costs no second pass. */
#define EG_MAX_OUT_K 32

/* Largest top_k the CUDA kernel selects itself (one list entry per warp lane). For a larger
 * top_k below vocab the kernel leaves entropy_topk (and, when use_topk, branch) to the caller. */
#define EG_CUDA_MAX_LIST 32

/* How many blocks split one row on the GPU, given the number of multiprocessors. */
int eg_cuda_splits(int64_t rows, int64_t vocab, int sm_count);

/* Bytes of device scratch memory eg_cuda_launch needs for this many splits (0 when 1). */
size_t eg_cuda_workspace_bytes(int64_t rows, int splits);

/* Launch the fused kernel(s) on `stream` (a cudaStream_t). `workspace` must hold
 * eg_cuda_workspace_bytes(rows, splits) bytes. Returns a cudaError_t value (0 = success). */
int eg_cuda_launch(const EgArgs* args, int splits, void* workspace, void* stream);

/* Human-readable text for a value returned by eg_cuda_launch. */
const char* eg_cuda_error_string(int code);

#ifdef __cplusplus
}
#endif

#endif /* EAGER_CORE_ENTROPY_GATE_H */
