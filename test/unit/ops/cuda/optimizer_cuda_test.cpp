// The CUDA optimizer-side ops against the CPU ones: cast, AdamW (single and multi-tensor),
// elementwise arithmetic and clipping bit for bit, sum_of_squares reproducible to the bit
// and within 1e-13 of the CPU's double (another order of the same exact squares; see
// ops/grad_norm.h). Input checks run before any device work, so they hold on every
// machine; the device tests skip, saying why, without a GPU.
#include <gtest/gtest.h>

#include "titan/build_config.h"

#if !TITAN_HAVE_CUDA

TEST(CudaOptimizerOps, NeedsACudaBuild) {
  GTEST_SKIP() << "built without CUDA (TITAN_CUDA=OFF, or no nvcc at configure time)";
}

#else

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "support/cuda_device.h"
#include "support/gradient_check.h"
#include "titan/core/copy.h"
#include "titan/core/float_formats.h"
#include "titan/ops/adamw.h"
#include "titan/ops/cast.h"
#include "titan/ops/elementwise.h"
#include "titan/ops/grad_norm.h"

namespace titan::testing {
namespace {

const Device kGpu = Device::cuda(0);

// Index of the first differing byte-wise element, or -1.
int64_t first_difference(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.bytes(), b.bytes());
  const int64_t size = dtype_bytes(a.dtype());
  const char* x = static_cast<const char*>(a.raw_data());
  const char* y = static_cast<const char*>(b.raw_data());
  for (int64_t i = 0; i < a.numel(); ++i) {
    if (std::memcmp(x + i * size, y + i * size, size_t(size)) != 0) return i;
  }
  return -1;
}

std::string message_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// ---- input checks (no GPU needed) ----

TEST(CudaOptimizerInput, AdamWRejectsHostTensorsAndMismatchedLists) {
  Tensor p = Tensor::zeros({4}, DType::F32), g = Tensor::zeros({4}, DType::F32);
  Tensor m = Tensor::zeros({4}, DType::F32), v = Tensor::zeros({4}, DType::F32);
  ops::AdamWOptions o;
  EXPECT_NE(message_of([&] { ops::cuda::adamw_step(p, g, m, v, o, 1); }).find("one CUDA device"),
            std::string::npos);
  EXPECT_NE(message_of([&] { ops::cuda::adamw_step(p, g, m, v, o, 0); }).find("step counts"),
            std::string::npos);
  std::vector<Tensor> ps{p}, gs{}, ms{m}, vs{v};
  EXPECT_NE(message_of([&] { ops::cuda::adamw_step_multi_tensor(ps, gs, ms, vs, o, 1); })
                .find("0 grads"),
            std::string::npos);
  Tensor short_v = Tensor::zeros({3}, DType::F32);
  EXPECT_THROW(ops::cuda::adamw_step(p, g, m, short_v, o, 1), Error);
}

TEST(CudaOptimizerInput, CastSumAndElementwiseRejectBadCalls) {
  const Tensor x = Tensor::zeros({2, 3}, DType::F32);
  Tensor ints = Tensor::zeros({2, 3}, DType::I32), bf16 = Tensor::zeros({2, 3}, DType::BF16);
  EXPECT_THROW(ops::cuda::cast(x, ints), Error);
  EXPECT_NE(message_of([&] { ops::cuda::cast(x, bf16); }).find("cuda"), std::string::npos);
  EXPECT_NE(message_of([&] { ops::cuda::sum_of_squares(x); }).find("cuda"), std::string::npos);
  EXPECT_THROW(ops::cuda::sum_of_squares(bf16), Error);  // f32 gradients only
  EXPECT_NE(message_of([&] { ops::cuda::scale(ints, 2.0f); }).find("expected f32 or bf16"),
            std::string::npos);
  Tensor y = Tensor::zeros({2, 3}, DType::F32);
  EXPECT_NE(message_of([&] { ops::cuda::fill(y, 1.0f); }).find("cuda"), std::string::npos);
  const Tensor shorter = Tensor::zeros({5}, DType::F32);
  EXPECT_THROW(ops::cuda::accumulate(shorter, y), Error);
}

// ---- device tests ----

constexpr DType kFloatTypes[] = {DType::F32, DType::BF16, DType::F16, DType::F8E4M3,
                                 DType::F8E5M2};

// Every bit pattern of a narrow format; for f32, specials plus random bits and a sweep of
// the exponents where the narrow formats round, go subnormal and saturate.
Tensor source_patterns(DType t) {
  std::vector<uint32_t> bits;
  if (t != DType::F32) {
    for (uint32_t b = 0; b < (1u << (8 * dtype_bytes(t))); ++b) bits.push_back(b);
  } else {
    for (float special : {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, 448.0f, 464.0f, 57344.0f,
                          65504.0f, 65520.0f, 1e30f, 0x1p-24f, 0x1p-25f, 0x1p-149f}) {
      bits.push_back(f32_bits(special));
    }
    std::mt19937 rng(11);
    for (int i = 0; i < 300'000; ++i) bits.push_back(uint32_t(rng()));
    for (uint32_t e = 0x30000000u; e < 0x48000000u; e += 0x00400000u) {
      for (uint32_t m = 0; m < 64; ++m) bits.push_back(e + m * 0x1001u + (m & 1) * 0x7fffu);
    }
  }
  Tensor out = Tensor::empty({int64_t(bits.size())}, t);
  const int64_t size = dtype_bytes(t);
  for (size_t i = 0; i < bits.size(); ++i) {
    std::memcpy(static_cast<char*>(out.raw_mutable_data()) + int64_t(i) * size, &bits[i],
                size_t(size));
  }
  return out;
}

TEST(CudaCast, EveryPairMatchesTheCpuBitForBit) {
  SKIP_WITHOUT_CUDA_DEVICE();
  for (DType from : kFloatTypes) {
    const Tensor src = source_patterns(from);
    const Tensor src_gpu = to_device(src, kGpu);
    for (DType to : kFloatTypes) {
      Tensor expected = Tensor::empty(src.shape(), to);
      ops::cast(src, expected);
      Tensor dst_gpu = Tensor::empty(src.shape(), to, kGpu);
      ops::cast(src_gpu, dst_gpu);
      const int64_t i = first_difference(to_host(dst_gpu), expected);
      EXPECT_EQ(i, -1) << dtype_name(from) << " -> " << dtype_name(to) << ": first wrong element "
                       << i;
    }
  }
}

struct AdamWState {
  std::vector<Tensor> p, g, m, v;
};

AdamWState adamw_state(const std::vector<Shape>& shapes, uint64_t seed) {
  AdamWState s;
  for (size_t i = 0; i < shapes.size(); ++i) {
    s.p.push_back(random_tensor(shapes[i], seed + 4 * i));
    s.g.push_back(random_tensor(shapes[i], seed + 4 * i + 1, 0.5f));
    s.m.push_back(random_tensor(shapes[i], seed + 4 * i + 2, 0.1f));
    Tensor v = random_tensor(shapes[i], seed + 4 * i + 3, 0.01f);
    for (int64_t k = 0; k < v.numel(); ++k) v.mutable_data<float>()[k] *= v.data<float>()[k];
    s.v.push_back(v);
  }
  return s;
}

AdamWState on(const AdamWState& s, Device d) {
  AdamWState out;
  for (size_t i = 0; i < s.p.size(); ++i) {
    out.p.push_back(to_device(s.p[i], d));
    out.g.push_back(to_device(s.g[i], d));
    out.m.push_back(to_device(s.m[i], d));
    out.v.push_back(to_device(s.v[i], d));
  }
  return out;
}

void expect_same_state(const AdamWState& gpu, const AdamWState& cpu, const std::string& what) {
  for (size_t i = 0; i < cpu.p.size(); ++i) {
    EXPECT_EQ(first_difference(to_host(gpu.p[i]), cpu.p[i]), -1) << what << " param " << i;
    EXPECT_EQ(first_difference(to_host(gpu.m[i]), cpu.m[i]), -1) << what << " exp_avg " << i;
    EXPECT_EQ(first_difference(to_host(gpu.v[i]), cpu.v[i]), -1) << what << " exp_avg_sq " << i;
  }
}

TEST(CudaAdamW, SingleAndMultiTensorStepsMatchTheCpuBitForBit) {
  SKIP_WITHOUT_CUDA_DEVICE();
  // More tensors than one launch takes, one spanning several chunks, an empty one.
  std::vector<Shape> shapes = {{300'001}, {0}, {7, 5}, {1}};
  for (int i = 0; i < 2 * ops::kAdamWTensorsPerLaunch; ++i) shapes.push_back({int64_t(1 + 37 * i)});
  for (double beta1 : {0.9, 0.3}) {  // both of torch's lerp forms
    ops::AdamWOptions o;
    o.lr = 3e-3;
    o.beta1 = beta1;
    AdamWState cpu = adamw_state(shapes, 5);
    AdamWState single = on(cpu, kGpu), multi = on(cpu, kGpu);
    for (int64_t step = 1; step <= 3; ++step) {
      ops::adamw_step_multi_tensor(cpu.p, cpu.g, cpu.m, cpu.v, o, step);
      ops::adamw_step_multi_tensor(multi.p, multi.g, multi.m, multi.v, o, step);
      for (size_t i = 0; i < shapes.size(); ++i) {
        ops::adamw_step(single.p[i], single.g[i], single.m[i], single.v[i], o, step);
      }
    }
    expect_same_state(single, cpu, "single, beta1 " + std::to_string(beta1));
    expect_same_state(multi, cpu, "multi, beta1 " + std::to_string(beta1));
  }
}

TEST(CudaGradNorm, SumOfSquaresIsReproducibleAndWithin1e13OfTheCpu) {
  SKIP_WITHOUT_CUDA_DEVICE();
  for (int64_t n : {int64_t(1), int64_t(7), int64_t(4097), int64_t(313 * 331), int64_t(5'000'003)}) {
    const Tensor x = random_tensor({n}, uint64_t(n), 0.01f);
    const Tensor x_gpu = to_device(x, kGpu);
    const double cpu = ops::sum_of_squares(x);
    const double gpu = ops::sum_of_squares(x_gpu), again = ops::sum_of_squares(x_gpu);
    EXPECT_EQ(std::memcmp(&gpu, &again, sizeof(double)), 0) << n << ": " << gpu << " vs " << again;
    EXPECT_NEAR(gpu, cpu, 1e-13 * cpu) << n << " elements";
  }
  EXPECT_EQ(ops::sum_of_squares(Tensor::zeros({0}, DType::F32, kGpu)), 0.0);
  Tensor bad = random_tensor({1000}, 3);
  bad.mutable_data<float>()[17] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(ops::sum_of_squares(to_device(bad, kGpu))));
  bad.mutable_data<float>()[17] = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(std::isinf(ops::sum_of_squares(to_device(bad, kGpu))));
}

// One wait for many tensors: the same bits as one call each, across more tensors than one
// copy back takes (1024), empty tensors included.
TEST(CudaGradNorm, SumsOfSquaresEqualOneCallPerTensor) {
  SKIP_WITHOUT_CUDA_DEVICE();
  std::vector<Tensor> xs;
  for (int64_t i = 0; i < 1100; ++i) {
    const int64_t n = i % 97 == 5 ? 0 : 1 + (i * 37) % 5000;
    xs.push_back(to_device(random_tensor({n}, uint64_t(i + 1), 0.1f), kGpu));
  }
  const std::vector<double> sums = ops::sums_of_squares(xs);
  ASSERT_EQ(sums.size(), xs.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    const double one = ops::sum_of_squares(xs[i]);
    ASSERT_EQ(std::memcmp(&sums[i], &one, sizeof(double)), 0) << i << ": " << sums[i] << " vs " << one;
  }
}

TEST(CudaGradNorm, ClippingMatchesTheCpuBitForBit) {
  SKIP_WITHOUT_CUDA_DEVICE();
  std::vector<Tensor> cpu = {random_tensor({33, 7}, 1), random_tensor({1}, 2),
                             random_tensor({1000}, 3)};
  std::vector<Tensor> gpu;
  for (const Tensor& g : cpu) gpu.push_back(to_device(g, kGpu));
  const double norm = ops::grad_norm_total(cpu);
  EXPECT_NEAR(ops::grad_norm_total(gpu), norm, 1e-13 * norm);
  ops::clip_grads_with_norm(cpu, norm / 3, norm);
  ops::clip_grads_with_norm(gpu, norm / 3, norm);
  for (size_t i = 0; i < cpu.size(); ++i) {
    EXPECT_EQ(first_difference(to_host(gpu[i]), cpu[i]), -1) << "gradient " << i;
  }
}

TEST(CudaElementwise, F32MatchesTheCpuBitForBitAndBf16RoundsOnce) {
  SKIP_WITHOUT_CUDA_DEVICE();
  const Shape shape{333, 7};
  const Tensor a = random_tensor(shape, 1), b = random_tensor(shape, 2);
  Tensor y = random_tensor(shape, 3);
  Tensor a_gpu = to_device(a, kGpu), b_gpu = to_device(b, kGpu), y_gpu = to_device(y, kGpu);
  auto check = [&](const std::string& what) {
    EXPECT_EQ(first_difference(to_host(y_gpu), y), -1) << what;
  };
  ops::axpy(-0.37f, a, y);
  ops::axpy(-0.37f, a_gpu, y_gpu);
  check("axpy");
  ops::accumulate(b, y);
  ops::accumulate(b_gpu, y_gpu);
  check("accumulate");
  ops::scale(y, 1.7f);
  ops::scale(y_gpu, 1.7f);
  check("scale");
  ops::add(a, y, y);
  ops::add(a_gpu, y_gpu, y_gpu);
  check("add in place");
  ops::fill(y, -2.5f);
  ops::fill(y_gpu, -2.5f);
  check("fill");

  // bf16 output, f32 and bf16 inputs: the f32 result rounded once to bf16.
  Tensor y16 = Tensor::empty(shape, DType::BF16, kGpu);
  Tensor a16 = Tensor::empty(shape, DType::BF16, kGpu);
  ops::cast(a_gpu, a16);
  ops::add(a16, b_gpu, y16);
  ops::axpy(0.5f, a_gpu, y16);
  const Tensor got = to_host(y16);
  const float* av = a.data<float>();
  const float* bv = b.data<float>();
  for (int64_t i = 0; i < a.numel(); ++i) {
    const float a_rounded = f32_from_bf16(bf16_from_f32(av[i]));
    const float sum = f32_from_bf16(bf16_from_f32(a_rounded + bv[i]));
    const bf16_t expected = bf16_from_f32(sum + 0.5f * av[i]);
    ASSERT_EQ(got.data<bf16_t>()[i].bits, expected.bits) << "element " << i;
  }
}

}  // namespace
}  // namespace titan::testing

#endif  // TITAN_HAVE_CUDA
