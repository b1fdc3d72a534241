// nn::Moe, DeepSeek V3's mixture of experts (nn/moe.h): the whole layer's forward against a
// float64 reference written per token (router, routed experts, shared experts), every
// gradient against central differences of that reference, the load the forward counts and
// the load-balancing update of the bias.
#include "titan/nn/moe.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "support/gradient_check.h"
#include "titan/core/copy.h"
#include "titan/ops/elementwise.h"

namespace titan::nn {
namespace {

using testing::Values;

const InitRule kInit{InitKind::TruncatedNormal, 0.02, 0.04};

MoeDims grouped_sigmoid_dims() {  // groups, shared expert, route_norm and scale, a bias
  MoeDims d;
  d.dim = 8;
  d.hidden_dim = 6;
  d.experts = 8;
  d.shared_experts = 1;
  d.router.score = ops::RouterScore::Sigmoid;
  d.router.top_k = 2;
  d.router.groups = 4;
  d.router.limited_groups = 2;
  d.router.route_norm = true;
  d.router.route_scale = 2.5f;
  d.load_balance_coeff = 0.05;
  return d;
}

MoeDims softmax_before_experts_dims() {  // no groups, no shared experts, no bias
  MoeDims d;
  d.dim = 8;
  d.hidden_dim = 6;
  d.experts = 8;
  d.shared_experts = 0;
  d.router.score = ops::RouterScore::Softmax;
  d.router.top_k = 2;
  d.score_before_experts = true;
  return d;
}

// One token's choice from its choice scores c [E] (group-limited top-k, ties to the lower
// index), by sorting.
std::vector<int32_t> choose(const std::vector<double>& c, const ops::RouterOptions& o) {
  const int64_t E = int64_t(c.size()), per_group = E / o.groups;
  std::vector<int64_t> groups(size_t(o.groups));
  std::iota(groups.begin(), groups.end(), 0);
  std::vector<double> group_score(size_t(o.groups));
  for (int64_t g = 0; g < o.groups; ++g) {
    std::vector<double> members(c.begin() + g * per_group, c.begin() + (g + 1) * per_group);
    std::sort(members.begin(), members.end(), std::greater<>());
    group_score[size_t(g)] = members[0] + (per_group > 1 ? members[1] : 0.0);
  }
  std::stable_sort(groups.begin(), groups.end(), [&](int64_t a, int64_t b) {
    return group_score[size_t(a)] > group_score[size_t(b)];
  });
  std::vector<int32_t> experts;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t g = e / per_group;
    if (o.groups == 1 ||
        std::find(groups.begin(), groups.begin() + o.limited_groups, g) !=
            groups.begin() + o.limited_groups) {
      experts.push_back(int32_t(e));
    }
  }
  std::stable_sort(experts.begin(), experts.end(),
                   [&](int32_t a, int32_t b) { return c[size_t(a)] > c[size_t(b)]; });
  experts.resize(size_t(o.top_k));
  return experts;
}

struct ReferenceOutput {
  Values y;
  std::vector<int32_t> selected;
};

double silu(double a) { return a / (1 + std::exp(-a)); }

// w2 (silu(w1 v) * w3 v) with w1, w3 [F, D] and w2 [D, F] starting at the given offsets.
Values swiglu(const Values& v, const Values& w1, const Values& w2, const Values& w3,
              size_t w1_at, size_t w2_at, size_t w3_at, int64_t D, int64_t F) {
  Values g(static_cast<size_t>(F)), out(static_cast<size_t>(D), 0.0);
  for (int64_t f = 0; f < F; ++f) {
    double a = 0, b = 0;
    for (int64_t i = 0; i < D; ++i) {
      a += w1[w1_at + size_t(f * D + i)] * v[size_t(i)];
      b += w3[w3_at + size_t(f * D + i)] * v[size_t(i)];
    }
    g[size_t(f)] = silu(a) * b;
  }
  for (int64_t i = 0; i < D; ++i)
    for (int64_t f = 0; f < F; ++f) out[size_t(i)] += w2[w2_at + size_t(i * F + f)] * g[size_t(f)];
  return out;
}

// The layer in float64, token by token. in: x [N, D], experts.w1, w2, w3, the gate, and the
// shared experts' w1, w2, w3 when there are any; bias [E] or empty.
ReferenceOutput reference_moe(const MoeDims& d, const Values& bias,
                              const std::vector<Values>& in) {
  const int64_t D = d.dim, F = d.hidden_dim, E = d.experts, K = d.router.top_k;
  const int64_t N = int64_t(in[0].size()) / D, FS = F * d.shared_experts;
  const Values &x = in[0], &w1 = in[1], &w2 = in[2], &w3 = in[3], &gate = in[4];
  ReferenceOutput r{Values(size_t(N * D), 0.0), {}};
  for (int64_t n = 0; n < N; ++n) {
    const Values xn(x.begin() + n * D, x.begin() + (n + 1) * D);
    std::vector<double> s(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) {
      double logit = 0;
      for (int64_t i = 0; i < D; ++i) logit += xn[size_t(i)] * gate[size_t(e * D + i)];
      s[size_t(e)] = logit;
    }
    if (d.router.score == ops::RouterScore::Sigmoid) {
      for (double& v : s) v = 1 / (1 + std::exp(-v));
    } else {
      const double m = *std::max_element(s.begin(), s.end());
      double sum = 0;
      for (double& v : s) sum += (v = std::exp(v - m));
      for (double& v : s) v /= sum;
    }
    std::vector<double> c = s;
    for (size_t e = 0; e < bias.size(); ++e) c[e] += bias[e];
    const std::vector<int32_t> picks = choose(c, d.router);
    r.selected.insert(r.selected.end(), picks.begin(), picks.end());
    double total = 0;
    for (const int32_t e : picks) total += s[size_t(e)];
    double* yn = r.y.data() + n * D;
    for (int64_t k = 0; k < K; ++k) {
      const size_t e = size_t(picks[size_t(k)]);
      const double w = d.router.route_scale *
                       (d.router.route_norm ? s[e] / (total + 1e-20) : s[e]);
      Values v = xn;
      if (d.score_before_experts) {
        for (double& value : v) value *= w;
      }
      const Values out = swiglu(v, w1, w2, w3, e * size_t(F * D), e * size_t(D * F),
                                e * size_t(F * D), D, F);
      for (int64_t i = 0; i < D; ++i) {
        yn[i] += d.score_before_experts ? out[size_t(i)] : w * out[size_t(i)];
      }
    }
    if (FS > 0) {
      const Values out = swiglu(xn, in[5], in[6], in[7], 0, 0, 0, D, FS);
      for (int64_t i = 0; i < D; ++i) yn[i] += out[size_t(i)];
    }
  }
  return r;
}

void set_values(Parameter& p, const Values& v) {
  copy_tensor(testing::from_values(v, p.value().shape()), p.value());
}

// A layer with random parameters of the given scale per parameter (routing margins clear
// enough for the differences), and a bias made non-zero by one update from `load`.
struct Layer {
  MoeDims dims;
  Moe moe;
  std::vector<Values> params;
  Layer(const MoeDims& d, uint64_t seed)
      : dims(d), moe("moe", d, kInit, kInit) {
    const std::vector<Parameter*> ps = moe.parameters();
    for (size_t i = 0; i < ps.size(); ++i) {
      const double scale = i == 3 ? 1.5 : 0.7;  // the gate: spread the logits
      params.push_back(testing::random_values(ps[i]->value().numel(), seed + i, scale));
      set_values(*ps[i], params.back());
      ops::fill(ps[i]->grad(), 0.0f);
    }
  }
  Values bias() const {
    return moe.bias().defined() ? testing::to_values(moe.bias()) : Values{};
  }
};

void expect_layer_matches_reference(const MoeDims& dims, uint64_t seed, bool unbalance) {
  Layer layer(dims, seed);
  const int64_t N = 12, D = dims.dim, K = dims.router.top_k;
  if (unbalance) {
    // A bias of +-coeff: experts 0..3 counted busy, 4..7 idle.
    const std::vector<float> load = {9, 9, 9, 9, 1, 1, 1, 1};
    layer.moe.update_bias(load.data());
  }
  const Values bias = layer.bias();
  const Values x = testing::random_values(N * D, seed + 100);
  std::vector<Values> inputs = {x};
  inputs.insert(inputs.end(), layer.params.begin(), layer.params.end());
  const ReferenceOutput want = reference_moe(dims, bias, inputs);
  if (unbalance) {
    // The bias must matter for this test to check that it chooses.
    EXPECT_NE(reference_moe(dims, {}, inputs).selected, want.selected);
  }

  Tensor y = Tensor::empty({N, D}, DType::F32);
  MoeRecord record;
  layer.moe.forward(testing::from_values(x, {N, D}), y, record, true);
  const int32_t* sel = record.selected.data<int32_t>();
  ASSERT_EQ(std::vector<int32_t>(sel, sel + N * K), want.selected);
  testing::expect_close(testing::to_values(y), want.y, 1e-5, "y");

  const Values projection = testing::random_values(N * D, seed + 200);
  Tensor dy = testing::from_values(projection, {N, D});
  Tensor dx = Tensor::empty({N, D}, DType::F32);
  layer.moe.backward_input(dy, record, dx, ops::Accumulate::No);
  const Values dx_values = testing::to_values(dx);
  layer.moe.backward_weight(record);

  std::vector<Values> analytic = {dx_values};
  std::vector<std::string> names = {"x"};
  for (Parameter* p : layer.moe.parameters()) {
    analytic.push_back(testing::to_values(p->grad()));
    names.push_back(p->name());
  }
  int flips = 0;  // perturbations under which the reference routes differently
  const testing::ReferenceFunction f = [&](const std::vector<Values>& in) {
    ReferenceOutput out = reference_moe(dims, bias, in);
    flips += out.selected != want.selected;
    return out.y;
  };
  testing::GradCheckOptions check;
  check.tolerance = 1e-4;
  check.max_samples = 1000;  // every element
  testing::expect_gradients_match(f, inputs, projection, analytic, names, check);
  EXPECT_EQ(flips, 0) << "the differences changed the routing: choose another seed or step";

  // backward_input with Accumulate::Yes adds the same dx to what dx holds.
  layer.moe.forward(testing::from_values(x, {N, D}), y, record, false);
  Tensor dx_sum = testing::from_values(Values(size_t(N * D), 1.0), {N, D});
  layer.moe.backward_input(dy, record, dx_sum, ops::Accumulate::Yes);
  Values want_sum = dx_values;
  for (double& v : want_sum) v += 1;
  testing::expect_close(testing::to_values(dx_sum), want_sum, 1e-6, "dx (+=)");
}

TEST(Moe, GroupedSigmoidWithSharedExpertMatchesReferenceAndDifferences) {
  expect_layer_matches_reference(grouped_sigmoid_dims(), 1, true);
}

TEST(Moe, SoftmaxScoreBeforeExpertsMatchesReferenceAndDifferences) {
  expect_layer_matches_reference(softmax_before_experts_dims(), 3, false);
}

TEST(Moe, ParametersInTorchtitansOrder) {
  Moe with_shared("layers.1.moe", grouped_sigmoid_dims(), kInit, kInit);
  std::vector<std::string> names;
  std::vector<Shape> shapes;
  for (Parameter* p : with_shared.parameters()) {
    names.push_back(p->name());
    shapes.push_back(p->global_shape());
  }
  EXPECT_EQ(names, (std::vector<std::string>{
                       "layers.1.moe.experts.w1", "layers.1.moe.experts.w2",
                       "layers.1.moe.experts.w3", "layers.1.moe.router.gate.weight",
                       "layers.1.moe.shared_experts.w1.weight",
                       "layers.1.moe.shared_experts.w2.weight",
                       "layers.1.moe.shared_experts.w3.weight"}));
  EXPECT_EQ(shapes, (std::vector<Shape>{
                        {8, 6, 8}, {8, 8, 6}, {8, 6, 8}, {8, 8}, {6, 8}, {8, 6}, {6, 8}}));
  Moe without("moe", softmax_before_experts_dims(), kInit, kInit);
  EXPECT_EQ(without.parameters().size(), 4u);
  EXPECT_FALSE(without.bias().defined());
}

TEST(Moe, UpdateBiasMovesBySignOfTheGapMinusItsMean) {
  MoeDims d = grouped_sigmoid_dims();
  d.load_balance_coeff = 1e-3;
  Moe moe("moe", d, kInit, kInit);
  ASSERT_TRUE(moe.bias().defined());
  for (const double b : testing::to_values(moe.bias())) EXPECT_EQ(b, 0.0);
  // Mean 17 / 8 = 2.125: signs of (mean - count) are -1 +1 +1 +1 -1 +1 +1 -1, their mean 1/4.
  const std::vector<float> counts = {3, 1, 2, 2, 5, 0, 1, 3};
  moe.update_bias(counts.data());
  const std::vector<double> sign = {-1, 1, 1, 1, -1, 1, 1, -1};
  std::vector<double> want(8);
  for (size_t e = 0; e < 8; ++e) want[e] = 1e-3 * (sign[e] - 0.25);
  testing::expect_close(testing::to_values(moe.bias()), want, 1e-6, "bias after one update", 1e-3);
  // A count equal to the mean moves nothing; updates add up.
  const std::vector<float> second = {2, 2, 1, 3, 2, 2, 2, 2};  // mean 2: signs 0 0 +1 -1 0...
  moe.update_bias(second.data());
  want[2] += 1e-3;
  want[3] -= 1e-3;
  testing::expect_close(testing::to_values(moe.bias()), want, 1e-6, "bias after two updates", 1e-3);
  // Balanced counts leave it be.
  const std::vector<float> even(8, 3.0f);
  moe.update_bias(even.data());
  testing::expect_close(testing::to_values(moe.bias()), want, 1e-6, "bias after balance", 1e-3);
}

TEST(Moe, ForwardCountsLoadOnlyWhenAskedAndUpdateBiasClearsIt) {
  for (const MoeDims& dims : {grouped_sigmoid_dims(), softmax_before_experts_dims()}) {
    Layer layer(dims, 3);
    const int64_t N = 12, D = dims.dim, K = dims.router.top_k, E = dims.experts;
    const Tensor x = testing::random_tensor({N, D}, 7);
    Tensor y = Tensor::empty({N, D}, DType::F32);
    MoeRecord record;
    ASSERT_EQ(layer.moe.load().shape(), (Shape{E}));
    EXPECT_EQ(testing::to_values(layer.moe.load()), Values(size_t(E), 0.0));
    layer.moe.forward(x, y, record, true);
    Values counts(size_t(E), 0.0);
    for (int64_t p = 0; p < N * K; ++p) counts[size_t(record.selected.data<int32_t>()[p])] += 1;
    EXPECT_EQ(testing::to_values(layer.moe.load()), counts);
    layer.moe.forward(x, y, record, false);  // a recompute: not counted
    EXPECT_EQ(testing::to_values(layer.moe.load()), counts);
    layer.moe.forward(x, y, record, true);
    Values twice = counts;
    for (double& c : twice) c *= 2;
    EXPECT_EQ(testing::to_values(layer.moe.load()), twice);
    const Values before = layer.bias();
    std::vector<float> summed(layer.moe.load().data<float>(), layer.moe.load().data<float>() + E);
    layer.moe.update_bias(summed.data());
    EXPECT_EQ(testing::to_values(layer.moe.load()), Values(size_t(E), 0.0));
    if (dims.load_balance_coeff) {
      EXPECT_NE(layer.bias(), before);
    }
  }
}

}  // namespace
}  // namespace titan::nn
