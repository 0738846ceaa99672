/*
 * paged_attention_binding.cpp: the torch operator eager_core::paged_decode_attention on CPU.
 * One task per (sequence, kv head), spread over torch's intra-op threads.
 */
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <vector>

#include "paged_attention.h"

namespace eager_core {
namespace {

at::Tensor paged_decode_attention_cpu(const at::Tensor& q_in, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                      const at::Tensor& block_tables, const at::Tensor& context_lens,
                                      int64_t block_size, double scale) {
  TORCH_CHECK(q_in.dim() == 3, "paged_decode_attention: q must be [B, heads, head_dim], got ", q_in.sizes());
  TORCH_CHECK(k_cache.dim() == 3 && v_cache.sizes() == k_cache.sizes(),
              "paged_decode_attention: caches must be [slots, kv_heads, head_dim] and equal in shape");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(), "paged_decode_attention: caches must be contiguous");
  const auto ct = k_cache.scalar_type();
  TORCH_CHECK((ct == at::kFloat || ct == at::kBFloat16) && v_cache.scalar_type() == ct,
              "paged_decode_attention: cache must be float32 or bfloat16, got ", ct);
  const int64_t B = q_in.size(0), H = q_in.size(1), D = q_in.size(2);
  const int64_t S = k_cache.size(0), KVH = k_cache.size(1);
  TORCH_CHECK(k_cache.size(2) == D && D <= 512, "paged_decode_attention: head_dim mismatch or > 512");
  TORCH_CHECK(KVH >= 1 && H % KVH == 0, "paged_decode_attention: heads ", H, " not a multiple of kv_heads ", KVH);
  TORCH_CHECK(block_tables.dim() == 2 && block_tables.size(0) == B && block_tables.scalar_type() == at::kLong,
              "paged_decode_attention: block_tables must be int64 [B, width]");
  TORCH_CHECK(context_lens.dim() == 1 && context_lens.size(0) == B && context_lens.scalar_type() == at::kLong,
              "paged_decode_attention: context_lens must be int64 [B]");
  TORCH_CHECK(block_size >= 1, "paged_decode_attention: block_size must be >= 1");
  const at::Tensor q = q_in.to(at::kFloat).contiguous();
  const at::Tensor tables = block_tables.contiguous();
  const at::Tensor lens = context_lens.contiguous();
  const int64_t width = tables.size(1);
  const int64_t* lp = lens.data_ptr<int64_t>();
  const int64_t* tp = tables.data_ptr<int64_t>();
  int64_t max_ctx = 0;
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(lp[b] >= 1 && lp[b] <= width * block_size, "paged_decode_attention: context_lens[", b, "] = ",
                lp[b], " outside [1, ", width * block_size, "]");
    for (int64_t j = 0; j < (lp[b] + block_size - 1) / block_size; ++j)
      TORCH_CHECK(tp[b * width + j] >= 0 && (tp[b * width + j] + 1) * block_size <= S,
                  "paged_decode_attention: block_tables[", b, "][", j, "] out of the pool");
    max_ctx = std::max(max_ctx, lp[b]);
  }
  at::Tensor out = at::empty({B, H, D}, q.options());
  paged_attention::Args a{q.data_ptr<float>(), k_cache.data_ptr(), v_cache.data_ptr(), ct == at::kBFloat16,
                          tp, lp, out.data_ptr<float>(), H, KVH, D, block_size, width, static_cast<float>(scale)};
  const int64_t group = H / KVH;
  // Split the tasks into one run per thread of about equal work (a task's work is its context
  // length): contexts can differ a lot, most of all when a prompt's queries come through here
  // (query i reads i + 1 positions), and equal task counts would leave one thread most of it.
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), B * KVH));
  std::vector<int64_t> cut(static_cast<size_t>(parts + 1), B * KVH);
  cut[0] = 0;
  int64_t total = 0, done = 0, part = 1;
  for (int64_t b = 0; b < B; ++b) total += lp[b] * KVH;
  for (int64_t t = 0; t < B * KVH && part < parts; ++t) {
    done += lp[t / KVH];
    if (done * parts >= total * part) cut[static_cast<size_t>(part++)] = t + 1;
  }
  at::parallel_for(0, parts, 1, [&](int64_t p0, int64_t p1) {
    std::vector<float> scratch(static_cast<size_t>(group * max_ctx));
    for (int64_t p = p0; p < p1; ++p) paged_attention::run(a, cut[p], cut[p + 1], scratch.data());
  });
  return out.to(q_in.scalar_type());
}

std::string paged_attention_isa() { return paged_attention::isa_name(); }

}  // namespace
}  // namespace eager_core

TORCH_LIBRARY_FRAGMENT(eager_core, m) {
  m.def("paged_decode_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_tables, "
        "Tensor context_lens, int block_size, float scale) -> Tensor");
  m.def("paged_attention_isa() -> str");
}

TORCH_LIBRARY_IMPL(eager_core, CatchAll, m) { m.impl("paged_attention_isa", &eager_core::paged_attention_isa); }

TORCH_LIBRARY_IMPL(eager_core, CPU, m) { m.impl("paged_decode_attention", &eager_core::paged_decode_attention_cpu); }
