#include "titan/core/float_formats.h"

#include <cmath>

namespace titan {
namespace {

// A binary format with one sign bit, `exp_bits` exponent bits and `man_bits` mantissa bits.
struct MiniFloat {
  int exp_bits;
  int man_bits;
  bool has_inf;  // IEEE-like top exponent; false for e4m3fn, which keeps it for numbers
  bool saturate;

  int bias() const { return (1 << (exp_bits - 1)) - 1; }
  uint32_t sign_bit() const { return 1u << (exp_bits + man_bits); }
  uint32_t nan_bits() const {
    return has_inf ? ((((1u << exp_bits) - 1) << man_bits) | (1u << (man_bits - 1)))
                   : ((1u << (exp_bits + man_bits)) - 1);
  }
  uint32_t inf_bits() const { return ((1u << exp_bits) - 1) << man_bits; }
  uint32_t max_finite_bits() const {
    return has_inf ? inf_bits() - 1 : nan_bits() - 1;
  }

  uint32_t encode(float f) const {
    const uint32_t sign = std::signbit(f) ? sign_bit() : 0;
    if (std::isnan(f)) return sign | nan_bits();
    const double a = std::fabs(double(f));
    const uint32_t overflow = (has_inf && !saturate) ? inf_bits() : max_finite_bits();
    // Saturating formats take infinities to their largest finite value too, as CUDA's
    // __NV_SATFINITE conversion does, so the CPU and GPU backends agree bit for bit.
    if (std::isinf(a)) return sign | overflow;
    const int min_exp = 1 - bias();
    int e = 0;
    std::frexp(a, &e);  // a = m * 2^e with m in [0.5, 1)
    e -= 1;             // a = (1.f) * 2^e
    uint32_t bits;
    if (a == 0.0) {
      bits = 0;
    } else if (e < min_exp) {  // subnormal: a multiple of 2^(min_exp - man_bits)
      const double q = std::nearbyint(std::ldexp(a, man_bits - min_exp));
      bits = uint32_t(q);  // q == 2^man_bits encodes the smallest normal, as it should
    } else {
      double q = std::nearbyint(std::ldexp(a, man_bits - e));  // in [2^M, 2^(M+1)]
      if (q >= double(2u << man_bits)) {
        q /= 2;
        e += 1;
      }
      const uint32_t exp_field = uint32_t(e + bias());
      bits = (exp_field << man_bits) | (uint32_t(q) - (1u << man_bits));
    }
    if (bits > max_finite_bits()) bits = overflow;
    return sign | bits;
  }

  float decode(uint32_t bits) const {
    const bool negative = bits & sign_bit();
    bits &= sign_bit() - 1;
    const uint32_t exp_field = bits >> man_bits;
    const uint32_t man = bits & ((1u << man_bits) - 1);
    double value;
    if (has_inf && exp_field == (1u << exp_bits) - 1) {
      value = man ? NAN : INFINITY;
    } else if (!has_inf && bits == nan_bits()) {
      value = NAN;
    } else if (exp_field == 0) {
      value = std::ldexp(double(man), 1 - bias() - man_bits);
    } else {
      value = std::ldexp(double(man | (1u << man_bits)), int(exp_field) - bias() - man_bits);
    }
    return float(negative ? -value : value);
  }
};

constexpr MiniFloat kF16{5, 10, true, false};
constexpr MiniFloat kF8E4M3{4, 3, false, true};
constexpr MiniFloat kF8E5M2{5, 2, true, true};

}  // namespace

f16_t f16_from_f32(float f) { return {uint16_t(kF16.encode(f))}; }
float f32_from_f16(f16_t h) { return kF16.decode(h.bits); }
f8e4m3_t f8e4m3_from_f32(float f) { return {uint8_t(kF8E4M3.encode(f))}; }
float f32_from_f8e4m3(f8e4m3_t h) { return kF8E4M3.decode(h.bits); }
f8e5m2_t f8e5m2_from_f32(float f) { return {uint8_t(kF8E5M2.encode(f))}; }
float f32_from_f8e5m2(f8e5m2_t h) { return kF8E5M2.decode(h.bits); }

}  // namespace titan
