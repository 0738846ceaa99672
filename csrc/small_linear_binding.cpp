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
  const auto st = weight.scalar_type();
  TORCH_CHECK((st == at::kFloat || st == at::kBFloat16) && x_in.scalar_type() == st,
              "small_linear: x and weight must both be float32 or both bfloat16, got ", x_in.scalar_type(),
              " and ", st);
  const bool bf16 = st == at::kBFloat16;
  TORCH_CHECK(bf16 ? small_linear::supported_bf16() : small_linear::supported(),
              "small_linear: this CPU lacks ", bf16 ? "AVX512-BF16" : "AVX-512F");
  TORCH_CHECK(weight.dim() == 2 && weight.is_contiguous(), "small_linear: weight must be a contiguous [N, K]");
  const int64_t N = weight.size(0), K = weight.size(1);
  TORCH_CHECK(x_in.dim() >= 1 && x_in.size(-1) == K, "small_linear: x's last dimension must be ", K,
              ", got ", x_in.sizes());
  const at::Tensor x = x_in.reshape({-1, K}).contiguous();
  const int64_t M = x.size(0);
  TORCH_CHECK(M <= small_linear::kMaxRows, "small_linear: at most ", small_linear::kMaxRows, " rows, got ", M);
  at::Tensor bias_c;
  if (bias.has_value()) {
    bias_c = bias->contiguous();
    TORCH_CHECK(bias_c.scalar_type() == st && bias_c.numel() == N, "small_linear: bias must be ", st, " [", N, "]");
  }
  std::vector<int64_t> out_shape(x_in.sizes().begin(), x_in.sizes().end());
  out_shape.back() = N;
  at::Tensor y = at::empty({M, N}, x.options());
  if (M == 0) return y.view(out_shape);
  const void* b = bias.has_value() ? bias_c.data_ptr() : nullptr;
  const void* xp = x.data_ptr();
  const void* wp = weight.data_ptr();
  void* yp = y.data_ptr();
  at::parallel_for(0, N, small_linear::column_grain(K), [&](int64_t n0, int64_t n1) {
    if (bf16)
      small_linear::rows_bf16(static_cast<const uint16_t*>(xp), M, K, static_cast<const uint16_t*>(wp),
                              static_cast<const uint16_t*>(b), static_cast<uint16_t*>(yp), N, n0, n1);
    else
      small_linear::rows(static_cast<const float*>(xp), M, K, static_cast<const float*>(wp),
                         static_cast<const float*>(b), static_cast<float*>(yp), N, n0, n1);
  });
  return y.view(out_shape);
}

bool small_linear_supported() { return small_linear::supported(); }
bool small_linear_supported_bf16() { return small_linear::supported_bf16(); }

}  // namespace
}  // namespace eager_core

TORCH_LIBRARY_FRAGMENT(eager_core, m) {
  m.def("small_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
  m.def("small_linear_supported() -> bool");
  m.def("small_linear_supported_bf16() -> bool");
}

TORCH_LIBRARY_IMPL(eager_core, CPU, m) { m.impl("small_linear", &eager_core::small_linear_cpu); }
TORCH_LIBRARY_IMPL(eager_core, CatchAll, m) {
  m.impl("small_linear_supported", &eager_core::small_linear_supported);
  m.impl("small_linear_supported_bf16", &eager_core::small_linear_supported_bf16);
}
