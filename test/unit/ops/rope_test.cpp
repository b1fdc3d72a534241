#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "op_harness.h"
#include "titan/core/copy.h"
#include "titan/ops/rope.h"

namespace titan::testing {
namespace {

constexpr double kTheta = 500000.0;

Tensor table_for(int64_t T, int64_t hd, int64_t first_position = 0) {
  Tensor freqs = Tensor::empty({T, hd / 2, 2}, DType::F32);
  ops::rope_table(hd, kTheta, ops::RopeScaling{}, first_position, freqs);
  return freqs;
}

// The table on the device of x (rope_table fills a CPU tensor).
Tensor table_beside(const Tensor& x, int64_t T, int64_t hd) {
  const Tensor freqs = table_for(T, hd);
  return x.device().is_cpu() ? freqs : to_device(freqs, x.device());
}

// The scaled frequency of pair i, in float64 from the formula in ops/rope.h.
double reference_frequency(int64_t i, int64_t hd) {
  const ops::RopeScaling s;
  const double f = std::pow(kTheta, -2.0 * double(i) / double(hd));
  const double w = 2 * std::numbers::pi / f, L = s.original_max_positions;
  if (w < L / s.high_freq_factor) return f;
  if (w > L / s.low_freq_factor) return f / s.factor;
  const double sm = (L / w - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
  return (1 - sm) * f / s.factor + sm * f;
}

// Input: x [B, T, H, hd]; the table comes from rope_table.
const bool registered = register_op_harness("rope", OpHarness{
    .make_inputs = [](const OpCase& c, uint64_t seed) {
      const auto& dims = c.dims_as<RopeDims>();
      return std::vector<Tensor>{random_tensor({dims.B, dims.T, dims.H, dims.hd}, seed)};
    },
    .input_names = {"x"},
    .differentiable = {true},
    .reference = [](const OpCase& c, const std::vector<Values>& in) {
      const auto& dims = c.dims_as<RopeDims>();
      const int64_t B = dims.B, T = dims.T, H = dims.H, hd = dims.hd;
      Values y(in[0].size());
      for (int64_t b = 0; b < B; ++b)
        for (int64_t t = 0; t < T; ++t)
          for (int64_t h = 0; h < H; ++h)
            for (int64_t i = 0; i < hd / 2; ++i) {
              const double a = double(t) * reference_frequency(i, hd);
              const int64_t k = ((b * T + t) * H + h) * hd + 2 * i;
              y[k] = in[0][k] * std::cos(a) - in[0][k + 1] * std::sin(a);
              y[k + 1] = in[0][k] * std::sin(a) + in[0][k + 1] * std::cos(a);
            }
      return y;
    },
    .forward = [](const OpCase& c, const std::vector<Tensor>& in) {
      Tensor y = empty_like_input(in[0], in[0].shape());
      const auto& dims = c.dims_as<RopeDims>();
      ops::rope_forward(in[0], table_beside(in[0], dims.T, dims.hd), y);
      return y;
    },
    .backward = [](const OpCase& c, const std::vector<Tensor>& in, const Tensor& dy) {
      Tensor dx = empty_like_input(in[0], in[0].shape());
      const auto& dims = c.dims_as<RopeDims>();
      ops::rope_backward(dy, table_beside(in[0], dims.T, dims.hd), dx);
      return std::vector<Tensor>{dx};
    },
    // Angles are float32 products, as in torchtitan; at position ~100 that is ~1e-5 off.
    .forward_tolerance = 2e-5,
    // bf16 on the GPU: one rotation in f32, rounded to bf16 once (<= 2^-8 relative).
    .bf16_tolerance = 1e-2,
});

TEST(Rope, ScalingKeepsHighFrequenciesAndStretchesLowOnes) {
  const int64_t hd = 128;
  const Tensor freqs = table_for(2, hd);  // row 1 holds cos/sin of 1 * f_i
  const float* p = freqs.data<float>();
  for (int64_t i : {0, 10, 40, 63}) {
    const double f = reference_frequency(i, hd);
    EXPECT_NEAR(std::atan2(p[(hd / 2 + i) * 2 + 1], p[(hd / 2 + i) * 2]), f, 1e-6 * std::max(1.0, f)) << i;
  }
  // Pair 0 has wavelength 2 pi < 8192/4: unscaled; pair 63's wavelength is far above 8192.
  EXPECT_DOUBLE_EQ(reference_frequency(0, hd), 1.0);
  EXPECT_NEAR(reference_frequency(63, hd), std::pow(kTheta, -126.0 / 128) / 8, 1e-12);
}

TEST(Rope, InPlaceEqualsOutOfPlaceAndOffsetTableShiftsPositions) {
  const Tensor x = random_tensor({1, 6, 2, 8}, 1);
  Tensor y = Tensor::empty(x.shape(), DType::F32);
  ops::rope_forward(x, table_for(6, 8), y);
  Tensor in_place = random_tensor({1, 6, 2, 8}, 1);
  ops::rope_forward(in_place, table_for(6, 8), in_place);
  EXPECT_EQ(to_values(in_place), to_values(y));
  // Rows 3..5 of the table equal a table that starts at position 3.
  const Tensor whole = table_for(6, 8), tail = table_for(3, 8, 3);
  EXPECT_EQ(to_values(whole.narrow(3, 3)), to_values(tail));
}

TEST(Rope, BackwardInvertsForward) {
  const Tensor x = random_tensor({2, 5, 3, 16}, 4);
  Tensor y = Tensor::empty(x.shape(), DType::F32), back = Tensor::empty(x.shape(), DType::F32);
  ops::rope_forward(x, table_for(5, 16), y);
  ops::rope_backward(y, table_for(5, 16), back);  // rotation is orthogonal: R^T R = I
  expect_close(to_values(back), to_values(x), 1e-6, "R^T R x");
}

}  // namespace
}  // namespace titan::testing
