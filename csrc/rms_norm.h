/*
 * rms_norm.h: one row of RMSNorm with the reference implementations' roundings, shared by the
 * eager_core::rms_norm op (rms_norm_cpu.cpp) and the one-call decode stack (decode_layers_cpu.cpp).
 *
 * y = round(w * round(x * r)), r = 1 / sqrt(mean(x^2) + eps) in float32 from float32 values; the sum
 * of squares is accumulated in double, so r is the correctly rounded float32 of the exact formula.
 * T is float, c10::BFloat16 or c10::Half (static_cast rounds to nearest even; float is exact).
 */
#ifndef EAGER_CORE_RMS_NORM_H
#define EAGER_CORE_RMS_NORM_H

#include <cmath>
#include <cstdint>

namespace eager_core {

template <typename T>
inline void rms_norm_row(const T* x, const T* w, T* y, int64_t D, float eps) {
  double ss = 0.0;
  for (int64_t i = 0; i < D; ++i) {
    const double v = static_cast<float>(x[i]);
    ss += v * v;
  }
  const float inv = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(D)) + eps);
  for (int64_t i = 0; i < D; ++i) {
    const T t = static_cast<T>(static_cast<float>(x[i]) * inv);   // the first rounding
    y[i] = static_cast<T>(static_cast<float>(w[i]) * static_cast<float>(t));
  }
}

}  // namespace eager_core

#endif
