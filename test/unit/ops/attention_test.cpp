#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "op_harness.h"
#include "titan/core/copy.h"
#include "titan/core/threads.h"
#include "titan/ops/attention.h"

namespace titan::testing {
namespace {

using ops::AttentionMask;

struct AttentionShape {
  int64_t B, T, Tk, Hq, Hkv, hd;
  Shape q() const { return {B, T, Hq, hd}; }
  Shape kv() const { return {B, Tk, Hkv, hd}; }
  Shape lse() const { return {B, Hq, T}; }
};

float default_scale(int64_t hd) { return float(1.0 / std::sqrt(double(hd))); }

// Naive float64 attention: explicit scores and softmax over the whole row of keys.
Values reference_attention(const AttentionShape& s, AttentionMask mask, float scale,
                           const Values& q, const Values& k, const Values& v,
                           Values* lse = nullptr) {
  Values out(size_t(s.B * s.T * s.Hq * s.hd), 0.0);
  if (lse) lse->assign(size_t(s.B * s.Hq * s.T), 0.0);
  Values p(size_t(s.Tk));
  for (int64_t b = 0; b < s.B; ++b) {
    for (int64_t h = 0; h < s.Hq; ++h) {
      const int64_t g = h / (s.Hq / s.Hkv);
      for (int64_t i = 0; i < s.T; ++i) {
        const int64_t n = mask == AttentionMask::Causal ? i + 1 : s.Tk;
        const double* qi = q.data() + ((b * s.T + i) * s.Hq + h) * s.hd;
        double max = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < n; ++j) {
          const double* kj = k.data() + ((b * s.Tk + j) * s.Hkv + g) * s.hd;
          double dot = 0;
          for (int64_t e = 0; e < s.hd; ++e) dot += qi[e] * kj[e];
          p[j] = double(scale) * dot;
          max = std::max(max, p[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j < n; ++j) sum += (p[j] = std::exp(p[j] - max));
        double* oi = out.data() + ((b * s.T + i) * s.Hq + h) * s.hd;
        for (int64_t j = 0; j < n; ++j) {
          const double* vj = v.data() + ((b * s.Tk + j) * s.Hkv + g) * s.hd;
          for (int64_t e = 0; e < s.hd; ++e) oi[e] += p[j] / sum * vj[e];
        }
        if (lse) (*lse)[size_t((b * s.Hq + h) * s.T + i)] = max + std::log(sum);
      }
    }
  }
  return out;
}

// Workspaces live on the inputs' device, sized for it (the GPU's needs differ from the
// CPU's per-thread tiles).
Tensor forward_workspace(const AttentionShape& s, Device device = Device::cpu()) {
  return Tensor::empty({ops::attention_forward_workspace_bytes(device, s.B, s.T, s.Hq, s.Hkv,
                                                               s.hd, thread_count())},
                       DType::U8, device);
}
Tensor backward_workspace(const AttentionShape& s, Device device = Device::cpu()) {
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
Forward run_forward(const AttentionShape& s, AttentionMask mask, const Tensor& q, const Tensor& k,
                    const Tensor& v) {
  Forward f{empty_like_input(q, s.q()), f32_beside(q, s.lse())};
  Tensor ws = forward_workspace(s, q.device());
  ops::attention_forward(q, k, v, default_scale(s.hd), mask, f.out, f.lse, ws);
  return f;
}

std::vector<Tensor> run_backward(const AttentionShape& s, AttentionMask mask, const Tensor& q,
                                 const Tensor& k, const Tensor& v, const Tensor& dout) {
  const Forward f = run_forward(s, mask, q, k, v);
  Tensor dq = garbage_like_input(q, s.q()), dk = garbage_like_input(k, s.kv()),
         dv = garbage_like_input(v, s.kv());
  Tensor ws = backward_workspace(s, q.device());
  ops::attention_backward(dout, q, k, v, f.out, f.lse, default_scale(s.hd), mask, dq, dk, dv,
                          ops::Accumulate::No, ws);
  return {dq, dk, dv};
}

AttentionShape shape_of(const OpCase& c) {
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
      const AttentionShape s = shape_of(c);
      return std::vector<Tensor>{random_tensor(s.q(), seed, 2.0f), random_tensor(s.kv(), seed + 1),
                                 random_tensor(s.kv(), seed + 2)};
    },
    .input_names = {"q", "k", "v"},
    .differentiable = {true, true, true},
    .reference = [](const OpCase& c, const std::vector<Values>& in) {
      return reference_attention(shape_of(c), mask_of(c), default_scale(shape_of(c).hd), in[0],
                                 in[1], in[2]);
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
    .cuda_bf16_tolerance = 2e-2,
});

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.bytes() == b.bytes() && std::memcmp(a.raw_data(), b.raw_data(), size_t(a.bytes())) == 0;
}

struct Inputs {
  Tensor q, k, v, dout;
};
Inputs random_inputs(const AttentionShape& s, uint64_t seed) {
  return {random_tensor(s.q(), seed, 2.0f), random_tensor(s.kv(), seed + 1),
          random_tensor(s.kv(), seed + 2), random_tensor(s.q(), seed + 3)};
}

// Also covers hd = 64, where every tile product runs its register-blocked path at any
// vector width (the op-case rows keep hd small for the gradient check).
TEST(Attention, LogSumExpMatchesFloat64Reference) {
  for (const AttentionShape& s : {AttentionShape{2, 67, 67, 4, 2, 16},
                                  AttentionShape{1, 130, 130, 2, 1, 64}}) {
    const Inputs in = random_inputs(s, 5);
    for (AttentionMask mask : {AttentionMask::Causal, AttentionMask::None}) {
      const std::string what = std::string(mask == AttentionMask::Causal ? "causal" : "full") +
                               " hd " + std::to_string(s.hd);
      const Forward f = run_forward(s, mask, in.q, in.k, in.v);
      Values lse;
      const Values out = reference_attention(s, mask, default_scale(s.hd), to_values(in.q),
                                             to_values(in.k), to_values(in.v), &lse);
      expect_close(to_values(f.lse), lse, 1e-6, what + " lse");
      expect_close(to_values(f.out), out, 1e-5, what + " out");
    }
  }
}

TEST(Attention, FullAttentionTakesKeysOfAnotherLength) {
  const AttentionShape s{1, 20, 100, 3, 1, 8};  // keys end on a partial block
  const Inputs in = random_inputs(s, 7);
  const float scale = default_scale(s.hd);
  auto reference = [&](const std::vector<Values>& x) {
    return reference_attention(s, AttentionMask::None, scale, x[0], x[1], x[2]);
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
  const AttentionShape s{1, 70, 70, 4, 2, 8};
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
  const AttentionShape whole{2, 45, 100, 4, 2, 8};
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
    AttentionShape half = whole;
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
  const AttentionShape s{2, 130, 130, 4, 2, 16};
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
  const AttentionShape s{2, 130, 130, 4, 2, 16};
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
  const AttentionShape s{1, 4096, 4096, 2, 1, 8};
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

  // Rows 0, 1,000 and 4,095 of each head against float64.
  const Values q = to_values(in.q), k = to_values(in.k), v = to_values(in.v);
  const Values o = to_values(out), l = to_values(lse);
  for (int64_t h = 0; h < s.Hq; ++h) {
    for (int64_t i : {int64_t(0), int64_t(1000), s.T - 1}) {
      double max = -1e300, sum = 0;
      Values p(size_t(i + 1)), expected(size_t(s.hd), 0.0);
      for (int64_t j = 0; j <= i; ++j) {
        double dot = 0;
        for (int64_t e = 0; e < s.hd; ++e) dot += q[(i * s.Hq + h) * s.hd + e] * k[j * s.hd + e];
        max = std::max(max, p[j] = scale * dot);
      }
      for (int64_t j = 0; j <= i; ++j) sum += (p[j] = std::exp(p[j] - max));
      for (int64_t j = 0; j <= i; ++j) {
        for (int64_t e = 0; e < s.hd; ++e) expected[e] += p[j] / sum * v[j * s.hd + e];
      }
      const Values actual(o.begin() + (i * s.Hq + h) * s.hd, o.begin() + (i * s.Hq + h + 1) * s.hd);
      expect_close(actual, expected, 1e-5, "out row " + std::to_string(i));
      EXPECT_NEAR(l[h * s.T + i], max + std::log(sum), 1e-5) << "lse row " << i;
    }
  }
  for (const Tensor* g : {&dq, &dk, &dv}) {
    for (double x : to_values(*g)) ASSERT_TRUE(std::isfinite(x));
  }
}

TEST(Attention, RejectsBadInputs) {
  const AttentionShape s{1, 8, 8, 4, 2, 4};
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

}  // namespace
}  // namespace titan::testing
