#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "op_harness.h"
#include "support/attention_reference.h"
#include "titan/core/copy.h"
#include "titan/core/threads.h"
#include "titan/ops/attention.h"
#include "titan/ops/cpu/kernel_isa.h"

namespace titan::testing {
namespace {

using ops::AttentionMask;
using ops::AttentionPositions;

float default_scale(int64_t hd) { return float(1.0 / std::sqrt(double(hd))); }

// An i32 tensor of x (undefined when x is empty).
Tensor i32_tensor(const std::vector<int32_t>& x, const Shape& shape) {
  if (x.empty()) return Tensor();
  Tensor t = Tensor::empty(shape, DType::I32);
  std::copy(x.begin(), x.end(), t.mutable_data<int32_t>());
  return t;
}

// Workspaces live on the inputs' device, sized for it (the GPU's needs differ from the
// CPU's per-thread tiles).
Tensor forward_workspace(const AttentionDims64& s, Device device = Device::cpu()) {
  return Tensor::empty({ops::attention_forward_workspace_bytes(device, s.B, s.T, s.Hq, s.Hkv,
                                                               s.hd, thread_count())},
                       DType::U8, device);
}
Tensor backward_workspace(const AttentionDims64& s, Device device = Device::cpu()) {
  return Tensor::empty({ops::attention_backward_workspace_bytes(device, s.B, s.T, s.Hq, s.Hkv,
                                                                s.hd, thread_count())},
                       DType::U8, device);
}

// Huge values (every byte 0x7f: about 3.4e38 in f32 and in bf16) in the input's dtype, on
// its device: gradients written with Accumulate::No into these prove "=".
Tensor garbage_like_input(const Tensor& input, const Shape& shape) {
  Tensor host = Tensor::empty(shape, input.dtype());
  std::memset(host.raw_mutable_data(), 0x7f, size_t(host.bytes()));
  return input.device().is_cpu() ? host : to_device(host, input.device());
}

struct Forward {
  Tensor out, lse;
};
// Device- and dtype-agnostic (the CUDA op-case table runs it on f32 and bf16 GPU inputs):
// out in q's dtype, lse f32, both beside q.
Forward run_forward(const AttentionDims64& s, AttentionMask mask, const Tensor& q, const Tensor& k,
                    const Tensor& v, const AttentionPositions* positions = nullptr) {
  Forward f{empty_like_input(q, s.q()), f32_beside(q, s.lse())};
  Tensor ws = forward_workspace(s, q.device());
  ops::attention_forward(q, k, v, default_scale(s.hd), mask, f.out, f.lse, ws, positions);
  return f;
}

std::vector<Tensor> run_backward(const AttentionDims64& s, AttentionMask mask, const Tensor& q,
                                 const Tensor& k, const Tensor& v, const Tensor& dout,
                                 const AttentionPositions* positions = nullptr) {
  const Forward f = run_forward(s, mask, q, k, v, positions);
  Tensor dq = garbage_like_input(q, s.q()), dk = garbage_like_input(k, s.kv()),
         dv = garbage_like_input(v, s.kv());
  Tensor ws = backward_workspace(s, q.device());
  ops::attention_backward(dout, q, k, v, f.out, f.lse, default_scale(s.hd), mask, dq, dk, dv,
                          ops::Accumulate::No, ws, positions);
  return {dq, dk, dv};
}

AttentionDims64 shape_of(const OpCase& c) {
  const auto& dims = c.dims_as<AttentionDims>();
  return {dims.B, dims.T, dims.T, dims.Hq, dims.Hkv, dims.hd};
}
AttentionMask mask_of(const OpCase& c) {
  return (c.flags & kFullAttention) ? AttentionMask::None : AttentionMask::Causal;
}

// Inputs: q [B, T, Hq, hd] (twice the spread, so softmax rows are not flat), k and v
// [B, T, Hkv, hd]; all three differentiable. The output checked is out.
const bool registered = register_op_harness("attention", OpHarness{
    .make_inputs = [](const OpCase& c, uint64_t seed) {
      const AttentionDims64 s = shape_of(c);
      return std::vector<Tensor>{random_tensor(s.q(), seed, 2.0f), random_tensor(s.kv(), seed + 1),
                                 random_tensor(s.kv(), seed + 2)};
    },
    .input_names = {"q", "k", "v"},
    .differentiable = {true, true, true},
    .reference = [](const OpCase& c, const std::vector<Values>& in) {
      const AttentionDims64 s = shape_of(c);
      return reference_masked_attention(s, reference_mask(s, mask_of(c)), default_scale(s.hd),
                                        in[0], in[1], in[2]).out;
    },
    .forward = [](const OpCase& c, const std::vector<Tensor>& in) {
      return run_forward(shape_of(c), mask_of(c), in[0], in[1], in[2]).out;
    },
    .backward = [](const OpCase& c, const std::vector<Tensor>& in, const Tensor& dy) {
      return run_backward(shape_of(c), mask_of(c), in[0], in[1], in[2], dy);
    },
    // f32 on the GPU (SIMT kernels) differs from the CPU only in summation order and in
    // D = dout . out summed in f32 rather than double: well inside the default 1e-5.
    // bf16: out, dq, dk, dv are stored in bf16 (relative rounding 2^-9 = 0.2%), and the
    // tensor-core path (hd % 16 == 0) rounds P and dS to bf16 for their products, whose
    // errors are random and average out over the keys (sums of rounded terms grow like
    // sqrt(n) * 2^-9 of the largest term). 2e-2 of max(|cpu|, 1) leaves about 5x room over
    // the 0.4% that two roundings can reach per element.
    .bf16_tolerance = 2e-2,
});

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.bytes() == b.bytes() && std::memcmp(a.raw_data(), b.raw_data(), size_t(a.bytes())) == 0;
}

struct Inputs {
  Tensor q, k, v, dout;
};
Inputs random_inputs(const AttentionDims64& s, uint64_t seed) {
  return {random_tensor(s.q(), seed, 2.0f), random_tensor(s.kv(), seed + 1),
          random_tensor(s.kv(), seed + 2), random_tensor(s.q(), seed + 3)};
}

// Also covers hd = 64, where every tile product runs its register-blocked path at any
// vector width (the op-case rows keep hd small for the gradient check).
TEST(Attention, LogSumExpMatchesFloat64Reference) {
  for (const AttentionDims64& s : {AttentionDims64{2, 67, 67, 4, 2, 16},
                                   AttentionDims64{1, 130, 130, 2, 1, 64}}) {
    const Inputs in = random_inputs(s, 5);
    for (AttentionMask mask : {AttentionMask::Causal, AttentionMask::None}) {
      const std::string what = std::string(mask == AttentionMask::Causal ? "causal" : "full") +
                               " hd " + std::to_string(s.hd);
      const Forward f = run_forward(s, mask, in.q, in.k, in.v);
      const AttentionResult64 want =
          reference_masked_attention(s, reference_mask(s, mask), default_scale(s.hd),
                                     to_values(in.q), to_values(in.k), to_values(in.v));
      expect_close(to_values(f.lse), want.lse, 1e-6, what + " lse");
      expect_close(to_values(f.out), want.out, 1e-5, what + " out");
    }
  }
}

TEST(Attention, FullAttentionTakesKeysOfAnotherLength) {
  const AttentionDims64 s{1, 20, 100, 3, 1, 8};  // keys end on a partial block
  const Inputs in = random_inputs(s, 7);
  const float scale = default_scale(s.hd);
  const AttentionMaskFn full = reference_mask(s, AttentionMask::None);
  auto reference = [&](const std::vector<Values>& x) {
    return reference_masked_attention(s, full, scale, x[0], x[1], x[2]).out;
  };
  const std::vector<Values> x{to_values(in.q), to_values(in.k), to_values(in.v)};
  const Forward f = run_forward(s, AttentionMask::None, in.q, in.k, in.v);
  expect_close(to_values(f.out), reference(x), 1e-5, "out with Tk != T");
  const std::vector<Tensor> grads = run_backward(s, AttentionMask::None, in.q, in.k, in.v, in.dout);
  expect_gradients_match(reference, x, to_values(in.dout),
                         {to_values(grads[0]), to_values(grads[1]), to_values(grads[2])},
                         {"q", "k", "v"});
}

TEST(Attention, BackwardAccumulatesWhenAsked) {
  const AttentionDims64 s{1, 70, 70, 4, 2, 8};
  const Inputs in = random_inputs(s, 11);
  const std::vector<Tensor> fresh =
      run_backward(s, AttentionMask::Causal, in.q, in.k, in.v, in.dout);
  const Forward f = run_forward(s, AttentionMask::Causal, in.q, in.k, in.v);
  std::vector<Tensor> summed{random_tensor(s.q(), 1), random_tensor(s.kv(), 2),
                             random_tensor(s.kv(), 3)};
  std::vector<Values> before;
  for (const Tensor& t : summed) before.push_back(to_values(t));
  Tensor ws = backward_workspace(s);
  ops::attention_backward(in.dout, in.q, in.k, in.v, f.out, f.lse, default_scale(s.hd),
                          AttentionMask::Causal, summed[0], summed[1], summed[2],
                          ops::Accumulate::Yes, ws);
  const char* names[] = {"dq", "dk", "dv"};
  for (int i = 0; i < 3; ++i) {
    Values expected = to_values(fresh[i]);
    for (size_t j = 0; j < expected.size(); ++j) expected[j] += before[i][j];
    expect_close(to_values(summed[i]), expected, 1e-6, std::string("accumulated ") + names[i]);
  }
}

// Ring attention's building block: the attention over all keys is the lse-merge of the
// attentions over two disjoint halves, starting from the empty result (out 0, lse -inf).
TEST(Attention, MergingKeyHalvesEqualsWholeAttention) {
  const AttentionDims64 whole{2, 45, 100, 4, 2, 8};
  const Inputs in = random_inputs(whole, 13);
  const Forward expected = run_forward(whole, AttentionMask::None, in.q, in.k, in.v);

  const int64_t split = 37;
  auto keys = [&](const Tensor& t, int64_t j0, int64_t n) {  // t[:, j0:j0+n]
    const Values all = to_values(t);
    Values part;
    const int64_t row = whole.Hkv * whole.hd;
    for (int64_t b = 0; b < whole.B; ++b) {
      const auto first = all.begin() + (b * whole.Tk + j0) * row;
      part.insert(part.end(), first, first + n * row);
    }
    return from_values(part, {whole.B, n, whole.Hkv, whole.hd});
  };
  Forward merged{Tensor::zeros(whole.q(), DType::F32), Tensor::empty(whole.lse(), DType::F32)};
  float* l = merged.lse.mutable_data<float>();
  std::fill(l, l + merged.lse.numel(), -std::numeric_limits<float>::infinity());
  for (auto [j0, n] : {std::pair<int64_t, int64_t>{0, split}, {split, whole.Tk - split}}) {
    AttentionDims64 half = whole;
    half.Tk = n;
    const Forward part =
        run_forward(half, AttentionMask::None, in.q, keys(in.k, j0, n), keys(in.v, j0, n));
    ops::attention_merge(merged.out, merged.lse, part.out, part.lse);
    if (j0 == 0) {  // merging into the empty result is a copy, bit for bit
      EXPECT_TRUE(same_bits(merged.out, part.out));
      EXPECT_TRUE(same_bits(merged.lse, part.lse));
    }
  }
  expect_close(to_values(merged.out), to_values(expected.out), 1e-6, "merged out");
  expect_close(to_values(merged.lse), to_values(expected.lse), 1e-6, "merged lse");
}

TEST(Attention, RepeatedCallsAreBitwiseIdentical) {
  const AttentionDims64 s{2, 130, 130, 4, 2, 16};
  const Inputs in = random_inputs(s, 17);
  const Forward f1 = run_forward(s, AttentionMask::Causal, in.q, in.k, in.v);
  const Forward f2 = run_forward(s, AttentionMask::Causal, in.q, in.k, in.v);
  EXPECT_TRUE(same_bits(f1.out, f2.out));
  EXPECT_TRUE(same_bits(f1.lse, f2.lse));
  const std::vector<Tensor> g1 = run_backward(s, AttentionMask::Causal, in.q, in.k, in.v, in.dout);
  const std::vector<Tensor> g2 = run_backward(s, AttentionMask::Causal, in.q, in.k, in.v, in.dout);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(same_bits(g1[i], g2[i])) << "gradient " << i;
}

TEST(Attention, ResultsDoNotDependOnThreadCount) {
  const AttentionDims64 s{2, 130, 130, 4, 2, 16};
  const Inputs in = random_inputs(s, 19);
  const int saved = omp_get_max_threads();
  for (AttentionMask mask : {AttentionMask::Causal, AttentionMask::None}) {
    omp_set_num_threads(1);
    const Forward f1 = run_forward(s, mask, in.q, in.k, in.v);
    const std::vector<Tensor> g1 = run_backward(s, mask, in.q, in.k, in.v, in.dout);
    omp_set_num_threads(2);
    const Forward f2 = run_forward(s, mask, in.q, in.k, in.v);
    const std::vector<Tensor> g2 = run_backward(s, mask, in.q, in.k, in.v, in.dout);
    EXPECT_TRUE(same_bits(f1.out, f2.out));
    EXPECT_TRUE(same_bits(f1.lse, f2.lse));
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(same_bits(g1[i], g2[i])) << "gradient " << i;
  }
  omp_set_num_threads(saved);
}

// The tile kernels are compiled for the build's target and, where the build carries it,
// for AVX-512 (ops/cpu/kernel_isa.h): both give the same bits, at hd = 64 (every product on
// its register-blocked path) and with ragged tiles (T = 130: the edge loops).
// Whether the AVX-512 kernels run here; where they cannot, choosing them is an InputError.
bool avx512_kernels_run_here() {
  using ops::cpu::KernelIsa;
  EXPECT_TRUE(ops::cpu::kernel_isa_available(KernelIsa::Built));
  if (ops::cpu::kernel_isa_available(KernelIsa::Avx512)) return true;
  EXPECT_THROW(ops::cpu::set_kernel_isa(KernelIsa::Avx512), InputError);
  return false;
}

// The forward and backward on the build's kernels and on the AVX-512 ones, bit for bit.
void expect_same_bits_on_every_isa(const AttentionDims64& s, AttentionMask mask,
                                   const Inputs& in, const AttentionPositions* positions,
                                   const std::string& what) {
  using ops::cpu::KernelIsa;
  const KernelIsa saved = ops::cpu::kernel_isa();
  std::vector<Forward> forward;
  std::vector<std::vector<Tensor>> backward;
  for (KernelIsa isa : {KernelIsa::Built, KernelIsa::Avx512}) {
    ops::cpu::set_kernel_isa(isa);
    forward.push_back(run_forward(s, mask, in.q, in.k, in.v, positions));
    backward.push_back(run_backward(s, mask, in.q, in.k, in.v, in.dout, positions));
  }
  ops::cpu::set_kernel_isa(saved);
  EXPECT_TRUE(same_bits(forward[0].out, forward[1].out)) << what;
  EXPECT_TRUE(same_bits(forward[0].lse, forward[1].lse)) << what;
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(same_bits(backward[0][i], backward[1][i])) << "gradient " << i << ", " << what;
  }
}

TEST(Attention, KernelsGiveTheSameBitsOnEveryInstructionSet) {
  if (!avx512_kernels_run_here()) {
    GTEST_SKIP() << "the AVX-512 kernels cannot run here (CPU or build without them); the "
                 << ops::cpu::kernel_isa_name() << " kernels ran the other tests";
  }
  for (const AttentionDims64& s : {AttentionDims64{1, 128, 128, 4, 2, 64},
                                   AttentionDims64{2, 130, 130, 4, 2, 16}}) {
    expect_same_bits_on_every_isa(s, AttentionMask::Causal, random_inputs(s, 23), nullptr,
                                  "T " + std::to_string(s.T));
  }
}

// Bytes the counted allocator hands out for a workspace of the reported size.
int64_t counted_bytes(int64_t workspace_bytes) {
  Allocator& allocator = allocator_for(Device::cpu());
  const int64_t before = allocator.stats().current_bytes;
  const Tensor ws = Tensor::empty({workspace_bytes}, DType::U8);
  return allocator.stats().current_bytes - before;
}

// The backward's workspace is per-thread tiles (fixed) plus one float per query row and
// head: from T = 1,024 to 4,096 the part that grows with T grows 4x (T x T would be 16x),
// in equal steps. The forward's does not grow at all.
TEST(Attention, WorkspaceGrowsLinearlyWithSequence) {
  const int64_t B = 1, Hq = 8, Hkv = 4, hd = 64;
  const int threads = 2;  // fixed, so the sizes stay under 1 MiB where the counter is exact
  auto backward = [&](int64_t T) {
    return counted_bytes(ops::attention_backward_workspace_bytes(B, T, Hq, Hkv, hd, threads));
  };
  auto forward = [&](int64_t T) {
    return counted_bytes(ops::attention_forward_workspace_bytes(B, T, Hq, Hkv, hd, threads));
  };
  const int64_t tiles = backward(0), w1 = backward(1024), w2 = backward(2048), w4 = backward(4096);
  const double growth_ratio = double(w4 - tiles) / double(w1 - tiles);
  EXPECT_GT(w1, tiles);
  EXPECT_GE(growth_ratio, 3.0);
  EXPECT_LE(growth_ratio, 5.0);
  EXPECT_EQ(w4 - w2, 2 * (w2 - w1)) << "not linear in T";
  EXPECT_LE(double(w4) / double(w1), 4.0) << "total grows faster than T";
  EXPECT_EQ(forward(1024), forward(4096));
  EXPECT_GT(forward(1024), 0);
}

// A run at T = 4,096 allocates nothing: the counter's peak stays at the inputs, outputs
// and workspaces allocated before it (a hidden T x T f32 score matrix alone would be
// 64 MiB, against ~3 MiB for everything here). Spot rows are checked against float64.
TEST(Attention, LongSequenceRunsWithinInputsOutputsAndWorkspace) {
  const AttentionDims64 s{1, 4096, 4096, 2, 1, 8};
  Allocator& allocator = allocator_for(Device::cpu());
  const int64_t start = allocator.stats().current_bytes;
  const Inputs in = random_inputs(s, 23);
  Tensor out = Tensor::empty(s.q(), DType::F32), lse = Tensor::empty(s.lse(), DType::F32);
  Tensor dq = Tensor::empty(s.q(), DType::F32), dk = Tensor::empty(s.kv(), DType::F32),
         dv = Tensor::empty(s.kv(), DType::F32);
  Tensor fws = forward_workspace(s), bws = backward_workspace(s);
  const int64_t allocated = allocator.stats().current_bytes - start;
  allocator.reset_peak();
  const float scale = default_scale(s.hd);
  ops::attention_forward(in.q, in.k, in.v, scale, AttentionMask::Causal, out, lse, fws);
  ops::attention_backward(in.dout, in.q, in.k, in.v, out, lse, scale, AttentionMask::Causal, dq,
                          dk, dv, ops::Accumulate::No, bws);
  EXPECT_EQ(allocator.stats().peak_bytes - start, allocated);
  EXPECT_LT(allocated, int64_t(8) << 20);

  // Rows 0, 1,000 and 4,095 of each head against float64: those queries, at their
  // positions, against every key.
  const std::vector<int64_t> rows{0, 1000, s.T - 1};
  const AttentionDims64 spot{s.B, int64_t(rows.size()), s.Tk, s.Hq, s.Hkv, s.hd};
  AttentionLayout at;  // the keys at 0, 1, ..., T - 1
  at.q_position.assign(rows.begin(), rows.end());
  const AttentionResult64 want = reference_masked_attention(
      spot, reference_mask(spot, AttentionMask::Causal, at), scale,
      gather_time_btw(to_values(in.q), s.B, s.T, s.Hq * s.hd, rows), to_values(in.k),
      to_values(in.v));
  expect_close(gather_time_btw(to_values(out), s.B, s.T, s.Hq * s.hd, rows), want.out, 1e-5,
               "out rows 0, 1000, 4095");
  const Values l = gather_time_bht(to_values(lse), s.B, s.Hq, s.T, rows);
  for (size_t i = 0; i < l.size(); ++i) EXPECT_NEAR(l[i], want.lse[i], 1e-5) << "lse row " << i;
  for (const Tensor* g : {&dq, &dk, &dv}) {
    for (double x : to_values(*g)) ASSERT_TRUE(std::isfinite(x));
  }
}

TEST(Attention, RejectsBadInputs) {
  const AttentionDims64 s{1, 8, 8, 4, 2, 4};
  const Inputs in = random_inputs(s, 29);
  Tensor out = Tensor::empty(s.q(), DType::F32), lse = Tensor::empty(s.lse(), DType::F32);
  Tensor ws = forward_workspace(s);
  const float scale = default_scale(s.hd);
  auto forward = [&](const Tensor& k, Tensor& lse_out) {
    ops::attention_forward(in.q, k, k, scale, AttentionMask::Causal, out, lse_out, ws);
  };
  EXPECT_THROW(forward(random_tensor({1, 8, 3, 4}, 1), lse), Error);  // 4 query heads, 3 kv
  EXPECT_THROW(forward(random_tensor({1, 5, 2, 4}, 2), lse), Error);  // causal, 5 keys for 8
  Tensor bad_lse = Tensor::empty({1, 8, 4}, DType::F32);
  EXPECT_THROW(forward(in.k, bad_lse), Error);
  // A workspace one float short of the backward's needs.
  ops::attention_forward(in.q, in.k, in.v, scale, AttentionMask::Causal, out, lse, ws);
  Tensor dq = Tensor::empty(s.q(), DType::F32), dk = Tensor::empty(s.kv(), DType::F32),
         dv = Tensor::empty(s.kv(), DType::F32);
  const int64_t needed =
      ops::attention_backward_workspace_bytes(s.B, s.T, s.Hq, s.Hkv, s.hd, thread_count());
  Tensor small = Tensor::empty({needed - 4}, DType::U8);
  EXPECT_THROW(ops::attention_backward(in.dout, in.q, in.k, in.v, out, lse, scale,
                                       AttentionMask::Causal, dq, dk, dv, ops::Accumulate::No,
                                       small),
               Error);
}

// ---------------------------------------------------------------------------------------
// Positions and documents: block-causal masks and ring attention (context parallel)
// ---------------------------------------------------------------------------------------

constexpr float kNoKey = -std::numeric_limits<float>::infinity();

// lse against the reference; rows where it is -infinity (no key) must be exactly that.
void expect_lse_close(Values actual, Values expected, double tolerance, const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (expected[i] != -std::numeric_limits<double>::infinity()) continue;
    EXPECT_EQ(actual[i], expected[i]) << what << ": row " << i << " saw no key";
    actual[i] = expected[i] = 0;
  }
  expect_close(actual, expected, tolerance, what);
}

// dq, dk, dv of the op against the float64 gradients.
void expect_gradients_close(const std::vector<Tensor>& actual, const AttentionGrads64& expected,
                            double tolerance, const std::string& what) {
  expect_close(to_values(actual[0]), expected.dq, tolerance, what + " dq");
  expect_close(to_values(actual[1]), expected.dk, tolerance, what + " dk");
  expect_close(to_values(actual[2]), expected.dv, tolerance, what + " dv");
}

// Block-causal (and bidirectional within documents): documents of uneven lengths, one
// ending on a 64-key block boundary, one-token documents, a different layout per batch row.
TEST(Attention, DocumentMaskMatchesFloat64Reference) {
  const AttentionDims64 s{2, 300, 300, 4, 2, 16};
  AttentionLayout layout;
  layout.q_document = layout.k_document = documents_of({{64, 1, 100, 135}, {150, 1, 20, 129}});
  const AttentionPositions positions = layout.tensors(s.B, s.T, s.Tk);
  const Inputs in = random_inputs(s, 31);
  const Values q = to_values(in.q), k = to_values(in.k), v = to_values(in.v);
  const float scale = default_scale(s.hd);
  for (AttentionMask mask : {AttentionMask::Causal, AttentionMask::None}) {
    const std::string what = mask == AttentionMask::Causal ? "block-causal" : "per-document";
    const Forward f = run_forward(s, mask, in.q, in.k, in.v, &positions);
    const AttentionMaskFn visible = reference_mask(s, mask, layout);
    const AttentionResult64 want = reference_masked_attention(s, visible, scale, q, k, v);
    expect_close(to_values(f.out), want.out, 1e-5, what + " out");
    expect_lse_close(to_values(f.lse), want.lse, 1e-6, what + " lse");
    expect_gradients_close(run_backward(s, mask, in.q, in.k, in.v, in.dout, &positions),
                           reference_masked_attention_backward(s, visible, scale, q, k, v,
                                                               to_values(in.dout)),
                           1e-5, what);
  }
}

// Documents mask keys inside tiles at any column, so the forward's softmax selects in
// different lanes on each width: still the same bits.
TEST(Attention, DocumentMaskGivesTheSameBitsOnEveryInstructionSet) {
  if (!avx512_kernels_run_here()) GTEST_SKIP() << "the AVX-512 kernels cannot run here";
  const AttentionDims64 s{2, 300, 300, 4, 2, 16};
  AttentionLayout layout;
  layout.q_document = layout.k_document = documents_of({{64, 1, 100, 135}, {150, 1, 20, 129}});
  const AttentionPositions positions = layout.tensors(s.B, s.T, s.Tk);
  for (AttentionMask mask : {AttentionMask::Causal, AttentionMask::None}) {
    expect_same_bits_on_every_isa(s, mask, random_inputs(s, 31), &positions,
                                  mask == AttentionMask::Causal ? "block-causal" : "per-document");
  }
}

// The same gradients against central differences of the float64 forward (which checks
// the float64 backward above too, through the test before).
TEST(Attention, DocumentMaskGradientsMatchCentralDifferences) {
  const AttentionDims64 s{2, 70, 70, 2, 1, 8};
  AttentionLayout layout;
  layout.q_document = layout.k_document = documents_of({{3, 1, 60, 6}, {70}});
  const AttentionPositions positions = layout.tensors(s.B, s.T, s.Tk);
  const Inputs in = random_inputs(s, 43);
  const float scale = default_scale(s.hd);
  const AttentionMaskFn block_causal = reference_mask(s, AttentionMask::Causal, layout);
  auto reference = [&](const std::vector<Values>& x) {
    return reference_masked_attention(s, block_causal, scale, x[0], x[1], x[2]).out;
  };
  const std::vector<Tensor> grads =
      run_backward(s, AttentionMask::Causal, in.q, in.k, in.v, in.dout, &positions);
  expect_gradients_match(reference, {to_values(in.q), to_values(in.k), to_values(in.v)},
                         to_values(in.dout),
                         {to_values(grads[0]), to_values(grads[1]), to_values(grads[2])},
                         {"q", "k", "v"});
}

// One document per row is plain causal attention: the same tiles, ranges and sums.
TEST(Attention, OneDocumentIsPlainCausalBitForBit) {
  const AttentionDims64 s{2, 130, 130, 4, 2, 16};
  AttentionLayout layout;
  layout.q_document = layout.k_document = documents_of({{130}, {130}});
  const AttentionPositions positions = layout.tensors(s.B, s.T, s.Tk);
  const Inputs in = random_inputs(s, 47);
  const Forward plain = run_forward(s, AttentionMask::Causal, in.q, in.k, in.v);
  const Forward one = run_forward(s, AttentionMask::Causal, in.q, in.k, in.v, &positions);
  EXPECT_TRUE(same_bits(plain.out, one.out));
  EXPECT_TRUE(same_bits(plain.lse, one.lse));
  const std::vector<Tensor> g1 = run_backward(s, AttentionMask::Causal, in.q, in.k, in.v, in.dout);
  const std::vector<Tensor> g2 =
      run_backward(s, AttentionMask::Causal, in.q, in.k, in.v, in.dout, &positions);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(same_bits(g1[i], g2[i])) << "gradient " << i;
}

// Every rank's queries against every rank's keys (causal by position; with documents, by
// document too), merged by lse, equal the whole sequence's rows; the backward per KV chunk
// with the merged out and lse, summed (Accumulate::Yes) into dq and each chunk's dk, dv,
// equals the whole sequence's gradients. T = 200 puts chunk edges inside 64-key blocks.
void check_ring(int64_t T, bool documents) {
  const int64_t cp = 2, B = 2, Hq = 4, Hkv = 2, hd = 16, chunk = T / (2 * cp), local = T / cp;
  const std::string what = "T " + std::to_string(T) + (documents ? " with documents" : "");
  const AttentionDims64 whole{B, T, T, Hq, Hkv, hd}, part{B, local, local, Hq, Hkv, hd};
  const Inputs in = random_inputs(whole, 37);
  const Values q = to_values(in.q), k = to_values(in.k), v = to_values(in.v),
               dout = to_values(in.dout);
  const float scale = default_scale(hd);
  AttentionLayout whole_layout;  // documents crossing chunk edges, one of a single token
  if (documents) {
    whole_layout.q_document = whole_layout.k_document =
        documents_of({{T / 2 - 7, 1, T / 2 + 6}, {30, T - 30}});
  }
  const AttentionMaskFn causal = reference_mask(whole, AttentionMask::Causal, whole_layout);
  const AttentionResult64 want = reference_masked_attention(whole, causal, scale, q, k, v);
  const AttentionGrads64 grads =
      reference_masked_attention_backward(whole, causal, scale, q, k, v, dout);

  std::vector<std::vector<int64_t>> rows;
  for (int64_t r = 0; r < cp; ++r) rows.push_back(head_tail_times(T, cp, r));
  auto slice = [&](const Values& x, int64_t heads, int64_t r) {
    return from_values(gather_time_btw(x, B, T, heads * hd, rows[size_t(r)]),
                       {B, local, heads, hd});
  };
  // Rank r's queries against rank o's keys: their global positions and documents.
  auto layout_of = [&](int64_t r, int64_t o) {
    return layout_at_times(rows[size_t(r)], rows[size_t(o)], whole_layout.q_document, B, T)
        .tensors(B, local, local);
  };

  std::vector<Tensor> dk, dv;
  for (int64_t o = 0; o < cp; ++o) {
    dk.push_back(Tensor::zeros(part.kv(), DType::F32));
    dv.push_back(Tensor::zeros(part.kv(), DType::F32));
  }
  for (int64_t r = 0; r < cp; ++r) {
    const std::string rank = what + " rank " + std::to_string(r);
    const Tensor q_r = slice(q, Hq, r), dout_r = slice(dout, Hq, r);
    Forward merged{Tensor::zeros(part.q(), DType::F32), Tensor::empty(part.lse(), DType::F32)};
    float* l = merged.lse.mutable_data<float>();
    std::fill(l, l + merged.lse.numel(), kNoKey);
    std::vector<AttentionPositions> positions;
    for (int64_t o = 0; o < cp; ++o) {
      positions.push_back(layout_of(r, o));
      const Forward partial = run_forward(part, AttentionMask::Causal, q_r, slice(k, Hkv, o),
                                          slice(v, Hkv, o), &positions.back());
      if (r == 0 && o == 1) {
        // Rank 0's head chunk lies before every key of rank 1: the empty partial.
        const Values po = to_values(partial.out), pl = to_values(partial.lse);
        for (int64_t b = 0; b < B; ++b) {
          for (int64_t t = 0; t < chunk; ++t) {
            for (int64_t x = 0; x < Hq * hd; ++x) {
              ASSERT_EQ(po[size_t((b * local + t) * Hq * hd + x)], 0.0) << rank;
            }
            for (int64_t h = 0; h < Hq; ++h) {
              ASSERT_EQ(pl[size_t((b * Hq + h) * local + t)], kNoKey) << rank;
            }
          }
        }
      }
      ops::attention_merge(merged.out, merged.lse, partial.out, partial.lse);
    }
    expect_close(to_values(merged.out), gather_time_btw(want.out, B, T, Hq * hd, rows[size_t(r)]),
                 1e-5, rank + " out");
    expect_lse_close(to_values(merged.lse), gather_time_bht(want.lse, B, Hq, T, rows[size_t(r)]),
                     1e-5, rank + " lse");

    Tensor dq = Tensor::zeros(part.q(), DType::F32), ws = backward_workspace(part);
    for (int64_t o = 0; o < cp; ++o) {
      ops::attention_backward(dout_r, q_r, slice(k, Hkv, o), slice(v, Hkv, o), merged.out,
                              merged.lse, scale, AttentionMask::Causal, dq, dk[size_t(o)],
                              dv[size_t(o)], ops::Accumulate::Yes, ws, &positions[size_t(o)]);
    }
    expect_close(to_values(dq), gather_time_btw(grads.dq, B, T, Hq * hd, rows[size_t(r)]), 1e-5,
                 rank + " dq");
  }
  for (int64_t o = 0; o < cp; ++o) {
    const std::string keys = what + " keys of rank " + std::to_string(o);
    expect_close(to_values(dk[size_t(o)]),
                 gather_time_btw(grads.dk, B, T, Hkv * hd, rows[size_t(o)]), 1e-5, keys + " dk");
    expect_close(to_values(dv[size_t(o)]),
                 gather_time_btw(grads.dv, B, T, Hkv * hd, rows[size_t(o)]), 1e-5, keys + " dv");
  }
}

TEST(Attention, RingChunksMergeIntoWholeAttention) {
  check_ring(256, false);
  check_ring(200, false);
}

TEST(Attention, RingChunksWithDocumentsMergeIntoWholeAttention) {
  check_ring(256, true);
  check_ring(200, true);
}

// The work counters count the tiles computed: documents of 64 tokens leave only the 16
// diagonal tiles of T = 1,024 (causal leaves the 136 of the lower triangle, full all 256),
// and a ring step against keys wholly in the queries' future computes none.
TEST(Attention, SkipsTilesTheMaskEmpties) {
  const AttentionDims64 s{2, 1024, 1024, 2, 1, 8};
  const Inputs in = random_inputs(s, 41);
  const int64_t tile_scores = 64 * 64 * s.Hq * s.B;
  std::vector<int32_t> ids;
  for (int64_t t = 0; t < s.B * s.T; ++t) ids.push_back(int32_t(t % s.T / 64));
  AttentionLayout layout;
  layout.q_document = layout.k_document = ids;
  const AttentionPositions documents = layout.tensors(s.B, s.T, s.Tk);
  auto work = [&](AttentionMask mask, const AttentionPositions* positions) {
    ops::reset_attention_work();
    run_backward(s, mask, in.q, in.k, in.v, in.dout, positions);  // a forward, then this
    return ops::attention_work();
  };
  const ops::AttentionWork block_causal = work(AttentionMask::Causal, &documents);
  EXPECT_EQ(block_causal.forward_scores, 16 * tile_scores);
  EXPECT_EQ(block_causal.backward_scores, 16 * tile_scores);
  const ops::AttentionWork per_document = work(AttentionMask::None, &documents);
  EXPECT_EQ(per_document.forward_scores, 16 * tile_scores);
  const ops::AttentionWork causal = work(AttentionMask::Causal, nullptr);
  EXPECT_EQ(causal.forward_scores, 136 * tile_scores);
  EXPECT_EQ(causal.backward_scores, 136 * tile_scores);
  const ops::AttentionWork full = work(AttentionMask::None, nullptr);
  EXPECT_EQ(full.forward_scores, 256 * tile_scores);
  EXPECT_EQ(full.backward_scores, 256 * tile_scores);

  const AttentionDims64 step{2, 64, 64, 2, 1, 8};
  AttentionLayout future;
  for (int32_t t = 0; t < 64; ++t) {
    future.q_position.push_back(t);
    future.k_position.push_back(64 + t);
  }
  const AttentionPositions positions = future.tensors(step.B, step.T, step.Tk);
  const Inputs few = random_inputs(step, 53);
  ops::reset_attention_work();
  const Forward f = run_forward(step, AttentionMask::Causal, few.q, few.k, few.v, &positions);
  const std::vector<Tensor> grads =
      run_backward(step, AttentionMask::Causal, few.q, few.k, few.v, few.dout, &positions);
  EXPECT_EQ(ops::attention_work().forward_scores, 0);
  EXPECT_EQ(ops::attention_work().backward_scores, 0);
  for (double x : to_values(f.out)) ASSERT_EQ(x, 0.0);
  for (double x : to_values(f.lse)) ASSERT_EQ(x, kNoKey);
  for (const Tensor& g : grads) {
    for (double x : to_values(g)) ASSERT_EQ(x, 0.0);  // written (=), over garbage
  }
}

// Calls fn, which must throw an Error whose message names `name`.
template <class Fn>
void expect_error_naming(Fn fn, const std::string& name) {
  try {
    fn();
    ADD_FAILURE() << "no error for " << name;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
  }
}

TEST(Attention, RejectsBadPositions) {
  const AttentionDims64 s{2, 8, 8, 4, 2, 4};
  const Inputs in = random_inputs(s, 59);
  Tensor out = Tensor::empty(s.q(), DType::F32), lse = Tensor::empty(s.lse(), DType::F32);
  Tensor ws = forward_workspace(s);
  const float scale = default_scale(s.hd);
  auto forward = [&](const AttentionPositions& p) {
    return [&, p] {
      ops::attention_forward(in.q, in.k, in.v, scale, AttentionMask::Causal, out, lse, ws, &p);
    };
  };
  const std::vector<int32_t> iota{0, 1, 2, 3, 4, 5, 6, 7};
  const Tensor t8 = i32_tensor(iota, {8});
  const Tensor docs = i32_tensor(documents_of({{3, 5}, {8}}), {2, 8});
  EXPECT_NO_THROW(forward({t8, t8, docs, docs})());
  expect_error_naming(forward({Tensor::zeros({8}, DType::F32), t8}), "q_position");
  expect_error_naming(forward({t8, i32_tensor({0, 1, 2, 3, 4, 5, 6, 7, 8}, {9})}), "k_position");
  expect_error_naming(forward({t8, Tensor()}), "k_position");  // one side only
  expect_error_naming(forward({Tensor(), t8}), "q_position");
  expect_error_naming(forward({{}, {}, docs, Tensor()}), "k_document");
  expect_error_naming(forward({{}, {}, Tensor(), docs}), "q_document");
  expect_error_naming(forward({{}, {}, t8, t8}), "q_document");  // [T], not [B, T]
  expect_error_naming(forward({{}, {}, docs, Tensor::zeros({2, 8}, DType::I64)}), "k_document");
  // The orders the tile skipping relies on.
  expect_error_naming(forward({i32_tensor({0, 1, 2, 3, 5, 4, 6, 7}, {8}), t8}), "q_position");
  expect_error_naming(forward({t8, i32_tensor({0, 1, 2, 3, 3, 4, 5, 6}, {8})}), "k_position");
  const Tensor back = i32_tensor({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0}, {2, 8});
  expect_error_naming(forward({{}, {}, docs, back}), "k_document");
  expect_error_naming(forward({{}, {}, back, docs}), "q_document");

  // The backward checks the same.
  Tensor dq = Tensor::empty(s.q(), DType::F32), dk = Tensor::empty(s.kv(), DType::F32),
         dv = Tensor::empty(s.kv(), DType::F32), bws = backward_workspace(s);
  const AttentionPositions one_sided{{}, {}, docs, Tensor()};
  expect_error_naming(
      [&] {
        ops::attention_backward(in.dout, in.q, in.k, in.v, out, lse, scale, AttentionMask::Causal,
                                dq, dk, dv, ops::Accumulate::No, bws, &one_sided);
      },
      "k_document");

  // Causal with positions takes keys of another length (a ring step); without, it throws.
  const AttentionDims64 fewer{2, 8, 5, 4, 2, 4};
  const Tensor k5 = random_tensor(fewer.kv(), 61);
  const AttentionPositions at{t8, i32_tensor({0, 2, 4, 6, 8}, {5})};
  EXPECT_NO_THROW(ops::attention_forward(in.q, k5, k5, scale, AttentionMask::Causal, out, lse,
                                         ws, &at));
  EXPECT_THROW(ops::attention_forward(in.q, k5, k5, scale, AttentionMask::Causal, out, lse, ws),
               Error);
}

}  // namespace
}  // namespace titan::testing
