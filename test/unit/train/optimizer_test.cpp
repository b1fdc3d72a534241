// AdamW and Adam over parameter lists against a float64 reference written the textbook
// way, weight decay on every parameter (norm weights included), the state the optimizer
// owns, and the gradient utilities.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "titan/core/error.h"
#include "titan/train/optimizer.h"

namespace titan::train {
namespace {

using Values = std::vector<double>;

void fill(Tensor& t, const Values& values) {
  ASSERT_EQ(int64_t(values.size()), t.numel());
  float* p = t.mutable_data<float>();
  for (size_t i = 0; i < values.size(); ++i) p[i] = float(values[i]);
}

Values read(const Tensor& t) {
  const float* p = t.data<float>();
  return Values(p, p + t.numel());
}

// A deterministic, irregular value for element i of tensor k at step s.
double wiggle(int k, int64_t i, int s, double scale) {
  return scale * std::sin(1.7 * double(i + 1) + 0.9 * k + 2.3 * s);
}

// A weight matrix and a norm weight, as in a model; both must be decayed.
struct TinyModel {
  std::unique_ptr<nn::Parameter> weight = std::make_unique<nn::Parameter>(
      "layers.0.feed_forward.w1.weight", Shape{3, 5}, nn::InitRule{});
  std::unique_ptr<nn::Parameter> norm = std::make_unique<nn::Parameter>(
      "layers.0.ffn_norm.weight", Shape{5}, nn::InitRule{});
  std::vector<nn::Parameter*> parameters() { return {weight.get(), norm.get()}; }
};

// torch.optim.AdamW (decoupled) or torch.optim.Adam (L2 in the gradient), in double.
struct ReferenceAdam {
  AdamWSettings settings;
  Values p, m, v;
  int64_t t = 0;
  void step(const Values& g, double lr) {
    ++t;
    const double bc1 = 1 - std::pow(settings.beta1, double(t));
    const double bc2 = 1 - std::pow(settings.beta2, double(t));
    for (size_t i = 0; i < p.size(); ++i) {
      double gi = g[i];
      if (settings.weight_decay_mode == WeightDecayMode::Coupled) {
        gi += settings.weight_decay * p[i];
      } else {
        p[i] *= 1 - lr * settings.weight_decay;
      }
      m[i] = settings.beta1 * m[i] + (1 - settings.beta1) * gi;
      v[i] = settings.beta2 * v[i] + (1 - settings.beta2) * gi * gi;
      p[i] -= lr * (m[i] / bc1) / (std::sqrt(v[i] / bc2) + settings.eps);
    }
  }
};

// Runs four steps with changing rates and gradients on TinyModel and on the reference;
// returns the largest difference in parameters and moments.
double max_difference_over_steps(const AdamWSettings& settings) {
  TinyModel model;
  std::vector<nn::Parameter*> params = model.parameters();
  std::vector<ReferenceAdam> reference;
  for (size_t k = 0; k < params.size(); ++k) {
    Values initial(size_t(params[k]->value().numel()));
    for (size_t i = 0; i < initial.size(); ++i) {
      initial[i] = 1.0 + wiggle(int(k), int64_t(i), -1, 0.5);
    }
    fill(params[k]->value(), initial);
    initial = read(params[k]->value());  // the reference starts from the same floats
    reference.push_back({settings, initial, Values(initial.size()), Values(initial.size())});
  }
  AdamW optimizer(params, settings);
  const double rates[] = {0.05, 0.1, 0.02, 0.07};
  double worst = 0;
  for (int s = 0; s < 4; ++s) {
    for (size_t k = 0; k < params.size(); ++k) {
      Values g(size_t(params[k]->grad().numel()));
      for (size_t i = 0; i < g.size(); ++i) g[i] = wiggle(int(k), int64_t(i), s, 0.3);
      fill(params[k]->grad(), g);
      g = read(params[k]->grad());
      reference[k].step(g, rates[s]);
    }
    const Values grad_before = read(params[0]->grad());
    optimizer.step(rates[s]);
    EXPECT_EQ(read(params[0]->grad()), grad_before) << "the step must not change gradients";
    for (size_t k = 0; k < params.size(); ++k) {
      const Values p = read(params[k]->value()), m = read(optimizer.exp_avg(k)),
                   v = read(optimizer.exp_avg_sq(k));
      for (size_t i = 0; i < p.size(); ++i) {
        worst = std::max(worst, std::fabs(p[i] - reference[k].p[i]));
        worst = std::max(worst, std::fabs(m[i] - reference[k].m[i]));
        worst = std::max(worst, std::fabs(v[i] - reference[k].v[i]));
      }
    }
  }
  EXPECT_EQ(optimizer.steps_taken(), 4);
  return worst;
}

TEST(AdamW, DecoupledMatchesFloat64ReferenceOverSteps) {
  AdamWSettings settings;
  settings.weight_decay = 0.1;
  settings.weight_decay_mode = WeightDecayMode::Decoupled;
  EXPECT_LT(max_difference_over_steps(settings), 2e-6);
}

TEST(AdamW, CoupledAdamMatchesFloat64ReferenceOverSteps) {
  AdamWSettings settings;
  settings.weight_decay = 0.1;
  settings.weight_decay_mode = WeightDecayMode::Coupled;
  EXPECT_LT(max_difference_over_steps(settings), 2e-6);
}

TEST(AdamW, TheTwoDecayModesGiveDifferentUpdates) {
  // Guards the tests above: a mode swapped for the other would fail them.
  AdamWSettings decoupled, coupled;
  coupled.weight_decay_mode = WeightDecayMode::Coupled;
  TinyModel a, b;
  for (TinyModel* model : {&a, &b}) {
    fill(model->weight->value(), Values(15, 2.0));
    fill(model->weight->grad(), Values(15, 0.01));
  }
  AdamW(a.parameters(), decoupled).step(0.1);
  AdamW(b.parameters(), coupled).step(0.1);
  EXPECT_GT(std::fabs(read(a.weight->value())[0] - read(b.weight->value())[0]), 1e-3);
}

TEST(AdamW, WithoutDecayBothModesAreTheSameAdam) {
  AdamWSettings decoupled, coupled;
  decoupled.weight_decay = coupled.weight_decay = 0.0;
  coupled.weight_decay_mode = WeightDecayMode::Coupled;
  TinyModel a, b;
  for (TinyModel* model : {&a, &b}) {
    Values p(15), g(15);
    for (int64_t i = 0; i < 15; ++i) {
      p[size_t(i)] = wiggle(0, i, 0, 1.0);
      g[size_t(i)] = wiggle(1, i, 0, 0.1);
    }
    fill(model->weight->value(), p);
    fill(model->weight->grad(), g);
  }
  AdamW(a.parameters(), decoupled).step(0.1);
  AdamW(b.parameters(), coupled).step(0.1);
  EXPECT_EQ(read(a.weight->value()), read(b.weight->value()));
  EXPECT_NE(read(a.weight->value())[0], double(float(wiggle(0, 0, 0, 1.0))));  // it did step
}

TEST(AdamW, DecaysEveryParameterIncludingNormWeights) {
  // Zero gradients leave the moments at zero, so only the decoupled decay moves p:
  // p = 1 * (1 - lr * wd) exactly as float computes it.
  TinyModel model;
  fill(model.norm->value(), Values(5, 1.0));
  AdamWSettings settings;
  AdamW optimizer(model.parameters(), settings);
  optimizer.step(0.5);
  for (double p : read(model.norm->value())) EXPECT_EQ(p, double(float(1.0 - 0.5 * 0.1)));
}

TEST(AdamW, OwnsZeroStateShapedLikeEachParameter) {
  TinyModel model;
  AdamW optimizer(model.parameters(), AdamWSettings{});
  ASSERT_EQ(optimizer.parameters().size(), 2u);
  for (size_t k = 0; k < 2; ++k) {
    EXPECT_EQ(optimizer.exp_avg(k).shape(), optimizer.parameters()[k]->value().shape());
    EXPECT_EQ(optimizer.exp_avg_sq(k).shape(), optimizer.parameters()[k]->value().shape());
    EXPECT_FALSE(optimizer.exp_avg(k).shares_storage_with(optimizer.exp_avg_sq(k)));
    for (double x : read(optimizer.exp_avg(k))) EXPECT_EQ(x, 0.0);
  }
  EXPECT_EQ(optimizer.state_bytes(), (15 + 5) * 2 * 4);
  EXPECT_EQ(optimizer.steps_taken(), 0);
  optimizer.set_steps_taken(7);
  EXPECT_EQ(optimizer.steps_taken(), 7);
}

TEST(AdamW, FromConfigReadsTheOptimizerSection) {
  config::JobConfig config;
  config.optimizer.beta1 = 0.8;
  config.optimizer.beta2 = 0.99;
  config.optimizer.eps = 1e-6;
  config.optimizer.weight_decay = 0.01;
  TinyModel model;
  const AdamW adamw = AdamW::from_config(model.parameters(), config);
  EXPECT_EQ(adamw.settings().beta1, 0.8);
  EXPECT_EQ(adamw.settings().beta2, 0.99);
  EXPECT_EQ(adamw.settings().eps, 1e-6);
  EXPECT_EQ(adamw.settings().weight_decay, 0.01);
  EXPECT_EQ(adamw.settings().weight_decay_mode, WeightDecayMode::Decoupled);
  config.optimizer.name = config::OptimizerName::Adam;
  EXPECT_EQ(AdamW::from_config(model.parameters(), config).settings().weight_decay_mode,
            WeightDecayMode::Coupled);
}

TEST(AdamW, RejectsAParameterListedTwice) {
  TinyModel model;
  EXPECT_THROW(AdamW({model.weight.get(), model.weight.get()}, AdamWSettings{}), Error);
}

TEST(GradUtilities, NormClipAndZero) {
  TinyModel model;
  Values w(15, 0.0), n(5, 0.0);
  w[0] = 3.0;
  n[4] = 4.0;
  fill(model.weight->grad(), w);
  fill(model.norm->grad(), n);
  const std::vector<nn::Parameter*> params = model.parameters();
  const double norm = grad_norm(params);
  EXPECT_DOUBLE_EQ(norm, 5.0);

  clip_grads(params, /*max_norm=*/10.0, norm);  // under the limit: untouched
  EXPECT_EQ(read(model.weight->grad())[0], 3.0);

  clip_grads(params, /*max_norm=*/1.0, norm);
  const double coefficient = 1.0 / (5.0 + 1e-6);
  EXPECT_NEAR(read(model.weight->grad())[0], 3.0 * coefficient, 1e-6);
  EXPECT_NEAR(read(model.norm->grad())[4], 4.0 * coefficient, 1e-6);
  EXPECT_NEAR(grad_norm(params), 1.0, 1e-6);

  zero_grads(params);
  EXPECT_EQ(grad_norm(params), 0.0);
}

}  // namespace
}  // namespace titan::train
