/*
 * small_linear_binding.cpp: the torch operator eager_core::small_linear(x, weight, bias?) on CPU.
 * Splits the output columns (weight rows) across torch's intra-op threads, so both cores stream
 * half of the weights each. Callers check small_linear_supported() first (eager_core/ops/linear.py).
 */
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "small_linear.h"

namespace eager_core {
namespace {

at::Tensor small_linear_cpu(const at::Tensor& x_in, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(small_linear::supported(), "small_linear: this CPU lacks AVX-512F");
  TORCH_CHECK(x_in.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat,
              "small_linear: float32 only, got ", x_in.scalar_type(), " and ", weight.scalar_type());
  TORCH_CHECK(weight.dim() == 2 && weight.is_contiguous(), "small_linear: weight must be a contiguous [N, K]");
  const int64_t N = weight.size(0), K = weight.size(1);
  TORCH_CHECK(x_in.dim() >= 1 && x_in.size(-1) == K, "small_linear: x's last dimension must be ", K,
              ", got ", x_in.sizes());
  const at::Tensor x = x_in.reshape({-1, K}).contiguous();
  const int64_t M = x.size(0);
  TORCH_CHECK(M <= small_linear::kMaxRows, "small_linear: at most ", small_linear::kMaxRows, " rows, got ", M);
  const float* b = nullptr;
  at::Tensor bias_c;
  if (bias.has_value()) {
    bias_c = bias->contiguous();
    TORCH_CHECK(bias_c.scalar_type() == at::kFloat && bias_c.numel() == N, "small_linear: bias must be float32 [", N, "]");
    b = bias_c.data_ptr<float>();
  }
  std::vector<int64_t> out_shape(x_in.sizes().begin(), x_in.sizes().end());
  out_shape.back() = N;
  at::Tensor y = at::empty({M, N}, x.options());
  if (M == 0) return y.view(out_shape);
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  // Grain: at least 256 KB of weights per task, so a thread's start-up cost stays small.
  const int64_t grain = std::max<int64_t>(2, (int64_t(1) << 16) / std::max<int64_t>(K, 1)) & ~int64_t(1);
  at::parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) {
    small_linear::rows(xp, M, K, wp, b, yp, N, n0, n1);
  });
  return y.view(out_shape);
}

bool small_linear_supported() { return small_linear::supported(); }

}  // namespace
}  // namespace eager_core

TORCH_LIBRARY_FRAGMENT(eager_core, m) {
  m.def("small_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
  m.def("small_linear_supported() -> bool");
}

TORCH_LIBRARY_IMPL(eager_core, CPU, m) { m.impl("small_linear", &eager_core::small_linear_cpu); }
TORCH_LIBRARY_IMPL(eager_core, CatchAll, m) { m.impl("small_linear_supported", &eager_core::small_linear_supported); }
