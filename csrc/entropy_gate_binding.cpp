/*
 * entropy_gate_binding.cpp: registers the torch operator eager_core::entropy_gate, its CPU
 * implementation, and the Python module eager_core._C (which only says whether CUDA kernels
 * were compiled in). The CUDA implementation registers itself from entropy_gate_cuda_binding.cpp.
 */
#include <ATen/ATen.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <limits>

#include "entropy_gate.h"
#include "entropy_gate_binding.h"
#include "entropy_gate_cpu_simd.h"

namespace eager_core {

void entropy_gate_cpu_run(const EgArgs& a);  // entropy_gate_cpu.cpp

PreparedGate prepare_gate(const at::Tensor& logits_in, const std::optional<at::Tensor>& thresholds,
                          double threshold, int64_t top_k, bool use_topk, int64_t out_k) {
  TORCH_CHECK(logits_in.dim() == 2, "entropy_gate: logits must be [B, V], got ", logits_in.sizes());
  const auto st = logits_in.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kBFloat16 || st == at::kHalf,
              "entropy_gate: logits must be float32, bfloat16 or float16, got ", st);
  TORCH_CHECK(logits_in.size(1) >= 1, "entropy_gate: logits need at least one column");
  TORCH_CHECK(logits_in.size(1) < (int64_t(1) << 31), "entropy_gate: vocab must be < 2^31");
  TORCH_CHECK(top_k >= 1, "entropy_gate: top_k must be >= 1, got ", top_k);
  TORCH_CHECK(out_k >= 0 && out_k <= EG_MAX_OUT_K, "entropy_gate: out_k must be in [0, ",
              EG_MAX_OUT_K, "], got ", out_k);

  PreparedGate g;
  // Only the last dimension must be dense; a row stride (a slice of a wider buffer) is fine.
  g.logits = logits_in.stride(1) == 1 ? logits_in : logits_in.contiguous();
  const int64_t B = g.logits.size(0);
  const auto fopt = g.logits.options().dtype(at::kFloat);
  if (thresholds.has_value()) {
    const at::Tensor& t = *thresholds;
    TORCH_CHECK(t.dim() == 1 && t.size(0) == B, "entropy_gate: thresholds must be [B] = [", B,
                "], got ", t.sizes());
    g.thresholds = t.to(fopt).contiguous();
  }
  g.entropy = at::empty({B}, fopt);
  g.entropy_topk = at::empty({B}, fopt);
  g.top2_ids = at::empty({B, 2}, fopt.dtype(at::kLong));
  g.top2_logprobs = at::empty({B, 2}, fopt);
  g.logsumexp = at::empty({B}, fopt);
  g.branch = at::empty({B}, fopt.dtype(at::kBool));
  g.has_nan = at::empty({B}, fopt.dtype(at::kBool));
  g.topk_ids = at::empty({B, out_k}, fopt.dtype(at::kLong));
  g.topk_logprobs = at::empty({B, out_k}, fopt);

  EgArgs& a = g.args;
  a.logits = g.logits.data_ptr();
  a.rows = B;
  a.vocab = g.logits.size(1);
  a.row_stride = B > 1 ? g.logits.stride(0) : a.vocab;
  a.dtype = st == at::kFloat ? EG_FLOAT32 : (st == at::kBFloat16 ? EG_BFLOAT16 : EG_FLOAT16);
  a.thresholds = thresholds.has_value() ? g.thresholds.data_ptr<float>() : nullptr;
  a.threshold = static_cast<float>(threshold);
  a.top_k = top_k;
  a.use_topk = use_topk ? 1 : 0;
  a.out_k = out_k;
  a.out = EgOutputs{g.entropy.data_ptr<float>(), g.entropy_topk.data_ptr<float>(),
                    g.top2_ids.data_ptr<int64_t>(), g.top2_logprobs.data_ptr<float>(),
                    g.logsumexp.data_ptr<float>(), g.branch.data_ptr<bool>(),
                    g.has_nan.data_ptr<bool>(), g.topk_ids.data_ptr<int64_t>(),
                    g.topk_logprobs.data_ptr<float>()};
  return g;
}

namespace {

GateTensors entropy_gate_cpu(const at::Tensor& logits, const std::optional<at::Tensor>& thresholds,
                             double threshold, int64_t top_k, bool use_topk, int64_t out_k) {
  PreparedGate g = prepare_gate(logits, thresholds, threshold, top_k, use_topk, out_k);
  entropy_gate_cpu_run(g.args);
  return g.outputs();
}

}  // namespace
}  // namespace eager_core

TORCH_LIBRARY(eager_core, m) {
  m.def(
      "entropy_gate(Tensor logits, Tensor? thresholds, float threshold, int top_k, bool use_topk,"
      " int out_k=0) -> (Tensor entropy, Tensor entropy_topk, Tensor top2_ids, Tensor top2_logprobs,"
      " Tensor logsumexp, Tensor branch, Tensor has_nan, Tensor topk_ids, Tensor topk_logprobs)");
}

TORCH_LIBRARY_IMPL(eager_core, CPU, m) { m.impl("entropy_gate", &eager_core::entropy_gate_cpu); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "eager_core compiled ops; the ops themselves are torch.ops.eager_core.*";
  m.def("cpu_isa", &eager_core::simd::isa_name,
        "Instruction set the CPU kernel's inner loops use: avx512, avx2 or baseline");
#ifdef EG_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
