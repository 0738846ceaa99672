/*
 * entropy_gate_cpu_simd.cpp: compiles the chunk loops (entropy_gate_cpu_simd_body.h) once per
 * x86-64 ISA level and dispatches to the best one the running CPU supports, chosen once:
 *   x86-64-v4 subset (AVX-512 F/BW/DQ/VL) > x86-64-v3 subset (AVX2, FMA) > baseline.
 * So the extension is built without any -march flag and runs on every x86-64 machine while
 * using AVX-512 where present. Other architectures compile the body once for their baseline.
 * No torch header here on purpose: code compiled under an AVX-512 target pragma must not
 * contain inline functions shared with other translation units (the linker could keep the
 * AVX-512 copy for everyone).
 */
#include "entropy_gate_cpu_simd.h"
#include "cpu_features.h"

#include <stdint.h>

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define EG_X86_DISPATCH 1
#endif

#if defined(EG_X86_DISPATCH) && defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma"))), apply_to = function)
#elif defined(EG_X86_DISPATCH)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")
#endif
#ifdef EG_X86_DISPATCH
namespace eager_core { namespace simd { namespace isa_v4 {
#include "entropy_gate_cpu_simd_body.h"
}}}  // namespace eager_core::simd::isa_v4
#endif
#if defined(EG_X86_DISPATCH) && defined(__clang__)
#pragma clang attribute pop
#elif defined(EG_X86_DISPATCH)
#pragma GCC pop_options
#endif

#if defined(EG_X86_DISPATCH) && defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#elif defined(EG_X86_DISPATCH)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#ifdef EG_X86_DISPATCH
namespace eager_core { namespace simd { namespace isa_v3 {
#include "entropy_gate_cpu_simd_body.h"
}}}  // namespace eager_core::simd::isa_v3
#endif
#if defined(EG_X86_DISPATCH) && defined(__clang__)
#pragma clang attribute pop
#elif defined(EG_X86_DISPATCH)
#pragma GCC pop_options
#endif

namespace eager_core { namespace simd { namespace isa_base {
#include "entropy_gate_cpu_simd_body.h"
}}}  // namespace eager_core::simd::isa_base

namespace eager_core {
namespace simd {
namespace {

struct Kernels {
  float (*chunk_max)(const float*, int64_t, bool*);
  float (*block_max)(const float*, int64_t);
  void (*chunk_sums)(const float*, int64_t, float, float*, float*);
  void (*widen_bf16)(const uint16_t*, int64_t, float*);
  void (*widen_f16)(const uint16_t*, int64_t, float*);
  const char* name;
};

#define EG_KERNELS(ns, label) Kernels{ns::chunk_max, ns::block_max, ns::chunk_sums, ns::widen_bf16, ns::widen_f16, label}

/* EAGER_CORE_CPU_ISA=avx2 or =baseline caps the choice (to test the other code paths on an
 * AVX-512 machine); it is read once, at the first call. */
Kernels pick() {
#ifdef EG_X86_DISPATCH
  if (cpu::avx512()) return EG_KERNELS(isa_v4, "avx512");
  if (cpu::avx2_fma()) return EG_KERNELS(isa_v3, "avx2");
#endif
  return EG_KERNELS(isa_base, "baseline");
}

const Kernels& kernels() {
  static const Kernels k = pick();  // thread-safe one-time initialisation
  return k;
}

}  // namespace

float chunk_max(const float* x, int64_t n, bool* bad) { return kernels().chunk_max(x, n, bad); }
float block_max(const float* x, int64_t n) { return kernels().block_max(x, n); }
void chunk_sums(const float* x, int64_t n, float m, float* s, float* t) { kernels().chunk_sums(x, n, m, s, t); }
void widen_bf16(const uint16_t* src, int64_t n, float* dst) { kernels().widen_bf16(src, n, dst); }
void widen_f16(const uint16_t* src, int64_t n, float* dst) { kernels().widen_f16(src, n, dst); }
const char* isa_name() { return kernels().name; }

}  // namespace simd
}  // namespace eager_core
