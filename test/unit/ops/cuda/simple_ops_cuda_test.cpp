// The CUDA RMSNorm, embedding, RoPE and SwiGLU beyond the op-case table
// (op_case_cuda_test.cpp): input checks, which run before any device work and so hold on
// every machine, and the contracts the table does not reach: a deterministic dweight,
// embedding sums equal to the CPU's bit for bit across its tiles, out-of-range ids, f32
// dweight from bf16 activations, RoPE in place. Device tests skip without a GPU.
#include <gtest/gtest.h>

#include "titan/build_config.h"

#if !TITAN_HAVE_CUDA

TEST(CudaSimpleOps, NeedsACudaBuild) {
  GTEST_SKIP() << "built without CUDA (TITAN_CUDA=OFF, or no nvcc at configure time)";
}

#else

#include <cmath>
#include <string>

#include "support/cuda_device.h"
#include "support/gradient_check.h"
#include "titan/core/copy.h"
#include "titan/core/float_formats.h"
#include "titan/ops/embedding.h"
#include "titan/ops/rmsnorm.h"
#include "titan/ops/rope.h"
#include "titan/ops/swiglu.h"

namespace titan::testing {
namespace {

// The error message of a call, or "no error".
template <class F>
std::string message(F&& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

#define EXPECT_ERROR_HAS(call, text) \
  EXPECT_NE(message([&] { call; }).find(text), std::string::npos) << message([&] { call; })

Tensor zeros(const Shape& shape, DType dtype = DType::F32) { return Tensor::zeros(shape, dtype); }

Tensor gpu(const Tensor& host) { return to_device(host, Device::cuda(0)); }

Tensor bf16_of(const Tensor& f32) {
  Tensor t = Tensor::empty(f32.shape(), DType::BF16);
  for (int64_t i = 0; i < f32.numel(); ++i) {
    t.mutable_data<bf16_t>()[i] = bf16_from_f32(f32.data<float>()[i]);
  }
  return t;
}

// ---- input checks: host tensors, no device needed ------------------------------------

TEST(CudaRmsNormInput, RejectsDtypesByName) {
  Tensor y = zeros({2, 4}), rstd = zeros({2});
  EXPECT_ERROR_HAS(ops::cuda::rmsnorm_forward(zeros({2, 4}, DType::F16), zeros({4}, DType::F16),
                                              1e-5f, y, rstd),
                   "x is f16, expected f32 or bf16");
  EXPECT_ERROR_HAS(ops::cuda::rmsnorm_forward(zeros({2, 4}), zeros({4}, DType::BF16), 1e-5f, y, rstd),
                   "weight is bf16, expected f32");
  Tensor rstd16 = zeros({2}, DType::BF16);
  EXPECT_ERROR_HAS(ops::cuda::rmsnorm_forward(zeros({2, 4}), zeros({4}), 1e-5f, y, rstd16),
                   "rstd is bf16, expected f32");
  Tensor dx16 = zeros({2, 4}, DType::BF16);
  EXPECT_ERROR_HAS(ops::cuda::rmsnorm_backward_input(zeros({2, 4}), zeros({2, 4}), zeros({4}), rstd,
                                                     dx16, ops::Accumulate::No),
                   "dx is bf16, expected f32");
  Tensor dweight16 = zeros({4}, DType::BF16);
  EXPECT_ERROR_HAS(ops::cuda::rmsnorm_backward_weight(zeros({2, 4}), zeros({2, 4}), rstd, dweight16),
                   "dweight is bf16, expected f32");
}

TEST(CudaRmsNormInput, RejectsShapesAndHostTensors) {
  Tensor y = zeros({2, 4}), rstd = zeros({2});
  EXPECT_ERROR_HAS(ops::cuda::rmsnorm_forward(zeros({2, 4}), zeros({5}), 1e-5f, y, rstd),
                   "weight has shape [5], expected [4]");
  EXPECT_ERROR_HAS(ops::cuda::rmsnorm_forward(zeros({2, 4}), zeros({4}), 1e-5f, y, rstd),
                   "x is on cpu; every tensor must be on a CUDA device");
  Tensor dweight = zeros({4});
  EXPECT_ERROR_HAS(ops::cuda::rmsnorm_backward_weight(zeros({2, 4}), zeros({2, 4}), rstd, dweight),
                   "must be on a CUDA device");
}

TEST(CudaEmbeddingInput, RejectsDtypesShapesAndHostTensors) {
  Tensor out = zeros({3, 2});
  EXPECT_ERROR_HAS(ops::cuda::embedding_forward(zeros({3}), zeros({5, 2}), out),
                   "ids must be i32 or i64, got f32");
  Tensor out16 = zeros({3, 2}, DType::BF16);
  EXPECT_ERROR_HAS(ops::cuda::embedding_forward(zeros({3}, DType::I64), zeros({5, 2}), out16),
                   "out is bf16, expected f32");
  EXPECT_ERROR_HAS(ops::cuda::embedding_forward(zeros({3}, DType::I64), zeros({5, 2}, DType::F16), out),
                   "table is f16, expected f32 or bf16");
  EXPECT_ERROR_HAS(ops::cuda::embedding_forward(zeros({3}, DType::I32), zeros({5, 2}), out),
                   "every tensor must be on a CUDA device");
  Tensor dtable = zeros({5, 2});
  EXPECT_ERROR_HAS(ops::cuda::embedding_backward_weight(zeros({3}, DType::I32), zeros({4, 2}), dtable),
                   "dout has shape [4, 2], expected [3, 2]");
  Tensor dtable8 = zeros({5, 2}, DType::F8E4M3);
  EXPECT_ERROR_HAS(ops::cuda::embedding_backward_weight(zeros({3}, DType::I32), zeros({3, 2}), dtable8),
                   "dtable is f8e4m3, expected f32 or bf16");
}

TEST(CudaRopeInput, RejectsOddHeadsWrongTableAndHostTensors) {
  Tensor y = zeros({1, 2, 1, 3});
  EXPECT_ERROR_HAS(ops::cuda::rope_forward(zeros({1, 2, 1, 3}), zeros({2, 1, 2}), y),
                   "head dim 3 must be even");
  Tensor y4 = zeros({1, 2, 1, 4});
  EXPECT_ERROR_HAS(ops::cuda::rope_forward(zeros({1, 2, 1, 4}), zeros({2, 2, 2}, DType::BF16), y4),
                   "freqs is bf16, expected f32");
  EXPECT_ERROR_HAS(ops::cuda::rope_backward(zeros({1, 2, 1, 4}), zeros({3, 2, 2}), y4),
                   "freqs has shape [3, 2, 2], expected [2, 2, 2]");
  EXPECT_ERROR_HAS(ops::cuda::rope_forward(zeros({1, 2, 1, 4}), zeros({2, 2, 2}), y4),
                   "one CUDA device");
}

TEST(CudaSwigluInput, RejectsMixedDtypesShapesAndHostTensors) {
  Tensor y = zeros({2, 3});
  EXPECT_ERROR_HAS(ops::cuda::swiglu_forward(zeros({2, 3}), zeros({2, 3}, DType::BF16), y),
                   "b is bf16, expected f32");
  EXPECT_ERROR_HAS(ops::cuda::swiglu_forward(zeros({2, 3}), zeros({3, 2}), y),
                   "b has shape [3, 2], expected [2, 3]");
  Tensor da = zeros({2, 3}), db = zeros({2, 3}, DType::BF16);
  EXPECT_ERROR_HAS(ops::cuda::swiglu_backward(zeros({2, 3}), zeros({2, 3}), zeros({2, 3}), da, db),
                   "db is bf16, expected f32");
  EXPECT_ERROR_HAS(ops::cuda::swiglu_forward(zeros({2, 3}), zeros({2, 3}), y),
                   "a is on cpu, expected a CUDA device");
}

// ---- contracts on the device ----------------------------------------------------------

// Same inputs, same bits, twice; and the second call adds to the first (always +=).
TEST(CudaRmsNorm, WeightGradientIsDeterministicAndAccumulates) {
  SKIP_WITHOUT_CUDA_DEVICE();
  const int64_t N = 1000, D = 300;  // many row lanes, a partial column tile
  const Tensor x = gpu(random_tensor({N, D}, 1)), dy = gpu(random_tensor({N, D}, 2));
  Tensor y = Tensor::empty({N, D}, DType::F32, Device::cuda(0));
  Tensor rstd = Tensor::empty({N}, DType::F32, Device::cuda(0));
  ops::rmsnorm_forward(x, gpu(random_tensor({D}, 3)), 1e-5f, y, rstd);
  Tensor once = Tensor::zeros({D}, DType::F32, Device::cuda(0));
  Tensor again = Tensor::zeros({D}, DType::F32, Device::cuda(0));
  ops::rmsnorm_backward_weight(dy, x, rstd, once);
  ops::rmsnorm_backward_weight(dy, x, rstd, again);
  const Values first = to_values(to_host(once));
  EXPECT_EQ(to_values(to_host(again)), first) << "two runs differ";
  ops::rmsnorm_backward_weight(dy, x, rstd, again);
  Values twice = first;
  for (double& v : twice) v *= 2;
  expect_close(to_values(to_host(again)), twice, 1e-6, "dweight after two calls");
}

// bf16 activations with an f32 dweight (the mixed-precision case), a row wider than a block.
TEST(CudaRmsNorm, Bf16ActivationsWithF32WeightGradientMatchCpu) {
  SKIP_WITHOUT_CUDA_DEVICE();
  const int64_t N = 3, D = 5000;
  const Tensor x16 = bf16_of(random_tensor({N, D}, 4)), w16 = bf16_of(random_tensor({D}, 5));
  const Tensor dy16 = bf16_of(random_tensor({N, D}, 6));
  const Tensor x = from_values(to_values(x16), {N, D}), w = from_values(to_values(w16), {D});
  const Tensor dy = from_values(to_values(dy16), {N, D});
  Tensor y = Tensor::empty({N, D}, DType::F32), rstd = Tensor::empty({N}, DType::F32);
  Tensor dweight = Tensor::zeros({D}, DType::F32);
  ops::rmsnorm_forward(x, w, 1e-5f, y, rstd);
  ops::rmsnorm_backward_weight(dy, x, rstd, dweight);

  Tensor y_gpu = Tensor::empty({N, D}, DType::BF16, Device::cuda(0));
  Tensor rstd_gpu = Tensor::empty({N}, DType::F32, Device::cuda(0));
  Tensor dweight_gpu = Tensor::zeros({D}, DType::F32, Device::cuda(0));
  ops::rmsnorm_forward(gpu(x16), gpu(w16), 1e-5f, y_gpu, rstd_gpu);
  ops::rmsnorm_backward_weight(gpu(dy16), gpu(x16), rstd_gpu, dweight_gpu);
  expect_close(to_values(to_host(rstd_gpu)), to_values(rstd), 1e-5, "rstd");
  expect_close(to_values(to_host(y_gpu)), to_values(y), 1e-2, "y (bf16)");
  expect_close(to_values(to_host(dweight_gpu)), to_values(dweight), 1e-5, "dweight (f32)");
}

// Several vocabulary slices, two column slices, several id chunks, i32 ids, many repeats:
// every row is summed token by token in order, as on the CPU, so f32 sums match exactly.
TEST(CudaEmbedding, BackwardEqualsCpuBitForBitAcrossTiles) {
  SKIP_WITHOUT_CUDA_DEVICE();
  const int64_t N = 700, V = 3001, D = 1100;
  Tensor ids = Tensor::empty({N}, DType::I32);
  for (int64_t n = 0; n < N; ++n) ids.mutable_data<int32_t>()[n] = int32_t((n * n * 7 + 3) % 41 * 73 % V);
  const Tensor dout = random_tensor({N, D}, 7);
  Tensor dtable = random_tensor({V, D}, 8);  // += onto what is there
  Tensor dtable_gpu = gpu(dtable);
  ops::embedding_backward_weight(ids, dout, dtable);
  ops::embedding_backward_weight(gpu(ids), gpu(dout), dtable_gpu);
  EXPECT_EQ(to_values(to_host(dtable_gpu)), to_values(dtable));
}

// An id outside [0, V) is a bug upstream: the GPU gives a NaN row and adds nothing.
TEST(CudaEmbedding, OutOfRangeIdGivesNanRowAndAddsNothing) {
  SKIP_WITHOUT_CUDA_DEVICE();
  Tensor ids = Tensor::empty({3}, DType::I64);
  ids.mutable_data<int64_t>()[0] = 1;
  ids.mutable_data<int64_t>()[1] = 4;   // V = 4
  ids.mutable_data<int64_t>()[2] = -1;
  const Tensor table = random_tensor({4, 5}, 9);
  Tensor out = Tensor::empty({3, 5}, DType::F32, Device::cuda(0));
  ops::embedding_forward(gpu(ids), gpu(table), out);
  const Values got = to_values(to_host(out));
  for (int d = 0; d < 5; ++d) {
    EXPECT_EQ(got[d], table.data<float>()[5 + d]);
    EXPECT_TRUE(std::isnan(got[5 + d]) && std::isnan(got[10 + d])) << "column " << d;
  }
  Tensor dtable = Tensor::zeros({4, 5}, DType::F32, Device::cuda(0));
  ops::embedding_backward_weight(gpu(ids), gpu(random_tensor({3, 5}, 10)), dtable);
  const Values grad = to_values(to_host(dtable));
  for (size_t i = 0; i < grad.size(); ++i) {
    if (i / 5 != 1) {
      EXPECT_EQ(grad[i], 0.0) << "element " << i;
    }
  }
}

TEST(CudaRope, InPlaceEqualsOutOfPlaceAndBackwardInverts) {
  SKIP_WITHOUT_CUDA_DEVICE();
  const int64_t B = 2, T = 9, H = 3, hd = 16;
  Tensor freqs = Tensor::empty({T, hd / 2, 2}, DType::F32);
  ops::rope_table(hd, 500000.0, ops::RopeScaling{}, 0, freqs);
  const Tensor freqs_gpu = gpu(freqs), x = random_tensor({B, T, H, hd}, 11);
  Tensor y = Tensor::empty(x.shape(), DType::F32, Device::cuda(0));
  ops::rope_forward(gpu(x), freqs_gpu, y);
  Tensor in_place = gpu(x);
  ops::rope_forward(in_place, freqs_gpu, in_place);
  EXPECT_EQ(to_values(to_host(in_place)), to_values(to_host(y)));
  Tensor back = Tensor::empty(x.shape(), DType::F32, Device::cuda(0));
  ops::rope_backward(y, freqs_gpu, back);
  expect_close(to_values(to_host(back)), to_values(x), 1e-6, "R^T R x");
}

TEST(CudaSwiglu, LargeGatesGiveZeroAndIdentityNotNan) {
  SKIP_WITHOUT_CUDA_DEVICE();
  Tensor a = Tensor::empty({2}, DType::F32), b = Tensor::empty({2}, DType::F32);
  a.mutable_data<float>()[0] = -1000.0f;
  a.mutable_data<float>()[1] = 1000.0f;
  b.mutable_data<float>()[0] = b.mutable_data<float>()[1] = 1.0f;
  Tensor y = Tensor::empty({2}, DType::F32, Device::cuda(0));
  ops::swiglu_forward(gpu(a), gpu(b), y);
  const Values got = to_values(to_host(y));
  EXPECT_EQ(got[0], 0.0);
  EXPECT_EQ(got[1], 1000.0);
}

}  // namespace
}  // namespace titan::testing

#endif  // TITAN_HAVE_CUDA
