// The mixture-of-experts ops (ops/moe.h) and the column slices (ops/columns.h): the router's
// choice on hand-made logits (group limits, ties, the bias, route_norm and route_scale) and
// on random ones against an independent float64 router, router_backward against central
// differences, sort_picks, dispatch and combine with their backwards, the grouped GEMMs, and
// the column copies, all against naive loops.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "support/gradient_check.h"
#include "titan/core/error.h"
#include "titan/ops/columns.h"
#include "titan/ops/moe.h"

namespace titan::testing {
namespace {

using ops::RouterOptions;
using ops::RouterScore;

struct Routed {
  Values scores;
  std::vector<int32_t> selected;
  Values weights;
};

// The op on logits [N, E] given as values; an empty bias is none.
Routed route(const Values& logits, int64_t E, const Values& bias, const RouterOptions& o) {
  const int64_t N = int64_t(logits.size()) / E;
  Tensor scores = Tensor::empty({N, E}, DType::F32);
  Tensor selected = Tensor::empty({N, o.top_k}, DType::I32);
  Tensor weights = Tensor::empty({N, o.top_k}, DType::F32);
  const Tensor b = bias.empty() ? Tensor() : from_values(bias, {E});
  ops::router_forward(from_values(logits, {N, E}), b, o, scores, selected, weights);
  const int32_t* s = selected.data<int32_t>();
  return {to_values(scores), std::vector<int32_t>(s, s + selected.numel()), to_values(weights)};
}

// Independent float64 router (ops/moe.h), by sorting rather than by scanning.
Values reference_scores(const Values& logits, int64_t E, RouterScore score) {
  Values s(logits.size());
  for (size_t row = 0; row < logits.size() / size_t(E); ++row) {
    const double* l = logits.data() + row * size_t(E);
    double* out = s.data() + row * size_t(E);
    if (score == RouterScore::Sigmoid) {
      for (int64_t e = 0; e < E; ++e) out[e] = 1 / (1 + std::exp(-l[e]));
    } else {
      double sum = 0;
      for (int64_t e = 0; e < E; ++e) sum += std::exp(l[e]);
      for (int64_t e = 0; e < E; ++e) out[e] = std::exp(l[e]) / sum;
    }
  }
  return s;
}

// One token's choice from its choice scores c [E].
std::vector<int32_t> reference_choice(const double* c, int64_t E, const RouterOptions& o) {
  const int64_t per_group = E / o.groups;
  std::vector<bool> allowed(size_t(E), true);
  if (o.groups > 1) {
    std::vector<double> group_score(size_t(o.groups));
    for (int64_t g = 0; g < o.groups; ++g) {
      std::vector<double> members(c + g * per_group, c + (g + 1) * per_group);
      std::sort(members.begin(), members.end(), std::greater<>());
      group_score[size_t(g)] = members[0] + members[1];
    }
    std::vector<int64_t> groups(size_t(o.groups));
    std::iota(groups.begin(), groups.end(), 0);
    std::stable_sort(groups.begin(), groups.end(), [&](int64_t a, int64_t b) {
      return group_score[size_t(a)] > group_score[size_t(b)];
    });
    std::vector<bool> kept(size_t(o.groups), false);
    for (int64_t i = 0; i < o.limited_groups; ++i) kept[size_t(groups[size_t(i)])] = true;
    for (int64_t e = 0; e < E; ++e) allowed[size_t(e)] = kept[size_t(e / per_group)];
  }
  std::vector<int32_t> experts;
  for (int64_t e = 0; e < E; ++e) {
    if (allowed[size_t(e)]) experts.push_back(int32_t(e));
  }
  std::stable_sort(experts.begin(), experts.end(),
                   [&](int32_t a, int32_t b) { return c[a] > c[b]; });
  experts.resize(size_t(o.top_k));
  return experts;
}

std::vector<int32_t> reference_selection(const Values& scores, int64_t E, const Values& bias,
                                         const RouterOptions& o) {
  std::vector<int32_t> selected;
  for (size_t row = 0; row < scores.size() / size_t(E); ++row) {
    Values c(scores.begin() + long(row * size_t(E)), scores.begin() + long((row + 1) * size_t(E)));
    for (size_t e = 0; e < bias.size(); ++e) c[e] += bias[e];
    const std::vector<int32_t> mine = reference_choice(c.data(), E, o);
    selected.insert(selected.end(), mine.begin(), mine.end());
  }
  return selected;
}

// The weights of a fixed selection [N, K] from the scores.
Values reference_weights(const Values& scores, int64_t E, const std::vector<int32_t>& selected,
                         const RouterOptions& o) {
  const int64_t K = o.top_k, N = int64_t(selected.size()) / K;
  Values w(selected.size());
  for (int64_t n = 0; n < N; ++n) {
    double total = 0;
    for (int64_t k = 0; k < K; ++k) total += scores[size_t(n * E + selected[size_t(n * K + k)])];
    for (int64_t k = 0; k < K; ++k) {
      const double t = scores[size_t(n * E + selected[size_t(n * K + k)])];
      w[size_t(n * K + k)] = o.route_scale * (o.route_norm ? t / (total + 1e-20) : t);
    }
  }
  return w;
}

RouterOptions options(RouterScore score, int64_t top_k, int64_t groups = 1,
                      int64_t limited_groups = 1, bool route_norm = false,
                      float route_scale = 1.0f) {
  RouterOptions o;
  o.score = score;
  o.top_k = top_k;
  o.groups = groups;
  o.limited_groups = limited_groups;
  o.route_norm = route_norm;
  o.route_scale = route_scale;
  return o;
}

double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

TEST(MoeRouter, GroupLimitKeepsTheBestGroupsEvenAgainstABetterSingleExpert) {
  // Groups of 2: group 0 holds the best expert (3.0) but its pair sums lowest of the kept
  // ones; groups 1 and 2 are kept, so experts 2 and 3 win where plain top-2 takes 0 and 2.
  const Values logits = {3.0, -3.0, 1.0, 0.9, 0.8, 0.7, -1.0, -1.0};
  const Routed plain = route(logits, 8, {}, options(RouterScore::Sigmoid, 2));
  EXPECT_EQ(plain.selected, (std::vector<int32_t>{0, 2}));
  const Routed limited = route(logits, 8, {}, options(RouterScore::Sigmoid, 2, 4, 2));
  EXPECT_EQ(limited.selected, (std::vector<int32_t>{2, 3}));
  // Weights of the chosen experts: their own sigmoid scores (no norm, scale 1).
  EXPECT_NEAR(limited.weights[0], sigmoid(1.0), 1e-6);
  EXPECT_NEAR(limited.weights[1], sigmoid(0.9), 1e-6);
}

TEST(MoeRouter, GroupScoreIsTheSumOfItsTwoBestExperts) {
  // Groups of 4, one kept, top 2. Token 0: group 0 has the single best expert but group 1
  // the best pair (a max-only group score would keep group 0). Token 1: group 1's four
  // experts sum highest, group 0's best two sum higher (a sum over all would keep group 1).
  const Values logits = {2.0, -4.0, -4.0, -4.0, 0.5, 0.4, 0.3, -4.0,
                         1.0, 1.0, -4.0, -4.0, 0.9, 0.9, 0.9, 0.9};
  const Routed r = route(logits, 8, {}, options(RouterScore::Sigmoid, 2, 2, 1));
  EXPECT_EQ(r.selected, (std::vector<int32_t>{4, 5, 0, 1}));
}

TEST(MoeRouter, TiesGoToTheLowerExpertAndGroupIndex) {
  // All equal: the lower-index groups are kept and their experts taken in index order.
  const Values zeros(8, 0.0);
  EXPECT_EQ(route(zeros, 8, {}, options(RouterScore::Sigmoid, 3, 4, 2)).selected,
            (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(route(zeros, 8, {}, options(RouterScore::Softmax, 4)).selected,
            (std::vector<int32_t>{0, 1, 2, 3}));
  // Groups 1 and 3 tie for best: group 1 is kept.
  const Values two_groups = {0, 0, 1, 1, 0, 0, 1, 1};
  EXPECT_EQ(route(two_groups, 8, {}, options(RouterScore::Sigmoid, 2, 4, 1)).selected,
            (std::vector<int32_t>{2, 3}));
  // Experts 5 and 2 tie for best, 7 next: order 2, 5, 7 (largest first, ties by index).
  const Values mixed = {0, 0, 2, 0, 0, 2, 0, 1};
  EXPECT_EQ(route(mixed, 8, {}, options(RouterScore::Sigmoid, 3)).selected,
            (std::vector<int32_t>{2, 5, 7}));
  // A tie of the second-best within a group: the group score is the same either way, and the
  // choice inside takes the lower index.
  const Values inner = {0, 1, 0.5, 0.5, -2, -2, -2, -2};
  EXPECT_EQ(route(inner, 8, {}, options(RouterScore::Sigmoid, 3, 2, 1)).selected,
            (std::vector<int32_t>{1, 2, 3}));
}

TEST(MoeRouter, SelectionIsInDescendingOrderOfTheChoiceScore) {
  const Values logits = {0.1, 0.5, 0.3, -0.2};
  EXPECT_EQ(route(logits, 4, {}, options(RouterScore::Sigmoid, 4)).selected,
            (std::vector<int32_t>{1, 2, 0, 3}));
}

TEST(MoeRouter, BiasChoosesButTheUnbiasedScoresWeigh) {
  const Values logits = {1.0, 0.5, 0.0, -1.0};
  const Values bias = {0.0, 0.3, 0.0, 0.0};  // c = [0.731, 0.922, 0.5, 0.269]
  const Routed without = route(logits, 4, {}, options(RouterScore::Sigmoid, 1));
  EXPECT_EQ(without.selected, (std::vector<int32_t>{0}));
  const Routed with = route(logits, 4, bias, options(RouterScore::Sigmoid, 1));
  EXPECT_EQ(with.selected, (std::vector<int32_t>{1}));
  EXPECT_NEAR(with.weights[0], sigmoid(0.5), 1e-6);
  // The scores are the unbiased ones too.
  for (int64_t e = 0; e < 4; ++e) {
    EXPECT_NEAR(with.scores[size_t(e)], sigmoid(logits[size_t(e)]), 1e-6);
  }
  // Top 2 with route_norm: [1, 0], normalized over the unbiased scores of 1 and 0.
  const Routed normed = route(logits, 4, bias, options(RouterScore::Sigmoid, 2, 1, 1, true, 2.5f));
  EXPECT_EQ(normed.selected, (std::vector<int32_t>{1, 0}));
  const double s0 = sigmoid(1.0), s1 = sigmoid(0.5);
  EXPECT_NEAR(normed.weights[0], 2.5 * s1 / (s0 + s1), 1e-6);
  EXPECT_NEAR(normed.weights[1], 2.5 * s0 / (s0 + s1), 1e-6);
  // A bias in a group limit: it moves the group scores as well (c, not s).
  const Values grouped = {1.0, 1.0, 0.9, 0.9};
  EXPECT_EQ(route(grouped, 4, {}, options(RouterScore::Sigmoid, 1, 2, 1)).selected,
            (std::vector<int32_t>{0}));
  EXPECT_EQ(route(grouped, 4, {0, 0, 0.1, 0.1}, options(RouterScore::Sigmoid, 1, 2, 1)).selected,
            (std::vector<int32_t>{2}));
}

TEST(MoeRouter, RouteNormAndRouteScaleGiveTheDocumentedWeights) {
  const Values logits = {0.2, -0.4, 1.3, 0.0, 2.0, -1.0};
  for (const RouterScore score : {RouterScore::Sigmoid, RouterScore::Softmax}) {
    SCOPED_TRACE(score == RouterScore::Sigmoid ? "sigmoid" : "softmax");
    const Values s = reference_scores(logits, 6, score);
    // Selection: 4 (2.0), 2 (1.3), 0 (0.2).
    const double t0 = s[4], t1 = s[2], t2 = s[0], total = t0 + t1 + t2;
    const Routed plain = route(logits, 6, {}, options(score, 3, 1, 1, false, 1.0f));
    const Routed scaled = route(logits, 6, {}, options(score, 3, 1, 1, false, 2.5f));
    const Routed normed = route(logits, 6, {}, options(score, 3, 1, 1, true, 1.0f));
    const Routed both = route(logits, 6, {}, options(score, 3, 1, 1, true, 2.5f));
    EXPECT_EQ(both.selected, (std::vector<int32_t>{4, 2, 0}));
    expect_close(plain.scores, s, 1e-6, "scores");
    expect_close(plain.weights, {t0, t1, t2}, 1e-6, "plain");
    expect_close(scaled.weights, {2.5 * t0, 2.5 * t1, 2.5 * t2}, 1e-6, "scaled");
    expect_close(normed.weights, {t0 / total, t1 / total, t2 / total}, 1e-6, "normed");
    expect_close(both.weights, {2.5 * t0 / total, 2.5 * t1 / total, 2.5 * t2 / total}, 1e-6,
                 "normed and scaled");
  }
  // Softmax scores are over all E experts, so its plain weights sum below 1; sigmoid's don't
  // sum to anything in particular.
  const Routed soft = route(logits, 6, {}, options(RouterScore::Softmax, 3));
  EXPECT_NEAR(std::accumulate(soft.scores.begin(), soft.scores.end(), 0.0), 1.0, 1e-6);
  EXPECT_LT(soft.weights[0] + soft.weights[1] + soft.weights[2], 1.0);
}

TEST(MoeRouter, MatchesAFloat64RouterOnRandomLogits) {
  const int64_t N = 24, E = 8;
  const Values logits = random_values(N * E, 11, 2.0);
  const Values bias = random_values(E, 12, 0.1);
  const std::vector<RouterOptions> cases = {
      options(RouterScore::Sigmoid, 3, 4, 2, true, 2.5f),
      options(RouterScore::Softmax, 2, 1, 1, false, 1.0f),
      options(RouterScore::Softmax, 2, 2, 1, true, 1.0f),
      options(RouterScore::Sigmoid, 8, 1, 1, false, 16.0f),
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    for (const bool with_bias : {false, true}) {
      const Values& b = with_bias ? bias : Values{};
      const Routed r = route(logits, E, b, cases[i]);
      const Values s = reference_scores(logits, E, cases[i].score);
      const std::vector<int32_t> selected = reference_selection(s, E, b, cases[i]);
      EXPECT_EQ(r.selected, selected) << "bias " << with_bias;
      expect_close(r.scores, s, 1e-6, "scores");
      expect_close(r.weights, reference_weights(s, E, selected, cases[i]), 1e-6, "weights");
    }
  }
}

// debug.moe_force_load_balance: pick n K + k goes to expert (n K + k) mod E whatever the
// scores (3 tokens, top 2 of 4: 0 1, 2 3, 0 1), each still weighed by its own score.
TEST(MoeRouter, ForcedBalanceRoundRobinsThePicksAndKeepsTheirScores) {
  RouterOptions o = options(RouterScore::Sigmoid, 2);
  o.force_balance = true;
  const Values logits = {5, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 5};  // would pick 0, 0 and 3
  const Routed r = route(logits, 4, {}, o);
  EXPECT_EQ(r.selected, (std::vector<int32_t>{0, 1, 2, 3, 0, 1}));
  for (size_t p = 0; p < r.selected.size(); ++p) {
    EXPECT_NEAR(r.weights[p], sigmoid(logits[(p / 2) * 4 + size_t(r.selected[p])]), 1e-6) << p;
  }
}

TEST(MoeRouter, RejectsChoicesThatCannotBeMade) {
  const Values logits(8, 0.0);
  EXPECT_THROW(route(logits, 8, {}, options(RouterScore::Sigmoid, 5, 4, 2)), Error);  // 4 kept
  EXPECT_THROW(route(logits, 8, {}, options(RouterScore::Sigmoid, 1, 3, 1)), Error);  // 8 % 3
  EXPECT_THROW(route(logits, 8, {}, options(RouterScore::Sigmoid, 1, 8, 2)), Error);  // groups of 1
  EXPECT_THROW(route(logits, 8, {}, options(RouterScore::Sigmoid, 1, 2, 3)), Error);  // 3 of 2
}

TEST(MoeRouter, BackwardMatchesCentralDifferencesOfTheWeights) {
  // Logits with clear margins (the selection is constant under the differences): each
  // token's experts a permutation of well-spaced values.
  const int64_t N = 6, E = 8;
  Values logits(size_t(N * E));
  const Values jitter = random_values(N * E, 21, 0.05);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t e = 0; e < E; ++e) {
      logits[size_t(n * E + e)] =
          -1.5 + 0.4 * double((e * 3 + n * 5) % E) + jitter[size_t(n * E + e)];
    }
  }
  for (const RouterScore score : {RouterScore::Sigmoid, RouterScore::Softmax}) {
    for (const bool norm : {false, true}) {
      SCOPED_TRACE(std::string(score == RouterScore::Sigmoid ? "sigmoid" : "softmax") +
                   (norm ? ", route_norm" : ""));
      const RouterOptions o = options(score, 3, 4, 2, norm, 2.5f);
      const Routed r = route(logits, E, {}, o);
      ASSERT_EQ(r.selected, reference_selection(reference_scores(logits, E, score), E, {}, o));
      const Values projection = random_values(N * o.top_k, 22);
      Tensor dlogits = Tensor::empty({N, E}, DType::F32);
      Tensor selected = Tensor::empty({N, o.top_k}, DType::I32);
      std::copy(r.selected.begin(), r.selected.end(), selected.mutable_data<int32_t>());
      ops::router_backward(from_values(projection, {N, o.top_k}), from_values(r.scores, {N, E}),
                           selected, o, dlogits);
      int flips = 0;  // perturbations that would change the selection
      const ReferenceFunction weights_of = [&](const std::vector<Values>& in) {
        const Values s = reference_scores(in[0], E, score);
        flips += reference_selection(s, E, {}, o) != r.selected;
        return reference_weights(s, E, r.selected, o);
      };
      GradCheckOptions check;
      check.tolerance = 1e-5;
      check.max_samples = N * E;
      expect_gradients_match(weights_of, {logits}, projection, {to_values(dlogits)}, {"logits"},
                             check);
      EXPECT_EQ(flips, 0);
      // Sigmoid: unselected experts get exactly zero. Softmax couples every expert, unless
      // route_norm divides the softmax's normalizer out again (then they get ~0).
      const Values d = to_values(dlogits);
      const int64_t zeros = std::count(d.begin(), d.end(), 0.0);
      if (score == RouterScore::Sigmoid) {
        EXPECT_EQ(zeros, N * (E - o.top_k));
      } else if (!norm) {
        EXPECT_EQ(zeros, 0);
      }
    }
  }
}

// Picks of 4 tokens, top 2, over 4 experts; expert 3 gets none.
Tensor hand_selection() {
  Tensor selected = Tensor::empty({4, 2}, DType::I32);
  const std::vector<int32_t> s = {2, 0, 0, 2, 1, 2, 2, 1};
  std::copy(s.begin(), s.end(), selected.mutable_data<int32_t>());
  return selected;
}

std::vector<int32_t> ints(const Tensor& t) {
  return {t.data<int32_t>(), t.data<int32_t>() + t.numel()};
}

TEST(MoeSortPicks, OrdersByExpertThenTokenWithOffsets) {
  Tensor order = Tensor::empty({8}, DType::I32);
  const std::vector<int64_t> offsets = ops::sort_picks(hand_selection(), 4, order);
  // Expert 0: picks 1, 2; expert 1: 4, 7; expert 2: 0, 3, 5, 6; expert 3: none.
  EXPECT_EQ(ints(order), (std::vector<int32_t>{1, 2, 4, 7, 0, 3, 5, 6}));
  EXPECT_EQ(offsets, (std::vector<int64_t>{0, 2, 4, 8, 8}));

  Tensor bad = hand_selection();
  bad.mutable_data<int32_t>()[3] = 4;
  EXPECT_THROW(ops::sort_picks(bad, 4, order), Error);
  Tensor short_order = Tensor::empty({7}, DType::I32);
  EXPECT_THROW(ops::sort_picks(hand_selection(), 4, short_order), Error);
}

TEST(MoeSortPicks, RandomSelectionsSortStablyByExpert) {
  const int64_t N = 50, K = 3, E = 7;
  Tensor selected = Tensor::empty({N, K}, DType::I32);
  std::mt19937_64 rng(5);
  for (int64_t n = 0; n < N; ++n) {
    std::vector<int32_t> experts(static_cast<size_t>(E));
    std::iota(experts.begin(), experts.end(), 0);
    std::shuffle(experts.begin(), experts.end(), rng);
    std::copy_n(experts.begin(), K, selected.mutable_data<int32_t>() + n * K);
  }
  Tensor order = Tensor::empty({N * K}, DType::I32);
  const std::vector<int64_t> offsets = ops::sort_picks(selected, E, order);
  std::vector<int32_t> want(size_t(N * K));
  std::iota(want.begin(), want.end(), 0);
  const int32_t* s = selected.data<int32_t>();
  std::stable_sort(want.begin(), want.end(), [&](int32_t a, int32_t b) { return s[a] < s[b]; });
  EXPECT_EQ(ints(order), want);
  for (int64_t e = 0; e < E; ++e) {
    EXPECT_EQ(offsets[size_t(e + 1)] - offsets[size_t(e)], std::count(s, s + N * K, int32_t(e)));
  }
}

struct Picks {
  int64_t N = 5, K = 2, E = 4, D = 3;
  Tensor order;
  std::vector<int32_t> ord;
};

Picks random_picks() {
  Picks p;
  Tensor selected = Tensor::empty({p.N, p.K}, DType::I32);
  const std::vector<int32_t> s = {3, 1, 0, 3, 3, 2, 1, 0, 2, 3};
  std::copy(s.begin(), s.end(), selected.mutable_data<int32_t>());
  p.order = Tensor::empty({p.N * p.K}, DType::I32);
  ops::sort_picks(selected, p.E, p.order);
  p.ord = ints(p.order);
  return p;
}

// xs[m] = x[order[m] / K] (times weights[order[m]]).
Values reference_dispatch(const Picks& p, const Values& x, const Values* weights) {
  Values xs(size_t(p.N * p.K * p.D));
  for (int64_t m = 0; m < p.N * p.K; ++m) {
    const int64_t pick = p.ord[size_t(m)], n = pick / p.K;
    for (int64_t d = 0; d < p.D; ++d) {
      xs[size_t(m * p.D + d)] = x[size_t(n * p.D + d)] * (weights ? (*weights)[size_t(pick)] : 1.0);
    }
  }
  return xs;
}

// out0 plus, for each m, ys[m] (times weights[order[m]]) added to its token.
Values reference_combine(const Picks& p, const Values& out0, const Values& ys,
                         const Values* weights) {
  Values out = out0;
  for (int64_t m = 0; m < p.N * p.K; ++m) {
    const int64_t pick = p.ord[size_t(m)], n = pick / p.K;
    for (int64_t d = 0; d < p.D; ++d) {
      const double w = weights ? (*weights)[size_t(pick)] : 1.0;
      out[size_t(n * p.D + d)] += ys[size_t(m * p.D + d)] * w;
    }
  }
  return out;
}

TEST(MoeDispatch, ForwardAndBackwardMatchNaiveLoopsAndDifferences) {
  const Picks p = random_picks();
  const int64_t M = p.N * p.K;
  const Values x = random_values(p.N * p.D, 31), w = random_values(M, 32);
  const Values projection = random_values(M * p.D, 33);
  GradCheckOptions check;
  check.tolerance = 1e-5;
  check.max_samples = 1000;
  for (const bool weighted : {false, true}) {
    SCOPED_TRACE(weighted ? "weighted" : "unweighted");
    const Tensor weights = weighted ? from_values(w, {M}) : Tensor();
    Tensor xs = Tensor::empty({M, p.D}, DType::F32);
    ops::moe_dispatch(from_values(x, {p.N, p.D}), p.order, p.K, weights, xs);
    // f32 products of f32 values: exact against the float64 loop rounded once.
    const Values want = reference_dispatch(p, x, weighted ? &w : nullptr);
    expect_close(to_values(xs), want, 1e-7, "xs");

    Tensor dx = from_values(Values(size_t(p.N * p.D), 7.0), {p.N, p.D});  // (=) overwrites
    Tensor dweights = Tensor::empty({M}, DType::F32);
    ops::moe_dispatch_backward(from_values(projection, {M, p.D}), from_values(x, {p.N, p.D}),
                               p.order, p.K, weights, dx, dweights);
    if (weighted) {
      const ReferenceFunction f = [&](const std::vector<Values>& in) {
        return reference_dispatch(p, in[0], &in[1]);
      };
      expect_gradients_match(f, {x, w}, projection, {to_values(dx), to_values(dweights)},
                             {"x", "weights"}, check);
    } else {
      const ReferenceFunction f = [&](const std::vector<Values>& in) {
        return reference_dispatch(p, in[0], nullptr);
      };
      expect_gradients_match(f, {x}, projection, {to_values(dx)}, {"x"}, check);
    }
  }
}

TEST(MoeCombine, ForwardAndBackwardMatchNaiveLoopsAndDifferences) {
  const Picks p = random_picks();
  const int64_t M = p.N * p.K;
  const Values ys = random_values(M * p.D, 41), w = random_values(M, 42);
  const Values out0 = random_values(p.N * p.D, 43);
  const Values projection = random_values(p.N * p.D, 44);
  GradCheckOptions check;
  check.tolerance = 1e-5;
  check.max_samples = 1000;
  for (const bool weighted : {false, true}) {
    SCOPED_TRACE(weighted ? "weighted" : "unweighted");
    const Tensor weights = weighted ? from_values(w, {M}) : Tensor();
    Tensor out = from_values(out0, {p.N, p.D});
    ops::moe_combine(from_values(ys, {M, p.D}), p.order, p.K, weights, out);
    // Added to out (+=) in the order of m: unweighted, the same f32 additions give the same
    // bits (weighted, the compiler may fuse the products into the sums).
    if (!weighted) {
      std::vector<float> want(out0.begin(), out0.end());
      for (int64_t m = 0; m < M; ++m) {
        const int32_t pick = p.ord[size_t(m)];
        for (int64_t d = 0; d < p.D; ++d) {
          want[size_t(pick / p.K * p.D + d)] += float(ys[size_t(m * p.D + d)]);
        }
      }
      EXPECT_EQ(std::vector<float>(out.data<float>(), out.data<float>() + out.numel()), want);
    }
    expect_close(to_values(out), reference_combine(p, out0, ys, weighted ? &w : nullptr), 1e-6,
                 "out");

    Tensor dys = from_values(Values(size_t(M * p.D), 7.0), {M, p.D});
    Tensor dweights = Tensor::empty({M}, DType::F32);
    ops::moe_combine_backward(from_values(projection, {p.N, p.D}), from_values(ys, {M, p.D}),
                              p.order, p.K, weights, dys, dweights);
    if (weighted) {
      const ReferenceFunction f = [&](const std::vector<Values>& in) {
        return reference_combine(p, out0, in[0], &in[1]);
      };
      expect_gradients_match(f, {ys, w}, projection, {to_values(dys), to_values(dweights)},
                             {"ys", "weights"}, check);
    } else {
      const ReferenceFunction f = [&](const std::vector<Values>& in) {
        return reference_combine(p, out0, in[0], nullptr);
      };
      expect_gradients_match(f, {ys}, projection, {to_values(dys)}, {"ys"}, check);
    }
  }
}

TEST(MoeDispatch, RejectsMismatchedShapes) {
  const Picks p = random_picks();
  const Tensor x = random_tensor({p.N, p.D}, 1);
  Tensor xs = Tensor::empty({p.N * p.K - 1, p.D}, DType::F32);
  EXPECT_THROW(ops::moe_dispatch(x, p.order, p.K, Tensor(), xs), Error);
  Tensor good = Tensor::empty({p.N * p.K, p.D}, DType::F32);
  EXPECT_THROW(ops::moe_dispatch(x, p.order, p.K, random_tensor({p.N}, 2), good), Error);
}

// Rows [offsets[e], offsets[e + 1]) belong to expert e; expert 1 has none.
struct Grouped {
  int64_t M = 5, E = 3, in = 4, out = 3;
  std::vector<int64_t> offsets = {0, 2, 2, 5};
  int64_t expert_of(int64_t m) const {
    int64_t e = 0;
    while (offsets[size_t(e + 1)] <= m) ++e;
    return e;
  }
};

TEST(MoeGroupedLinear, MatchesPerExpertMatmulsWithAnEmptyExpert) {
  const Grouped g;
  const Values x = random_values(g.M * g.in, 51), w = random_values(g.E * g.out * g.in, 52);
  const Values dy = random_values(g.M * g.out, 53);
  const Tensor wt = from_values(w, {g.E, g.out, g.in});
  auto W = [&](int64_t e, int64_t o, int64_t i) { return w[size_t((e * g.out + o) * g.in + i)]; };

  Tensor y = Tensor::empty({g.M, g.out}, DType::F32);
  ops::grouped_linear_forward(from_values(x, {g.M, g.in}), wt, g.offsets, y);
  Values want_y(size_t(g.M * g.out), 0.0);
  for (int64_t m = 0; m < g.M; ++m)
    for (int64_t o = 0; o < g.out; ++o)
      for (int64_t i = 0; i < g.in; ++i)
        want_y[size_t(m * g.out + o)] += x[size_t(m * g.in + i)] * W(g.expert_of(m), o, i);
  expect_close(to_values(y), want_y, 1e-6, "y");

  Values want_dx(size_t(g.M * g.in), 0.0);
  for (int64_t m = 0; m < g.M; ++m)
    for (int64_t i = 0; i < g.in; ++i)
      for (int64_t o = 0; o < g.out; ++o)
        want_dx[size_t(m * g.in + i)] += dy[size_t(m * g.out + o)] * W(g.expert_of(m), o, i);
  Tensor dx = from_values(Values(size_t(g.M * g.in), 3.0), {g.M, g.in});
  ops::grouped_linear_backward_input(from_values(dy, {g.M, g.out}), wt, g.offsets, dx,
                                     ops::Accumulate::No);
  expect_close(to_values(dx), want_dx, 1e-6, "dx (=)");
  ops::grouped_linear_backward_input(from_values(dy, {g.M, g.out}), wt, g.offsets, dx,
                                     ops::Accumulate::Yes);
  Values twice = want_dx;
  for (double& v : twice) v *= 2;
  expect_close(to_values(dx), twice, 1e-6, "dx (+=)");

  // dw[e] += dy^T x over e's rows; the empty expert keeps what it had.
  const Values dw0 = random_values(g.E * g.out * g.in, 54);
  Tensor dw = from_values(dw0, {g.E, g.out, g.in});
  ops::grouped_linear_backward_weight(from_values(dy, {g.M, g.out}), from_values(x, {g.M, g.in}),
                                      g.offsets, dw);
  Values want_dw = dw0;
  for (int64_t m = 0; m < g.M; ++m)
    for (int64_t o = 0; o < g.out; ++o)
      for (int64_t i = 0; i < g.in; ++i)
        want_dw[size_t((g.expert_of(m) * g.out + o) * g.in + i)] +=
            dy[size_t(m * g.out + o)] * x[size_t(m * g.in + i)];
  expect_close(to_values(dw), want_dw, 1e-6, "dw (+=)");
  const Values got_dw = to_values(dw);
  for (int64_t j = 0; j < g.out * g.in; ++j) {
    EXPECT_EQ(got_dw[size_t(g.out * g.in + j)], float(dw0[size_t(g.out * g.in + j)])) << j;
  }

  // Offsets that do not cover the rows are refused.
  std::vector<int64_t> bad = {0, 2, 2, 4};
  EXPECT_THROW(ops::grouped_linear_forward(from_values(x, {g.M, g.in}), wt, bad, y), Error);
}

TEST(Columns, CopyColumnsWritesOrAddsOnlyItsColumns) {
  const int64_t R = 3, cs = 5, cd = 6;
  const Values src = random_values(R * cs, 61), dst0 = random_values(R * cd, 62);
  for (const ops::Accumulate acc : {ops::Accumulate::No, ops::Accumulate::Yes}) {
    // src [3, 5] viewed as rows of its last dim; dst given as [3, 1, 6].
    Tensor dst = from_values(dst0, {R, 1, cd});
    ops::copy_columns(from_values(src, {R, cs}), 1, dst, 2, 3, acc);
    std::vector<float> want(dst0.begin(), dst0.end());
    for (int64_t r = 0; r < R; ++r)
      for (int64_t j = 0; j < 3; ++j) {
        float& to = want[size_t(r * cd + 2 + j)];
        const float from = float(src[size_t(r * cs + 1 + j)]);
        to = acc == ops::Accumulate::Yes ? to + from : from;
      }
    EXPECT_EQ(std::vector<float>(dst.data<float>(), dst.data<float>() + dst.numel()), want)
        << (acc == ops::Accumulate::Yes ? "+=" : "=");
  }
}

TEST(Columns, BroadcastAndSumColumnGroupsMatchNaiveLoops) {
  const int64_t R = 2, G = 3, w = 3, C = 5;
  const Values src = random_values(R * w, 71), dst0 = random_values(R * G * C, 72);
  Tensor dst = from_values(dst0, {R * G, C});
  ops::broadcast_columns(from_values(src, {R, w}), dst, 1);
  std::vector<float> want(dst0.begin(), dst0.end());
  for (int64_t r = 0; r < R; ++r)
    for (int64_t g = 0; g < G; ++g)
      for (int64_t j = 0; j < w; ++j) {
        want[size_t((r * G + g) * C + 1 + j)] = float(src[size_t(r * w + j)]);
      }
  EXPECT_EQ(std::vector<float>(dst.data<float>(), dst.data<float>() + dst.numel()), want);

  // sum_column_groups: dst[r, j] = sum over g of src[r G + g, 2 + j], in order of g.
  const Values big = random_values(R * G * C, 73);
  Tensor sums = from_values(Values(size_t(R * w), 9.0), {R, w});  // (=) overwrites
  ops::sum_column_groups(from_values(big, {R * G, C}), 2, sums);
  std::vector<float> want_sums(size_t(R * w), 0.0f);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t g = 0; g < G; ++g)
      for (int64_t j = 0; j < w; ++j)
        want_sums[size_t(r * w + j)] += float(big[size_t((r * G + g) * C + 2 + j)]);
  EXPECT_EQ(std::vector<float>(sums.data<float>(), sums.data<float>() + sums.numel()), want_sums);
}

TEST(Columns, RefuseColumnsOutOfRange) {
  const Tensor src = random_tensor({3, 5}, 1);
  Tensor dst = Tensor::zeros({3, 6}, DType::F32);
  EXPECT_THROW(ops::copy_columns(src, 3, dst, 0, 3), Error);   // src columns 3..5 of 5
  EXPECT_THROW(ops::copy_columns(src, 0, dst, 4, 3), Error);   // dst columns 4..6 of 6
  EXPECT_THROW(ops::copy_columns(src, -1, dst, 0, 2), Error);
  Tensor fewer_rows = Tensor::zeros({2, 6}, DType::F32);
  EXPECT_THROW(ops::copy_columns(src, 0, fewer_rows, 0, 2), Error);
  Tensor groups = Tensor::zeros({6, 6}, DType::F32);
  EXPECT_THROW(ops::broadcast_columns(src, groups, 2), Error);  // columns 2..7 of 6
  Tensor not_multiple = Tensor::zeros({7, 6}, DType::F32);
  EXPECT_THROW(ops::broadcast_columns(src, not_multiple, 0), Error);
  Tensor sums = Tensor::zeros({3, 5}, DType::F32);
  EXPECT_THROW(ops::sum_column_groups(groups, 2, sums), Error);  // columns 2..7 of 6
  // Nothing was written by the refused calls.
  const Values d = to_values(dst);
  EXPECT_TRUE(std::all_of(d.begin(), d.end(), [](double v) { return v == 0; }));
}

}  // namespace
}  // namespace titan::testing
