#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "support/gradient_check.h"
#include "titan/ops/grad_norm.h"

namespace titan::testing {
namespace {

double reference_sum_of_squares(const Tensor& t) {
  long double sum = 0;
  for (double v : to_values(t)) sum += (long double)v * v;
  return double(sum);
}

// Gradients of awkward sizes: empty, one element, odd, and one big enough for threads.
std::vector<Tensor> some_gradients() {
  return {Tensor::zeros({0}, DType::F32), random_tensor({1}, 1), random_tensor({7, 3}, 2),
          random_tensor({313, 331}, 3, 0.01f)};
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.bytes() == b.bytes() && std::memcmp(a.raw_data(), b.raw_data(), size_t(a.bytes())) == 0;
}

Tensor clone(const Tensor& t) {
  Tensor c = Tensor::empty(t.shape(), t.dtype());
  if (t.bytes() > 0) std::memcpy(c.raw_mutable_data(), t.raw_data(), size_t(t.bytes()));
  return c;
}

TEST(GradNorm, SumOfSquaresMatchesFloat64Reference) {
  for (const Tensor& g : some_gradients()) {
    const double expected = reference_sum_of_squares(g);
    EXPECT_NEAR(ops::sum_of_squares(g), expected, 1e-13 * expected) << shape_string(g.shape());
  }
  EXPECT_EQ(ops::sum_of_squares(Tensor::zeros({0}, DType::F32)), 0.0);
}

TEST(GradNorm, SumsOfSquaresAreEachTensorsSumBitForBit) {
  std::vector<Tensor> grads = some_gradients();
  grads.push_back(Tensor::zeros({0}, DType::F32));
  const std::vector<double> sums = ops::sums_of_squares(grads);
  ASSERT_EQ(sums.size(), grads.size());
  for (size_t i = 0; i < grads.size(); ++i) {
    const double one = ops::sum_of_squares(grads[i]);
    EXPECT_EQ(std::memcmp(&sums[i], &one, sizeof(double)), 0) << i << ": " << sums[i] << " vs " << one;
  }
  EXPECT_TRUE(ops::sums_of_squares({}).empty());
}

TEST(GradNorm, TotalIsTheL2NormOverAllTensors) {
  const std::vector<Tensor> grads = some_gradients();
  double sum = 0;
  for (const Tensor& g : grads) sum += reference_sum_of_squares(g);
  EXPECT_NEAR(ops::grad_norm_total(grads), std::sqrt(sum), 1e-13 * std::sqrt(sum));
  EXPECT_EQ(ops::grad_norm_total({}), 0.0);
}

TEST(GradNorm, SumDoesNotDependOnThreadCount) {
  const Tensor g = random_tensor({1000, 77}, 7);
  const int threads = omp_get_max_threads();
  std::vector<double> sums;
  for (int t : {1, 2, 3, 8}) {
    omp_set_num_threads(t);
    sums.push_back(ops::sum_of_squares(g));
  }
  omp_set_num_threads(threads);
  for (double s : sums) {
    EXPECT_EQ(std::memcmp(&s, &sums[0], sizeof(double)), 0) << s << " vs " << sums[0];
  }
}

TEST(GradNorm, ClippingScalesEveryGradientByTheCoefficient) {
  std::vector<Tensor> grads = some_gradients();
  const double norm = ops::grad_norm_total(grads);
  const double max_norm = norm / 4;
  std::vector<Tensor> before;
  for (const Tensor& g : grads) before.push_back(clone(g));
  ops::clip_grads_with_norm(grads, max_norm, norm);
  const float coefficient = float(max_norm / (norm + 1e-6));
  for (size_t t = 0; t < grads.size(); ++t) {
    for (int64_t i = 0; i < grads[t].numel(); ++i) {
      EXPECT_EQ(grads[t].data<float>()[i], before[t].data<float>()[i] * coefficient);
    }
  }
  EXPECT_NEAR(ops::grad_norm_total(grads), max_norm, 1e-6 * max_norm);
}

TEST(GradNorm, NormUnderMaxNormLeavesGradientsBitwiseUnchanged) {
  std::vector<Tensor> grads = some_gradients();
  const double norm = ops::grad_norm_total(grads);
  std::vector<Tensor> before;
  for (const Tensor& g : grads) before.push_back(clone(g));
  ops::clip_grads_with_norm(grads, norm * 2, norm);
  ops::clip_grads_with_norm(grads, norm + 1e-6, norm);  // coefficient exactly 1
  for (size_t t = 0; t < grads.size(); ++t) EXPECT_TRUE(same_bits(grads[t], before[t]));
}

TEST(GradNorm, ClipCoefficientIsTorchs) {
  EXPECT_EQ(ops::grad_clip_coefficient(1.0, 0.5), 1.0);
  EXPECT_DOUBLE_EQ(ops::grad_clip_coefficient(1.0, 4.0), 1.0 / (4.0 + 1e-6));
  EXPECT_EQ(ops::grad_clip_coefficient(1.0, 0.0), 1.0);
  EXPECT_EQ(ops::grad_clip_coefficient(0.0, 3.0), 0.0);  // torchtitan: max_norm 0 zeroes
  EXPECT_EQ(ops::grad_clip_coefficient(1.0, std::numeric_limits<double>::infinity()), 0.0);
  EXPECT_TRUE(std::isnan(ops::grad_clip_coefficient(1.0, std::nan(""))));
}

TEST(GradNorm, NonFiniteGradientGivesNonFiniteNorm) {
  std::vector<Tensor> grads = some_gradients();
  grads[3].mutable_data<float>()[12345] = std::numeric_limits<float>::quiet_NaN();
  const double norm = ops::grad_norm_total(grads);
  EXPECT_TRUE(std::isnan(norm));
  // torch multiplies by the NaN coefficient: every gradient becomes NaN.
  ops::clip_grads_with_norm(grads, 1.0, norm);
  EXPECT_TRUE(std::isnan(grads[2].data<float>()[0]));

  std::vector<Tensor> infinite = some_gradients();
  infinite[2].mutable_data<float>()[4] = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(std::isinf(ops::grad_norm_total(infinite)));
}

}  // namespace
}  // namespace titan::testing
