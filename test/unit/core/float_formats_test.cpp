// The 16- and 8-bit float formats (core/float_formats.h).
//
// Three kinds of evidence: every bit pattern of every format decodes and re-encodes to
// itself (but e5m2's infinities, which saturate to max finite); encoding a large sample
// of f32 values (every sign, exponent and top-10 mantissa pattern with the low bits set
// to exact ties and their neighbours, plus random bits) matches a brute-force reference that picks the nearest value from the format's own
// table of values (ties to the even code); and the landmark values (max finite, smallest
// subnormal, RNE ties, saturation, overflow, negative zero) are spelled out. f16 is also
// compared with the compiler's _Float16 conversions where it has them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "titan/core/float_formats.h"

namespace titan {
namespace {

// One format seen through its bit patterns, so that one test body covers all four.
struct Format {
  const char* name;
  int bits;  // 16 or 8
  std::function<float(uint32_t)> decode;
  std::function<uint32_t(float)> encode;
  bool saturates;  // fp8: beyond the range gives max finite; else inf
};

std::vector<Format> formats() {
  return {
      {"bf16", 16, [](uint32_t b) { return f32_from_bf16({uint16_t(b)}); },
       [](float f) { return uint32_t(bf16_from_f32(f).bits); }, false},
      {"f16", 16, [](uint32_t b) { return f32_from_f16({uint16_t(b)}); },
       [](float f) { return uint32_t(f16_from_f32(f).bits); }, false},
      {"f8e4m3", 8, [](uint32_t b) { return f32_from_f8e4m3({uint8_t(b)}); },
       [](float f) { return uint32_t(f8e4m3_from_f32(f).bits); }, true},
      {"f8e5m2", 8, [](uint32_t b) { return f32_from_f8e5m2({uint8_t(b)}); },
       [](float f) { return uint32_t(f8e5m2_from_f32(f).bits); }, true},
  };
}

uint32_t sign_bit(const Format& f) { return 1u << (f.bits - 1); }

TEST(FloatFormats, EveryBitPatternRoundTrips) {
  for (const Format& f : formats()) {
    int64_t nans = 0;
    for (uint32_t b = 0; b < (1u << f.bits); ++b) {
      const float value = f.decode(b);
      if (std::isnan(value)) {
        ++nans;
        ASSERT_TRUE(std::isnan(f.decode(f.encode(value)))) << f.name << " NaN " << std::hex << b;
        continue;
      }
      if (std::isinf(value) && f.saturates) {  // e5m2's inf code: casts saturate instead
        ASSERT_EQ(f.encode(value), b - 1) << f.name << " pattern " << std::hex << b;
        continue;
      }
      ASSERT_EQ(f.encode(value), b) << f.name << " pattern " << std::hex << b << " = " << value;
    }
    // The NaN patterns each format has: exponent all ones with a non-zero mantissa, or
    // only S.1111.111 for e4m3fn.
    const int64_t expected_nans = std::string_view(f.name) == "bf16"   ? 2 * 127
                                  : std::string_view(f.name) == "f16"  ? 2 * 1023
                                  : std::string_view(f.name) == "f8e4m3" ? 2
                                                                         : 2 * 3;
    EXPECT_EQ(nans, expected_nans) << f.name;
  }
}

TEST(FloatFormats, PositiveCodesDecodeInIncreasingOrder) {
  for (const Format& f : formats()) {
    float previous = -1;
    for (uint32_t b = 0; b < sign_bit(f); ++b) {
      const float value = f.decode(b);
      if (std::isnan(value)) break;  // NaNs sit above every number
      ASSERT_GT(value, previous) << f.name << " pattern " << std::hex << b;
      previous = value;
      // The sign bit only flips the sign (negative zero included).
      const float negative = f.decode(b | sign_bit(f));
      ASSERT_EQ(f32_bits(negative), f32_bits(-value)) << f.name << " pattern " << std::hex << b;
    }
  }
}

// The brute-force reference: the nearest entry of the format's table of non-negative
// values, ties to the even code. Non-saturating formats get a virtual entry one ulp above
// max finite carrying the infinity's code, which is how IEEE rounding decides overflow;
// for saturating ones everything past the table is max finite.
class NearestValue {
 public:
  explicit NearestValue(const Format& f) : format_(f) {
    for (uint32_t b = 0; b < sign_bit(f); ++b) {
      const float v = f.decode(b);
      if (std::isnan(v)) continue;
      if (std::isinf(v)) {
        if (f.saturates) continue;  // e5m2 has the code, but values past max never reach it
        const double max = values_.back();
        const double ulp = max - values_[values_.size() - 2];
        values_.push_back(max + ulp);
        codes_.push_back(b);
        continue;
      }
      values_.push_back(v);
      codes_.push_back(b);
    }
  }

  uint32_t encode(float x) const {
    const uint32_t sign = std::signbit(x) ? sign_bit(format_) : 0;
    const double a = std::fabs(double(x));
    if (std::isinf(a)) return sign | codes_.back();  // inf, or max finite when saturating
    const auto above = std::upper_bound(values_.begin(), values_.end(), a);
    if (above == values_.end()) return sign | codes_.back();  // beyond the table: saturate
    const size_t hi = size_t(above - values_.begin()), lo = hi - 1;
    const double below_distance = a - values_[lo], above_distance = values_[hi] - a;
    if (below_distance < above_distance) return sign | codes_[lo];
    if (above_distance < below_distance) return sign | codes_[hi];
    return sign | ((codes_[lo] & 1) == 0 ? codes_[lo] : codes_[hi]);
  }

 private:
  const Format& format_;
  std::vector<double> values_;
  std::vector<uint32_t> codes_;
};

// Every sign/exponent/top-10-mantissa pattern with the low 13 bits at an exact f16 tie,
// its neighbours, and the ends; then a million random bit patterns.
std::vector<uint32_t> sample_f32_bits() {
  std::vector<uint32_t> bits;
  const uint32_t lows[] = {0x0000, 0x0001, 0x0fff, 0x1000, 0x1001, 0x1fff};
  for (uint32_t high = 0; high < (1u << 19); ++high) {
    for (uint32_t low : lows) bits.push_back((high << 13) | low);
  }
  std::mt19937 rng(2024);
  for (int i = 0; i < 1'000'000; ++i) bits.push_back(uint32_t(rng()));
  return bits;
}

TEST(FloatFormats, EncodingIsTheNearestValueTiesToEven) {
  const std::vector<uint32_t> sample = sample_f32_bits();
  for (const Format& f : formats()) {
    const NearestValue reference(f);
    int64_t mismatches = 0;
    for (uint32_t b : sample) {
      const float x = f32_from_bits(b);
      const uint32_t actual = f.encode(x);
      if (std::isnan(x)) {
        if (!std::isnan(f.decode(actual)) && ++mismatches <= 5) {
          ADD_FAILURE() << f.name << ": NaN " << std::hex << b << " encoded as a number";
        }
        continue;
      }
      const uint32_t expected = reference.encode(x);
      if (actual != expected && ++mismatches <= 5) {
        ADD_FAILURE() << f.name << ": f32 " << std::hex << b << " (" << x << ") -> " << actual
                      << ", nearest is " << expected;
      }
    }
    EXPECT_EQ(mismatches, 0) << f.name << " over " << sample.size() << " values";
  }
}

TEST(FloatFormats, F16MatchesTheCompilersFloat16) {
#if defined(__FLT16_MAX__)
  for (uint32_t b = 0; b < 0x10000; ++b) {  // decoding: every pattern
    const uint16_t h_bits = uint16_t(b);
    _Float16 h;
    std::memcpy(&h, &h_bits, 2);
    const float expected = float(h);
    const float actual = f32_from_f16({h_bits});
    if (std::isnan(expected)) {
      ASSERT_TRUE(std::isnan(actual)) << std::hex << b;
    } else {
      ASSERT_EQ(f32_bits(actual), f32_bits(expected)) << std::hex << b;
    }
  }
  for (uint32_t b : sample_f32_bits()) {  // encoding: the sample
    const float x = f32_from_bits(b);
    const _Float16 h = static_cast<_Float16>(x);
    uint16_t expected;
    std::memcpy(&expected, &h, 2);
    const uint16_t actual = f16_from_f32(x).bits;
    if (std::isnan(x)) {
      ASSERT_TRUE(std::isnan(f32_from_f16({actual}))) << std::hex << b;
    } else {
      ASSERT_EQ(actual, expected) << "f32 " << std::hex << b << " = " << x;
    }
  }
#else
  GTEST_SKIP() << "this compiler has no _Float16; the nearest-value test still covers f16";
#endif
}

TEST(FloatFormats, Bf16RoundsTiesToEven) {
  EXPECT_EQ(bf16_from_f32(1.0f).bits, 0x3f80);
  EXPECT_EQ(bf16_from_f32(1.0f + 0x1p-8f).bits, 0x3f80);           // tie, 1.0 is even
  EXPECT_EQ(bf16_from_f32(1.0f + 0x1p-8f + 0x1p-20f).bits, 0x3f81);  // just above the tie
  EXPECT_EQ(bf16_from_f32(1.0f + 3 * 0x1p-8f).bits, 0x3f82);       // tie, rounds up to even
  EXPECT_EQ(bf16_from_f32(-0.0f).bits, 0x8000);
  EXPECT_EQ(bf16_from_f32(std::numeric_limits<float>::max()).bits, 0x7f80);  // overflows to inf
  EXPECT_EQ(bf16_from_f32(-INFINITY).bits, 0xff80);
  EXPECT_EQ(f32_from_bf16({0x7f7f}), 0x1.fep127f);  // max finite
  // A signalling NaN must not lose its mantissa to truncation and become inf.
  const float signalling = f32_from_bits(0x7f800001u);
  EXPECT_TRUE(std::isnan(f32_from_bf16(bf16_from_f32(signalling))));
  EXPECT_TRUE(std::isnan(f32_from_bf16(bf16_from_f32(-signalling))));
  // f32 subnormals keep their bits: bf16 has f32's exponent range.
  EXPECT_EQ(bf16_from_f32(0x1p-133f).bits, 0x0001);
}

TEST(FloatFormats, F16LandmarksAndOverflowToInfinity) {
  EXPECT_EQ(f16_from_f32(1.0f).bits, 0x3c00);
  EXPECT_EQ(f16_from_f32(1.0f + 0x1p-11f).bits, 0x3c00);      // tie to even
  EXPECT_EQ(f16_from_f32(1.0f + 3 * 0x1p-11f).bits, 0x3c02);  // tie to even, upward
  EXPECT_EQ(f16_from_f32(65504.0f).bits, 0x7bff);
  EXPECT_EQ(f32_from_f16({0x7bff}), 65504.0f);
  EXPECT_EQ(f16_from_f32(65519.0f).bits, 0x7bff);  // below the halfway point to 65536
  EXPECT_EQ(f16_from_f32(65520.0f).bits, 0x7c00);  // the tie goes to the even code: inf
  EXPECT_EQ(f16_from_f32(1e9f).bits, 0x7c00);
  EXPECT_EQ(f16_from_f32(-1e9f).bits, 0xfc00);
  EXPECT_EQ(f16_from_f32(0x1p-14f).bits, 0x0400);      // smallest normal
  EXPECT_EQ(f16_from_f32(0x1p-24f).bits, 0x0001);      // smallest subnormal
  EXPECT_EQ(f16_from_f32(0x1p-25f).bits, 0x0000);      // half of it: tie to zero (even)
  EXPECT_EQ(f16_from_f32(0x1.0001p-25f).bits, 0x0001);  // just above half
  EXPECT_EQ(f16_from_f32(3 * 0x1p-25f).bits, 0x0002);  // tie between 1 and 2 codes: 2
  EXPECT_EQ(f32_from_f16({0x03ff}), 0x1.ff8p-15f);     // largest subnormal
  EXPECT_EQ(f16_from_f32(-0.0f).bits, 0x8000);
  EXPECT_TRUE(std::signbit(f32_from_f16({0x8000})));
  EXPECT_TRUE(std::isinf(f32_from_f16({0x7c00})));
  EXPECT_TRUE(std::isnan(f32_from_f16({0x7e00})));
}

TEST(FloatFormats, F8E4M3SaturatesAndHasNoInfinity) {
  EXPECT_EQ(f8e4m3_from_f32(1.0f).bits, 0x38);
  EXPECT_EQ(f32_from_f8e4m3({0x7e}), 448.0f);       // max finite: S.1111.110
  EXPECT_EQ(f8e4m3_from_f32(448.0f).bits, 0x7e);
  EXPECT_EQ(f8e4m3_from_f32(464.0f).bits, 0x7e);    // halfway to "480" (a NaN code): even, 448
  EXPECT_EQ(f8e4m3_from_f32(1000.0f).bits, 0x7e);   // saturates
  EXPECT_EQ(f8e4m3_from_f32(-1e30f).bits, 0xfe);
  EXPECT_EQ(f8e4m3_from_f32(INFINITY).bits, 0x7e);  // no infinity: saturates too
  EXPECT_EQ(f8e4m3_from_f32(-INFINITY).bits, 0xfe);
  EXPECT_TRUE(std::isnan(f32_from_f8e4m3({0x7f})));
  EXPECT_TRUE(std::isnan(f32_from_f8e4m3({0xff})));
  EXPECT_EQ(f8e4m3_from_f32(NAN).bits & 0x7f, 0x7f);
  EXPECT_EQ(f32_from_f8e4m3({0x77}), 240.0f);       // 1.111b * 2^7: the exponent 15 is a number
  EXPECT_EQ(f32_from_f8e4m3({0x08}), 0x1p-6f);      // smallest normal
  EXPECT_EQ(f32_from_f8e4m3({0x01}), 0x1p-9f);      // smallest subnormal
  EXPECT_EQ(f8e4m3_from_f32(0x1p-10f).bits, 0x00);  // tie to zero
  EXPECT_EQ(f8e4m3_from_f32(0x1.01p-10f).bits, 0x01);
  EXPECT_EQ(f8e4m3_from_f32(1.0625f).bits, 0x38);   // 1 + 2^-4: tie, 1.0 is even
  EXPECT_EQ(f8e4m3_from_f32(1.1875f).bits, 0x3a);   // 1 + 3 * 2^-4: tie, up to 1.25
  EXPECT_EQ(f8e4m3_from_f32(-0.0f).bits, 0x80);
  EXPECT_TRUE(std::signbit(f32_from_f8e4m3({0x80})));
}

TEST(FloatFormats, F8E5M2SaturatesFiniteAndInfiniteValues) {
  EXPECT_EQ(f8e5m2_from_f32(1.0f).bits, 0x3c);
  EXPECT_EQ(f32_from_f8e5m2({0x7b}), 57344.0f);  // max finite
  EXPECT_EQ(f8e5m2_from_f32(57344.0f).bits, 0x7b);
  EXPECT_EQ(f8e5m2_from_f32(1e6f).bits, 0x7b);
  EXPECT_EQ(f8e5m2_from_f32(-1e6f).bits, 0xfb);
  EXPECT_EQ(f8e5m2_from_f32(INFINITY).bits, 0x7b);  // satfinite, as CUDA's conversion
  EXPECT_EQ(f8e5m2_from_f32(-INFINITY).bits, 0xfb);
  EXPECT_TRUE(std::isinf(f32_from_f8e5m2({0x7c})));  // the code exists; casts never make it
  for (uint32_t b : {0x7du, 0x7eu, 0x7fu, 0xfdu, 0xfeu, 0xffu}) {
    EXPECT_TRUE(std::isnan(f32_from_f8e5m2({uint8_t(b)}))) << std::hex << b;
  }
  EXPECT_TRUE(std::isnan(f32_from_f8e5m2(f8e5m2_from_f32(NAN))));
  EXPECT_EQ(f32_from_f8e5m2({0x04}), 0x1p-14f);      // smallest normal
  EXPECT_EQ(f32_from_f8e5m2({0x01}), 0x1p-16f);      // smallest subnormal
  EXPECT_EQ(f8e5m2_from_f32(0x1p-17f).bits, 0x00);   // tie to zero
  EXPECT_EQ(f8e5m2_from_f32(3 * 0x1p-17f).bits, 0x02);  // tie between codes 1 and 2: 2
  EXPECT_EQ(f8e5m2_from_f32(1.125f).bits, 0x3c);     // 1 + 2^-3: tie, 1.0 is even
  EXPECT_EQ(f8e5m2_from_f32(1.375f).bits, 0x3e);     // 1 + 3 * 2^-3: tie, up to 1.5
  EXPECT_EQ(f8e5m2_from_f32(-0.0f).bits, 0x80);
}

}  // namespace
}  // namespace titan
