// Float8 scaled casts (ops/float8.h) against an independent float64 implementation of the
// same rule: amaxes, scales and every cast bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "support/float_reference.h"
#include "titan/core/float_formats.h"
#include "titan/ops/float8.h"

namespace titan {
namespace {

using ops::Float8Axis;

// Values over 2^-30 .. 2^10 in magnitude, both signs, a zero row and a zero column, so
// scaled values fall on subnormals, normals and (with a shared scale) saturation.
Tensor spread_tensor(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> exponent(-30.0, 10.0), sign(-1.0, 1.0);
  Tensor t = Tensor::empty({rows, cols}, DType::F32);
  float* p = t.mutable_data<float>();
  for (int64_t i = 0; i < rows * cols; ++i) {
    p[i] = float(std::copysign(std::exp2(exponent(rng)), sign(rng)));
  }
  for (int64_t j = 0; j < cols; ++j) p[1 * cols + j] = 0.0f;  // row 1
  for (int64_t i = 0; i < rows; ++i) p[i * cols + 2] = 0.0f;  // column 2
  return t;
}

int64_t group_of(Float8Axis axis, int64_t i, int64_t j) {
  return axis == Float8Axis::Tensor ? 0 : axis == Float8Axis::Rows ? i : j;
}

// The rule of ops/float8.h in float64, from the definition.
double reference_scale(double amax, DType format, bool power_of_two) {
  const double fmax = float_layout_of(format).max;
  double s = double(float(fmax / std::max(amax, 1e-12)));
  if (power_of_two) {
    int e;
    std::frexp(s, &e);  // s in [2^(e-1), 2^e)
    s = std::ldexp(1.0, e - 1);
  }
  return s;
}

struct Case {
  Float8Axis axis;
  DType format;
  bool power_of_two;
};

class Float8Cast : public ::testing::TestWithParam<Case> {};

TEST_P(Float8Cast, MatchesTheFloat64Rule) {
  const Case c = GetParam();
  const int64_t rows = 37, cols = 29;
  const Tensor x = spread_tensor(rows, cols, 7);
  const int64_t groups = ops::float8_scale_count(x, c.axis);
  Tensor amax = Tensor::empty({groups}, DType::F32);
  ops::float8_amax(x, c.axis, amax);
  std::vector<double> want_amax(size_t(groups), 0.0);
  const float* xs = x.data<float>();
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      double& m = want_amax[size_t(group_of(c.axis, i, j))];
      m = std::max(m, std::fabs(double(xs[i * cols + j])));
    }
  Tensor scale = Tensor::empty({groups}, DType::F32);
  ops::float8_scales(amax, c.format, c.power_of_two, scale);
  for (int64_t g = 0; g < groups; ++g) {
    ASSERT_EQ(double(amax.data<float>()[g]), want_amax[size_t(g)]) << g;
    ASSERT_EQ(double(scale.data<float>()[g]),
              reference_scale(want_amax[size_t(g)], c.format, c.power_of_two)) << g;
  }
  if (c.axis == Float8Axis::Tensor) {  // a shared scale: make some values saturate
    scale.mutable_data<float>()[0] *= 4.0f;
  }
  Tensor y = Tensor::empty(x.shape(), DType::F32);
  ops::float8_round_trip(x, scale, c.axis, c.format, y);
  Tensor q = Tensor::empty(x.shape(), c.format), back = Tensor::empty(x.shape(), DType::F32);
  ops::float8_quantize(x, scale, c.axis, q);
  ops::float8_dequantize(q, scale, c.axis, back);
  const FloatLayout layout = float_layout_of(c.format);
  int saturated = 0;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const int64_t at = i * cols + j;
      const float s = scale.data<float>()[group_of(c.axis, i, j)];
      const double q_ref = round_to_format(double(xs[at] * s), layout);  // product in f32
      saturated += std::fabs(q_ref) == layout.max;
      const float want = float(q_ref) / s;
      ASSERT_EQ(y.data<float>()[at], want) << i << "," << j;
      ASSERT_EQ(back.data<float>()[at], want) << i << "," << j;
    }
  if (c.axis == Float8Axis::Tensor) {
    EXPECT_GT(saturated, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(
    AxesAndFormats, Float8Cast,
    ::testing::Values(Case{Float8Axis::Tensor, DType::F8E4M3, false},
                      Case{Float8Axis::Tensor, DType::F8E5M2, false},
                      Case{Float8Axis::Rows, DType::F8E4M3, true},
                      Case{Float8Axis::Columns, DType::F8E4M3, true},
                      Case{Float8Axis::Rows, DType::F8E5M2, false},
                      Case{Float8Axis::Columns, DType::F8E5M2, true}));

// The round trip (a fast path for finite values) equals quantize then dequantize (core's
// encoding) bit for bit on every kind of value: each fp8 code's neighbourhood, halfway
// points, subnormals, saturation, signed zeros, infinities and NaN.
TEST(Float8Cast, RoundTripEqualsQuantizeThenDequantizeBitForBit) {
  for (const DType format : {DType::F8E4M3, DType::F8E5M2}) {
    std::vector<float> values = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, 1e-30f, -1e-30f,
                                 1e30f, -1e30f, 0x1p-149f};
    for (int code = 0; code < 256; ++code) {
      const float v = format == DType::F8E4M3 ? f32_from_f8e4m3({uint8_t(code)})
                                              : f32_from_f8e5m2({uint8_t(code)});
      if (!std::isfinite(v)) continue;
      for (const float f : {0.5f, 0.75f, 0.999f, 1.0f, 1.001f, 1.25f, 1.5f, 2.0f}) {
        values.push_back(v * f);
        values.push_back(std::nextafter(v * f, 0.0f));
        values.push_back(std::nextafter(v * f, INFINITY));
      }
    }
    const int64_t n = int64_t(values.size());
    Tensor x = Tensor::empty({n}, DType::F32);
    std::copy(values.begin(), values.end(), x.mutable_data<float>());
    Tensor one = Tensor::empty({1}, DType::F32);
    one.mutable_data<float>()[0] = 1.0f;
    Tensor y = Tensor::empty({n}, DType::F32), back = Tensor::empty({n}, DType::F32);
    Tensor q = Tensor::empty({n}, format);
    ops::float8_round_trip(x, one, Float8Axis::Tensor, format, y);
    ops::float8_quantize(x, one, Float8Axis::Tensor, q);
    ops::float8_dequantize(q, one, Float8Axis::Tensor, back);
    int64_t differ = 0;
    for (int64_t i = 0; i < n; ++i) {
      differ += std::memcmp(&y.data<float>()[i], &back.data<float>()[i], sizeof(float)) != 0;
    }
    EXPECT_EQ(differ, 0) << dtype_name(format) << " of " << n;
  }
}

TEST(Float8Scale, FollowsTheRule) {
  EXPECT_EQ(ops::float8_scale(1.0f, DType::F8E4M3, false), 448.0f);
  EXPECT_EQ(ops::float8_scale(2.0f, DType::F8E5M2, false), 28672.0f);
  EXPECT_EQ(ops::float8_scale(3.0f, DType::F8E4M3, false), float(448.0 / 3.0));
  EXPECT_EQ(ops::float8_scale(3.0f, DType::F8E4M3, true), 128.0f);  // 149.3 rounded down
  EXPECT_EQ(ops::float8_scale(0.0f, DType::F8E4M3, false), float(448.0 / 1e-12));
  EXPECT_TRUE(std::isfinite(ops::float8_scale(0.0f, DType::F8E5M2, true)));
  EXPECT_EQ(ops::float8_max(DType::F8E4M3), 448.0f);
  EXPECT_EQ(ops::float8_max(DType::F8E5M2), 57344.0f);
}

TEST(Float8Scale, AmaxMapsToTheLargestFiniteValue) {
  // The element equal to amax becomes +-fmax exactly (tensorwise, not rounded to pow2).
  Tensor x = Tensor::empty({1, 3}, DType::F32);
  x.mutable_data<float>()[0] = 0.1f;
  x.mutable_data<float>()[1] = -3.7f;
  x.mutable_data<float>()[2] = 1.0f;
  Tensor amax = Tensor::empty({1}, DType::F32), scale = Tensor::empty({1}, DType::F32);
  ops::float8_amax(x, Float8Axis::Tensor, amax);
  ops::float8_scales(amax, DType::F8E4M3, false, scale);
  Tensor q = Tensor::empty({1, 3}, DType::F8E4M3);
  ops::float8_quantize(x, scale, Float8Axis::Tensor, q);
  EXPECT_EQ(f32_from_f8e4m3(q.data<f8e4m3_t>()[1]), -448.0f);
}

TEST(Float8Cast, RejectsBadArguments) {
  const Tensor x = Tensor::zeros({4, 3}, DType::F32);
  Tensor amax = Tensor::empty({3}, DType::F32);
  EXPECT_THROW(ops::float8_amax(x, Float8Axis::Rows, amax), Error);  // 4 rows, 3 amaxes
  Tensor scale = Tensor::zeros({1}, DType::F32), y = Tensor::empty({4, 3}, DType::F32);
  EXPECT_THROW(ops::float8_round_trip(x, scale, Float8Axis::Tensor, DType::BF16, y), Error);
  Tensor q = Tensor::empty({4, 3}, DType::F32);
  EXPECT_THROW(ops::float8_quantize(x, scale, Float8Axis::Tensor, q), Error);
}

}  // namespace
}  // namespace titan
