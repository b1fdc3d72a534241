// The CUDA attention's host side, and the GPU kernels on shapes the op-case table leaves out.
//
// Without a GPU: the plan (which kernel takes a dtype and head dim, and that its shared
// memory fits an H100 for every head dim it takes), the GPU's workspace sizes, and the input
// checks, which all run before any device work and so fail the same way here (tensors on
// the CPU reach every check but the last, which says they must be on a CUDA device).
// With a GPU: Llama's head dims (64, 128) on both kernel paths against the CPU op, the
// backward's determinism and accumulation, and the merge. The op-case table
// (op_case_cuda_test.cpp) covers the small and awkward shapes.
#include <gtest/gtest.h>

#include "titan/build_config.h"

#if !TITAN_HAVE_CUDA

TEST(CudaAttention, NeedsACudaBuild) {
  GTEST_SKIP() << "built without CUDA (TITAN_CUDA=OFF, or no nvcc at configure time)";
}

#else

#include <cmath>
#include <cstring>
#include <algorithm>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "support/cuda_device.h"
#include "support/gradient_check.h"
#include "titan/core/copy.h"
#include "titan/core/float_formats.h"
#include "titan/core/threads.h"
#include "titan/ops/attention.h"

namespace titan::testing {
namespace {

using ops::AttentionMask;
using ops::cuda::AttentionPath;
using ops::cuda::AttentionPlan;
using testing::cuda_unavailable_reason;

// Runs f and expects a titan::Error whose message contains `words`.
void expect_error(const std::function<void()>& f, const std::string& words) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one saying \"" << words << "\"";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos)
        << "error \"" << e.what() << "\" does not say \"" << words << "\"";
  }
}

// ---------------------------------------------------------------------------------------
// Host-side checks: no GPU needed
// ---------------------------------------------------------------------------------------

TEST(CudaAttentionPlan, TensorCoresTakeBf16WithHeadDimsOf16Multiples) {
  for (int64_t hd : {16, 32, 64, 96, 128}) {
    const AttentionPlan plan = ops::cuda::attention_plan(DType::BF16, hd);
    EXPECT_EQ(plan.path, AttentionPath::TensorCore) << "bf16 hd " << hd;
    EXPECT_EQ(plan.block_q, 64);
    EXPECT_EQ(plan.block_k, 64);
  }
  for (int64_t hd : {1, 5, 8, 24, 144, 256}) {
    EXPECT_EQ(ops::cuda::attention_plan(DType::BF16, hd).path, AttentionPath::Simt) << "bf16 hd " << hd;
  }
  for (int64_t hd : {1, 4, 16, 64, 128, 256}) {
    EXPECT_EQ(ops::cuda::attention_plan(DType::F32, hd).path, AttentionPath::Simt) << "f32 hd " << hd;
  }
}

// An H100 / H200 block may opt in to 227 KiB of shared memory.
TEST(CudaAttentionPlan, EverySupportedHeadDimFitsSharedMemory) {
  for (DType dtype : {DType::F32, DType::BF16}) {
    for (int64_t hd = 1; hd <= 256; ++hd) {
      const AttentionPlan plan = ops::cuda::attention_plan(dtype, hd);
      const std::string what = std::string(dtype_name(dtype)) + " hd " + std::to_string(hd);
      EXPECT_EQ(plan.threads, 128) << what;
      for (int64_t bytes : {plan.forward_shared_bytes, plan.backward_dkdv_shared_bytes,
                            plan.backward_dq_shared_bytes}) {
        EXPECT_GT(bytes, 0) << what;
        EXPECT_LE(bytes, 227 * 1024) << what;
      }
    }
  }
}

TEST(CudaAttentionPlan, RejectsOtherDtypesAndHeadDims) {
  expect_error([] { ops::cuda::attention_plan(DType::F16, 64); }, "f32 or bf16");
  expect_error([] { ops::cuda::attention_plan(DType::F32, 257); }, "head dim 257");
  expect_error([] { ops::cuda::attention_plan(DType::BF16, 0); }, "head dim 0");
}

// The forward keeps its tiles in shared memory; the backward needs D [B, Hq, T] f32 only:
// linear in T, independent of threads and of hd. The Device overloads pick per device.
TEST(CudaAttentionWorkspace, ForwardNeedsNoneBackwardNeedsTheDRow) {
  EXPECT_EQ(ops::cuda::attention_forward_workspace_bytes(2, 4096, 32, 8, 128), 0);
  EXPECT_EQ(ops::cuda::attention_backward_workspace_bytes(2, 4096, 32, 8, 128),
            2 * 32 * 4096 * 4);
  EXPECT_EQ(ops::cuda::attention_backward_workspace_bytes(1, 1, 1, 1, 1), 4);
  const Device gpu = Device::cuda(0), cpu = Device::cpu();
  EXPECT_EQ(ops::attention_backward_workspace_bytes(gpu, 3, 67, 4, 2, 16, 7), 3 * 4 * 67 * 4);
  EXPECT_EQ(ops::attention_forward_workspace_bytes(gpu, 3, 67, 4, 2, 16, 7), 0);
  EXPECT_EQ(ops::attention_backward_workspace_bytes(cpu, 3, 67, 4, 2, 16, 7),
            ops::attention_backward_workspace_bytes(3, 67, 4, 2, 16, 7));
  EXPECT_EQ(ops::attention_forward_workspace_bytes(cpu, 3, 67, 4, 2, 16, 7),
            ops::attention_forward_workspace_bytes(3, 67, 4, 2, 16, 7));
}

// Host tensors of the right shapes reach every check but the device's.
struct HostCall {
  Tensor q, k, v, out, lse, dout, dq, dk, dv, ws;
  HostCall(DType dtype, int64_t T = 8, int64_t Hq = 4, int64_t Hkv = 2, int64_t hd = 16)
      : q(Tensor::zeros({1, T, Hq, hd}, dtype)),
        k(Tensor::zeros({1, T, Hkv, hd}, dtype)),
        v(Tensor::zeros({1, T, Hkv, hd}, dtype)),
        out(Tensor::zeros({1, T, Hq, hd}, dtype)),
        lse(Tensor::zeros({1, Hq, T}, DType::F32)),
        dout(Tensor::zeros({1, T, Hq, hd}, dtype)),
        dq(Tensor::zeros({1, T, Hq, hd}, dtype)),
        dk(Tensor::zeros({1, T, Hkv, hd}, dtype)),
        dv(Tensor::zeros({1, T, Hkv, hd}, dtype)),
        ws(Tensor::zeros({4096}, DType::U8)) {}
  void forward() {
    ops::cuda::attention_forward(q, k, v, 0.25f, AttentionMask::Causal, out, lse, ws);
  }
  void backward() {
    ops::cuda::attention_backward(dout, q, k, v, out, lse, 0.25f, AttentionMask::Causal, dq, dk,
                                  dv, ops::Accumulate::No, ws);
  }
};

TEST(CudaAttentionChecks, RejectBadInputsBeforeDeviceWork) {
  {
    HostCall c(DType::F32);
    expect_error([&] { c.forward(); }, "CUDA device");  // everything else is right
    expect_error([&] { c.backward(); }, "CUDA device");
  }
  {
    HostCall c(DType::BF16);
    expect_error([&] { c.forward(); }, "CUDA device");
  }
  {
    HostCall c(DType::F32, 8, 4, 3);  // 4 query heads, 3 kv heads
    expect_error([&] { c.forward(); }, "multiple of kv heads");
  }
  {
    HostCall c(DType::F32, 8, 4, 2, 300);
    expect_error([&] { c.forward(); }, "head dim 300");
  }
  {
    HostCall c(DType::F16);
    expect_error([&] { c.forward(); }, "f32 or bf16");
  }
  {
    HostCall c(DType::F32);
    c.k = Tensor::zeros({1, 5, 2, 16}, DType::F32);  // causal with 5 keys for 8 queries
    c.v = c.k;
    expect_error([&] { c.forward(); }, "as many keys as queries");
  }
  {
    HostCall c(DType::F32);
    c.v = Tensor::zeros(c.k.shape(), DType::BF16);  // mixed storage types
    expect_error([&] { c.forward(); }, "v");
    HostCall d(DType::BF16);
    d.out = Tensor::zeros(d.q.shape(), DType::F32);
    expect_error([&] { d.forward(); }, "out");
    HostCall e(DType::BF16);
    e.lse = Tensor::zeros(e.lse.shape(), DType::BF16);  // lse is f32 on every path
    expect_error([&] { e.forward(); }, "lse");
    HostCall f(DType::BF16);
    f.dk = Tensor::zeros(f.dk.shape(), DType::F32);
    expect_error([&] { f.backward(); }, "dk");
  }
  {
    HostCall c(DType::F32);
    c.dq = Tensor::zeros({1, 8, 4, 8}, DType::F32);
    expect_error([&] { c.backward(); }, "dq");
  }
  {
    HostCall c(DType::F32);
    Tensor part = Tensor::zeros(c.out.shape(), DType::F32);
    Tensor lse_part = Tensor::zeros(c.lse.shape(), DType::F32);
    expect_error([&] { ops::cuda::attention_merge(c.out, c.lse, part, lse_part); }, "CUDA device");
    Tensor bad_lse = Tensor::zeros({1, 4, 7}, DType::F32);
    expect_error([&] { ops::cuda::attention_merge(c.out, c.lse, part, bad_lse); }, "lse_part");
  }
}

// ---------------------------------------------------------------------------------------
// On the GPU
// ---------------------------------------------------------------------------------------

struct Shape5 {
  int64_t B, T, Hq, Hkv, hd;
  Shape q() const { return {B, T, Hq, hd}; }
  Shape kv() const { return {B, T, Hkv, hd}; }
  Shape lse() const { return {B, Hq, T}; }
};

// A host tensor rounded to `dtype`, and the f32 copy of those same values for the CPU op.
Tensor random_stored(const Shape& shape, DType dtype, uint64_t seed, float spread) {
  const Tensor f32 = random_tensor(shape, seed, spread);
  if (dtype == DType::F32) return f32;
  Tensor t = Tensor::empty(shape, DType::BF16);
  const float* src = f32.data<float>();
  bf16_t* dst = t.mutable_data<bf16_t>();
  for (int64_t i = 0; i < f32.numel(); ++i) dst[i] = bf16_from_f32(src[i]);
  return t;
}
Tensor host_f32(const Tensor& t) { return from_values(to_values(t), t.shape()); }
struct Results {
  Tensor out, lse, dq, dk, dv;  // host copies
};

// Forward and backward (Accumulate::No) of the same inputs on `device`; f32 inputs go to
// the CPU op as they are.
Results run(const Shape5& s, AttentionMask mask, const std::vector<Tensor>& host_inputs,
            Device device) {
  std::vector<Tensor> in;
  for (const Tensor& t : host_inputs) {
    in.push_back(device.is_cpu() ? host_f32(t) : to_device(t, device));
  }
  const DType dtype = in[0].dtype();
  const float scale = float(1.0 / std::sqrt(double(s.hd)));
  Tensor out = Tensor::empty(s.q(), dtype, device), lse = Tensor::empty(s.lse(), DType::F32, device);
  Tensor dq = Tensor::empty(s.q(), dtype, device), dk = Tensor::empty(s.kv(), dtype, device),
         dv = Tensor::empty(s.kv(), dtype, device);
  const int threads = thread_count();
  Tensor fws = Tensor::empty(
      {ops::attention_forward_workspace_bytes(device, s.B, s.T, s.Hq, s.Hkv, s.hd, threads)},
      DType::U8, device);
  Tensor bws = Tensor::empty(
      {ops::attention_backward_workspace_bytes(device, s.B, s.T, s.Hq, s.Hkv, s.hd, threads)},
      DType::U8, device);
  ops::attention_forward(in[0], in[1], in[2], scale, mask, out, lse, fws);
  ops::attention_backward(in[3], in[0], in[1], in[2], out, lse, scale, mask, dq, dk, dv,
                          ops::Accumulate::No, bws);
  return {to_host(out), to_host(lse), to_host(dq), to_host(dk), to_host(dv)};
}

std::vector<Tensor> random_inputs(const Shape5& s, DType dtype, uint64_t seed) {
  return {random_stored(s.q(), dtype, seed, 2.0f), random_stored(s.kv(), dtype, seed + 1, 1.0f),
          random_stored(s.kv(), dtype, seed + 2, 1.0f), random_stored(s.q(), dtype, seed + 3, 1.0f)};
}

// |gpu - cpu| <= tolerance * max(|cpu|, 1) per element, as the op-case table compares.
void expect_near_cpu(const Tensor& gpu, const Tensor& cpu, double tolerance, const std::string& what) {
  const Values g = to_values(gpu), c = to_values(cpu);
  ASSERT_EQ(g.size(), c.size()) << what;
  int64_t failures = 0;
  double worst = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const double ratio = std::fabs(g[i] - c[i]) / std::max(std::fabs(c[i]), 1.0);
    worst = std::max(worst, std::isfinite(g[i]) ? ratio : 1e300);
    if (!(ratio <= tolerance) && failures++ < 3) {
      ADD_FAILURE() << what << "[" << i << "]: cuda " << g[i] << ", cpu " << c[i];
    }
  }
  EXPECT_EQ(failures, 0) << what << ": worst relative difference " << worst << " > " << tolerance;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.bytes() == b.bytes() && std::memcmp(a.raw_data(), b.raw_data(), size_t(a.bytes())) == 0;
}

class CudaAttention : public ::testing::Test {
 protected:
  void SetUp() override { SKIP_WITHOUT_CUDA_DEVICE(); }
};

// Llama's head dims: bf16 on the tensor cores, f32 (and bf16 hd 72) on the SIMT kernels,
// T = 130 (two full 64-blocks and a partial one), GQA 4:2, both masks.
TEST_F(CudaAttention, LlamaHeadDimsMatchTheCpu) {
  struct Case {
    DType dtype;
    int64_t hd;
    double tolerance;
  };
  for (const Case& c : {Case{DType::BF16, 64, 2e-2}, Case{DType::BF16, 128, 2e-2},
                        Case{DType::BF16, 72, 2e-2}, Case{DType::F32, 64, 1e-5},
                        Case{DType::F32, 128, 1e-5}}) {
    const Shape5 s{2, 130, 4, 2, c.hd};
    const std::vector<Tensor> inputs = random_inputs(s, c.dtype, 31);
    for (AttentionMask mask : {AttentionMask::Causal, AttentionMask::None}) {
      const std::string what = std::string(dtype_name(c.dtype)) + " hd " + std::to_string(c.hd) +
                               (mask == AttentionMask::Causal ? " causal " : " full ");
      const Results cpu = run(s, mask, inputs, Device::cpu());
      const Results gpu = run(s, mask, inputs, Device::cuda(0));
      expect_near_cpu(gpu.out, cpu.out, c.tolerance, what + "out");
      expect_near_cpu(gpu.lse, cpu.lse, c.tolerance, what + "lse");
      expect_near_cpu(gpu.dq, cpu.dq, c.tolerance, what + "dq");
      expect_near_cpu(gpu.dk, cpu.dk, c.tolerance, what + "dk");
      expect_near_cpu(gpu.dv, cpu.dv, c.tolerance, what + "dv");
    }
  }
}

TEST_F(CudaAttention, RepeatedCallsAreBitwiseIdentical) {
  for (DType dtype : {DType::BF16, DType::F32}) {
    const Shape5 s{1, 200, 8, 2, 64};
    const std::vector<Tensor> inputs = random_inputs(s, dtype, 37);
    const Results a = run(s, AttentionMask::Causal, inputs, Device::cuda(0));
    const Results b = run(s, AttentionMask::Causal, inputs, Device::cuda(0));
    EXPECT_TRUE(same_bits(a.out, b.out)) << dtype_name(dtype);
    EXPECT_TRUE(same_bits(a.lse, b.lse)) << dtype_name(dtype);
    EXPECT_TRUE(same_bits(a.dq, b.dq)) << dtype_name(dtype);
    EXPECT_TRUE(same_bits(a.dk, b.dk)) << dtype_name(dtype);
    EXPECT_TRUE(same_bits(a.dv, b.dv)) << dtype_name(dtype);
  }
}

// Accumulate::Yes adds to what dq, dk, dv held (f32, so the sums are checkable to 1e-6).
TEST_F(CudaAttention, BackwardAccumulatesWhenAsked) {
  const Shape5 s{1, 70, 4, 2, 8};
  const std::vector<Tensor> inputs = random_inputs(s, DType::F32, 41);
  const Results fresh = run(s, AttentionMask::Causal, inputs, Device::cuda(0));
  const Device gpu = Device::cuda(0);
  std::vector<Tensor> in;
  for (const Tensor& t : inputs) in.push_back(to_device(t, gpu));
  const std::vector<Tensor> before{random_tensor(s.q(), 1), random_tensor(s.kv(), 2),
                                   random_tensor(s.kv(), 3)};
  Tensor dq = to_device(before[0], gpu), dk = to_device(before[1], gpu),
         dv = to_device(before[2], gpu);
  Tensor out = to_device(fresh.out, gpu), lse = to_device(fresh.lse, gpu);
  Tensor ws = Tensor::empty(
      {ops::attention_backward_workspace_bytes(gpu, s.B, s.T, s.Hq, s.Hkv, s.hd, 1)}, DType::U8,
      gpu);
  ops::attention_backward(in[3], in[0], in[1], in[2], out, lse, float(1.0 / std::sqrt(8.0)),
                          AttentionMask::Causal, dq, dk, dv, ops::Accumulate::Yes, ws);
  const Tensor* fresh_grads[] = {&fresh.dq, &fresh.dk, &fresh.dv};
  const Tensor* summed[] = {&dq, &dk, &dv};
  for (int i = 0; i < 3; ++i) {
    Values expected = to_values(*fresh_grads[i]);
    const Values old = to_values(before[size_t(i)]);
    for (size_t j = 0; j < expected.size(); ++j) expected[j] += old[j];
    expect_close(to_values(to_host(*summed[i])), expected, 1e-6, "accumulated " + std::to_string(i));
  }
}

// Ring attention's building block on the GPU: merging the attentions over two key halves
// into the empty result (out 0, lse -inf) gives the attention over all keys.
TEST_F(CudaAttention, MergingKeyHalvesEqualsWholeAttention) {
  const Device gpu = Device::cuda(0);
  const int64_t B = 2, T = 45, Tk = 100, Hq = 4, Hkv = 2, hd = 8, split = 37;
  const float scale = float(1.0 / std::sqrt(double(hd)));
  const Tensor q = random_tensor({B, T, Hq, hd}, 43, 2.0f);
  const Tensor k = random_tensor({B, Tk, Hkv, hd}, 44), v = random_tensor({B, Tk, Hkv, hd}, 45);
  auto keys = [&](const Tensor& t, int64_t j0, int64_t n) {  // t[:, j0:j0+n]
    const Values all = to_values(t);
    Values part;
    for (int64_t b = 0; b < B; ++b) {
      const auto first = all.begin() + (b * Tk + j0) * Hkv * hd;
      part.insert(part.end(), first, first + n * Hkv * hd);
    }
    return to_device(from_values(part, {B, n, Hkv, hd}), gpu);
  };
  Tensor ws = Tensor::empty({0}, DType::U8, gpu);
  Tensor whole_out = Tensor::empty({B, T, Hq, hd}, DType::F32, gpu);
  Tensor whole_lse = Tensor::empty({B, Hq, T}, DType::F32, gpu);
  const Tensor qd = to_device(q, gpu);
  ops::attention_forward(qd, to_device(k, gpu), to_device(v, gpu), scale, AttentionMask::None,
                         whole_out, whole_lse, ws);
  Tensor out = Tensor::zeros({B, T, Hq, hd}, DType::F32, gpu);
  Tensor lse_host = Tensor::empty({B, Hq, T}, DType::F32);
  float* l = lse_host.mutable_data<float>();
  std::fill(l, l + lse_host.numel(), -std::numeric_limits<float>::infinity());
  Tensor lse = to_device(lse_host, gpu);
  for (auto [j0, n] : {std::pair<int64_t, int64_t>{0, split}, {split, Tk - split}}) {
    Tensor part_out = Tensor::empty({B, T, Hq, hd}, DType::F32, gpu);
    Tensor part_lse = Tensor::empty({B, Hq, T}, DType::F32, gpu);
    ops::attention_forward(qd, keys(k, j0, n), keys(v, j0, n), scale, AttentionMask::None,
                           part_out, part_lse, ws);
    ops::attention_merge(out, lse, part_out, part_lse);
    if (j0 == 0) {  // merging into the empty result is a copy, bit for bit
      EXPECT_TRUE(same_bits(to_host(out), to_host(part_out)));
      EXPECT_TRUE(same_bits(to_host(lse), to_host(part_lse)));
    }
  }
  expect_close(to_values(to_host(out)), to_values(to_host(whole_out)), 1e-6, "merged out");
  expect_close(to_values(to_host(lse)), to_values(to_host(whole_lse)), 1e-6, "merged lse");
}

}  // namespace
}  // namespace titan::testing

#endif  // TITAN_HAVE_CUDA
