// DeepSeek V3's ops on the GPU against the CPU ops (ops/moe.h, ops/columns.h), on random
// inputs: the router (sigmoid with groups and the bias, softmax with route_norm, forced
// balance), dispatch and combine with and without weights and their backwards, and the
// column copies of latent attention. In f32 every result is within 1e-5 of the CPU's
// (relative to max(|cpu|, 1)) and the router chooses the same experts; with bf16 rows the
// GPU gets the rounded values and the CPU f32 copies of them, within 1e-2.
// The input checks run first on every machine (host tensors are refused before any device
// work); device tests skip without a GPU, saying why.
#include <gtest/gtest.h>

#include "titan/build_config.h"

#if !TITAN_HAVE_CUDA

TEST(CudaMoe, NeedsACudaBuild) {
  GTEST_SKIP() << "built without CUDA (TITAN_CUDA=OFF, or no nvcc at configure time)";
}

#else

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "support/cuda_device.h"
#include "support/gradient_check.h"
#include "titan/core/copy.h"
#include "titan/core/float_formats.h"
#include "titan/ops/columns.h"
#include "titan/ops/moe.h"

namespace titan::testing {
namespace {

Tensor gpu(const Tensor& host) { return to_device(host, Device::cuda(0)); }

// host in `dtype` (bf16: rounded to nearest even).
Tensor stored_as(const Tensor& host, DType dtype) {
  if (dtype == DType::F32) return host;
  Tensor t = Tensor::empty(host.shape(), DType::BF16);
  for (int64_t i = 0; i < host.numel(); ++i) {
    t.mutable_data<bf16_t>()[i] = bf16_from_f32(host.data<float>()[i]);
  }
  return t;
}

// |gpu - cpu| <= tolerance max(|cpu|, 1) element by element (gpu in any float dtype).
void expect_near(const Tensor& on_gpu, const Tensor& cpu, double tolerance,
                 const std::string& what) {
  const Values g = to_values(to_host(on_gpu)), c = to_values(cpu);
  ASSERT_EQ(g.size(), c.size()) << what;
  for (size_t i = 0; i < c.size(); ++i) {
    ASSERT_NEAR(g[i], c[i], tolerance * std::max(std::fabs(c[i]), 1.0))
        << what << " element " << i << " of " << c.size();
  }
}

// A random permutation of the N K picks: any permutation is a valid `order` for the
// movement ops.
Tensor random_order(int64_t M, uint64_t seed) {
  std::vector<int32_t> order(static_cast<size_t>(M));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(seed));
  Tensor t = Tensor::empty({M}, DType::I32);
  std::copy(order.begin(), order.end(), t.mutable_data<int32_t>());
  return t;
}

// ---- input checks: host tensors, no device needed -----------------------------------------

TEST(CudaMoe, RefusesHostTensorsAndMixedRowDtypes) {
  Tensor logits = Tensor::zeros({4, 8}, DType::F32), scores = Tensor::zeros({4, 8}, DType::F32);
  Tensor selected = Tensor::zeros({4, 2}, DType::I32), weights = Tensor::zeros({4, 2}, DType::F32);
  ops::RouterOptions o;
  o.top_k = 2;
  EXPECT_THROW(ops::cuda::router_forward(logits, Tensor(), o, scores, selected, weights), Error);
  Tensor xs = Tensor::zeros({8, 3}, DType::BF16);
  EXPECT_THROW(ops::cuda::moe_dispatch(Tensor::zeros({4, 3}, DType::F32),
                                       Tensor::zeros({8}, DType::I32), 2, Tensor(), xs),
               Error);  // f32 tokens, bf16 rows
  Tensor dst = Tensor::zeros({4, 6}, DType::F32);
  EXPECT_THROW(ops::cuda::copy_columns(Tensor::zeros({4, 3}, DType::F32), 0, dst, 1, 3,
                                       ops::Accumulate::No),
               Error);  // host tensors
}

// ---- the router ---------------------------------------------------------------------------

struct RouterRun {
  Tensor scores, selected, weights, dlogits;
};

RouterRun run_router(const Tensor& logits, const Tensor& bias, const ops::RouterOptions& o,
                     const Tensor& dweights) {
  const Device dev = logits.device();
  const int64_t N = logits.size(0), E = logits.size(1);
  RouterRun r{Tensor::empty({N, E}, DType::F32, dev), Tensor::empty({N, o.top_k}, DType::I32, dev),
              Tensor::empty({N, o.top_k}, DType::F32, dev),
              Tensor::empty({N, E}, logits.dtype(), dev)};
  ops::router_forward(logits, bias, o, r.scores, r.selected, r.weights);
  ops::router_backward(dweights, r.scores, r.selected, o, r.dlogits);
  return r;
}

void expect_router_matches(const ops::RouterOptions& o, int64_t N, int64_t E, bool with_bias,
                           DType dtype, uint64_t seed) {
  const Tensor logits = stored_as(random_tensor({N, E}, seed, 2.0f), dtype);
  const Tensor bias = with_bias ? random_tensor({E}, seed + 1, 0.1f) : Tensor();
  const Tensor dweights = random_tensor({N, o.top_k}, seed + 2);
  const Tensor cpu_logits = dtype == DType::F32 ? logits : from_values(to_values(logits), {N, E});
  const RouterRun cpu = run_router(cpu_logits, bias, o, dweights);
  const RouterRun on_gpu =
      run_router(gpu(logits), on_device(bias, Device::cuda(0)), o, gpu(dweights));
  expect_same_bytes(to_host(on_gpu.selected), cpu.selected, "selected");
  expect_near(on_gpu.scores, cpu.scores, 1e-5, "scores");
  expect_near(on_gpu.weights, cpu.weights, 1e-5, "weights");
  expect_near(on_gpu.dlogits, cpu.dlogits, dtype == DType::F32 ? 1e-5 : 1e-2, "dlogits");
}

TEST(CudaMoe, SigmoidRouterWithGroupsAndBiasMatchesCpu) {
  SKIP_WITHOUT_CUDA_DEVICE();
  ops::RouterOptions o;
  o.top_k = 3;
  o.groups = 4;
  o.limited_groups = 2;
  o.route_norm = true;
  o.route_scale = 2.5f;
  for (DType dtype : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(std::string(dtype_name(dtype)));
    expect_router_matches(o, 300, 16, true, dtype, 11);
  }
}

TEST(CudaMoe, SoftmaxRouterAndForcedBalanceMatchCpu) {
  SKIP_WITHOUT_CUDA_DEVICE();
  ops::RouterOptions o;
  o.score = ops::RouterScore::Softmax;
  o.top_k = 2;
  expect_router_matches(o, 257, 160, false, DType::F32, 21);  // E above the block's threads
  o.route_norm = true;
  o.force_balance = true;
  expect_router_matches(o, 64, 8, true, DType::F32, 31);
}

// ---- dispatch and combine -----------------------------------------------------------------

struct Movement {
  Tensor xs, dx, dweights_dispatch, out, dys, dweights_combine;
};

// Both ops and their backwards on x [N, D] through `order` ([N K], on x's device).
Movement move(const Tensor& x, const Tensor& order, int64_t K, const Tensor& weights,
              const Tensor& ys, const Tensor& dxs, const Tensor& dout) {
  const Device dev = x.device();
  const DType act = x.dtype();
  const int64_t N = x.size(0), D = x.size(1), M = N * K;
  Movement m{Tensor::empty({M, D}, act, dev), Tensor::empty({N, D}, act, dev),
             Tensor::zeros({M}, DType::F32, dev), Tensor::empty({N, D}, act, dev),
             Tensor::empty({M, D}, act, dev), Tensor::zeros({M}, DType::F32, dev)};
  ops::moe_dispatch(x, order, K, weights, m.xs);
  ops::moe_dispatch_backward(dxs, x, order, K, weights, m.dx, m.dweights_dispatch);
  copy_tensor(x, m.out);  // combine adds to what is there
  ops::moe_combine(ys, order, K, weights, m.out);
  ops::moe_combine_backward(dout, ys, order, K, weights, m.dys, m.dweights_combine);
  return m;
}

void expect_movement_matches(int64_t N, int64_t D, int64_t K, bool weighted, DType dtype,
                             uint64_t seed) {
  const int64_t M = N * K;
  const Tensor x = stored_as(random_tensor({N, D}, seed), dtype);
  const Tensor ys = stored_as(random_tensor({M, D}, seed + 1), dtype);
  const Tensor dxs = stored_as(random_tensor({M, D}, seed + 2), dtype);
  const Tensor dout = stored_as(random_tensor({N, D}, seed + 3), dtype);
  const Tensor weights = weighted ? random_tensor({M}, seed + 4) : Tensor();
  const Tensor order = random_order(M, seed + 5);
  const auto f32 = [&](const Tensor& t) {
    return dtype == DType::F32 ? t : from_values(to_values(t), t.shape());
  };
  const Movement cpu = move(f32(x), order, K, weights, f32(ys), f32(dxs), f32(dout));
  const Device d = Device::cuda(0);
  const Movement on_gpu = move(gpu(x), gpu(order), K, on_device(weights, d), gpu(ys), gpu(dxs),
                               gpu(dout));
  const double tolerance = dtype == DType::F32 ? 1e-5 : 1e-2;
  expect_near(on_gpu.xs, cpu.xs, tolerance, "dispatch");
  expect_near(on_gpu.dx, cpu.dx, tolerance, "dispatch backward dx");
  expect_near(on_gpu.out, cpu.out, tolerance, "combine");
  expect_near(on_gpu.dys, cpu.dys, tolerance, "combine backward dys");
  if (weighted) {
    expect_near(on_gpu.dweights_dispatch, cpu.dweights_dispatch, tolerance, "dispatch dweights");
    expect_near(on_gpu.dweights_combine, cpu.dweights_combine, tolerance, "combine dweights");
  }
}

TEST(CudaMoe, DispatchAndCombineWithTheirBackwardsMatchCpu) {
  SKIP_WITHOUT_CUDA_DEVICE();
  for (DType dtype : {DType::F32, DType::BF16}) {
    for (bool weighted : {false, true}) {
      SCOPED_TRACE(std::string(dtype_name(dtype)) + (weighted ? " weighted" : " unweighted"));
      expect_movement_matches(123, 70, 3, weighted, dtype, 41);
      expect_movement_matches(40, 300, 8, weighted, dtype, 51);  // D above the block's threads
    }
  }
}

// f32 combine adds each token's picks in ascending sorted row, as the CPU: the same bits.
TEST(CudaMoe, UnweightedCombineEqualsCpuBitForBit) {
  SKIP_WITHOUT_CUDA_DEVICE();
  const int64_t N = 64, D = 33, K = 4, M = N * K;
  const Tensor ys = random_tensor({M, D}, 61), order = random_order(M, 62);
  Tensor out = Tensor::zeros({N, D}, DType::F32);
  ops::moe_combine(ys, order, K, Tensor(), out);
  Tensor out_gpu = gpu(Tensor::zeros({N, D}, DType::F32));
  ops::moe_combine(gpu(ys), gpu(order), K, Tensor(), out_gpu);
  expect_same_bytes(to_host(out_gpu), out, "combine");
}

// ---- the column ops -----------------------------------------------------------------------

TEST(CudaMoe, ColumnCopiesMatchCpu) {
  SKIP_WITHOUT_CUDA_DEVICE();
  const int64_t R = 37, G = 5;
  for (DType dtype : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(std::string(dtype_name(dtype)));
    const Tensor src = stored_as(random_tensor({R, 24}, 71), dtype);
    const Tensor base = stored_as(random_tensor({R, 40}, 72), dtype);
    const Tensor grouped = stored_as(random_tensor({R * G, 30}, 73), dtype);
    const auto f32 = [&](const Tensor& t) {
      return dtype == DType::F32 ? t : from_values(to_values(t), t.shape());
    };
    const double tolerance = dtype == DType::F32 ? 1e-6 : 1e-2;
    for (ops::Accumulate add : {ops::Accumulate::No, ops::Accumulate::Yes}) {
      Tensor cpu = to_device(f32(base), Device::cpu()), on_gpu = gpu(base);
      ops::copy_columns(f32(src), 3, cpu, 11, 17, add);
      ops::copy_columns(gpu(src), 3, on_gpu, 11, 17, add);
      expect_near(on_gpu, cpu, tolerance, "copy_columns");
    }
    Tensor wide_cpu = to_device(f32(grouped), Device::cpu()), wide_gpu = gpu(grouped);
    ops::broadcast_columns(f32(src), wide_cpu, 4);
    ops::broadcast_columns(gpu(src), wide_gpu, 4);
    expect_near(wide_gpu, wide_cpu, tolerance, "broadcast_columns");
    Tensor summed_cpu = Tensor::empty({R, 20}, DType::F32);
    Tensor summed_gpu = gpu(stored_as(Tensor::zeros({R, 20}, DType::F32), dtype));
    ops::sum_column_groups(f32(grouped), 6, summed_cpu);
    ops::sum_column_groups(gpu(grouped), 6, summed_gpu);
    expect_near(summed_gpu, summed_cpu, dtype == DType::F32 ? 1e-6 : 2e-2, "sum_column_groups");
  }
}

}  // namespace
}  // namespace titan::testing

#endif  // TITAN_HAVE_CUDA
