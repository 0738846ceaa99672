/*
 * paged_attention_cpu.cpp: compiles paged_attention_body.h for AVX-512 and for the baseline
 * x86-64 (or the host's baseline elsewhere) and picks one at first use, like the entropy gate. On
 * AVX-512, head_dim 64 and 128 run the intrinsics of paged_attention_avx512.h instead.
 */
#include "paged_attention.h"
#include "cpu_features.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PA_X86 1
#include <immintrin.h>
#endif

#if defined(PA_X86) && defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma"))), apply_to = function)
#elif defined(PA_X86)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")
#endif
#ifdef PA_X86
#include "avx512_sums.h"  // inside the AVX-512 region: its functions take that target
namespace eager_core { namespace paged_attention { namespace isa_v4 {
#include "paged_attention_body.h"
#include "paged_attention_avx512.h"
}}}  // namespace eager_core::paged_attention::isa_v4
#endif
#if defined(PA_X86) && defined(__clang__)
#pragma clang attribute pop
#elif defined(PA_X86)
#pragma GCC pop_options
#endif

namespace eager_core { namespace paged_attention { namespace isa_base {
#include "paged_attention_body.h"
}}}  // namespace eager_core::paged_attention::isa_base

namespace eager_core {
namespace paged_attention {
namespace {

/* EAGER_CORE_CPU_ISA set to anything but "avx512" selects the baseline loops (read once), so
 * the tests can check them on an AVX-512 machine; same switch as the entropy gate's. */
bool use_avx512() {
#ifdef PA_X86
  static const bool ok = cpu::avx512();
  return ok;
#else
  return false;
#endif
}

}  // namespace

void run(const Args& a, int64_t task_begin, int64_t task_end, float* scratch) {
#ifdef PA_X86
  if (use_avx512()) {
    if (isa_v4::run_tasks_avx512(a, task_begin, task_end, scratch)) return;   // head_dim 64, 128
    return isa_v4::run_tasks(a, task_begin, task_end, scratch);
  }
#endif
  isa_base::run_tasks(a, task_begin, task_end, scratch);
}

const char* isa_name() { return use_avx512() ? "avx512" : "baseline"; }

}  // namespace paged_attention
}  // namespace eager_core
