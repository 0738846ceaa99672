/*
 * decode_layers_cpu.cpp: the torch operator eager_core::decode_layers, every decoder layer of a
 * decode step in one call (CPU, float32 or bfloat16 activations, weights in that dtype or weight-only
 * int8; Llama-style layers without biases or q/k norms).
 *
 * Why: at one token per sequence the arithmetic of a layer other than its four matmuls is tiny, yet
 * in PyTorch it is ~35 op calls (norm, slices, rotary, cache writes, residual adds, SwiGLU), each
 * paying dispatch and allocation: measured on SmolLM2-135M in bfloat16 at 2 threads, a forward took
 * 9.0 ms of which the matmuls were 6.0. This op runs the same kernels (small_linear's rows, the paged
 * decode attention) and the same elementwise arithmetic, with the same roundings, from C++.
 *
 * Per layer, for T rows (one decode query each), in the model dtype unless said otherwise:
 *   h = rms_norm(x)                       float32 inside; bf16: round(w * round(x * r))
 *   qkv = h @ Wqkv^T                      small_linear (float32 accumulation)
 *   q, k = rope(q), rope(k)               round(round(x * cos) + round(rot(x) * sin)), as PyTorch rounds
 *   cache[slot] = k, v
 *   a = round(attention(float32(q)))      the paged decode kernel, reading the cache in place
 *   x = round(x + a @ Wo^T)
 *   h = rms_norm(x); g, u = h @ Wgu^T
 *   x = round(x + round(round(silu(g)) * u) @ Wdown^T)
 * Results equal the PyTorch path's except where its vectorised exp or float32 mean differ from
 * std::exp and a double-accumulated mean in the last float32 bit (then one bf16 step, rarely).
 */
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "int8_linear.h"
#include "paged_attention.h"
#include "rms_norm.h"
#include "small_linear.h"

namespace eager_core {
namespace {

/* The model dtype's rounding: float32 is exact, bfloat16 rounds to nearest even. */
template <typename T> inline float f32(T v) { return static_cast<float>(v); }
template <typename T> inline T round_to(float v) { return static_cast<T>(v); }

/* One linear weight of a layer: the model dtype (small_linear), or weight-only int8 values with
 * float16 scales and offsets per group (int8_linear's rows; output in float32, then rounded once, as
 * its op does). */
struct Weight {
  const at::Tensor* w;        // float weight, or int8 values
  const at::Tensor* scales;   // nullptr for a float weight
  const at::Tensor* offsets;  // int8: shaped like the scales, or empty (symmetric groups)
  int64_t rows() const { return w->size(0); }
  using f16 = int8_linear::f16;
  const f16* scale_ptr() const { return reinterpret_cast<const f16*>(scales->data_ptr<at::Half>()); }
  const f16* offset_ptr() const {
    return offsets->numel() > 0 ? reinterpret_cast<const f16*>(offsets->data_ptr<at::Half>()) : nullptr;
  }
};

/* Where a layer's tensors sit in the op's list: input norm, qkv, o, post norm, gate_up, down, each
 * linear one tensor (float) or three (int8: values, scales, offsets). */
struct Layout {
  bool i8;
  int64_t per_layer() const { return i8 ? 14 : 6; }
  int64_t post_norm() const { return i8 ? 7 : 3; }
  int64_t linear(int k) const { return (k < 2 ? 1 : 2) + k * (i8 ? 3 : 1); }  // k: qkv, o, gate_up, down
  Weight weight(const at::Tensor* lw, int k) const {
    const at::Tensor* t = lw + linear(k);
    return i8 ? Weight{t, t + 1, t + 2} : Weight{t, nullptr, nullptr};
  }
};

/* Whether an int8 weight's kernel reads x [., K] as it is: float32 always, bfloat16 where rows_bf16
 * applies; otherwise x is widened to float32 first (widened below). */
template <typename T>
bool int8_reads_x(int64_t K, const Weight& W) {
  return std::is_same_v<T, float> || int8_linear::rows_bf16_applies(K, K / W.scales->size(1));
}

/* Columns [n0, n1) of x @ W^T into y32 (float32, row stride ldy) for an int8 weight; x32 is x
 * widened to float32 when the kernel cannot read x (int8_reads_x), else empty. */
template <typename T>
void int8_columns(const T* x, const std::vector<float>& x32, int64_t M, int64_t K, const Weight& W, float* y32,
                  int64_t ldy, int64_t n0, int64_t n1) {
  const int64_t group = K / W.scales->size(1);
  const int8_t* q = W.w->data_ptr<int8_t>();
  const int8_linear::f16 *sc = W.scale_ptr(), *z = W.offset_ptr();
  if constexpr (std::is_same_v<T, float>) {
    int8_linear::rows(x, M, K, q, sc, z, group, nullptr, y32, ldy, n0, n1);
  } else {
    if (x32.empty())
      int8_linear::rows_bf16(reinterpret_cast<const uint16_t*>(x), M, K, q, sc, z, group, nullptr, y32, ldy, n0, n1);
    else
      int8_linear::rows(x32.data(), M, K, q, sc, z, group, nullptr, y32, ldy, n0, n1);
  }
}

/* x [M, K] as float32 for an int8 weight's kernel, or empty where it reads x as it is. */
template <typename T>
std::vector<float> widened(const T* x, int64_t M, int64_t K, const Weight& W) {
  std::vector<float> out;
  if (!int8_reads_x<T>(K, W)) {
    out.resize(static_cast<size_t>(M * K));
    for (int64_t i = 0; i < M * K; ++i) out[i] = static_cast<float>(x[i]);
  }
  return out;
}

template <typename T>
void linear(const T* x, int64_t M, int64_t K, const Weight& W, T* y) {
  const int64_t N = W.rows();
  if (W.scales != nullptr) {
    const std::vector<float> x32 = widened(x, M, K, W);
    std::vector<float> y32(static_cast<size_t>(M * N));
    at::parallel_for(0, N, small_linear::column_grain(K), [&](int64_t n0, int64_t n1) {
      int8_columns(x, x32, M, K, W, y32.data(), N, n0, n1);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = n0; n < n1; ++n) y[m * N + n] = static_cast<T>(y32[m * N + n]);
    });
    return;
  }
  at::parallel_for(0, N, small_linear::column_grain(K), [&](int64_t n0, int64_t n1) {
    if constexpr (std::is_same_v<T, float>)
      small_linear::rows(x, M, K, W.w->data_ptr<float>(), nullptr, y, N, n0, n1);
    else
      small_linear::rows_bf16(reinterpret_cast<const uint16_t*>(x), M, K,
                              reinterpret_cast<const uint16_t*>(W.w->data_ptr<c10::BFloat16>()), nullptr,
                              reinterpret_cast<uint16_t*>(y), N, n0, n1);
  });
}

/* act = silu(g) * u of a fused [gate; up] weight. Float weights: h @ Wgu^T in the model dtype, then
 * round(round(silu(g)) * u) as PyTorch computes it; int8: int8_swiglu's arithmetic, combined in
 * float32 and rounded once. */
template <typename T>
void swiglu(const T* h, int64_t M, int64_t K, const Weight& W, T* gu, T* act) {
  const int64_t N = W.rows(), I = N / 2;
  if (W.scales != nullptr) {
    const std::vector<float> x32 = widened(h, M, K, W);
    std::vector<float> g32(static_cast<size_t>(M * N));
    at::parallel_for(0, I, small_linear::column_grain(K), [&](int64_t n0, int64_t n1) {
      int8_columns(h, x32, M, K, W, g32.data(), N, n0, n1);
      int8_columns(h, x32, M, K, W, g32.data(), N, I + n0, I + n1);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = n0; n < n1; ++n) {
          const float g = g32[m * N + n], u = g32[m * N + I + n];
          act[m * I + n] = static_cast<T>(g / (1.0f + std::exp(-g)) * u);
        }
    });
    return;
  }
  linear(h, M, K, W, gu);
  for (int64_t r = 0; r < M; ++r)
    for (int64_t i = 0; i < I; ++i) {
      const float g = f32(gu[r * N + i]);
      const T sg = round_to<T>(g / (1.0f + std::exp(-g)));
      act[r * I + i] = round_to<T>(f32(sg) * f32(gu[r * N + I + i]));
    }
}

template <typename T>
void rms_norm(const T* x, const T* w, T* y, int64_t rows, int64_t D, float eps) {
  for (int64_t r = 0; r < rows; ++r) rms_norm_row(x + r * D, w, y + r * D, D, eps);
}

template <typename T>
at::Tensor run(const at::Tensor& x_in, const std::vector<at::Tensor>& w, const at::Tensor& cos, const at::Tensor& sin,
               const at::Tensor& kv_cache, const at::Tensor& slots, const at::Tensor& tables, const at::Tensor& lens,
               int64_t block_size, double scale, double eps_d, int64_t H, int64_t KVH) {
  at::Tensor x_t = x_in.clone();
  T* x = x_t.data_ptr<T>();
  const Layout lay{w[1].scalar_type() == at::kChar};
  const int64_t per = lay.per_layer(), rows = x_t.size(0), hidden = x_t.size(1);
  const int64_t L = static_cast<int64_t>(w.size()) / per;
  const int64_t D = kv_cache.size(4), S = kv_cache.size(2), inter = w[lay.linear(2)].size(0) / 2;
  const int64_t q_out = H * D, kv_out = KVH * D, qkv_out = q_out + 2 * kv_out, half = D / 2;
  const float eps = static_cast<float>(eps_d);
  std::vector<T> h(rows * hidden), qkv(rows * qkv_out), attn(rows * q_out), tmp(rows * std::max(hidden, 2 * inter)),
      act(rows * inter);
  std::vector<float> q32(rows * q_out), a32(rows * q_out);
  const T* c = cos.data_ptr<T>();
  const T* s = sin.data_ptr<T>();
  const int64_t* slot = slots.data_ptr<int64_t>();
  const int64_t* lp = lens.data_ptr<int64_t>();
  int64_t max_ctx = 1;
  for (int64_t b = 0; b < rows; ++b) max_ctx = std::max(max_ctx, lp[b]);
  const int64_t layer_elems = 2 * S * kv_out;
  T* cache = kv_cache.data_ptr<T>();
  for (int64_t l = 0; l < L; ++l) {
    const at::Tensor* lw = &w[per * l];
    const at::Tensor *in_norm = &lw[0], *post_norm = &lw[lay.post_norm()];
    const Weight wqkv = lay.weight(lw, 0), wo = lay.weight(lw, 1), wgu = lay.weight(lw, 2), wdown = lay.weight(lw, 3);
    rms_norm(x, in_norm->data_ptr<T>(), h.data(), rows, hidden, eps);
    linear(h.data(), rows, hidden, wqkv, qkv.data());
    T* kc = cache + l * layer_elems;
    T* vc = kc + S * kv_out;
    for (int64_t r = 0; r < rows; ++r) {
      T* row = qkv.data() + r * qkv_out;
      const T* cr = c + r * D;
      const T* sr = s + r * D;
      T rotated[512];
      for (int64_t hd = 0; hd < H + KVH; ++hd) {  // q heads then k heads share the tables
        T* v = row + hd * D;
        for (int64_t d = 0; d < D; ++d) {
          const T a = round_to<T>(f32(v[d]) * f32(cr[d]));
          const T b = round_to<T>(f32(v[(d + half) % D]) * f32(sr[d]));
          rotated[d] = round_to<T>(f32(a) + f32(b));
        }
        for (int64_t d = 0; d < D; ++d) v[d] = rotated[d];
      }
      for (int64_t i = 0; i < q_out; ++i) q32[r * q_out + i] = f32(row[i]);
      std::copy(row + q_out, row + q_out + kv_out, kc + slot[r] * kv_out);
      std::copy(row + q_out + kv_out, row + qkv_out, vc + slot[r] * kv_out);
    }
    paged_attention::Args a{q32.data(), kc, vc, !std::is_same_v<T, float>, tables.data_ptr<int64_t>(), lp,
                            a32.data(), H, KVH, D, block_size, tables.size(1), static_cast<float>(scale)};
    const int64_t group = H / KVH;
    at::parallel_for(0, rows * KVH, 1, [&](int64_t t0, int64_t t1) {
      std::vector<float> scratch(static_cast<size_t>(group * max_ctx));
      paged_attention::run(a, t0, t1, scratch.data());
    });
    for (int64_t i = 0; i < rows * q_out; ++i) attn[i] = round_to<T>(a32[i]);
    linear(attn.data(), rows, q_out, wo, tmp.data());
    for (int64_t i = 0; i < rows * hidden; ++i) x[i] = round_to<T>(f32(x[i]) + f32(tmp[i]));
    rms_norm(x, post_norm->data_ptr<T>(), h.data(), rows, hidden, eps);
    swiglu(h.data(), rows, hidden, wgu, tmp.data(), act.data());
    linear(act.data(), rows, inter, wdown, tmp.data());
    for (int64_t i = 0; i < rows * hidden; ++i) x[i] = round_to<T>(f32(x[i]) + f32(tmp[i]));
  }
  return x_t;
}

at::Tensor decode_layers_cpu(const at::Tensor& x, at::TensorList weights, const at::Tensor& cos, const at::Tensor& sin,
                             const at::Tensor& kv_cache, const at::Tensor& slot_mapping, const at::Tensor& block_tables,
                             const at::Tensor& context_lens, int64_t block_size, double scale, double eps,
                             int64_t heads, int64_t kv_heads) {
  const auto st = x.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kBFloat16, "decode_layers: x must be float32 or bfloat16, got ", st);
  TORCH_CHECK(st == at::kFloat ? small_linear::supported() : small_linear::supported_bf16(),
              "decode_layers: this CPU lacks the small_linear kernel's instructions");
  TORCH_CHECK(!weights.empty(), "decode_layers: no weights");
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.size(0) >= 1 && x.size(0) <= small_linear::kMaxRows,
              "decode_layers: x must be a contiguous [T, hidden] with 1 <= T <= ", small_linear::kMaxRows);
  TORCH_CHECK(kv_cache.dim() == 5 && kv_cache.is_contiguous() && kv_cache.scalar_type() == st &&
                  kv_cache.size(1) == 2 &&
                  kv_cache.size(3) == kv_heads,
              "decode_layers: kv_cache must be a contiguous [layers, 2, slots, kv_heads, head_dim] in x's dtype");
  const int64_t T = x.size(0), D = kv_cache.size(4), hidden = x.size(1);
  TORCH_CHECK(D % 2 == 0 && D <= 512 && heads % kv_heads == 0, "decode_layers: bad head_dim or head counts");
  TORCH_CHECK(cos.sizes() == sin.sizes() && cos.numel() == T * D && cos.is_contiguous() && sin.is_contiguous() &&
                  cos.scalar_type() == st && sin.scalar_type() == st,
              "decode_layers: cos/sin must be contiguous [T, head_dim] tables in x's dtype");
  TORCH_CHECK(slot_mapping.numel() == T && slot_mapping.scalar_type() == at::kLong && context_lens.numel() == T &&
                  context_lens.scalar_type() == at::kLong && block_tables.dim() == 2 && block_tables.size(0) == T &&
                  block_tables.scalar_type() == at::kLong,
              "decode_layers: slot_mapping, context_lens int64 [T], block_tables int64 [T, width]");
  const int64_t S = kv_cache.size(2), width = block_tables.size(1);
  const at::Tensor slots = slot_mapping.contiguous(), lens = context_lens.contiguous();
  const at::Tensor tables = block_tables.contiguous();
  for (int64_t b = 0; b < T; ++b) {
    const int64_t n = lens.data_ptr<int64_t>()[b], sl = slots.data_ptr<int64_t>()[b];
    TORCH_CHECK(sl >= 0 && sl < S, "decode_layers: slot_mapping[", b, "] = ", sl, " outside the pool");
    TORCH_CHECK(n >= 1 && n <= width * block_size, "decode_layers: context_lens[", b, "] out of range");
    for (int64_t j = 0; j < (n + block_size - 1) / block_size; ++j) {
      const int64_t blk = tables.data_ptr<int64_t>()[b * width + j];
      TORCH_CHECK(blk >= 0 && (blk + 1) * block_size <= S, "decode_layers: block_tables[", b, "][", j,
                  "] out of the pool");
    }
  }
  std::vector<at::Tensor> w(weights.begin(), weights.end());
  const bool i8 = w.size() > 1 && w[1].scalar_type() == at::kChar;
  const Layout lay{i8};
  const size_t per = static_cast<size_t>(lay.per_layer());
  TORCH_CHECK(w.size() % per == 0 && static_cast<int64_t>(w.size() / per) == kv_cache.size(0),
              "decode_layers: ", per, " weights per layer (", kv_cache.size(0), " layers), got ", w.size());
  for (size_t l = 0; l < w.size() / per; ++l) {
    const at::Tensor* lw = &w[per * l];
    // The linears in order qkv, o, gate_up, down; and the two norms.
    const Weight lin[4] = {lay.weight(lw, 0), lay.weight(lw, 1), lay.weight(lw, 2), lay.weight(lw, 3)};
    const at::Tensor* norms[2] = {&lw[0], &lw[lay.post_norm()]};
    for (const at::Tensor* n : norms)
      TORCH_CHECK(n->scalar_type() == st && n->is_contiguous() && n->dim() == 1 && n->size(0) == hidden,
                  "decode_layers: layer ", l, " norm weights must be contiguous [", hidden, "] in x's dtype");
    const int64_t inter2 = lin[2].w->dim() == 2 ? lin[2].w->size(0) : 0;
    const int64_t shape[4][2] = {{(heads + 2 * kv_heads) * D, hidden}, {hidden, heads * D}, {inter2, hidden},
                                 {hidden, inter2 / 2}};
    TORCH_CHECK(inter2 > 0 && inter2 % 2 == 0, "decode_layers: layer ", l, " gate_up must be [2 I, hidden]");
    for (int k = 0; k < 4; ++k) {
      const at::Tensor& t = *lin[k].w;
      TORCH_CHECK(t.scalar_type() == (i8 ? at::kChar : st) && t.is_contiguous() && t.dim() == 2 &&
                      t.size(0) == shape[k][0] && t.size(1) == shape[k][1],
                  "decode_layers: layer ", l, " linear ", k, " must be a contiguous [", shape[k][0], ", ", shape[k][1],
                  "] ", i8 ? "int8" : "in x's dtype", ", got ", t.scalar_type(), " ", t.sizes());
      if (i8) {
        const at::Tensor &sc = *lin[k].scales, &z = *lin[k].offsets;
        TORCH_CHECK(sc.scalar_type() == at::kHalf && sc.is_contiguous() && sc.dim() == 2 &&
                        sc.size(0) == t.size(0) && sc.size(1) >= 1 && t.size(1) % sc.size(1) == 0 &&
                        (sc.size(1) == 1 || (t.size(1) / sc.size(1)) % 16 == 0),
                    "decode_layers: layer ", l, " scales ", k, " must be float16 [N, groups], groups of 16k");
        TORCH_CHECK(z.numel() == 0 || (z.scalar_type() == at::kHalf && z.is_contiguous() &&
                                       z.sizes() == sc.sizes() && (t.size(1) / sc.size(1)) % 16 == 0),
                    "decode_layers: layer ", l, " offsets ", k, " must be empty or float16 shaped like the scales");
      }
    }
  }
  if (st == at::kFloat)
    return run<float>(x, w, cos, sin, kv_cache, slots, tables, lens, block_size, scale, eps, heads, kv_heads);
  return run<c10::BFloat16>(x, w, cos, sin, kv_cache, slots, tables, lens, block_size, scale, eps, heads, kv_heads);
}

}  // namespace
}  // namespace eager_core

TORCH_LIBRARY_FRAGMENT(eager_core, m) {
  m.def("decode_layers(Tensor x, Tensor[] weights, Tensor cos, Tensor sin, Tensor(a!) kv_cache, Tensor slot_mapping,"
        " Tensor block_tables, Tensor context_lens, int block_size, float scale, float eps, int heads,"
        " int kv_heads) -> Tensor");
}

TORCH_LIBRARY_IMPL(eager_core, CPU, m) { m.impl("decode_layers", &eager_core::decode_layers_cpu); }
