/*
 * entropy_gate_cuda_binding.cpp: the CUDA implementation of eager_core::entropy_gate. Compiled
 * only in CUDA builds (setup.py). It allocates outputs and scratch with torch, launches the
 * kernel on the current stream through the plain-C eg_cuda_launch, and covers the one case the
 * kernel leaves open: EG_CUDA_MAX_LIST < top_k < vocab, where entropy_topk (and a top-k branch)
 * are computed here from at::topk.
 */
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>

#include "entropy_gate.h"
#include "entropy_gate_binding.h"

namespace eager_core {
namespace {

/* entropy_topk for a top_k the kernel's 32-entry list cannot hold; same conventions. */
void large_topk_entropy(PreparedGate& g) {
  const EgArgs& a = g.args;
  const at::Tensor vals = std::get<0>(at::topk(g.logits.to(at::kFloat), a.top_k, 1, true, false));
  const at::Tensor shifted = vals - std::get<0>(vals.max(1, true));
  const at::Tensor logp = shifted - at::logsumexp(shifted, {1}, true);
  const at::Tensor p = logp.exp();
  at::Tensor hk = -at::where(p > 0, p * logp, at::zeros_like(p)).sum(1);
  hk = hk.clamp_min(0.0);
  const at::Tensor empty = g.logsumexp == -std::numeric_limits<float>::infinity();
  hk = at::where(empty, at::zeros_like(hk), hk);
  hk = at::where(g.has_nan, at::full_like(hk, std::numeric_limits<float>::quiet_NaN()), hk);
  g.entropy_topk.copy_(hk);
  if (a.use_topk) {
    const at::Tensor thr = a.thresholds ? g.thresholds : at::full_like(hk, a.threshold);
    g.branch.copy_(g.has_nan.logical_not() & empty.logical_not() & (hk > thr));
  }
}

GateTensors entropy_gate_cuda(const at::Tensor& logits, const std::optional<at::Tensor>& thresholds,
                              double threshold, int64_t top_k, bool use_topk, int64_t out_k) {
  const c10::cuda::CUDAGuard guard(logits.device());
  PreparedGate g = prepare_gate(logits, thresholds, threshold, top_k, use_topk, out_k);
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int splits = eg_cuda_splits(g.args.rows, g.args.vocab, sms);
  const size_t ws_bytes = eg_cuda_workspace_bytes(g.args.rows, splits);
  at::Tensor ws;
  if (ws_bytes > 0) ws = at::empty({int64_t(ws_bytes)}, g.logits.options().dtype(at::kByte));
  const int rc = eg_cuda_launch(&g.args, splits, ws_bytes > 0 ? ws.data_ptr() : nullptr,
                                at::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(rc == 0, "entropy_gate CUDA launch failed: ", eg_cuda_error_string(rc));
  if (top_k > EG_CUDA_MAX_LIST && top_k < g.args.vocab) large_topk_entropy(g);
  return g.outputs();
}

}  // namespace
}  // namespace eager_core

TORCH_LIBRARY_IMPL(eager_core, CUDA, m) { m.impl("entropy_gate", &eager_core::entropy_gate_cuda); }
