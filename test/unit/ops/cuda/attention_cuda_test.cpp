// The CUDA attention's host side, and the GPU kernels on shapes the op-case table leaves out.
//
// Without a GPU: the plan (which kernel takes a dtype and head dim, and that its shared
// memory fits an H100 for every head dim it takes), the GPU's workspace sizes, and the input
// checks, which all run before any device work and so fail the same way here (tensors on
// the CPU reach every check but the last, which says they must be on a CUDA device).
// With a GPU: Llama's head dims (64, 128) on both kernel paths against the CPU op, the
// backward's determinism and accumulation, the merge, and positions and documents
// (block-causal masks, ring attention's chunks) against the CPU op on both paths. The
// op-case table (op_case_cuda_test.cpp) covers the small and awkward shapes.
#include <gtest/gtest.h>

#include "titan/build_config.h"

#if !TITAN_HAVE_CUDA

TEST(CudaAttention, NeedsACudaBuild) {
  GTEST_SKIP() << "built without CUDA (TITAN_CUDA=OFF, or no nvcc at configure time)";
}

#else

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "support/attention_reference.h"
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

// Positions and documents pass the GPU entry points' checks: host tensors with them reach
// the device check, and a broken pair is named by the shared checks.
TEST(CudaAttentionChecks, PositionsAndDocumentsReachTheDeviceCheck) {
  auto i32 = [](const Shape& shape) { return Tensor::zeros(shape, DType::I32); };
  HostCall c(DType::F32);
  ops::AttentionPositions positions{i32({8}), i32({8}), i32({1, 8}), i32({1, 8})};
  expect_error([&] {
    ops::cuda::attention_forward(c.q, c.k, c.v, 0.25f, AttentionMask::Causal, c.out, c.lse, c.ws,
                                 &positions);
  }, "CUDA device");
  expect_error([&] {
    ops::cuda::attention_backward(c.dout, c.q, c.k, c.v, c.out, c.lse, 0.25f,
                                  AttentionMask::Causal, c.dq, c.dk, c.dv, ops::Accumulate::No,
                                  c.ws, &positions);
  }, "CUDA device");
  positions.k_position = Tensor();
  expect_error([&] {
    ops::cuda::attention_forward(c.q, c.k, c.v, 0.25f, AttentionMask::Causal, c.out, c.lse, c.ws,
                                 &positions);
  }, "q_position is given without k_position");
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
// the CPU op as they are. layout: the positions and documents, if any (Tk = T here).
Results run(const Shape5& s, AttentionMask mask, const std::vector<Tensor>& host_inputs,
            Device device, const AttentionLayout* layout = nullptr) {
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
  const ops::AttentionPositions positions =
      layout ? layout->tensors(s.B, s.T, s.T, device) : ops::AttentionPositions{};
  const ops::AttentionPositions* where = layout ? &positions : nullptr;
  ops::attention_forward(in[0], in[1], in[2], scale, mask, out, lse, fws, where);
  ops::attention_backward(in[3], in[0], in[1], in[2], out, lse, scale, mask, dq, dk, dv,
                          ops::Accumulate::No, bws, where);
  return {to_host(out), to_host(lse), to_host(dq), to_host(dk), to_host(dv)};
}

std::vector<Tensor> random_inputs(const Shape5& s, DType dtype, uint64_t seed) {
  return {random_stored(s.q(), dtype, seed, 2.0f), random_stored(s.kv(), dtype, seed + 1, 1.0f),
          random_stored(s.kv(), dtype, seed + 2, 1.0f), random_stored(s.q(), dtype, seed + 3, 1.0f)};
}

// |gpu - cpu| <= tolerance * max(|cpu|, 1) per element, as the op-case table compares; where
// the CPU has -infinity (the lse of a row that saw no key) the GPU must have it too.
void expect_near_cpu(const Tensor& gpu, const Tensor& cpu, double tolerance, const std::string& what) {
  const Values g = to_values(gpu), c = to_values(cpu);
  ASSERT_EQ(g.size(), c.size()) << what;
  int64_t failures = 0;
  double worst = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const double ratio = std::isinf(c[i]) && g[i] == c[i]
                             ? 0.0
                             : std::fabs(g[i] - c[i]) / std::max(std::fabs(c[i]), 1.0);
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

// ---------------------------------------------------------------------------------------
// Positions and documents (block-causal masks, ring attention) against the CPU op
// ---------------------------------------------------------------------------------------

// A dtype and head dim with the kernel family they must take, so that each case forces its
// dispatch branch; tolerances as above (bf16: GPU out rounded to bf16, the CPU's in f32).
struct PathCase {
  DType dtype;
  int64_t hd;
  AttentionPath path;
  double tolerance;
  std::string name() const {
    return std::string(dtype_name(dtype)) + " hd " + std::to_string(hd) +
           (path == AttentionPath::TensorCore ? " (tensor cores)" : " (simt)");
  }
};
const std::vector<PathCase> kPathCases = {
    {DType::BF16, 64, AttentionPath::TensorCore, 2e-2},
    {DType::BF16, 24, AttentionPath::Simt, 2e-2},
    {DType::F32, 16, AttentionPath::Simt, 1e-5},
    {DType::F32, 48, AttentionPath::Simt, 1e-5},
};

void expect_results_near(const Results& gpu, const Results& cpu, double tolerance,
                         const std::string& what) {
  expect_near_cpu(gpu.out, cpu.out, tolerance, what + " out");
  expect_near_cpu(gpu.lse, cpu.lse, tolerance, what + " lse");
  expect_near_cpu(gpu.dq, cpu.dq, tolerance, what + " dq");
  expect_near_cpu(gpu.dk, cpu.dk, tolerance, what + " dk");
  expect_near_cpu(gpu.dv, cpu.dv, tolerance, what + " dv");
}

// Block-causal (and bidirectional within documents): uneven documents, one ending on a
// 64-key boundary (the tensor cores' tiles; a multiple of the SIMT's 16 and 32 too),
// one-token documents, a different layout per batch row; T = 300 leaves a partial block.
TEST_F(CudaAttention, DocumentMasksMatchTheCpu) {
  for (const PathCase& c : kPathCases) {
    ASSERT_EQ(ops::cuda::attention_plan(c.dtype, c.hd).path, c.path) << c.name();
    const Shape5 s{2, 300, 4, 2, c.hd};
    AttentionLayout layout;
    layout.q_document = layout.k_document =
        documents_of({{64, 1, 100, 135}, {150, 1, 20, 129}});
    const std::vector<Tensor> inputs = random_inputs(s, c.dtype, 53);
    for (AttentionMask mask : {AttentionMask::Causal, AttentionMask::None}) {
      const std::string what =
          c.name() + (mask == AttentionMask::Causal ? " block-causal" : " per-document");
      const Results cpu = run(s, mask, inputs, Device::cpu(), &layout);
      const Results gpu = run(s, mask, inputs, Device::cuda(0), &layout);
      expect_results_near(gpu, cpu, c.tolerance, what);
    }
  }
}

// One document per row walks the same tiles with the same sums as the plain causal mask:
// the documents' predicate adds no arithmetic, so the results are the same bits.
TEST_F(CudaAttention, OneDocumentIsPlainCausalBitForBit) {
  for (const PathCase& c : kPathCases) {
    const Shape5 s{2, 130, 4, 2, c.hd};
    AttentionLayout layout;
    layout.q_document = layout.k_document = documents_of({{130}, {130}});
    const std::vector<Tensor> inputs = random_inputs(s, c.dtype, 59);
    const Results plain = run(s, AttentionMask::Causal, inputs, Device::cuda(0));
    const Results one = run(s, AttentionMask::Causal, inputs, Device::cuda(0), &layout);
    EXPECT_TRUE(same_bits(plain.out, one.out)) << c.name();
    EXPECT_TRUE(same_bits(plain.lse, one.lse)) << c.name();
    EXPECT_TRUE(same_bits(plain.dq, one.dq)) << c.name();
    EXPECT_TRUE(same_bits(plain.dk, one.dk)) << c.name();
    EXPECT_TRUE(same_bits(plain.dv, one.dv)) << c.name();
  }
}

// x[:, rows] of a host tensor [B, T, heads, hd], bytes copied in x's dtype.
Tensor gather_time(const Tensor& x, const std::vector<int64_t>& rows) {
  const int64_t B = x.size(0), T = x.size(1), row_bytes = x.bytes() / (B * T);
  Tensor part = Tensor::empty({B, int64_t(rows.size()), x.size(2), x.size(3)}, x.dtype());
  const auto* src = static_cast<const unsigned char*>(x.raw_data());
  auto* dst = static_cast<unsigned char*>(part.raw_mutable_data());
  for (int64_t b = 0; b < B; ++b) {
    for (size_t t = 0; t < rows.size(); ++t) {
      std::memcpy(dst + (b * int64_t(rows.size()) + int64_t(t)) * row_bytes,
                  src + (b * T + rows[t]) * row_bytes, size_t(row_bytes));
    }
  }
  return part;
}

// What a ring pass leaves on one device (host copies): per rank its merged out and lse and
// its dq, per owner of keys the summed dk and dv, and rank 0's partial against rank 1's
// keys (whose head chunk lies before all of them).
struct RingResults {
  std::vector<Tensor> out, lse, dq, dk, dv;
  Tensor future_out, future_lse;
};

// cp = 2: every rank's queries against every owner's keys (causal by position; with
// documents, by document too), merged with attention_merge from the empty result; then the
// backward per owner with the merged out and lse, Accumulate::Yes into dq and the owner's
// dk, dv. The inputs are the whole sequence's (host, in the case's dtype).
RingResults run_ring(const Shape5& whole, const std::vector<Tensor>& inputs, bool documents,
                     Device device) {
  const int64_t cp = 2, B = whole.B, T = whole.T, local = T / cp;
  const Shape5 part{B, local, whole.Hq, whole.Hkv, whole.hd};
  const float scale = float(1.0 / std::sqrt(double(whole.hd)));
  std::vector<int32_t> whole_documents;  // crossing chunk edges, one of a single token
  if (documents) whole_documents = documents_of({{T / 2 - 7, 1, T / 2 + 6}, {30, T - 30}});
  std::vector<std::vector<int64_t>> rows;
  for (int64_t r = 0; r < cp; ++r) rows.push_back(head_tail_times(T, cp, r));
  // inputs[i][:, rows of rank r] on the device (f32 on the CPU).
  auto slice = [&](size_t i, int64_t r) {
    const Tensor x = gather_time(inputs[i], rows[size_t(r)]);
    return device.is_cpu() ? host_f32(x) : to_device(x, device);
  };
  // Rank r's queries against rank o's keys: their global positions and documents.
  auto layout_of = [&](int64_t r, int64_t o) {
    return layout_at_times(rows[size_t(r)], rows[size_t(o)], whole_documents, B, T)
        .tensors(B, local, local, device);
  };

  const DType dtype = device.is_cpu() ? DType::F32 : inputs[0].dtype();
  const int threads = thread_count();
  Tensor fws = Tensor::empty({ops::attention_forward_workspace_bytes(
                                 device, B, local, part.Hq, part.Hkv, part.hd, threads)},
                             DType::U8, device);
  Tensor bws = Tensor::empty({ops::attention_backward_workspace_bytes(
                                 device, B, local, part.Hq, part.Hkv, part.hd, threads)},
                             DType::U8, device);
  std::vector<Tensor> k, v, dk, dv;
  for (int64_t o = 0; o < cp; ++o) {
    k.push_back(slice(1, o));
    v.push_back(slice(2, o));
    dk.push_back(Tensor::zeros(part.kv(), dtype, device));
    dv.push_back(Tensor::zeros(part.kv(), dtype, device));
  }
  RingResults results;
  for (int64_t r = 0; r < cp; ++r) {
    const Tensor q = slice(0, r), dout = slice(3, r);
    Tensor out = Tensor::zeros(part.q(), dtype, device);
    Tensor empty_lse = Tensor::empty(part.lse(), DType::F32);
    float* l = empty_lse.mutable_data<float>();
    std::fill(l, l + empty_lse.numel(), -std::numeric_limits<float>::infinity());
    Tensor lse = device.is_cpu() ? empty_lse : to_device(empty_lse, device);
    std::vector<ops::AttentionPositions> positions;
    for (int64_t o = 0; o < cp; ++o) {
      positions.push_back(layout_of(r, o));
      Tensor part_out = Tensor::empty(part.q(), dtype, device);
      Tensor part_lse = Tensor::empty(part.lse(), DType::F32, device);
      ops::attention_forward(q, k[size_t(o)], v[size_t(o)], scale, AttentionMask::Causal,
                             part_out, part_lse, fws, &positions.back());
      if (r == 0 && o == 1) {
        results.future_out = to_host(part_out);
        results.future_lse = to_host(part_lse);
      }
      ops::attention_merge(out, lse, part_out, part_lse);
    }
    Tensor dq = Tensor::zeros(part.q(), dtype, device);
    for (int64_t o = 0; o < cp; ++o) {
      ops::attention_backward(dout, q, k[size_t(o)], v[size_t(o)], out, lse, scale,
                              AttentionMask::Causal, dq, dk[size_t(o)], dv[size_t(o)],
                              ops::Accumulate::Yes, bws, &positions[size_t(o)]);
    }
    results.out.push_back(to_host(out));
    results.lse.push_back(to_host(lse));
    results.dq.push_back(to_host(dq));
  }
  for (int64_t o = 0; o < cp; ++o) {
    results.dk.push_back(to_host(dk[size_t(o)]));
    results.dv.push_back(to_host(dv[size_t(o)]));
  }
  return results;
}

// Ring attention's chunks on the GPU against the same chunks on the CPU, both kernel paths,
// with and without documents. T = 200 puts chunk edges inside blocks (chunks of 50, 100
// local rows); T = 256 puts them on 64-key boundaries.
TEST_F(CudaAttention, RingChunksMatchTheCpu) {
  for (const PathCase& c : kPathCases) {
    for (int64_t T : {200, 256}) {
      for (bool documents : {false, true}) {
        const std::string what = c.name() + " T " + std::to_string(T) +
                                 (documents ? " with documents" : "");
        const Shape5 whole{2, T, 4, 2, c.hd};
        const std::vector<Tensor> inputs = random_inputs(whole, c.dtype, 61);
        const RingResults cpu = run_ring(whole, inputs, documents, Device::cpu());
        const RingResults gpu = run_ring(whole, inputs, documents, Device::cuda(0));
        for (size_t r = 0; r < 2; ++r) {
          const std::string rank = what + " rank " + std::to_string(r);
          expect_near_cpu(gpu.out[r], cpu.out[r], c.tolerance, rank + " out");
          expect_near_cpu(gpu.lse[r], cpu.lse[r], c.tolerance, rank + " lse");
          expect_near_cpu(gpu.dq[r], cpu.dq[r], c.tolerance, rank + " dq");
          const std::string keys = what + " keys of rank " + std::to_string(r);
          expect_near_cpu(gpu.dk[r], cpu.dk[r], c.tolerance, keys + " dk");
          expect_near_cpu(gpu.dv[r], cpu.dv[r], c.tolerance, keys + " dv");
        }
        // Rank 0's head chunk (its first T / 4 rows) sees none of rank 1's keys: exactly
        // the empty partial.
        expect_near_cpu(gpu.future_out, cpu.future_out, c.tolerance, what + " partial out");
        expect_near_cpu(gpu.future_lse, cpu.future_lse, c.tolerance, what + " partial lse");
        const Values out = to_values(gpu.future_out), lse = to_values(gpu.future_lse);
        const int64_t chunk = T / 4, local = T / 2, width = whole.Hq * whole.hd;
        int64_t wrong = 0;
        for (int64_t b = 0; b < whole.B; ++b) {
          for (int64_t t = 0; t < chunk; ++t) {
            for (int64_t x = 0; x < width; ++x) {
              wrong += out[size_t((b * local + t) * width + x)] != 0.0;
            }
            for (int64_t h = 0; h < whole.Hq; ++h) {
              wrong += lse[size_t((b * whole.Hq + h) * local + t)] !=
                       -std::numeric_limits<double>::infinity();
            }
          }
        }
        EXPECT_EQ(wrong, 0) << what << ": rows before every key are not out 0, lse -inf";
      }
    }
  }
}

// A ring step against keys wholly in the queries' future: every tile skipped, out 0 and
// lse -inf (no NaN from 0 / 0), and a backward with them adds nothing: dq, dk, dv stay 0.
TEST_F(CudaAttention, FutureOnlyRingStepIsEmpty) {
  for (const PathCase& c : kPathCases) {
    const Shape5 s{2, 100, 4, 2, c.hd};
    AttentionLayout layout;
    for (int32_t t = 0; t < 100; ++t) {
      layout.q_position.push_back(t);
      layout.k_position.push_back(100 + t);
    }
    const Results gpu =
        run(s, AttentionMask::Causal, random_inputs(s, c.dtype, 67), Device::cuda(0), &layout);
    for (double x : to_values(gpu.lse)) {
      ASSERT_EQ(x, -std::numeric_limits<double>::infinity()) << c.name() << " lse";
    }
    for (const Tensor* t : {&gpu.out, &gpu.dq, &gpu.dk, &gpu.dv}) {
      for (double x : to_values(*t)) ASSERT_EQ(x, 0.0) << c.name();
    }
  }
}

}  // namespace
}  // namespace titan::testing

#endif  // TITAN_HAVE_CUDA
