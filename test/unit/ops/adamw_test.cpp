#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "op_harness.h"
#include "titan/ops/adamw.h"

namespace titan::testing {
namespace {

// Flag of the adamw rows: beta1 = 0.3, so torch's lerp takes its other form (weight >= 0.5).
constexpr uint32_t kSmallBeta1 = 1;

// A large rate, so that an error in the update shows against the harness's tolerance,
// which is relative to max(|p|, 1).
ops::AdamWOptions harness_options(uint32_t flags) {
  ops::AdamWOptions o;
  o.lr = 0.05;
  o.weight_decay = 0.1;
  if (flags & kSmallBeta1) o.beta1 = 0.3;
  return o;
}

// Float64 AdamW, written the textbook way (not torch's operation order) on purpose.
void reference_step(Values& p, const Values& g, Values& m, Values& v, const ops::AdamWOptions& o,
                    int64_t step) {
  const double bc1 = 1 - std::pow(o.beta1, double(step)), bc2 = 1 - std::pow(o.beta2, double(step));
  for (size_t i = 0; i < p.size(); ++i) {
    p[i] *= 1 - o.lr * o.weight_decay;
    m[i] = o.beta1 * m[i] + (1 - o.beta1) * g[i];
    v[i] = o.beta2 * v[i] + (1 - o.beta2) * g[i] * g[i];
    p[i] -= o.lr * (m[i] / bc1) / (std::sqrt(v[i] / bc2) + o.eps);
  }
}

Tensor absolute(Tensor t) {
  float* p = t.mutable_data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = std::fabs(p[i]);
  return t;
}

Tensor clone(const Tensor& t) {
  Tensor c = Tensor::empty(t.shape(), t.dtype());
  std::memcpy(c.raw_mutable_data(), t.raw_data(), size_t(t.bytes()));
  return c;
}

// dims: {R, C, step}. Inputs: param, grad, exp_avg, exp_avg_sq [R, C] (exp_avg_sq >= 0).
// Output: [3, R*C], the updated param, exp_avg and exp_avg_sq. No backward.
const bool registered = register_op_harness("adamw", OpHarness{
    .make_inputs = [](const OpCase& c, uint64_t seed) {
      const Shape shape{c.dims[0], c.dims[1]};
      return std::vector<Tensor>{random_tensor(shape, seed), random_tensor(shape, seed + 1),
                                 random_tensor(shape, seed + 2, 0.1f),
                                 absolute(random_tensor(shape, seed + 3, 0.01f))};
    },
    .input_names = {"param", "grad", "exp_avg", "exp_avg_sq"},
    .differentiable = {false, false, false, false},
    .reference = [](const OpCase& c, const std::vector<Values>& in) {
      Values p = in[0], m = in[2], v = in[3];
      reference_step(p, in[1], m, v, harness_options(c.flags), c.dims[2]);
      Values out = p;
      out.insert(out.end(), m.begin(), m.end());
      out.insert(out.end(), v.begin(), v.end());
      return out;
    },
    .forward = [](const OpCase& c, const std::vector<Tensor>& in) {
      Tensor p = clone(in[0]), m = clone(in[2]), v = clone(in[3]);
      ops::adamw_step(p, in[1], m, v, harness_options(c.flags), c.dims[2]);
      const int64_t n = p.numel();
      Tensor out = Tensor::empty({3, n}, DType::F32);
      std::memcpy(out.mutable_data<float>(), p.data<float>(), size_t(n) * 4);
      std::memcpy(out.mutable_data<float>() + n, m.data<float>(), size_t(n) * 4);
      std::memcpy(out.mutable_data<float>() + 2 * n, v.data<float>(), size_t(n) * 4);
      return out;
    },
    .backward = {},
});

TEST(AdamW, MatchesFloat64ReferenceOverTenSteps) {
  const Shape shape{37, 5};
  ops::AdamWOptions o;
  o.lr = 1e-2;
  Tensor p = random_tensor(shape, 1), m = Tensor::zeros(shape, DType::F32),
         v = Tensor::zeros(shape, DType::F32);
  Values rp = to_values(p), rm(rp.size(), 0.0), rv(rp.size(), 0.0);
  for (int64_t step = 1; step <= 10; ++step) {
    const Tensor g = random_tensor(shape, 100 + uint64_t(step), 0.5f);
    ops::adamw_step(p, g, m, v, o, step);
    reference_step(rp, to_values(g), rm, rv, o, step);
  }
  // The update is compared on its own scale: p moved by about lr per step.
  Values moved = to_values(p), reference_moved = rp;
  const Values start = to_values(random_tensor(shape, 1));
  for (size_t i = 0; i < moved.size(); ++i) {
    moved[i] -= start[i];
    reference_moved[i] -= start[i];
  }
  expect_close(moved, reference_moved, 1e-4, "param change", o.lr);
  expect_close(to_values(m), rm, 1e-5, "exp_avg", 1e-3);
  expect_close(to_values(v), rv, 1e-5, "exp_avg_sq", 1e-4);
}

TEST(AdamW, FirstStepByHand) {
  // p = 1, g = 0.5, lr = 0.01, wd = 0.1, betas (0.9, 0.95), eps 1e-8:
  //   p = 1 * (1 - 0.001) = 0.999;  m = 0.05;  v = 0.05 * 0.25 = 0.0125
  //   m_hat = 0.5, v_hat = 0.25: p = 0.999 - 0.01 * 0.5 / (0.5 + 1e-8) = 0.98900000002
  ops::AdamWOptions o;
  o.lr = 0.01;
  o.weight_decay = 0.1;
  Tensor p = Tensor::empty({1}, DType::F32), g = Tensor::empty({1}, DType::F32);
  Tensor m = Tensor::zeros({1}, DType::F32), v = Tensor::zeros({1}, DType::F32);
  p.mutable_data<float>()[0] = 1.0f;
  g.mutable_data<float>()[0] = 0.5f;
  ops::adamw_step(p, g, m, v, o, 1);
  EXPECT_NEAR(p.data<float>()[0], 0.989, 1.5e-7);
  EXPECT_FLOAT_EQ(m.data<float>()[0], 0.05f);
  EXPECT_FLOAT_EQ(v.data<float>()[0], 0.0125f);
}

TEST(AdamW, WeightDecayIsDecoupledFromTheGradient) {
  // A zero gradient on zero moments updates by 0 / (0 + eps) = 0: only the decay acts,
  // the same factor for every element whatever its size.
  ops::AdamWOptions o;
  o.lr = 0.02;
  o.weight_decay = 0.25;
  const Shape shape{3, 11};
  Tensor p = random_tensor(shape, 4, 10.0f), g = Tensor::zeros(shape, DType::F32);
  Tensor m = Tensor::zeros(shape, DType::F32), v = Tensor::zeros(shape, DType::F32);
  const Tensor before = clone(p);
  ops::adamw_step(p, g, m, v, o, 1);
  const float decay = float(1.0 - 0.02 * 0.25);
  for (int64_t i = 0; i < p.numel(); ++i) {
    EXPECT_EQ(p.data<float>()[i], before.data<float>()[i] * decay) << "element " << i;
    EXPECT_EQ(m.data<float>()[i], 0.0f);
    EXPECT_EQ(v.data<float>()[i], 0.0f);
  }
}

TEST(AdamW, WithoutWeightDecayTheFirstStepMovesByTheRate) {
  // Bias correction makes m_hat = g and v_hat = g^2 on step 1: every element moves by
  // lr * |g| / (|g| + eps), against the sign of its gradient.
  ops::AdamWOptions o;
  o.lr = 1e-3;
  o.weight_decay = 0;
  const Shape shape{64};
  Tensor p = Tensor::zeros(shape, DType::F32), g = random_tensor(shape, 9);
  Tensor m = Tensor::zeros(shape, DType::F32), v = Tensor::zeros(shape, DType::F32);
  ops::adamw_step(p, g, m, v, o, 1);
  for (int64_t i = 0; i < p.numel(); ++i) {
    const double gi = g.data<float>()[i];
    EXPECT_NEAR(p.data<float>()[i], -1e-3 * gi / (std::fabs(gi) + 1e-8), 1e-9) << "element " << i;
  }
}

TEST(AdamW, RejectsStepZeroAndMismatchedShapes) {
  ops::AdamWOptions o;
  Tensor p = Tensor::zeros({4}, DType::F32), g = Tensor::zeros({4}, DType::F32);
  Tensor m = Tensor::zeros({4}, DType::F32), v = Tensor::zeros({4}, DType::F32);
  EXPECT_THROW(ops::adamw_step(p, g, m, v, o, 0), Error);
  Tensor short_v = Tensor::zeros({3}, DType::F32);
  EXPECT_THROW(ops::adamw_step(p, g, m, short_v, o, 1), Error);
  EXPECT_NO_THROW(ops::adamw_step(p, g, m, v, o, 1));
}

}  // namespace
}  // namespace titan::testing
