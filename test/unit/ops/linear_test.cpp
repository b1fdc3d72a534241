#include <gtest/gtest.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "op_harness.h"
#include "titan/ops/matmul.h"

namespace titan::testing {
namespace {

// Inputs: x [N, in], weight [out, in].
const bool registered = register_op_harness("linear", OpHarness{
    .make_inputs = [](const OpCase& c, uint64_t seed) {
      const auto& dims = c.dims_as<LinearDims>();
      return std::vector<Tensor>{random_tensor({dims.N, dims.in}, seed),
                                 random_tensor({dims.out, dims.in}, seed + 1)};
    },
    .input_names = {"x", "weight"},
    .differentiable = {true, true},
    .reference = [](const OpCase& c, const std::vector<Values>& in) {
      const auto& dims = c.dims_as<LinearDims>();
      const int64_t N = dims.N, K = dims.in, M = dims.out;
      Values y(size_t(N * M), 0.0);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t m = 0; m < M; ++m)
          for (int64_t k = 0; k < K; ++k) y[n * M + m] += in[0][n * K + k] * in[1][m * K + k];
      return y;
    },
    .forward = [](const OpCase& c, const std::vector<Tensor>& in) {
      const auto& dims = c.dims_as<LinearDims>();
      Tensor y = empty_like_input(in[0], {dims.N, dims.out});
      ops::linear_forward(in[0], in[1], y);
      return y;
    },
    .backward = [](const OpCase&, const std::vector<Tensor>& in, const Tensor& dy) {
      Tensor dx = empty_like_input(in[0], in[0].shape());
      Tensor dw = zeros_like_input(in[1], in[1].shape());
      ops::linear_backward(dy, in[0], in[1], dx, dw, ops::Accumulate::No);
      return std::vector<Tensor>{dx, dw};
    },
    // bf16 on the GPU (cuBLASLt, f32 accumulation): each output is rounded to bf16 once
    // (<= 2^-8 relative) after an f32 sum; 1e-2 of max(|y|, 1) leaves a 2.5x margin.
    .bf16_tolerance = 1e-2,
});

// op(A) op(B) for every transpose, alpha 2 and three betas against a float64 triple loop;
// beta 0 never reads C (a NaN there stays out).
void expect_matmuls_match_reference(int64_t M, int64_t N, int64_t K) {
  for (auto ta : {ops::Transpose::No, ops::Transpose::Yes}) {
    for (auto tb : {ops::Transpose::No, ops::Transpose::Yes}) {
      for (float beta : {0.0f, 1.0f, 0.5f}) {
        const bool tra = ta == ops::Transpose::Yes, trb = tb == ops::Transpose::Yes;
        const Tensor a = random_tensor(tra ? Shape{K, M} : Shape{M, K}, 1);
        const Tensor b = random_tensor(trb ? Shape{N, K} : Shape{K, N}, 2);
        Tensor c = random_tensor({M, N}, 3);
        const Values c0 = to_values(c), av = to_values(a), bv = to_values(b);
        if (beta == 0.0f) c.mutable_data<float>()[0] = std::nanf("");
        ops::matmul(a, ta, b, tb, c, 2.0f, beta);
        Values expected(size_t(M * N));
        for (int64_t i = 0; i < M; ++i) {
          for (int64_t j = 0; j < N; ++j) {
            double s = 0;
            for (int64_t k = 0; k < K; ++k) {
              s += av[tra ? k * M + i : i * K + k] * bv[trb ? j * K + k : k * N + j];
            }
            expected[i * N + j] = 2.0 * s + (beta == 0.0f ? 0.0 : beta * c0[i * N + j]);
          }
        }
        expect_close(to_values(c), expected, 1e-5, "matmul");
      }
    }
  }
}

// The CPU GEMM libraries this build has (ops/matmul.h picks one per CPU; tests run both).
std::vector<ops::cpu::GemmLibrary> gemm_libraries() {
  std::vector<ops::cpu::GemmLibrary> libraries = {ops::cpu::GemmLibrary::OpenBlas};
  if (TITAN_HAVE_DNNL) libraries.push_back(ops::cpu::GemmLibrary::OneDnn);
  return libraries;
}

// Each CPU GEMM library, a small and a larger shape.
TEST(Matmul, AllTransposesAndBetaMatchReference) {
  const ops::cpu::GemmLibrary chosen = ops::cpu::gemm_library();
  for (const ops::cpu::GemmLibrary library : gemm_libraries()) {
    SCOPED_TRACE(ops::cpu::gemm_library_name(library));
    ops::cpu::set_gemm_library(library);
    for (const auto& [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{5, 3, 7}, {67, 45, 129}}) {
      expect_matmuls_match_reference(M, N, K);
    }
  }
  ops::cpu::set_gemm_library(chosen);
}

// bf16 operands (mixed precision): native oneDNN bf16 GEMMs and widened f32 GEMMs multiply
// the same exact products and sum them in f32, so they agree to f32 summation order, into
// an f32 C that is added to (dW) and a bf16 C (rounded once). Where native cannot run,
// asking for it is an InputError and the widened path is the only one.
TEST(Matmul, Bf16NativeAndWidenedGemmsAgree) {
  using ops::cpu::Bf16Gemm;
  EXPECT_TRUE(ops::cpu::bf16_gemm_available(Bf16Gemm::Widened));
  if (!ops::cpu::bf16_gemm_available(Bf16Gemm::Native)) {
    EXPECT_THROW(ops::cpu::set_bf16_gemm(Bf16Gemm::Native), InputError);
    GTEST_SKIP() << "no native bf16 GEMMs here (oneDNN with AVX512_BF16 or AMX)";
  }
  const Tensor a = stored_as(random_tensor({67, 129}, 1), DType::BF16);
  const Tensor b = stored_as(random_tensor({45, 129}, 2), DType::BF16);
  const Tensor c0 = random_tensor({67, 45}, 3);
  const Bf16Gemm chosen = ops::cpu::bf16_gemm();
  std::vector<Values> f32_c, bf16_c;
  for (const Bf16Gemm mode : {Bf16Gemm::Native, Bf16Gemm::Widened}) {
    ops::cpu::set_bf16_gemm(mode);
    Tensor c = from_values(to_values(c0), c0.shape());  // a copy: the GEMM adds to it
    Tensor c_bf16 = Tensor::empty({67, 45}, DType::BF16);
    ops::matmul(a, ops::Transpose::No, b, ops::Transpose::Yes, c, 1.0f, 1.0f);
    ops::matmul(a, ops::Transpose::No, b, ops::Transpose::Yes, c_bf16, 0.5f, 0.0f);
    f32_c.push_back(to_values(c));
    bf16_c.push_back(to_values(c_bf16));
  }
  ops::cpu::set_bf16_gemm(chosen);
  expect_close(f32_c[0], f32_c[1], 1e-5, "f32 C += bf16 A B^T");
  expect_close(bf16_c[0], bf16_c[1], 1e-2, "bf16 C = bf16 A B^T / 2");
}

TEST(Linear, SplitBackwardEqualsWholeAndWeightGradientAccumulates) {
  const Tensor x = random_tensor({6, 5}, 1), w = random_tensor({4, 5}, 2), dy = random_tensor({6, 4}, 3);
  Tensor dx_whole = Tensor::empty({6, 5}, DType::F32), dw_whole = Tensor::zeros({4, 5}, DType::F32);
  ops::linear_backward(dy, x, w, dx_whole, dw_whole, ops::Accumulate::No);
  Tensor dx = Tensor::empty({6, 5}, DType::F32), dw = Tensor::zeros({4, 5}, DType::F32);
  ops::linear_backward_weight(dy, x, dw);
  ops::linear_backward_input(dy, w, dx, ops::Accumulate::No);
  EXPECT_EQ(to_values(dx), to_values(dx_whole));
  EXPECT_EQ(to_values(dw), to_values(dw_whole));
  ops::linear_backward_weight(dy, x, dw);
  Values twice = to_values(dw_whole);
  for (double& v : twice) v *= 2;
  expect_close(to_values(dw), twice, 1e-6, "dW after two microbatches");
}

TEST(Linear, RejectsShapesThatDoNotFit) {
  const Tensor x = random_tensor({2, 3}, 1), w = random_tensor({4, 5}, 2);
  Tensor y = Tensor::empty({2, 4}, DType::F32);
  EXPECT_THROW(ops::linear_forward(x, w, y), Error);
}

}  // namespace
}  // namespace titan::testing
