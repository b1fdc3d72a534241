// Float8 linears on a GPU against the CPU's exact emulation: a converted linear's three GEMMs
// on fp8 tensor cores (cuBLASLt, ops/float8_gemm.h) and emulated on the GPU, for each recipe,
// and the tiny model training on fp8 tensor cores as the CPU emulation trains it. The casts
// are bit-identical on both devices (ops/cuda/float8.cu's tests), so the GEMMs differ only
// in summation order and where 1/scale is applied: within 1e-4 in norm. Without a GPU, or
// on one without fp8 tensor cores (compute capability < 8.9), each test skips saying why.
#include <gtest/gtest.h>

#include "titan/build_config.h"

#if !TITAN_HAVE_CUDA

TEST(CudaFloat8Linear, NeedsACudaBuild) {
  GTEST_SKIP() << "built without CUDA (TITAN_CUDA=OFF, or no nvcc at configure time)";
}

#else

#include <cmath>
#include <filesystem>

#include "support/cuda_device.h"
#include "support/float_reference.h"
#include "titan/core/copy.h"
#include "titan/nn/linear.h"
#include "titan/ops/float8_gemm.h"
#include "titan/train/trainer.h"

namespace titan::nn {
namespace {

using testing::cuda_unavailable_reason;
using testing::to_host;

#define SKIP_WITHOUT_FP8_TENSOR_CORES()                                                 \
  if (const std::string why = cuda_unavailable_reason(); !why.empty()) GTEST_SKIP() << why; \
  if (!ops::float8_gemm_supported(Device::cuda(0)))                                     \
  GTEST_SKIP() << "cuda:0 has no fp8 tensor cores (compute capability < 8.9)"


Tensor on(const Tensor& host, Device device) {
  Tensor t = Tensor::empty(host.shape(), host.dtype(), device);
  copy_tensor(host, t);
  return t;
}

// |a - b| / |b| over all elements (2-norms).
double norm_relative(const Tensor& a_any, const Tensor& b_any) {
  const Tensor a = to_host(a_any), b = to_host(b_any);
  double diff = 0, norm = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = double(a.data<float>()[i]) - double(b.data<float>()[i]);
    diff += d * d;
    norm += double(b.data<float>()[i]) * double(b.data<float>()[i]);
  }
  return std::sqrt(diff / norm);
}

struct LinearGemms {
  Tensor y, dx, dw;
};

// The converted linear wq [N = 64, K = 128] on `device` with 48 tokens, f32 activations.
LinearGemms run_linear(const Float8Recipe& recipe, Device device, bool emulate) {
  const int64_t M = 48, K = 128, N = 64;
  Float8Training training{recipe, {}, false, emulate};
  ParameterLayout layout;
  layout.device = device;
  layout.float8 = &training;
  Linear linear("layers.0.attention.wq", K, N, InitRule{InitKind::Normal, 0.02, 0.0},
                Placer(layout, {}));
  EXPECT_TRUE(linear.float8());
  copy_tensor(normal_matrix(N, K, 0.02, 1), linear.weight().value());
  linear.weight().grad().zero_();
  const Tensor x = on(normal_matrix(M, K, 1.0, 2), device);
  const Tensor dy = on(normal_matrix(M, N, 1e-3, 3), device);
  LinearGemms out{Tensor::empty({M, N}, DType::F32, device),
                  Tensor::empty({M, K}, DType::F32, device), Tensor()};
  linear.forward(x, out.y);
  linear.backward_input(dy, out.dx, ops::Accumulate::No);
  linear.backward_weight(dy, x);
  out.dw = linear.weight().grad();
  return out;
}

class CudaFloat8Linear : public ::testing::TestWithParam<const char*> {};


TEST_P(CudaFloat8Linear, TensorCoresAndEmulationMatchTheCpu) {
  SKIP_WITHOUT_FP8_TENSOR_CORES();
  const Float8Recipe recipe = float8_recipe_named(GetParam());
  const LinearGemms cpu = run_linear(recipe, Device::cpu(), true);
  for (const bool emulate : {false, true}) {
    SCOPED_TRACE(emulate ? "emulated on the GPU" : "fp8 tensor cores");
    const LinearGemms gpu = run_linear(recipe, Device::cuda(0), emulate);
    const double y = norm_relative(gpu.y, cpu.y), dx = norm_relative(gpu.dx, cpu.dx);
    const double dw = norm_relative(gpu.dw, cpu.dw);
    std::printf("%s %s: |y| %.2e |dx| %.2e |dw| %.2e relative to the CPU\n", GetParam(),
                emulate ? "emulated" : "tensor cores", y, dx, dw);
    EXPECT_LE(y, 1e-4);
    EXPECT_LE(dx, 1e-4);
    EXPECT_LE(dw, 1e-4);
  }
}

INSTANTIATE_TEST_SUITE_P(Recipes, CudaFloat8Linear,
                         ::testing::Values("tensorwise", "rowwise", "rowwise_with_gw_hp"),
                         [](const auto& info) { return std::string(info.param); });

// The tiny model, 5 steps in f32, Float8 on fp8 tensor cores against the CPU's emulation:
// step 1 within 1e-4 (the same weights; only summation order differs), every step within
// 1e-3 (a flipped rounding moves later steps a little).
TEST(CudaFloat8Training, TinyModelOnTensorCoresTrainsAsTheCpuEmulation) {
  SKIP_WITHOUT_FP8_TENSOR_CORES();
  auto job = [](const std::string& name) {
    config::JobConfig c;
    const auto dir = std::filesystem::temp_directory_path() / ("titan_float8_cuda_" + name);
    std::filesystem::remove_all(dir);
    c.job.dump_folder = dir.string();
    c.model.flavor = "tiny";
    c.model.converters = {"quantize.linear.float8"};
    c.training.dataset = "synthetic";
    c.training.seq_len = 64;
    c.training.local_batch_size = 2;
    c.training.steps = 5;
    c.lr_scheduler.warmup_steps = 2;
    c.metrics.peak_tflops = 1.0;
    c.activation_checkpoint.mode = config::ActivationCheckpointMode::None;
    c.training.mixed_precision_param = config::Precision::Float32;
    return c;
  };
  const auto cpu = train::Trainer(job("cpu"), nullptr, Device::cpu()).train();
  const auto gpu = train::Trainer(job("gpu"), nullptr, Device::cuda(0)).train();
  ASSERT_EQ(gpu.size(), cpu.size());
  for (size_t s = 0; s < cpu.size(); ++s) {
    const double tolerance = s == 0 ? 1e-4 : 1e-3;
    std::printf("step %zu: loss %.6f (cpu %.6f), grad norm %.6f (cpu %.6f)\n", s + 1,
                gpu[s].loss, cpu[s].loss, gpu[s].grad_norm, cpu[s].grad_norm);
    EXPECT_NEAR(gpu[s].loss, cpu[s].loss, tolerance * cpu[s].loss) << "step " << s + 1;
    EXPECT_NEAR(gpu[s].grad_norm, cpu[s].grad_norm, tolerance * cpu[s].grad_norm)
        << "step " << s + 1;
  }
}

}  // namespace
}  // namespace titan::nn

#endif
