#include <gtest/gtest.h>

#include <cmath>

#include "op_harness.h"
#include "titan/ops/rmsnorm.h"

namespace titan::testing {
namespace {

constexpr float kEps = 1e-5f;

// Inputs: x [N, D], weight [D].
const bool registered = register_op_harness("rmsnorm", OpHarness{
    .make_inputs = [](const OpCase& c, uint64_t seed) {
      const auto& dims = c.dims_as<RmsNormDims>();
      return std::vector<Tensor>{random_tensor({dims.N, dims.D}, seed),
                                 random_tensor({dims.D}, seed + 1)};
    },
    .input_names = {"x", "weight"},
    .differentiable = {true, true},
    .reference = [](const OpCase& c, const std::vector<Values>& in) {
      const auto& dims = c.dims_as<RmsNormDims>();
      const int64_t N = dims.N, D = dims.D;
      Values y(size_t(N * D));
      for (int64_t n = 0; n < N; ++n) {
        double ss = 0;
        for (int64_t i = 0; i < D; ++i) ss += in[0][n * D + i] * in[0][n * D + i];
        const double r = 1.0 / std::sqrt(ss / D + kEps);
        for (int64_t i = 0; i < D; ++i) y[n * D + i] = in[0][n * D + i] * r * in[1][i];
      }
      return y;
    },
    .forward = [](const OpCase& c, const std::vector<Tensor>& in) {
      Tensor y = empty_like_input(in[0], in[0].shape());
      Tensor rstd = f32_beside(in[0], {c.dims_as<RmsNormDims>().N});
      ops::rmsnorm_forward(in[0], in[1], kEps, y, rstd);
      return y;
    },
    .backward = [](const OpCase& c, const std::vector<Tensor>& in, const Tensor& dy) {
      Tensor y = empty_like_input(in[0], in[0].shape());
      Tensor rstd = f32_beside(in[0], {c.dims_as<RmsNormDims>().N});
      ops::rmsnorm_forward(in[0], in[1], kEps, y, rstd);
      Tensor dx = empty_like_input(in[0], in[0].shape());
      Tensor dw = zeros_like_input(in[1], in[1].shape());
      ops::rmsnorm_backward_input(dy, in[0], in[1], rstd, dx, ops::Accumulate::No);
      ops::rmsnorm_backward_weight(dy, in[0], rstd, dw);
      return std::vector<Tensor>{dx, dw};
    },
    // bf16 on the GPU: y, dx and dweight are rounded to bf16 once (relative error <= 2^-8,
    // ~0.4%) after f32 sums over at most 129 elements; 1e-2 leaves a 2.5x margin.
    .bf16_tolerance = 1e-2,
});

TEST(RmsNorm, BackwardInputAccumulatesWhenAsked) {
  const Tensor x = random_tensor({4, 9}, 1), w = random_tensor({9}, 2), dy = random_tensor({4, 9}, 3);
  Tensor y = Tensor::empty({4, 9}, DType::F32), rstd = Tensor::empty({4}, DType::F32);
  ops::rmsnorm_forward(x, w, kEps, y, rstd);
  Tensor fresh = Tensor::empty({4, 9}, DType::F32);
  ops::rmsnorm_backward_input(dy, x, w, rstd, fresh, ops::Accumulate::No);
  Tensor summed = random_tensor({4, 9}, 4);
  const Values before = to_values(summed);
  ops::rmsnorm_backward_input(dy, x, w, rstd, summed, ops::Accumulate::Yes);
  Values expected = to_values(fresh);
  for (size_t i = 0; i < expected.size(); ++i) expected[i] += before[i];
  expect_close(to_values(summed), expected, 1e-6, "accumulated dx");
}

TEST(RmsNorm, WeightGradientAccumulates) {
  const Tensor x = random_tensor({3, 5}, 1), dy = random_tensor({3, 5}, 3);
  Tensor y = Tensor::empty({3, 5}, DType::F32), rstd = Tensor::empty({3}, DType::F32);
  ops::rmsnorm_forward(x, random_tensor({5}, 2), kEps, y, rstd);
  Tensor once = Tensor::zeros({5}, DType::F32), twice = Tensor::zeros({5}, DType::F32);
  ops::rmsnorm_backward_weight(dy, x, rstd, once);
  ops::rmsnorm_backward_weight(dy, x, rstd, twice);
  ops::rmsnorm_backward_weight(dy, x, rstd, twice);
  Values expected = to_values(once);
  for (double& v : expected) v *= 2;
  expect_close(to_values(twice), expected, 1e-6, "dweight after two calls");
}

TEST(RmsNorm, RejectsMismatchedWeight) {
  const Tensor x = random_tensor({2, 4}, 1), w = random_tensor({5}, 2);
  Tensor y = Tensor::empty({2, 4}, DType::F32), rstd = Tensor::empty({2}, DType::F32);
  EXPECT_THROW(ops::rmsnorm_forward(x, w, kEps, y, rstd), Error);
}

}  // namespace
}  // namespace titan::testing
