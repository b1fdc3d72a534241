// Philox 4x32-10 and the distributions built on it (core/philox.h).
//
// The bijection is pinned by Random123's published known-answer vectors; the addressing
// (seed, stream, index) by its definition; the distributions by their moments and a
// Kolmogorov-Smirnov statistic on a million draws with fixed seeds (so the tests are
// deterministic: the bounds are a few standard errors, chosen to catch a wrong scale, a
// wrong tail or a bias, not to be lucky).
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numbers>
#include <vector>

#include "titan/core/float_formats.h"
#include "titan/core/philox.h"

namespace titan {
namespace {

// Random123 tests/kat_vectors, the three "philox4x32 10" lines (counter[4] key[2] ->
// output[4]): all zeros, all ones, and the digits of pi.
struct KnownAnswer {
  PhiloxCounter counter;
  PhiloxKey key;
  PhiloxCounter expected;
};
constexpr KnownAnswer kKnownAnswers[] = {
    {{0x00000000, 0x00000000, 0x00000000, 0x00000000}, {0x00000000, 0x00000000},
     {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
    {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff},
     {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
    {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0},
     {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
};

// The function is constexpr: a wrong round or constant fails the build, not just a test.
static_assert(philox4x32_10(kKnownAnswers[0].counter, kKnownAnswers[0].key) ==
              kKnownAnswers[0].expected);
static_assert(philox4x32_10(kKnownAnswers[2].counter, kKnownAnswers[2].key) ==
              kKnownAnswers[2].expected);

TEST(Philox, MatchesRandom123KnownAnswerVectors) {
  for (const KnownAnswer& k : kKnownAnswers) {
    const PhiloxCounter out = philox4x32_10(k.counter, k.key);
    for (int w = 0; w < 4; ++w) {
      EXPECT_EQ(out[w], k.expected[w]) << "word " << w << " of counter " << std::hex
                                       << k.counter[0] << " key " << k.key[0];
    }
  }
}

TEST(Philox, StreamKeyIsFnv1a64OfTheName) {
  // The published FNV-1a 64 test values.
  EXPECT_EQ(philox_stream_key(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(philox_stream_key("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(philox_stream_key("foobar"), 0x85944171f73967e8ull);
  EXPECT_NE(philox_stream_key("layers.0.attention.wq.weight"),
            philox_stream_key("layers.0.attention.wk.weight"));
}

TEST(Philox, BlockAddressIsIndexThenStreamUnderTheSeedKey) {
  const uint64_t seed = 0x0123456789abcdefull, stream = 0xfedcba9876543210ull;
  const int64_t index = 0x00000007deadbeefll;
  const PhiloxCounter expected =
      philox4x32_10({0xdeadbeef, 0x00000007, 0x76543210, 0xfedcba98}, {0x89abcdef, 0x01234567});
  EXPECT_EQ(philox_block(seed, stream, index), expected);
  // Every part of the address matters, the high halves included.
  EXPECT_NE(philox_block(seed, stream, index), philox_block(seed, stream, index ^ (1ll << 40)));
  EXPECT_NE(philox_block(seed, stream, index), philox_block(seed, stream ^ (1ull << 50), index));
  EXPECT_NE(philox_block(seed, stream, index), philox_block(seed ^ (1ull << 45), stream, index));
}

// --- the fills -----------------------------------------------------------------------------

constexpr uint64_t kSeed = 42;
const uint64_t kStream = philox_stream_key("layers.3.attention.wq.weight");

using Fill = std::function<void(Tensor&, int64_t first_index)>;

struct NamedFill {
  const char* name;
  Fill fill;
};

std::vector<NamedFill> all_fills() {
  return {
      {"uniform", [](Tensor& t, int64_t first) {
         philox_fill_uniform(t, kSeed, kStream, first, -0.5f, 2.0f);
       }},
      {"normal", [](Tensor& t, int64_t first) {
         philox_fill_normal(t, kSeed, kStream, first, 0.25f, 0.02f);
       }},
      {"trunc_normal", [](Tensor& t, int64_t first) {
         philox_fill_trunc_normal(t, kSeed, kStream, first, 0.0f, 1.0f, -2.0f, 2.0f);
       }},
  };
}

std::vector<float> fill_f32(const Fill& fill, int64_t n, int64_t first_index) {
  Tensor t = Tensor::empty({n}, DType::F32);
  fill(t, first_index);
  return std::vector<float>(t.data<float>(), t.data<float>() + n);
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](float x, float y) {
           return f32_bits(x) == f32_bits(y);
         });
}

TEST(PhiloxFill, SliceGeneratedAloneEqualsThatSliceOfTheWhole) {
  for (const NamedFill& f : all_fills()) {
    const std::vector<float> whole = fill_f32(f.fill, 10'000, 0);
    const std::vector<float> slice = fill_f32(f.fill, 1'000, 3'337);
    const std::vector<float> expected(whole.begin() + 3'337, whole.begin() + 4'337);
    EXPECT_TRUE(bitwise_equal(slice, expected)) << f.name;
    // And a rank's rows of a [100, 100] parameter: rows 40..59 start at element 4,000.
    Tensor rows = Tensor::empty({20, 100}, DType::F32);
    f.fill(rows, 40 * 100);
    EXPECT_TRUE(bitwise_equal(std::vector<float>(rows.data<float>(), rows.data<float>() + 2'000),
                              std::vector<float>(whole.begin() + 4'000, whole.begin() + 6'000)))
        << f.name;
  }
}

TEST(PhiloxFill, ElementsAreTheScalarFunctionsOfTheirIndex) {
  const int64_t first = 123'456'789'012ll;  // past 2^32: the index's high word is in use
  Tensor t = Tensor::empty({3, 5}, DType::F32);
  philox_fill_uniform(t, kSeed, kStream, first, -0.5f, 2.0f);
  for (int64_t k = 0; k < 15; ++k) {
    EXPECT_EQ(f32_bits(t.data<float>()[k]),
              f32_bits(philox_uniform(kSeed, kStream, first + k, -0.5f, 2.0f)));
  }
  philox_fill_normal(t, kSeed, kStream, first, 0.25f, 0.02f);
  for (int64_t k = 0; k < 15; ++k) {
    EXPECT_EQ(f32_bits(t.data<float>()[k]),
              f32_bits(philox_normal(kSeed, kStream, first + k, 0.25f, 0.02f)));
  }
  philox_fill_trunc_normal(t, kSeed, kStream, first, 0.0f, 1.0f, -2.0f, 2.0f);
  for (int64_t k = 0; k < 15; ++k) {
    EXPECT_EQ(f32_bits(t.data<float>()[k]),
              f32_bits(philox_trunc_normal(kSeed, kStream, first + k, 0.0f, 1.0f, -2.0f, 2.0f)));
  }
}

TEST(PhiloxFill, HasNoHiddenState) {
  // The same element, asked for before and after many others, in any order, is the same.
  const float before = philox_normal(kSeed, kStream, 77, 0.0f, 1.0f);
  const std::vector<float> first = fill_f32(all_fills()[1].fill, 50'000, 0);
  const std::vector<float> again = fill_f32(all_fills()[1].fill, 50'000, 0);
  EXPECT_TRUE(bitwise_equal(first, again));
  EXPECT_EQ(f32_bits(philox_normal(kSeed, kStream, 77, 0.0f, 1.0f)), f32_bits(before));
  for (int64_t k = 999; k >= 0; --k) {  // all_fills()[1] is normal(0.25, 0.02)
    ASSERT_EQ(f32_bits(philox_normal(kSeed, kStream, k, 0.25f, 0.02f)), f32_bits(first[size_t(k)]))
        << "element " << k << " depends on what was drawn before it";
  }
}

TEST(PhiloxFill, DoesNotDependOnTheThreadCount) {
  const int threads = omp_get_max_threads();
  for (const NamedFill& f : all_fills()) {
    omp_set_num_threads(1);
    const std::vector<float> one = fill_f32(f.fill, 20'001, 5);
    omp_set_num_threads(3);
    const std::vector<float> three = fill_f32(f.fill, 20'001, 5);
    omp_set_num_threads(threads);
    EXPECT_TRUE(bitwise_equal(one, three)) << f.name;
  }
}

TEST(PhiloxFill, DifferentStreamsAndSeedsGiveUnrelatedValues) {
  const int64_t n = 100'000;
  auto normals = [&](uint64_t seed, uint64_t stream) {
    Tensor t = Tensor::empty({n}, DType::F32);
    philox_fill_normal(t, seed, stream, 0, 0.0f, 1.0f);
    return std::vector<float>(t.data<float>(), t.data<float>() + n);
  };
  const auto wq = normals(kSeed, philox_stream_key("layers.0.attention.wq.weight"));
  const auto wk = normals(kSeed, philox_stream_key("layers.0.attention.wk.weight"));
  const auto wq_other_seed = normals(kSeed + 1, philox_stream_key("layers.0.attention.wq.weight"));
  for (const auto* other : {&wk, &wq_other_seed}) {
    int64_t equal = 0;
    double dot = 0;
    for (int64_t i = 0; i < n; ++i) {
      equal += wq[size_t(i)] == (*other)[size_t(i)];
      dot += double(wq[size_t(i)]) * (*other)[size_t(i)];
    }
    EXPECT_LT(equal, 5);
    // The correlation of independent standard normals has standard error 1/sqrt(n).
    EXPECT_LT(std::fabs(dot / n), 5 / std::sqrt(double(n)));
  }
}

TEST(PhiloxFill, SixteenBitOutputsAreTheFloatDrawRoundedOnce) {
  const std::vector<float> f32 = fill_f32(all_fills()[1].fill, 4'097, 11);
  Tensor bf16 = Tensor::empty({4'097}, DType::BF16);
  Tensor f16 = Tensor::empty({4'097}, DType::F16);
  Tensor f8 = Tensor::empty({4'097}, DType::F8E4M3);
  all_fills()[1].fill(bf16, 11);
  all_fills()[1].fill(f16, 11);
  all_fills()[1].fill(f8, 11);
  for (size_t i = 0; i < f32.size(); ++i) {
    ASSERT_EQ(bf16.data<bf16_t>()[i].bits, bf16_from_f32(f32[i]).bits) << i;
    ASSERT_EQ(f16.data<f16_t>()[i].bits, f16_from_f32(f32[i]).bits) << i;
    ASSERT_EQ(f8.data<f8e4m3_t>()[i].bits, f8e4m3_from_f32(f32[i]).bits) << i;
  }
}

TEST(PhiloxFill, RejectsBadArguments) {
  Tensor t = Tensor::empty({4}, DType::F32);
  EXPECT_THROW(philox_fill_normal(t, 1, 2, 0, 0.0f, -1.0f), Error);
  EXPECT_THROW(philox_fill_normal(t, 1, 2, -1, 0.0f, 1.0f), Error);
  EXPECT_THROW(philox_fill_uniform(t, 1, 2, 0, 1.0f, 0.0f), Error);
  EXPECT_THROW(philox_fill_trunc_normal(t, 1, 2, 0, 0.0f, 1.0f, 2.0f, -2.0f), Error);
  EXPECT_THROW(philox_fill_trunc_normal(t, 1, 2, 0, 0.0f, 0.0f, -2.0f, 2.0f), Error);
  Tensor ints = Tensor::empty({4}, DType::I32);
  EXPECT_THROW(philox_fill_normal(ints, 1, 2, 0, 0.0f, 1.0f), Error);
  Tensor undefined;
  EXPECT_THROW(philox_fill_normal(undefined, 1, 2, 0, 0.0f, 1.0f), Error);
  EXPECT_THROW(philox_normal(1, 2, 0, 0.0f, NAN), Error);
}

// --- the distributions ---------------------------------------------------------------------

struct Moments {
  double mean = 0;
  double std = 0;
};

Moments moments(const std::vector<float>& x) {
  double sum = 0;
  for (float v : x) sum += v;
  Moments m;
  m.mean = sum / double(x.size());
  double squares = 0;
  for (float v : x) squares += (v - m.mean) * (v - m.mean);
  m.std = std::sqrt(squares / double(x.size() - 1));
  return m;
}

// sqrt(n) * sup |F_n(x) - F(x)|: above 1.95 with probability 0.001 for a right F.
double kolmogorov_smirnov(std::vector<float> x, const std::function<double(double)>& cdf) {
  std::sort(x.begin(), x.end());
  const double n = double(x.size());
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double f = cdf(x[i]);
    worst = std::max({worst, f - double(i) / n, double(i + 1) / n - f});
  }
  return worst * std::sqrt(n);
}

double normal_density(double x) { return std::exp(-x * x / 2) / std::sqrt(2 * std::numbers::pi); }

constexpr int64_t kDraws = 1'000'000;

TEST(PhiloxDistribution, NormalHasMeanZeroStdOneAndTheNormalShape) {
  Tensor t = Tensor::empty({kDraws}, DType::F32);
  philox_fill_normal(t, 7, philox_stream_key("tok_embeddings.weight"), 0, 0.0f, 1.0f);
  const std::vector<float> x(t.data<float>(), t.data<float>() + kDraws);
  const Moments m = moments(x);
  const double n = double(kDraws);
  EXPECT_LT(std::fabs(m.mean), 4 / std::sqrt(n));            // standard error 1/sqrt(n)
  EXPECT_LT(std::fabs(m.std - 1), 4 / std::sqrt(2 * n));     // standard error 1/sqrt(2n)
  EXPECT_LT(kolmogorov_smirnov(x, normal_cdf), 1.95);
  // Box-Muller's tails: the share beyond 3 sigma is 0.0027 (standard error 5.2e-5).
  const double beyond3 = double(std::count_if(x.begin(), x.end(), [](float v) {
                           return std::fabs(v) > 3;
                         })) / n;
  EXPECT_NEAR(beyond3, 2 * normal_cdf(-3), 4 * std::sqrt(2 * normal_cdf(-3) / n));
}

TEST(PhiloxDistribution, NormalScalesByMeanAndStd) {
  const uint64_t stream = philox_stream_key("x");
  for (int64_t i = 0; i < 1000; ++i) {
    const double z = philox_normal(3, stream, i, 0.0f, 1.0f);
    const double y = philox_normal(3, stream, i, 0.5f, 0.02f);
    EXPECT_NEAR(y, 0.5 + 0.02 * z, 1e-6);
  }
}

// Mean and std of a standard normal truncated to [alpha, beta]. Above the mean the mirror
// image is computed, as the sampler does, so that Phi(beta) - Phi(alpha) keeps its digits.
Moments truncated_standard_normal(double alpha, double beta) {
  if (alpha > 0) {
    const Moments mirrored = truncated_standard_normal(-beta, -alpha);
    return {-mirrored.mean, mirrored.std};
  }
  const double z = normal_cdf(beta) - normal_cdf(alpha);
  const double mean = (normal_density(alpha) - normal_density(beta)) / z;
  const double variance =
      1 + (alpha * normal_density(alpha) - beta * normal_density(beta)) / z - mean * mean;
  return {mean, std::sqrt(variance)};
}

struct TruncCase {
  float mean, std, a, b;
};

TEST(PhiloxDistribution, TruncNormalStaysInBoundsWithTheTruncatedMoments) {
  const TruncCase cases[] = {
      {0.0f, 1.0f, -2.0f, 2.0f},      // sigma = 0.8796
      {0.0f, 0.02f, -2.0f, 2.0f},     // torchtitan's std 0.02 weights: the cut is ~100 sigma
      {0.0f, 0.0625f, -0.1875f, 0.1875f},  // the output layer: dim^-0.5 cut at 3 sigma
      {1.0f, 2.0f, 3.0f, 7.0f},       // one-sided, above the mean: drawn mirrored
      {0.0f, 1.0f, -3.0f, -1.0f},     // one-sided, below the mean
      {0.0f, 1.0f, 8.0f, 9.0f},       // far tail: Phi(8) = 1 - 6e-16 would be too coarse
  };
  for (const TruncCase& c : cases) {
    Tensor t = Tensor::empty({kDraws}, DType::F32);
    philox_fill_trunc_normal(t, 5, philox_stream_key("w"), 0, c.mean, c.std, c.a, c.b);
    const std::vector<float> x(t.data<float>(), t.data<float>() + kDraws);
    const auto [lo, hi] = std::minmax_element(x.begin(), x.end());
    EXPECT_GE(*lo, c.a);
    EXPECT_LE(*hi, c.b);
    const double alpha = (double(c.a) - c.mean) / c.std, beta = (double(c.b) - c.mean) / c.std;
    const Moments expected = truncated_standard_normal(alpha, beta);
    const Moments m = moments(x);
    const double n = double(kDraws);
    SCOPED_TRACE(::testing::Message() << "mean " << c.mean << " std " << c.std << " cut [" << c.a
                                      << ", " << c.b << "]");
    EXPECT_NEAR(m.mean, c.mean + c.std * expected.mean, 5 * c.std * expected.std / std::sqrt(n));
    EXPECT_NEAR(m.std, c.std * expected.std, 5 * c.std * expected.std / std::sqrt(2 * n));
    const double z = normal_cdf(beta) - normal_cdf(alpha);  // only used where beta < 6
    const auto cdf = [&](double v) {
      return std::clamp((normal_cdf((v - c.mean) / c.std) - normal_cdf(alpha)) / z, 0.0, 1.0);
    };
    // The far tail's CDF is steep enough that float rounding of the samples shows; the
    // moments above already pin it.
    if (beta < 6) {
      EXPECT_LT(kolmogorov_smirnov(x, cdf), 1.95);
    }
  }
  // The analytic formula itself, against the textbook figure: std 1 cut at +-2 keeps 0.8796.
  EXPECT_NEAR(truncated_standard_normal(-2, 2).std, 0.8796, 1e-4);
}

TEST(PhiloxDistribution, UniformCoversItsHalfOpenRange) {
  Tensor t = Tensor::empty({kDraws}, DType::F32);
  const float low = -0.5f, high = 2.0f;
  philox_fill_uniform(t, 9, philox_stream_key("u"), 0, low, high);
  const std::vector<float> x(t.data<float>(), t.data<float>() + kDraws);
  const auto [lo, hi] = std::minmax_element(x.begin(), x.end());
  EXPECT_GE(*lo, low);
  EXPECT_LT(*hi, high);
  EXPECT_LT(*lo, low + 1e-4);   // reaches both ends: the range is not shrunk or shifted
  EXPECT_GT(*hi, high - 1e-4);
  const Moments m = moments(x);
  const double width = high - low, n = double(kDraws);
  EXPECT_NEAR(m.mean, (low + high) / 2.0, 4 * width / std::sqrt(12 * n));
  EXPECT_NEAR(m.std, width / std::sqrt(12.0), 4 * width / std::sqrt(12 * n));
  EXPECT_LT(kolmogorov_smirnov(x, [&](double v) { return (v - low) / width; }), 1.95);
}

TEST(PhiloxDistribution, UniformNeverRoundsUpToHigh) {
  // Floats near 1e8 are 8 apart: half the draws in [1e8, 1e8 + 8) would round to 1e8 + 8.
  const float low = 1e8f, high = 1e8f + 8.0f;
  for (int64_t i = 0; i < 1000; ++i) {
    EXPECT_EQ(philox_uniform(1, 2, i, low, high), low) << i;
  }
  EXPECT_EQ(philox_uniform(1, 2, 0, 3.0f, 3.0f), 3.0f);  // an empty range gives its point
}

TEST(PhiloxDistribution, NormalQuantileInvertsTheCdf) {
  EXPECT_NEAR(normal_quantile(0.975), 1.959963984540054, 1e-14);
  EXPECT_EQ(normal_quantile(0.5), 0.0);
  EXPECT_EQ(normal_quantile(0.0), -INFINITY);
  EXPECT_EQ(normal_quantile(1.0), INFINITY);
  EXPECT_TRUE(std::isnan(normal_quantile(-0.1)));
  EXPECT_TRUE(std::isnan(normal_quantile(NAN)));
  // Across every region of Acklam's approximation, down to the far lower tail where the
  // mirrored truncated draws live: q(p) is within a few ulp of the true quantile. Phi
  // magnifies an error dx in x to a relative error |x| dx in p, and x's own ulp is
  // eps |x|, hence the x^2 in the tolerance (3e-13 relative at p = 1e-300, x = -37).
  for (double p = 1e-300; p < 0.5; p *= 1.37) {
    const double x = normal_quantile(p);
    const double eps = std::numeric_limits<double>::epsilon();
    EXPECT_NEAR(normal_cdf(x), p, p * (1e-14 + 4 * eps * (1 + x * x))) << "p = " << p;
    // The upper half only knows p to the ulp of 1 - p, about 1.1e-16.
    if (p > 1e-12) {
      EXPECT_NEAR(normal_quantile(1 - p), -x, 1e-12 + 1e-15 / p) << "p = " << p;
    }
  }
}

}  // namespace
}  // namespace titan
