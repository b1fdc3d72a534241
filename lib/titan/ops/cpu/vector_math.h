// Vectorizable exp and sigmoid for the CPU kernels' loops (attention's tiles, the
// cross-entropy's rows, SwiGLU): libm's expf is a call, which GCC cannot vectorize, and
// these loops take one per element. Integer bit operations stand in for float compares,
// which GCC does not vectorize (they may trap on NaN). The includers compile these under
// different rounding rules (FMA contraction or not, lib/CMakeLists.txt) and targets (the
// AVX-512 tile copy): each call is inlined into its loop (2026-12-07: libtitan holds no
// out-of-line copy), so no copy is shared across those rules.
#pragma once

#include <bit>
#include <cstdint>

namespace titan::ops::cpu {

// exp(x) for x <= 88: Cephes' range reduction x = n ln2 + r, |r| <= ln2 / 2, and its
// degree-6 polynomial (relative error ~1e-7); 2^n is built in the exponent bits. The
// callers' arguments are <= 0 up to rounding (a score less its row's max or lse); below
// -88 the result is 0, so masked or -infinity scores give exactly 0.
inline float exp_bounded(float x) {
  // Clamp x at -88, where the result underflows to 0, working on the bits: GCC does not
  // vectorize a float compare (it may trap on NaN). For x <= 0 the unsigned patterns grow
  // with |x|, so those of (-inf, -88) lie in (bits(-88), bits(-inf)]. NaNs lie outside
  // and propagate.
  constexpr uint32_t kLowest = std::bit_cast<uint32_t>(-88.0f);
  constexpr uint32_t kNegativeInfinity = 0xff800000u;
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint32_t below = 0u - uint32_t(bits - kLowest - 1 < kNegativeInfinity - kLowest);
  x = std::bit_cast<float>((kLowest & below) | (bits & ~below));  // below: all ones or 0
  // Adding 1.5 * 2^23 rounds to the nearest integer n and leaves n in the low mantissa
  // bits (no floor instruction needed before SSE4.1).
  constexpr float kShifter = 12582912.0f;
  const float t = x * 1.44269504088896341f + kShifter;
  const float n = t - kShifter;
  const int32_t n_int = std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(kShifter);
  float r = x - n * 0.693359375f;  // ln2 in two parts: the first is exact in few bits
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // n = -127 gives exponent bits 0: the scale is 0.0f and so is the result.
  return p * std::bit_cast<float>((n_int + 127) << 23);
}

// sigmoid(x) = 1 / (1 + exp(-x)) for every x, from e = exp(-|x|) (an argument <= 0):
// r = 1 / (1 + e) for x >= 0, and e^x / (1 + e^x) = e r for x < 0.
inline float sigmoid(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const float e = exp_bounded(std::bit_cast<float>(bits | 0x80000000u));
  const float r = 1.0f / (1.0f + e);
  const uint32_t negative = 0u - (bits >> 31);  // all ones when the sign bit is set
  return std::bit_cast<float>((std::bit_cast<uint32_t>(r) & ~negative) |
                              (std::bit_cast<uint32_t>(e * r) & negative));
}

}  // namespace titan::ops::cpu
