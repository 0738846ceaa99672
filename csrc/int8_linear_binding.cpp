/*
 * int8_linear_binding.cpp: the torch operator eager_core::int8_linear(x, qweight, scales, bias?, offsets?)
 * and eager_core::int8_swiglu (the same, fused with SwiGLU) on CPU, eager_core::int8_linear_isa() and
 * int8_linear_bf16_dot(). Splits the output columns (weight rows) across torch's
 * intra-op threads, like small_linear. bfloat16 / float16 x (and bias) are widened to float32 here,
 * exactly, and each thread rounds its own output columns once, so the kernel itself is float32 only;
 * except bfloat16 x on a CPU with AVX512-BF16, which goes to rows_bf16 as it is.
 * The schema is defined here for every build; the CUDA build adds its kernel in
 * int8_linear_cuda_binding.cpp. Callers: eager_core/ops/int8_linear.py.
 */
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "int8_linear.h"
#include "small_linear.h"

namespace eager_core {
namespace {

/* float32 copy of a bf16/f16 tensor's n elements (x is at most 64 x K: a few hundred KB). */
std::vector<float> widen(const at::Tensor& t) {
  std::vector<float> out(t.numel());
  if (t.scalar_type() == at::kBFloat16) {
    const auto* p = t.data_ptr<c10::BFloat16>();
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(p[i]);
  } else {
    const auto* p = t.data_ptr<c10::Half>();
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(p[i]);
  }
  return out;
}

/* A float16 tensor's data as raw bits, the kernels' view of scales and offsets. */
inline const int8_linear::f16* half_bits(const at::Tensor& t) {
  return reinterpret_cast<const int8_linear::f16*>(t.data_ptr<at::Half>());
}

/* The checked operands of one call, with float32 staging for bf16 / f16 x and bias. */
struct Operands {
  at::Tensor x, bias;  // x as [M, K], contiguous
  const int8_linear::f16* offsets;  // float16 bits [N, groups] like the scales, or nullptr (symmetric)
  at::ScalarType st;
  int64_t M, N, K, group;
  bool dot_bf16;        // bfloat16 x on an AVX512-BF16 CPU: read as it is (int8_linear_cpu_bf16.cpp)
  std::vector<float> xw, bw;
};

Operands prepare(const char* op, const at::Tensor& x_in, const at::Tensor& qweight, const at::Tensor& scales,
                 const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& offsets) {
  Operands o;
  o.st = x_in.scalar_type();
  TORCH_CHECK(o.st == at::kFloat || o.st == at::kBFloat16 || o.st == at::kHalf, op,
              ": x must be float32, bfloat16 or float16, got ", o.st);
  TORCH_CHECK(qweight.scalar_type() == at::kChar && qweight.dim() == 2 && qweight.is_contiguous(), op,
              ": qweight must be a contiguous int8 [N, K]");
  o.N = qweight.size(0), o.K = qweight.size(1);
  TORCH_CHECK(scales.scalar_type() == at::kHalf && scales.dim() == 2 && scales.is_contiguous() &&
                  scales.size(0) == o.N && scales.size(1) >= 1 && o.K % scales.size(1) == 0,
              op, ": scales must be a contiguous float16 [N, groups] with groups dividing K = ", o.K, ", got ",
              scales.scalar_type(), " ", scales.sizes());
  o.group = o.K / scales.size(1);
  TORCH_CHECK(o.group == o.K || o.group % 16 == 0, op, ": the scale group (", o.group,
              ") must be a multiple of 16 or all of K");
  o.offsets = nullptr;
  if (offsets.has_value()) {
    TORCH_CHECK(offsets->scalar_type() == at::kHalf && offsets->is_contiguous() && offsets->sizes() == scales.sizes(),
                op, ": offsets must be a contiguous float16 tensor shaped like the scales ", scales.sizes(), ", got ",
                offsets->scalar_type(), " ", offsets->sizes());
    TORCH_CHECK(o.group % 16 == 0, op, ": offsets need a scale group that is a multiple of 16, got ", o.group);
    o.offsets = half_bits(*offsets);
  }
  TORCH_CHECK(x_in.dim() >= 1 && x_in.size(-1) == o.K, op, ": x's last dimension must be ", o.K, ", got ",
              x_in.sizes());
  o.x = x_in.reshape({-1, o.K}).contiguous();
  o.M = o.x.size(0);
  TORCH_CHECK(o.M <= int8_linear::kMaxRows, op, ": at most ", int8_linear::kMaxRows, " rows, got ", o.M);
  if (bias.has_value()) {
    o.bias = bias->contiguous();
    TORCH_CHECK(o.bias.scalar_type() == o.st && o.bias.numel() == o.N, op, ": bias must be ", o.st, " [", o.N, "]");
  }
  o.dot_bf16 = o.st == at::kBFloat16 && int8_linear::rows_bf16_applies(o.K, o.group);
  if (o.st != at::kFloat && o.M > 0) {
    if (!o.dot_bf16) o.xw = widen(o.x);
    if (bias.has_value()) o.bw = widen(o.bias);
  }
  return o;
}

/* Columns [n0, n1) of x @ W^T + b into y (float32, row stride ldy). */
void columns(const Operands& o, const at::Tensor& qweight, const at::Tensor& scales, float* y, int64_t ldy,
             int64_t n0, int64_t n1) {
  const float* bp = !o.bias.defined() ? nullptr : o.st == at::kFloat ? o.bias.data_ptr<float>() : o.bw.data();
  if (o.dot_bf16)
    int8_linear::rows_bf16(reinterpret_cast<const uint16_t*>(o.x.data_ptr()), o.M, o.K, qweight.data_ptr<int8_t>(),
                           half_bits(scales), o.offsets, o.group, bp, y, ldy, n0, n1);
  else
    int8_linear::rows(o.st == at::kFloat ? o.x.data_ptr<float>() : o.xw.data(), o.M, o.K,
                      qweight.data_ptr<int8_t>(), half_bits(scales), o.offsets, o.group, bp, y, ldy, n0, n1);
}

/* out[m, n] = v, rounded once to out's dtype. */
inline void store(at::ScalarType st, void* out, int64_t i, float v) {
  if (st == at::kFloat)
    static_cast<float*>(out)[i] = v;
  else if (st == at::kBFloat16)
    static_cast<c10::BFloat16*>(out)[i] = c10::BFloat16(v);  // round to nearest even
  else
    static_cast<c10::Half*>(out)[i] = c10::Half(v);
}

std::vector<int64_t> out_shape(const at::Tensor& x_in, int64_t n) {
  std::vector<int64_t> shape(x_in.sizes().begin(), x_in.sizes().end());
  shape.back() = n;
  return shape;
}


at::Tensor int8_linear_cpu(const at::Tensor& x_in, const at::Tensor& qweight, const at::Tensor& scales,
                           const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& offsets) {
  const Operands o = prepare("int8_linear", x_in, qweight, scales, bias, offsets);
  const int64_t M = o.M, N = o.N;
  at::Tensor y = at::empty({M, N}, o.x.options());
  if (M == 0 || N == 0) return y.view(out_shape(x_in, N));
  const bool f32 = o.st == at::kFloat;
  std::vector<float> yw(f32 ? 0 : static_cast<size_t>(M * N));
  float* yp = f32 ? y.data_ptr<float>() : yw.data();
  void* out = y.data_ptr();
  at::parallel_for(0, N, small_linear::column_grain(o.K), [&](int64_t n0, int64_t n1) {
    columns(o, qweight, scales, yp, N, n0, n1);
    if (f32) return;
    for (int64_t m = 0; m < M; ++m)  // this thread's columns, rounded once
      for (int64_t n = n0; n < n1; ++n) store(o.st, out, m * N + n, yp[m * N + n]);
  });
  return y.view(out_shape(x_in, N));
}

/* silu(x @ gate^T + b_gate) * (x @ up^T + b_up) for a fused [gate; up] weight [2I, K]: one call
 * instead of matmul, chunk, silu and multiply. A thread computes gate columns [n0, n1) and the
 * matching up columns [I + n0, I + n1), then combines them in float32 and rounds once. */
at::Tensor int8_swiglu_cpu(const at::Tensor& x_in, const at::Tensor& qweight, const at::Tensor& scales,
                           const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& offsets) {
  const Operands o = prepare("int8_swiglu", x_in, qweight, scales, bias, offsets);
  TORCH_CHECK(o.N % 2 == 0, "int8_swiglu: the fused gate/up weight needs an even number of rows, got ", o.N);
  const int64_t M = o.M, N = o.N, I = o.N / 2;
  at::Tensor y = at::empty({M, I}, o.x.options());
  if (M == 0 || I == 0) return y.view(out_shape(x_in, I));
  std::vector<float> gu(static_cast<size_t>(M * N));
  void* out = y.data_ptr();
  at::parallel_for(0, I, small_linear::column_grain(o.K), [&](int64_t n0, int64_t n1) {
    columns(o, qweight, scales, gu.data(), N, n0, n1);
    columns(o, qweight, scales, gu.data(), N, I + n0, I + n1);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = n0; n < n1; ++n) {
        const float g = gu[m * N + n], u = gu[m * N + I + n];
        store(o.st, out, m * I + n, g / (1.0f + std::exp(-g)) * u);
      }
  });
  return y.view(out_shape(x_in, I));
}

std::string int8_linear_isa() { return int8_linear::isa_name(); }
bool int8_linear_bf16_dot() { return int8_linear::rows_bf16_supported(); }

}  // namespace
}  // namespace eager_core

TORCH_LIBRARY_FRAGMENT(eager_core, m) {
  m.def("int8_linear(Tensor x, Tensor qweight, Tensor scales, Tensor? bias, Tensor? offsets=None) -> Tensor");
  m.def("int8_swiglu(Tensor x, Tensor qweight, Tensor scales, Tensor? bias, Tensor? offsets=None) -> Tensor");
  m.def("int8_linear_isa() -> str");
  m.def("int8_linear_bf16_dot() -> bool");
}

TORCH_LIBRARY_IMPL(eager_core, CPU, m) {
  m.impl("int8_linear", &eager_core::int8_linear_cpu);
  m.impl("int8_swiglu", &eager_core::int8_swiglu_cpu);
}
TORCH_LIBRARY_IMPL(eager_core, CatchAll, m) {
  m.impl("int8_linear_isa", &eager_core::int8_linear_isa);
  m.impl("int8_linear_bf16_dot", &eager_core::int8_linear_bf16_dot);
}
