// Runs every row of the op-case table on the CPU backend (the registry is op_harness.cpp).
#include <gtest/gtest.h>

#include "op_harness.h"

namespace titan::testing {

namespace {

class OpCaseTest : public ::testing::TestWithParam<OpCase> {};

std::vector<Values> values_of(const std::vector<Tensor>& tensors) {
  std::vector<Values> v;
  for (const Tensor& t : tensors) v.push_back(to_values(t));
  return v;
}

TEST_P(OpCaseTest, ForwardMatchesFloat64Reference) {
  const OpCase& c = GetParam();
  const OpHarness& h = op_harness(c.op);
  const std::vector<Tensor> inputs = h.make_inputs(c, 17);
  const Values expected = h.reference(c, values_of(inputs));
  const Values actual = to_values(h.forward(c, inputs));
  expect_close(actual, expected, h.forward_tolerance, c.label() + " forward");
}

TEST_P(OpCaseTest, BackwardMatchesCentralDifferences) {
  const OpCase& c = GetParam();
  const OpHarness& h = op_harness(c.op);
  if (!h.backward) GTEST_SKIP() << c.op << " has no backward";
  const std::vector<Tensor> inputs = h.make_inputs(c, 23);
  const std::vector<Values> x = values_of(inputs);
  const Tensor out = h.forward(c, inputs);
  const Tensor dy = random_tensor(out.shape(), 29);
  const std::vector<Tensor> grads = h.backward(c, inputs, dy);
  ASSERT_EQ(grads.size(), inputs.size());
  std::vector<Values> analytic(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (h.differentiable[i]) analytic[i] = to_values(grads[i]);
  }
  auto reference = [&](const std::vector<Values>& v) { return h.reference(c, v); };
  expect_gradients_match(reference, x, to_values(dy), analytic, h.input_names, h.grad_check);
}

INSTANTIATE_TEST_SUITE_P(Cpu, OpCaseTest, ::testing::ValuesIn(op_cases()),
                         [](const ::testing::TestParamInfo<OpCase>& info) {
                           return info.param.label();
                         });

}  // namespace
}  // namespace titan::testing
