#include <gtest/gtest.h>

#include <cmath>

#include "op_harness.h"
#include "titan/ops/swiglu.h"

namespace titan::testing {
namespace {

// Inputs: a = x w1^T, b = x w3^T, both [N, F].
const bool registered = register_op_harness("swiglu", OpHarness{
    .make_inputs = [](const OpCase& c, uint64_t seed) {
      const auto& dims = c.dims_as<SwigluDims>();
      return std::vector<Tensor>{random_tensor({dims.N, dims.F}, seed, 4.0f),
                                 random_tensor({dims.N, dims.F}, seed + 1)};
    },
    .input_names = {"a", "b"},
    .differentiable = {true, true},
    .reference = [](const OpCase&, const std::vector<Values>& in) {
      Values y(in[0].size());
      for (size_t i = 0; i < y.size(); ++i) y[i] = in[0][i] / (1 + std::exp(-in[0][i])) * in[1][i];
      return y;
    },
    .forward = [](const OpCase&, const std::vector<Tensor>& in) {
      Tensor y = empty_like_input(in[0], in[0].shape());
      ops::swiglu_forward(in[0], in[1], y);
      return y;
    },
    .backward = [](const OpCase&, const std::vector<Tensor>& in, const Tensor& dy) {
      Tensor da = empty_like_input(in[0], in[0].shape()), db = empty_like_input(in[0], in[0].shape());
      ops::swiglu_backward(dy, in[0], in[1], da, db);
      return std::vector<Tensor>{da, db};
    },
    // bf16 on the GPU: f32 formulas on bf16 inputs, each output rounded to bf16 once
    // (<= 2^-8 relative); 1e-2 leaves a 2.5x margin.
    .bf16_tolerance = 1e-2,
});

TEST(SwiGlu, LargeNegativeGateGivesZeroNotNan) {
  Tensor a = Tensor::empty({2}, DType::F32), b = Tensor::empty({2}, DType::F32);
  a.mutable_data<float>()[0] = -1000.0f;
  a.mutable_data<float>()[1] = 1000.0f;
  b.mutable_data<float>()[0] = b.mutable_data<float>()[1] = 1.0f;
  Tensor y = Tensor::empty({2}, DType::F32);
  ops::swiglu_forward(a, b, y);
  EXPECT_EQ(y.data<float>()[0], -0.0f);
  EXPECT_EQ(y.data<float>()[1], 1000.0f);
}

}  // namespace
}  // namespace titan::testing
