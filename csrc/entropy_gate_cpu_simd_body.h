/*
 * entropy_gate_cpu_simd_body.h: the chunk loops of the CPU kernel, written once and compiled
 * several times. entropy_gate_cpu_simd.cpp includes this file (deliberately without an include
 * guard) inside a different namespace and under a different `#pragma GCC target` each time, so
 * every copy, its helper functions included, is compiled for one instruction set. Helpers must
 * share their caller's target: GCC lowers generic vector code per function, so a helper
 * compiled for baseline x86-64 and inlined into an AVX-512 function stays scalar.
 *
 * The code uses GCC/Clang vector extensions (kLanes floats per vector): explicit SIMD without
 * intrinsics, one zmm register under AVX-512, two ymm under AVX2, four xmm on baseline x86-64.
 * Auto-vectorisation of equivalent scalar loops proved unreliable (GCC 12 scalarised the max
 * loop entirely). Each lane keeps its own sums, so no -ffast-math reassociation is needed. exp
 * is a polynomial because a libm call cannot be vectorised. Requires <cstring> and <stdint.h>.
 */
// NOLINT(build/header_guard): included once per instruction set on purpose.

constexpr int kLanes = 16;
typedef float vf __attribute__((vector_size(4 * kLanes)));
typedef int32_t vi __attribute__((vector_size(4 * kLanes)));
typedef uint32_t vu __attribute__((vector_size(4 * kLanes)));

inline float from_bits(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline vf load(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
inline vf splat(float x) { return vf{} + x; }
// Compiles to one max instruction; a NaN in `a` compares false and loses: NaN is skipped.
inline vf vmax(vf a, vf b) { return a > b ? a : b; }

/* Pad a partial vector with -inf: neutral for the max, and exp(-inf - m) clamps to ~0. */
inline vf load_partial(const float* p, int64_t n) {
  vf v = splat(-__builtin_inff());
  for (int64_t l = 0; l < n; ++l) v[l] = p[l];
  return v;
}

/*
 * exp(d) for d in [-87, 0], relative error about 2e-7.
 * d = n ln2 + r with n = round(d / ln2) and |r| <= ln2 / 2; exp(r) by its degree-6 Taylor
 * polynomial (truncation error r^7 / 7! < 1.3e-7); 2^n built directly in the exponent bits
 * (n >= -126 keeps it a normal number). Rounding uses the 1.5 * 2^23 trick: adding it leaves
 * round-to-nearest(x) in the low mantissa bits, with no rounding instruction needed.
 */
inline vf exp_clamped(vf d) {
  const float kRound = 12582912.0f;  // 1.5 * 2^23
  const vf kn = d * 1.44269504088896341f + kRound;
  const vi n = (vi)kn - (vi)splat(kRound);
  const vf nf = kn - kRound;
  // ln2 split in a high part with few mantissa bits (nf * hi is exact) and the remainder.
  const vf r = (d - nf * 0.693145751953125f) - nf * 1.428606765330187e-06f;
  vf p = splat(1.0f / 720.0f);
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * (vf)((n + 127) << 23);
}

/*
 * Differences below -87 (including -inf masks and padding) are clamped to -87 before the
 * exp, so no 0 * -inf can arise, and their terms are then dropped exactly: exp(-87) < 1.7e-38
 * is nothing next to the row max's term of 1, and an all -inf-but-one row keeps entropy 0.
 */
inline vf clamp_low(vf d) { return vmax(d, splat(-87.0f)); }

/* Lanes holding NaN or +inf, from the bits (all ones where bad). */
inline vi bad_lanes(vf v) {
  const vu u = (vu)v;
  return (vi)(((u & 0x7fffffffu) > 0x7f800000u) | (u == 0x7f800000u));
}

inline void accumulate(vf x, vf m, vf& s, vf& t) {
  const vf diff = x - m;
  const vf d = clamp_low(diff);
  const vi keep = diff > -87.0f;  // false for NaN too: those rows are flagged, not summed
  const vf e = keep ? exp_clamped(d) : vf{};
  s += e;
  t += e * d;
}

float chunk_max(const float* x, int64_t n, bool* bad) {
  vf mx = splat(-__builtin_inff()), mx1 = mx;  // two chains hide the max latency
  vi flag = vi{};
  int64_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    const vf v = load(x + i), w = load(x + i + kLanes);
    mx = vmax(v, mx);
    mx1 = vmax(w, mx1);
    flag |= bad_lanes(v) | bad_lanes(w);
  }
  mx = vmax(mx1, mx);
  for (; i + kLanes <= n; i += kLanes) {
    const vf v = load(x + i);
    mx = vmax(v, mx);
    flag |= bad_lanes(v);
  }
  if (i < n) {
    const vf v = load_partial(x + i, n - i);
    mx = vmax(v, mx);
    flag |= bad_lanes(v);
  }
  float m = mx[0];
  int32_t f = 0;
  for (int l = 0; l < kLanes; ++l) { m = mx[l] > m ? mx[l] : m; f |= flag[l]; }
  if (f) *bad = true;
  return m;
}

float block_max(const float* x, int64_t n) {
  vf mx = splat(-__builtin_inff());
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) mx = vmax(load(x + i), mx);
  if (i < n) mx = vmax(load_partial(x + i, n - i), mx);
  float m = mx[0];
  for (int l = 1; l < kLanes; ++l) m = mx[l] > m ? mx[l] : m;
  return m;
}

void chunk_sums(const float* x, int64_t n, float m, float* s, float* t) {
  const vf mv = splat(m);
  vf s0 = vf{}, t0 = vf{}, s1 = vf{}, t1 = vf{};  // two chains hide the add latency
  int64_t i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    accumulate(load(x + i), mv, s0, t0);
    accumulate(load(x + i + kLanes), mv, s1, t1);
  }
  for (; i + kLanes <= n; i += kLanes) accumulate(load(x + i), mv, s0, t0);
  if (i < n) accumulate(load_partial(x + i, n - i), mv, s1, t1);
  s0 += s1;
  t0 += t1;
  float ss = 0.0f, tt = 0.0f;
  for (int l = 0; l < kLanes; ++l) { ss += s0[l]; tt += t0[l]; }
  *s = ss;
  *t = tt;
}

void widen_bf16(const uint16_t* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = from_bits(static_cast<uint32_t>(src[i]) << 16);
}

/*
 * IEEE binary16 -> binary32 without branches. Normal numbers, infinities and NaNs: move the
 * exponent and mantissa bits into place and rebias the exponent (+112, and +112 more when the
 * half exponent is all ones so that inf/NaN stay inf/NaN). Zeros and subnormals (exponent 0)
 * are mantissa * 2^-24 exactly, computed through an int-to-float conversion.
 */
void widen_f16(const uint16_t* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t h = src[i];
    const uint32_t sign = (h & 0x8000u) << 16;
    const uint32_t expo = h & 0x7c00u;
    uint32_t normal = ((h & 0x7fffu) << 13) + (112u << 23);
    normal += expo == 0x7c00u ? (112u << 23) : 0u;
    const float sub = static_cast<float>(static_cast<int32_t>(h & 0x03ffu)) * 5.9604644775390625e-08f;
    dst[i] = from_bits((expo == 0u ? to_bits(sub) : normal) | sign);
  }
}

