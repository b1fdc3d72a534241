// The CUDA matmul (cuBLASLt) against the CPU matmul (OpenBLAS), one table of cases.
//
// Each row: M, N, K, transposes, input dtype, output dtype, alpha, beta, and whether the
// operands are views that start one row into a larger tensor (misaligned pointers, which
// cuBLASLt must be told about). bf16 rows compare with the CPU computing in f32 on the
// bf16-rounded inputs, so the only differences are summation order and output rounding.
// The bound per element is relative to what the sum could be at most:
//   |gpu - cpu| <= tolerance * (|alpha| sum_k |op(A)_ik op(B)_kj| + |beta C_ij|) + 1e-30
// Without a GPU every test skips, saying why; without CUDA in the build the file is one
// skipped test.
#include <gtest/gtest.h>

#include "titan/build_config.h"

#if !TITAN_HAVE_CUDA

TEST(CudaMatmul, NeedsACudaBuild) {
  GTEST_SKIP() << "built without CUDA (TITAN_CUDA=OFF, or no nvcc at configure time)";
}

#else

#include <cuda_runtime.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "support/cuda_device.h"
#include "support/gradient_check.h"
#include "titan/core/copy.h"
#include "titan/core/float_formats.h"
#include "titan/ops/matmul.h"

namespace titan::testing {
namespace {

using ops::Transpose;

using testing::cuda_unavailable_reason;

struct MatmulCase {
  int64_t m, n, k;
  Transpose ta, tb;
  DType in, out;
  float alpha = 1.0f, beta = 0.0f;
  bool offset_views = false;

  std::string label() const {
    std::ostringstream os;
    os << dtype_name(in) << "_" << dtype_name(out) << "_" << m << "x" << n << "x" << k << "_"
       << (ta == Transpose::Yes ? "T" : "N") << (tb == Transpose::Yes ? "T" : "N");
    if (alpha != 1.0f || beta != 0.0f) os << "_scaled";
    if (offset_views) os << "_offset";
    return os.str();
  }
};

// GoogleTest prints a failing case's parameter with this, not as raw bytes.
void PrintTo(const MatmulCase& c, std::ostream* os) { *os << c.label(); }

constexpr Transpose N = Transpose::No, T = Transpose::Yes;

std::vector<MatmulCase> matmul_cases() {
  std::vector<MatmulCase> cases;
  for (DType in : {DType::F32, DType::BF16}) {
    std::vector<DType> outs = {DType::F32};
    if (in == DType::BF16) outs.push_back(DType::BF16);
    for (DType out : outs) {
      for (Transpose ta : {N, T}) {
        for (Transpose tb : {N, T}) {
          cases.push_back({1, 1, 1, ta, tb, in, out});
          cases.push_back({3, 5, 7, ta, tb, in, out});
          cases.push_back({17, 31, 13, ta, tb, in, out});
          cases.push_back({129, 65, 257, ta, tb, in, out});
        }
      }
      // The linear layer's three products at tiny-model sizes (N=B*T rows, dim 64, vocab 2048).
      cases.push_back({128, 2048, 64, N, T, in, out});          // logits = x W^T
      cases.push_back({128, 64, 2048, N, N, in, out});          // dx = dy W
      cases.push_back({2048, 64, 128, T, N, in, out, 1.0f, 1.0f});  // dW += dy^T x
      // Odd everything, alpha and beta, and views that start mid-allocation.
      cases.push_back({33, 1, 100, N, N, in, out, 0.5f, -2.0f});
      cases.push_back({7, 9, 11, T, T, in, out, 1.0f, 1.0f, true});
      cases.push_back({64, 48, 96, N, T, in, out, 1.0f, 0.0f, true});
      // K = 0: an empty sum, C = beta * C.
      cases.push_back({5, 3, 0, N, N, in, out, 1.0f, 0.5f});
      cases.push_back({5, 3, 0, N, N, in, out, 1.0f, 0.0f});
    }
  }
  return cases;
}

// A host tensor of `shape` with values uniform in [-1, 1), stored as `dtype` (rounded).
// With offset_view, the result is a narrow() view one row into a larger tensor.
Tensor random_host(const Shape& shape, DType dtype, uint64_t seed, bool offset_view) {
  Shape full = shape;
  if (offset_view) full[0] += 1;
  const Tensor f32 = random_tensor(full, seed);
  Tensor t = f32;
  if (dtype == DType::BF16) {
    t = Tensor::empty(full, DType::BF16);
    const float* src = f32.data<float>();
    bf16_t* dst = t.mutable_data<bf16_t>();
    for (int64_t i = 0; i < f32.numel(); ++i) dst[i] = bf16_from_f32(src[i]);
  }
  return offset_view ? t.narrow(1, shape[0]) : t;
}

// f32 copy of a host tensor (the CPU matmul takes f32 only).
Tensor host_f32(const Tensor& t) {
  if (t.dtype() == DType::F32) return t;
  return from_values(to_values(t), t.shape());
}

// Device copy that keeps the view's offset, so the device pointer is as misaligned as the
// host one: copy the parent allocation, then narrow the same way.
Tensor device_like(const Tensor& host, bool offset_view) {
  if (!offset_view) return to_device(host, Device::cuda(0));
  Shape full = host.shape();
  full[0] += 1;
  Tensor parent = Tensor::zeros(full, host.dtype());
  Tensor inside = parent.narrow(1, host.size(0));
  copy_tensor(host, inside);
  return to_device(parent, Device::cuda(0)).narrow(1, host.size(0));
}

class CudaMatmul : public ::testing::TestWithParam<MatmulCase> {
 protected:
  void SetUp() override { SKIP_WITHOUT_CUDA_DEVICE(); }
};

TEST_P(CudaMatmul, MatchesCpuMatmul) {
  const MatmulCase& c = GetParam();
  const Shape a_shape = c.ta == T ? Shape{c.k, c.m} : Shape{c.m, c.k};
  const Shape b_shape = c.tb == T ? Shape{c.n, c.k} : Shape{c.k, c.n};
  const Tensor a = random_host(a_shape, c.in, 11, c.offset_views);
  const Tensor b = random_host(b_shape, c.in, 12, c.offset_views);
  const Tensor c0 = random_host({c.m, c.n}, c.out, 13, c.offset_views);

  // CPU reference on exactly the values the GPU sees.
  Tensor expected = host_f32(c0);
  expected = to_device(expected, Device::cpu());  // own storage: the CPU op writes into it
  ops::cpu::matmul(host_f32(a), c.ta, host_f32(b), c.tb, expected, c.alpha, c.beta);

  const Tensor a_dev = device_like(a, c.offset_views);
  const Tensor b_dev = device_like(b, c.offset_views);
  Tensor c_dev = device_like(c0, c.offset_views);
  ops::matmul(a_dev, c.ta, b_dev, c.tb, c_dev, c.alpha, c.beta);  // dispatches to CUDA
  Tensor actual = Tensor::empty({c.m, c.n}, c.out);
  copy_tensor(c_dev, actual);

  // Bound per element from the absolute-value product.
  const Values av = to_values(a), bv = to_values(b), cv = to_values(c0);
  const Values got = to_values(actual), want = to_values(expected);
  const double tolerance = c.out == DType::BF16 ? 1e-2 : (c.in == DType::BF16 ? 1e-3 : 1e-4);
  int64_t failures = 0, worst = -1;
  double worst_ratio = 0;
  std::ostringstream first;
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t j = 0; j < c.n; ++j) {
      double magnitude = 0;
      for (int64_t p = 0; p < c.k; ++p) {
        const double x = c.ta == T ? av[size_t(p * c.m + i)] : av[size_t(i * c.k + p)];
        const double y = c.tb == T ? bv[size_t(j * c.k + p)] : bv[size_t(p * c.n + j)];
        magnitude += std::fabs(x * y);
      }
      const size_t e = size_t(i * c.n + j);
      const double bound =
          tolerance * (std::fabs(c.alpha) * magnitude + std::fabs(c.beta * cv[e])) + 1e-30;
      const double diff = std::fabs(got[e] - want[e]);
      const double ratio = std::isfinite(got[e]) ? diff / bound : std::numeric_limits<double>::infinity();
      if (ratio > worst_ratio || worst < 0) {
        worst_ratio = ratio;
        worst = int64_t(e);
      }
      if (!(ratio <= 1.0) && failures++ < 5) {
        first << "\n  C[" << i << ", " << j << "]: cuda " << got[e] << ", cpu " << want[e]
              << ", |diff| " << diff << " > bound " << bound;
      }
    }
  }
  EXPECT_EQ(failures, 0) << c.label() << ": " << failures << " of " << c.m * c.n
                         << " elements outside tolerance " << tolerance
                         << "; worst |diff|/bound = " << worst_ratio << " at element " << worst
                         << first.str();
}

INSTANTIATE_TEST_SUITE_P(Table, CudaMatmul, ::testing::ValuesIn(matmul_cases()),
                         [](const ::testing::TestParamInfo<MatmulCase>& info) {
                           return info.param.label();
                         });

// cuBLASLt does not read C when beta = 0: NaN there must not leak into the result.
TEST(CudaMatmulContract, BetaZeroIgnoresOldContentsOfC) {
  SKIP_WITHOUT_CUDA_DEVICE();
  const Tensor a = random_tensor({4, 6}, 1), b = random_tensor({6, 5}, 2);
  Tensor nan_host = Tensor::empty({4, 5}, DType::F32);
  float* p = nan_host.mutable_data<float>();
  for (int64_t i = 0; i < nan_host.numel(); ++i) p[i] = std::numeric_limits<float>::quiet_NaN();
  Tensor c_dev = to_device(nan_host, Device::cuda(0));
  ops::matmul(to_device(a, Device::cuda(0)), N, to_device(b, Device::cuda(0)), N, c_dev);
  Tensor out = Tensor::empty({4, 5}, DType::F32);
  copy_tensor(c_dev, out);
  for (double v : to_values(out)) ASSERT_TRUE(std::isfinite(v)) << "NaN from C leaked through";
}

// The linear layer runs the same three products on the GPU, through the dispatch.
TEST(CudaMatmulContract, LinearForwardMatchesCpu) {
  SKIP_WITHOUT_CUDA_DEVICE();
  const Tensor x = random_tensor({2, 3, 16}, 3), w = random_tensor({24, 16}, 4);
  Tensor y_cpu = Tensor::empty({2, 3, 24}, DType::F32);
  ops::linear_forward(x, w, y_cpu);
  Tensor y_dev = Tensor::empty({2, 3, 24}, DType::F32, Device::cuda(0));
  ops::linear_forward(to_device(x, Device::cuda(0)), to_device(w, Device::cuda(0)), y_dev);
  Tensor y = Tensor::empty({2, 3, 24}, DType::F32);
  copy_tensor(y_dev, y);
  expect_close(to_values(y), to_values(y_cpu), 1e-5, "linear_forward cuda vs cpu");
}

// Copies are exact both ways, including views and bf16 bits.
TEST(CudaCopy, RoundTripIsExact) {
  SKIP_WITHOUT_CUDA_DEVICE();
  const Tensor host = random_host({9, 7}, DType::BF16, 5, true);
  const Tensor dev = to_device(host, Device::cuda(0));
  EXPECT_TRUE(dev.device().is_cuda());
  Tensor back = Tensor::empty({9, 7}, DType::BF16);
  copy_tensor(dev, back);
  const bf16_t* x = host.data<bf16_t>();
  const bf16_t* y = back.data<bf16_t>();
  for (int64_t i = 0; i < host.numel(); ++i) ASSERT_EQ(x[i].bits, y[i].bits) << "element " << i;
}

// Tensor::zeros on the device: zero bits queued on the compute stream, seen by a copy back.
TEST(CudaCopy, ZerosOnTheDeviceAreZero) {
  SKIP_WITHOUT_CUDA_DEVICE();
  Tensor dev = to_device(random_tensor({33, 7}, 6), Device::cuda(0));  // nonzero first
  dev.zero_();
  Tensor back = Tensor::empty({33, 7}, DType::F32);
  copy_tensor(dev, back);
  for (double v : to_values(back)) ASSERT_EQ(v, 0.0);
  const Tensor fresh = Tensor::zeros({5, 3}, DType::BF16, Device::cuda(0));
  Tensor fresh_back = Tensor::empty({5, 3}, DType::BF16);
  copy_tensor(fresh, fresh_back);
  for (double v : to_values(fresh_back)) ASSERT_EQ(v, 0.0);
}

// Input checks run before any device work, so they hold on every machine.
TEST(CudaMatmulInput, RejectsUnsupportedDtypes) {
  const Tensor a32 = Tensor::zeros({2, 3}, DType::F32), b32 = Tensor::zeros({3, 4}, DType::F32);
  const Tensor b16 = Tensor::zeros({3, 4}, DType::BF16);
  Tensor c16 = Tensor::zeros({2, 4}, DType::BF16), c32 = Tensor::zeros({2, 4}, DType::F32);
  auto message = [](auto&& call) {
    try {
      call();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([&] { ops::cuda::matmul(a32, N, b16, N, c32, 1, 0); }).find("same dtype"),
            std::string::npos);
  EXPECT_NE(message([&] { ops::cuda::matmul(a32, N, b32, N, c16, 1, 0); })
                .find("f32 x f32 -> f32, bf16 x bf16 -> f32 or bf16"),
            std::string::npos);
  Tensor wrong = Tensor::zeros({2, 5}, DType::F32);
  EXPECT_NE(message([&] { ops::cuda::matmul(a32, N, b32, N, wrong, 1, 0); }).find("do not fit"),
            std::string::npos);
  EXPECT_NE(message([&] { ops::cuda::matmul(a32, N, b32, N, c32, 1, 0); }).find("one CUDA device"),
            std::string::npos);
}

TEST(CudaCopyInput, RejectsDtypeAndShapeMismatch) {
  const Tensor a = Tensor::zeros({2, 3}, DType::F32);
  Tensor b16 = Tensor::zeros({2, 3}, DType::BF16), wide = Tensor::zeros({3, 2}, DType::F32);
  EXPECT_THROW(copy_tensor(a, b16), Error);
  EXPECT_THROW(copy_tensor(a, wide), Error);
}

}  // namespace
}  // namespace titan::testing

#endif  // TITAN_HAVE_CUDA
