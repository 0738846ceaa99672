/*
 * int8_linear_cuda_binding.cpp: the CUDA implementation of eager_core::int8_linear (schema in
 * int8_linear_binding.cpp). Compiled only in CUDA builds (setup.py). Checks the operands like the
 * CPU binding, allocates y with torch and launches the plain-C i8_cuda_launch on the current stream
 * (so it is captured into CUDA graphs like any torch op). More than I8_CUDA_MAX_ROWS rows are
 * refused: eager_core/ops/int8_linear.py dequantizes and runs cuBLAS for those.
 */
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "int8_linear_cuda.h"

namespace eager_core {
namespace {

at::Tensor int8_linear_cuda(const at::Tensor& x_in, const at::Tensor& qweight, const at::Tensor& scales,
                            const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& offsets) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto st = x_in.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kBFloat16 || st == at::kHalf,
              "int8_linear: x must be float32, bfloat16 or float16, got ", st);
  TORCH_CHECK(qweight.is_cuda() && scales.is_cuda() && qweight.device() == x_in.device() &&
                  scales.device() == x_in.device(),
              "int8_linear: x, qweight and scales must be on the same CUDA device");
  TORCH_CHECK(qweight.scalar_type() == at::kChar && qweight.dim() == 2 && qweight.is_contiguous(),
              "int8_linear: qweight must be a contiguous int8 [N, K]");
  const int64_t N = qweight.size(0), K = qweight.size(1);
  TORCH_CHECK(scales.scalar_type() == at::kHalf && scales.dim() == 2 && scales.is_contiguous() &&
                  scales.size(0) == N && scales.size(1) >= 1 && K % scales.size(1) == 0,
              "int8_linear: scales must be a contiguous float16 [N, groups] with groups dividing K = ", K);
  if (offsets.has_value())
    TORCH_CHECK(offsets->scalar_type() == at::kHalf && offsets->is_contiguous() &&
                    offsets->sizes() == scales.sizes() && offsets->device() == x_in.device(),
                "int8_linear: offsets must be a contiguous float16 tensor shaped like the scales, on x's device");
  TORCH_CHECK(x_in.dim() >= 1 && x_in.size(-1) == K, "int8_linear: x's last dimension must be ", K, ", got ",
              x_in.sizes());
  const at::Tensor x = x_in.reshape({-1, K}).contiguous();
  const int64_t M = x.size(0);
  TORCH_CHECK(M <= I8_CUDA_MAX_ROWS, "int8_linear: at most ", I8_CUDA_MAX_ROWS, " rows on CUDA, got ", M);
  at::Tensor bias_c;
  if (bias.has_value()) {
    bias_c = bias->contiguous();
    TORCH_CHECK(bias_c.scalar_type() == st && bias_c.numel() == N && bias_c.device() == x.device(),
                "int8_linear: bias must be ", st, " [", N, "] on x's device");
  }
  std::vector<int64_t> out_shape(x_in.sizes().begin(), x_in.sizes().end());
  out_shape.back() = N;
  at::Tensor y = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return y.view(out_shape);
  I8CudaArgs a;
  a.x = x.data_ptr();
  a.w = qweight.data_ptr<int8_t>();
  a.scales = reinterpret_cast<const uint16_t*>(scales.data_ptr<at::Half>());
  a.offsets = offsets.has_value() ? reinterpret_cast<const uint16_t*>(offsets->data_ptr<at::Half>()) : nullptr;
  a.bias = bias.has_value() ? bias_c.data_ptr() : nullptr;
  a.y = y.data_ptr();
  a.M = M, a.N = N, a.K = K, a.group = K / scales.size(1);
  a.dtype = st == at::kFloat ? I8_F32 : st == at::kBFloat16 ? I8_BF16 : I8_F16;
  const int rc = i8_cuda_launch(&a, at::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(rc == 0, "int8_linear CUDA launch failed: ", i8_cuda_error_string(rc));
  return y.view(out_shape);
}

}  // namespace
}  // namespace eager_core

TORCH_LIBRARY_IMPL(eager_core, CUDA, m) { m.impl("int8_linear", &eager_core::int8_linear_cuda); }
