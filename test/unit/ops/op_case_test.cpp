// Runs every row of the op-case table on the CPU backend (the registry is op_harness.cpp):
// forward against the float64 reference, backward against central differences, and, for
// ops that take bf16 (a harness's bf16_tolerance), the op on bf16 tensors against itself in
// f32 on the same rounded values: the CPU's mixed precision (ops/cpu/bf16_storage.h) differs
// from its f32 path only by the bf16 roundings of its outputs (and of the loss's dlogits).
#include <gtest/gtest.h>

#include "op_harness.h"
#include "titan/ops/matmul.h"

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

// Each bf16 GEMM mode this CPU can run (ops/matmul.h: widened everywhere, native with
// oneDNN on AVX512_BF16 or AMX).
TEST_P(OpCaseTest, Bf16MatchesF32OnTheRoundedValues) {
  const OpCase& c = GetParam();
  const OpHarness& h = op_harness(c.op);
  if (h.bf16_tolerance <= 0) GTEST_SKIP() << c.op << " takes no bf16 (no bf16_tolerance)";
  std::vector<Tensor> bf16, f32;
  for (const Tensor& t : h.make_inputs(c, 17)) {
    bf16.push_back(stored_as(t, DType::BF16));
    f32.push_back(f32_copy(bf16.back()));
  }
  using ops::cpu::Bf16Gemm;
  const Bf16Gemm chosen = ops::cpu::bf16_gemm();
  for (const Bf16Gemm mode : {Bf16Gemm::Widened, Bf16Gemm::Native}) {
    if (!ops::cpu::bf16_gemm_available(mode)) continue;
    ops::cpu::set_bf16_gemm(mode);
    const std::string label = c.label() + " bf16 (GEMMs " + ops::cpu::bf16_gemm_name(mode) + ")";
    const Tensor out = h.forward(c, bf16);
    expect_close(to_values(out), to_values(h.forward(c, f32)), h.bf16_tolerance,
                 label + " forward");
    if (!h.backward) continue;
    const Tensor dy = stored_as(random_tensor(out.shape(), 29), out.dtype());
    const std::vector<Tensor> grads = h.backward(c, bf16, dy);
    const std::vector<Tensor> expected = h.backward(c, f32, f32_copy(dy));
    for (size_t i = 0; i < grads.size(); ++i) {
      if (!h.differentiable[i]) continue;
      expect_close(to_values(grads[i]), to_values(expected[i]), h.bf16_tolerance,
                   label + " d" + h.input_names[i]);
    }
  }
  ops::cpu::set_bf16_gemm(chosen);
}

INSTANTIATE_TEST_SUITE_P(Cpu, OpCaseTest, ::testing::ValuesIn(op_cases()),
                         [](const ::testing::TestParamInfo<OpCase>& info) {
                           return info.param.label();
                         });

}  // namespace
}  // namespace titan::testing
