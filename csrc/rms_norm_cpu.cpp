/*
 * rms_norm_cpu.cpp: the torch operator eager_core::rms_norm(x, weight, eps) for bfloat16 / float16
 * on CPU, in one call instead of the eight the formula takes in PyTorch (upcast, square, mean, add,
 * rsqrt, multiply, downcast, weight multiply). A decode step of a 30-layer model normalises 61
 * times, and at one token per step each PyTorch op costs more in dispatch than in arithmetic.
 *
 * Same roundings as the reference implementations (eager_core/ops/norm.py, Hugging Face's
 * LlamaRMSNorm): y = round(w * round(x * r)), with r = 1 / sqrt(mean(x^2) + eps) in float32 from
 * float32 values. The sum of squares is accumulated in double, so r is the correctly rounded
 * float32 of the exact formula; PyTorch's float32 reduction can differ from it in the last bit,
 * which moves an output by one bf16 step at most, rarely.
 *
 * Plain loops for the auto-vectoriser at the extension's baseline ISA; rows split across threads.
 */
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include "rms_norm.h"

namespace eager_core {
namespace {

template <typename T>
void rms_norm_rows(const T* x, const T* w, T* y, int64_t rows, int64_t D, float eps) {
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) rms_norm_row(x + r * D, w, y + r * D, D, eps);
  });
}

at::Tensor rms_norm_cpu(const at::Tensor& x_in, const at::Tensor& weight, double eps) {
  const auto st = x_in.scalar_type();
  TORCH_CHECK(st == at::kBFloat16 || st == at::kHalf, "rms_norm: x must be bfloat16 or float16, got ", st);
  TORCH_CHECK(weight.scalar_type() == st, "rms_norm: weight must be ", st, ", got ", weight.scalar_type());
  TORCH_CHECK(x_in.dim() >= 1 && weight.dim() == 1 && weight.size(0) == x_in.size(-1),
              "rms_norm: weight must be [", x_in.dim() >= 1 ? x_in.size(-1) : 0, "], got ", weight.sizes());
  const at::Tensor x = x_in.contiguous(), w = weight.contiguous();
  at::Tensor y = at::empty_like(x);
  const int64_t D = x.size(-1), rows = D > 0 ? x.numel() / D : 0;
  if (rows == 0) return y;
  if (st == at::kBFloat16)
    rms_norm_rows(x.data_ptr<c10::BFloat16>(), w.data_ptr<c10::BFloat16>(), y.data_ptr<c10::BFloat16>(), rows, D,
                  static_cast<float>(eps));
  else
    rms_norm_rows(x.data_ptr<c10::Half>(), w.data_ptr<c10::Half>(), y.data_ptr<c10::Half>(), rows, D,
                  static_cast<float>(eps));
  return y;
}

}  // namespace
}  // namespace eager_core

TORCH_LIBRARY_FRAGMENT(eager_core, m) { m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor"); }

TORCH_LIBRARY_IMPL(eager_core, CPU, m) { m.impl("rms_norm", &eager_core::rms_norm_cpu); }
