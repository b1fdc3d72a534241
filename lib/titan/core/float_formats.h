// 16- and 8-bit floating-point storage types and their conversions to and from f32.
//
// Every conversion to a narrower format rounds to nearest, ties to even. Formats:
//   bf16    1-8-7,  f32's range, the GPU compute type
//   f16     1-5-10, IEEE half
//   f8e4m3  1-4-3,  "fn": no infinities, S.1111.111 is NaN, largest finite 448
//   f8e5m2  1-5-2,  IEEE-like, largest finite 57344
// Values beyond an fp8 format's range, infinities included, saturate to its largest finite
// value (the "satfinite" convention of cuBLASLt, of CUDA's __NV_SATFINITE conversions and
// of float8 training recipes); f16 and bf16 overflow to inf. NaN stays NaN.
#pragma once

#include <cstdint>

#include "titan/core/dtype.h"

namespace titan {

struct bf16_t { uint16_t bits; };
struct f16_t { uint16_t bits; };
struct f8e4m3_t { uint8_t bits; };
struct f8e5m2_t { uint8_t bits; };

template <> constexpr DType dtype_of<bf16_t>() { return DType::BF16; }
template <> constexpr DType dtype_of<f16_t>() { return DType::F16; }
template <> constexpr DType dtype_of<f8e4m3_t>() { return DType::F8E4M3; }
template <> constexpr DType dtype_of<f8e5m2_t>() { return DType::F8E5M2; }

inline uint32_t f32_bits(float f) { return __builtin_bit_cast(uint32_t, f); }
inline float f32_from_bits(uint32_t u) { return __builtin_bit_cast(float, u); }

inline bf16_t bf16_from_f32(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {uint16_t((u >> 16) | 0x40u)};  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even on the 16 dropped bits
  return {uint16_t(u >> 16)};
}
inline float f32_from_bf16(bf16_t h) { return f32_from_bits(uint32_t(h.bits) << 16); }

f16_t f16_from_f32(float f);
float f32_from_f16(f16_t h);
f8e4m3_t f8e4m3_from_f32(float f);
float f32_from_f8e4m3(f8e4m3_t h);
f8e5m2_t f8e5m2_from_f32(float f);
float f32_from_f8e5m2(f8e5m2_t h);

}  // namespace titan
