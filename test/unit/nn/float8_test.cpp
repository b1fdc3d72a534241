// Float8 linears (nn/float8.h): each recipe's casts bit for bit and its three GEMMs against
// an independent float64 implementation of the recipe; which linears convert.
#include <gtest/gtest.h>

#include <cmath>

#include "support/float_reference.h"
#include "titan/core/copy.h"
#include "titan/nn/context_parallel.h"
#include "titan/nn/linear.h"
#include "titan/nn/tensor_parallel.h"

namespace titan::nn {
namespace {


enum class Along { Tensor, Rows, Columns };

// The recipe's cast of x [rows, cols] in float64 from the definition (ops/float8.h): the
// dequantized values, as floats. A disabled cast returns x.
std::vector<float> reference_cast(const Tensor& x, const Float8Cast& cast, Along rowwise_along,
                                  bool power_of_two) {
  const int64_t rows = x.size(0), cols = x.size(1);
  const float* p = x.data<float>();
  std::vector<float> out(p, p + rows * cols);
  if (!cast.enabled) return out;
  const Along along = cast.rowwise ? rowwise_along : Along::Tensor;
  auto group = [&](int64_t i, int64_t j) {
    return along == Along::Tensor ? 0 : along == Along::Rows ? i : j;
  };
  std::vector<double> amax(size_t(std::max(rows, cols)), 0.0);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      double& m = amax[size_t(group(i, j))];
      m = std::max(m, std::fabs(double(p[i * cols + j])));
    }
  const FloatLayout layout = float_layout_of(cast.format);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      double s = double(float(layout.max / std::max(amax[size_t(group(i, j))], 1e-12)));
      if (power_of_two) {
        int e;
        std::frexp(s, &e);
        s = std::ldexp(1.0, e - 1);
      }
      const float sf = float(s);
      out[size_t(i * cols + j)] = float(round_to_format(double(p[i * cols + j] * sf), layout)) / sf;
    }
  return out;
}

void expect_bits(const Tensor& got, const std::vector<float>& want, const char* what) {
  ASSERT_EQ(got.numel(), int64_t(want.size())) << what;
  int64_t differ = 0;
  for (int64_t i = 0; i < got.numel(); ++i) differ += got.data<float>()[i] != want[size_t(i)];
  EXPECT_EQ(differ, 0) << what;
}

// c[i, j] = sum_k a[i, k] b[j, k] (transpose flags pick the stored orientation) in float64,
// and the bound on an f32 sum of the same products: 1e-6 x sum |a b| x K-ish rounding.
struct Product {
  std::vector<double> value, bound;
};
Product reference_product(const std::vector<float>& a, bool a_t, const std::vector<float>& b,
                          bool b_t, int64_t I, int64_t J, int64_t K) {
  Product p{std::vector<double>(size_t(I * J)), std::vector<double>(size_t(I * J))};
  for (int64_t i = 0; i < I; ++i)
    for (int64_t j = 0; j < J; ++j) {
      double sum = 0, mag = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double x = a[size_t(a_t ? k * I + i : i * K + k)];
        const double y = b[size_t(b_t ? k * J + j : j * K + k)];
        sum += x * y;
        mag += std::fabs(x * y);
      }
      p.value[size_t(i * J + j)] = sum;
      p.bound[size_t(i * J + j)] = 1e-6 * mag + 1e-30;
    }
  return p;
}

void expect_product(const Tensor& got, const Product& want, const char* what) {
  int64_t outside = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    outside += std::fabs(double(got.data<float>()[i]) - want.value[size_t(i)]) >
               want.bound[size_t(i)];
  }
  EXPECT_EQ(outside, 0) << what;
}

class Float8LinearRecipes : public ::testing::TestWithParam<const char*> {};


TEST_P(Float8LinearRecipes, CastsAndGemmsMatchTheFloat64Recipe) {
  const Float8Recipe recipe = float8_recipe_named(GetParam());
  EXPECT_STREQ(recipe.name, GetParam());
  const int64_t M = 48, K = 64, N = 32;  // tokens, in, out
  Float8Training training{recipe, {}, false};
  ParameterLayout layout;
  layout.float8 = &training;
  Linear linear("layers.0.attention.wq", K, N, InitRule{InitKind::Normal, 0.02, 0.0},
                Placer(layout, {}));
  ASSERT_TRUE(linear.float8());
  ASSERT_TRUE(linear.weight().float8());
  const Tensor w = normal_matrix(N, K, 0.02, 1);
  copy_tensor(w, linear.weight().value());
  const Tensor x = normal_matrix(M, K, 1.0, 2), dy = normal_matrix(M, N, 1e-3, 3);
  const bool pow2 = recipe.power_of_two_scales;

  // The casts, bit for bit.
  const Float8Linear f8(recipe, TensorParallelRole::Replicated, no_tensor_parallel(),
                        no_context_parallel());
  const auto wq = reference_cast(w, recipe.weight, Along::Rows, pow2);
  const auto wq_gi = reference_cast(w, recipe.weight_for_grad_input, Along::Columns, pow2);
  const auto xq = reference_cast(x, recipe.input, Along::Rows, pow2);
  const auto dyq = reference_cast(dy, recipe.grad_output, Along::Rows, pow2);
  const auto dyq_gw = reference_cast(dy, recipe.grad_output_for_grad_weight, Along::Columns, pow2);
  const auto xq_gw = reference_cast(x, recipe.input_for_grad_weight, Along::Columns, pow2);
  expect_bits(f8.forward_weight(w, false).value, wq, "forward weight");
  expect_bits(f8.grad_input_weight(w, false).value, wq_gi, "grad_input weight");
  expect_bits(f8.cast_input(x, f8.input_scales(x)).value, xq, "input");
  expect_bits(f8.cast_grad_output(dy, f8.grad_output_scales(dy)).value, dyq, "grad_output");
  expect_bits(f8.grad_weight_output(dy).value, dyq_gw, "grad_weight's grad_output");
  expect_bits(f8.grad_weight_input(x).value, xq_gw, "grad_weight's input");
  // Row blocks cast as the whole does (the scales come from the whole).
  const Float8Scales xs = f8.input_scales(x);
  expect_bits(f8.cast_input(x.narrow(16, 16), xs.rows(16, 16)).value,
              std::vector<float>(xq.begin() + 16 * K, xq.begin() + 32 * K), "input rows");

  // The three GEMMs of the converted linear.
  Tensor y = Tensor::empty({M, N}, DType::F32), dx = Tensor::empty({M, K}, DType::F32);
  linear.forward(x, y);
  expect_product(y, reference_product(xq, false, wq, false, M, N, K), "forward");
  linear.backward_input(dy, dx, ops::Accumulate::No);
  expect_product(dx, reference_product(dyq, false, wq_gi, true, M, K, N), "grad_input");
  linear.weight().grad().zero_();
  linear.backward_weight(dy, x);
  expect_product(linear.weight().grad(), reference_product(dyq_gw, true, xq_gw, true, N, K, M),
                 "grad_weight");
}

INSTANTIATE_TEST_SUITE_P(Recipes, Float8LinearRecipes,
                         ::testing::Values("tensorwise", "rowwise", "rowwise_with_gw_hp"),
                         [](const auto& info) { return std::string(info.param); });

TEST(Float8Recipes, AreTorchaos) {
  const Float8Recipe t = float8_tensorwise();
  EXPECT_EQ(t.grad_output.format, DType::F8E5M2);
  EXPECT_FALSE(t.input.rowwise || t.power_of_two_scales);
  const Float8Recipe r = float8_rowwise();
  EXPECT_EQ(r.grad_output.format, DType::F8E4M3);
  EXPECT_TRUE(r.input.rowwise && r.weight_for_grad_input.rowwise && r.power_of_two_scales);
  const Float8Recipe h = float8_rowwise_with_gw_hp();
  EXPECT_FALSE(h.weight_for_grad_input.rowwise);
  EXPECT_FALSE(h.input_for_grad_weight.enabled || h.grad_output_for_grad_weight.enabled);
  EXPECT_STREQ(float8_recipe_named("rowwise_with_gw_hp").name, "rowwise_with_gw_hp");
  EXPECT_THROW(float8_recipe_named("columnwise"), Error);
}

TEST(Float8Training, ConvertsBySizeAndName) {
  Float8Training t{float8_tensorwise(), {"output", "layers.1."}, false};
  EXPECT_TRUE(t.converts("layers.0.attention.wq", 64, 64));
  EXPECT_FALSE(t.converts("layers.0.attention.wk", 40, 64));  // 40 is not a multiple of 16
  EXPECT_FALSE(t.converts("layers.1.feed_forward.w1", 192, 64));
  EXPECT_FALSE(t.converts("output", 2048, 64));
  // torchao's size filter (weight [out, in]): tensorwise skips out <= 4096 with in <= 1024.
  t.auto_filter_small_kn = true;
  EXPECT_FALSE(t.converts("layers.0.attention.wq", 4096, 1024));
  EXPECT_TRUE(t.converts("layers.0.attention.wq", 4096, 4096));
  EXPECT_TRUE(t.converts("layers.0.feed_forward.w1", 14336, 1024));
  t.recipe = float8_rowwise();  // skips in <= 2048, out <= 1024, or both <= 4096 and 2048
  EXPECT_FALSE(t.converts("layers.0.attention.wq", 4096, 2048));
  EXPECT_FALSE(t.converts("layers.0.attention.wq", 2048, 4096));
  EXPECT_TRUE(t.converts("layers.0.attention.wq", 4096, 4096));
  EXPECT_FALSE(t.converts("layers.0.attention.wk", 1024, 4096));
}

TEST(Float8Training, UnconvertedLinearIsThePlainGemm) {
  Linear linear("layers.0.attention.wq", 64, 32, InitRule{InitKind::Normal, 0.02, 0.0});
  EXPECT_FALSE(linear.float8());
  EXPECT_FALSE(linear.input_scales(Tensor::zeros({4, 64}, DType::F32)).scale.defined());
  EXPECT_TRUE(linear.forward_weight().value.shares_storage_with(linear.weight().value()));
  EXPECT_FALSE(linear.forward_weight().fp8());
}

}  // namespace
}  // namespace titan::nn
