/*
 * entropy_gate_binding.h: what the CPU and CUDA bindings share (argument checks, output
 * allocation). Torch-side only; the kernels see EgArgs.
 */
#ifndef EAGER_CORE_ENTROPY_GATE_BINDING_H
#define EAGER_CORE_ENTROPY_GATE_BINDING_H

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "entropy_gate.h"

namespace eager_core {

using GateTensors = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                               at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

/* Allocated outputs plus the EgArgs pointing at them and at the (possibly made contiguous)
 * inputs; the tensors must outlive the kernel call. */
struct PreparedGate {
  at::Tensor logits, thresholds;
  at::Tensor entropy, entropy_topk, top2_ids, top2_logprobs, logsumexp, branch, has_nan;
  at::Tensor topk_ids, topk_logprobs;
  EgArgs args;

  GateTensors outputs() const {
    return {entropy, entropy_topk, top2_ids, top2_logprobs, logsumexp, branch, has_nan,
            topk_ids, topk_logprobs};
  }
};

PreparedGate prepare_gate(const at::Tensor& logits, const std::optional<at::Tensor>& thresholds,
                          double threshold, int64_t top_k, bool use_topk, int64_t out_k);

}  // namespace eager_core

#endif
