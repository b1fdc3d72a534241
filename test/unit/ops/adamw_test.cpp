#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "op_harness.h"
#include "titan/core/copy.h"
#include "titan/ops/adamw.h"

namespace titan::testing {
namespace {

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

// A copy on t's device.
Tensor clone(const Tensor& t) {
  Tensor c = empty_like_input(t, t.shape());
  copy_tensor(t, c);
  return c;
}

// Inputs: param, grad, exp_avg, exp_avg_sq [R, C] (exp_avg_sq >= 0).
// Output: [3, R*C], the updated param, exp_avg and exp_avg_sq. No backward.
const bool registered = register_op_harness("adamw", OpHarness{
    .make_inputs = [](const OpCase& c, uint64_t seed) {
      const auto& dims = c.dims_as<AdamWDims>();
      const Shape shape{dims.R, dims.C};
      return std::vector<Tensor>{random_tensor(shape, seed), random_tensor(shape, seed + 1),
                                 random_tensor(shape, seed + 2, 0.1f),
                                 absolute(random_tensor(shape, seed + 3, 0.01f))};
    },
    .input_names = {"param", "grad", "exp_avg", "exp_avg_sq"},
    .differentiable = {false, false, false, false},
    .reference = [](const OpCase& c, const std::vector<Values>& in) {
      Values p = in[0], m = in[2], v = in[3];
      reference_step(p, in[1], m, v, harness_options(c.flags), c.dims_as<AdamWDims>().step);
      Values out = p;
      out.insert(out.end(), m.begin(), m.end());
      out.insert(out.end(), v.begin(), v.end());
      return out;
    },
    .forward = [](const OpCase& c, const std::vector<Tensor>& in) {
      Tensor p = clone(in[0]), m = clone(in[2]), v = clone(in[3]);
      ops::adamw_step(p, in[1], m, v, harness_options(c.flags), c.dims_as<AdamWDims>().step);
      const int64_t n = p.numel();
      Tensor out = f32_beside(in[0], {3, n});
      int64_t row = 0;
      for (const Tensor* t : {&p, &m, &v}) {
        Tensor out_row = out.narrow(row++, 1);
        copy_tensor(t->reshape({1, n}), out_row);
      }
      return out;
    },
    .backward = {},
    // The GPU kernel repeats the CPU's float operations in order (no fused multiply-add):
    // the default 1e-5 holds with room (test/unit/ops/cuda/optimizer_cuda_test.cpp checks the
    // bits). It takes f32 only (master weights and states), so no bf16 pass.
});

TEST(AdamW, MultiTensorStepEqualsSingleStepsBitwise) {
  ops::AdamWOptions o;
  o.lr = 3e-3;
  const std::vector<Shape> shapes = {{7, 5}, {1}, {0}, {129}, {3, 4, 5}};
  std::vector<Tensor> p, g, m, v, p1, m1, v1;
  for (size_t i = 0; i < shapes.size(); ++i) {
    p.push_back(random_tensor(shapes[i], 10 + i));
    g.push_back(random_tensor(shapes[i], 20 + i));
    m.push_back(random_tensor(shapes[i], 30 + i, 0.1f));
    v.push_back(absolute(random_tensor(shapes[i], 40 + i, 0.01f)));
    p1.push_back(clone(p.back()));
    m1.push_back(clone(m.back()));
    v1.push_back(clone(v.back()));
  }
  for (int64_t step = 1; step <= 3; ++step) {
    ops::adamw_step_multi_tensor(p, g, m, v, o, step);
    for (size_t i = 0; i < shapes.size(); ++i) ops::adamw_step(p1[i], g[i], m1[i], v1[i], o, step);
  }
  for (size_t i = 0; i < shapes.size(); ++i) {
    for (auto [a, b] : {std::pair{&p[i], &p1[i]}, std::pair{&m[i], &m1[i]},
                        std::pair{&v[i], &v1[i]}}) {
      ASSERT_EQ(a->bytes(), b->bytes());
      EXPECT_EQ(std::memcmp(a->raw_data(), b->raw_data(), size_t(a->bytes())), 0)
          << "tensor " << i;
    }
  }
  std::vector<Tensor> none;
  EXPECT_NO_THROW(ops::adamw_step_multi_tensor(none, none, none, none, o, 1));
  std::vector<Tensor> short_g(g.begin(), g.end() - 1);
  EXPECT_THROW(ops::adamw_step_multi_tensor(p, short_g, m, v, o, 4), Error);
}

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
