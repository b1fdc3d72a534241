#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "op_harness.h"
#include "titan/core/allocator.h"
#include "titan/core/copy.h"
#include "titan/ops/cross_entropy.h"
#include "titan/ops/matmul.h"

namespace titan::testing {
namespace {

using ops::Accumulate;

Tensor make_labels(int64_t tokens, int64_t vocab, uint32_t flags, uint64_t seed) {
  Tensor labels = Tensor::empty({tokens}, (flags & kLabelsI64) ? DType::I64 : DType::I32);
  for (int64_t n = 0; n < tokens; ++n) {
    int64_t label = int64_t((seed * 7 + uint64_t(n) * 13) % uint64_t(vocab));
    if ((flags & kSomeIgnored) && n % 3 == 1) label = ops::kIgnoreIndex;
    if (labels.dtype() == DType::I64) {
      labels.mutable_data<int64_t>()[n] = label;
    } else {
      labels.mutable_data<int32_t>()[n] = int32_t(label);
    }
  }
  return labels;
}

// Float64 loss sum of logits rows [N, V] (row n at logits[n * V]) against labels.
double reference_loss(const Values& logits, const Values& labels, int64_t N, int64_t V) {
  double loss = 0;
  for (int64_t n = 0; n < N; ++n) {
    if (labels[n] == double(ops::kIgnoreIndex)) continue;
    double max = -INFINITY;
    for (int64_t v = 0; v < V; ++v) max = std::max(max, logits[n * V + v]);
    double sum = 0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(logits[n * V + v] - max);
    loss += max + std::log(sum) - logits[n * V + int64_t(labels[n])];
  }
  return loss;
}

Values reference_logits(const Values& h, const Values& weight, int64_t N, int64_t D, int64_t V) {
  Values logits(size_t(N * V));
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t v = 0; v < V; ++v) {
      double dot = 0;
      for (int64_t d = 0; d < D; ++d) dot += h[n * D + d] * weight[v * D + d];
      logits[n * V + v] = dot;
    }
  }
  return logits;
}

// The workspace a row asks for, f32 beside h: its chunk of tokens when given, else the
// default budget's.
Tensor make_workspace(const OpCase& c, const Tensor& h) {
  const auto& dims = c.dims_as<CrossEntropyDims>();
  if (dims.chunk > 0) return f32_beside(h, {dims.chunk, dims.V});
  return f32_beside(h, ops::cross_entropy_workspace_shape(dims.N, dims.V));
}

// The backward's grad_scale is the output gradient dy [1], wherever it lives.
float host_scalar(const Tensor& dy) {
  if (dy.device().is_cpu()) return float(to_values(dy)[0]);
  Tensor host = Tensor::empty(dy.shape(), dy.dtype());
  copy_tensor(dy, host);
  return float(to_values(host)[0]);
}

// Inputs: h [N, D], weight [V, D], labels [N]. Output: the loss sum as [1]; dy [1] is the backward's grad_scale.
const bool registered = register_op_harness("cross_entropy", OpHarness{
    .make_inputs = [](const OpCase& c, uint64_t seed) {
      const auto& dims = c.dims_as<CrossEntropyDims>();
      const int64_t N = dims.N, D = dims.D, V = dims.V;
      return std::vector<Tensor>{random_tensor({N, D}, seed), random_tensor({V, D}, seed + 1),
                                 make_labels(N, V, c.flags, seed)};
    },
    .input_names = {"h", "weight", "labels"},
    .differentiable = {true, true, false},
    .reference = [](const OpCase& c, const std::vector<Values>& in) {
      const auto& dims = c.dims_as<CrossEntropyDims>();
      const int64_t N = dims.N, D = dims.D, V = dims.V;
      return Values{reference_loss(reference_logits(in[0], in[1], N, D, V), in[2], N, V)};
    },
    .forward = [](const OpCase& c, const std::vector<Tensor>& in) {
      const int64_t N = c.dims_as<CrossEntropyDims>().N;
      Tensor loss = f32_beside(in[0], {1}), lse = f32_beside(in[0], {N});
      Tensor workspace = make_workspace(c, in[0]);
      ops::cross_entropy_forward(in[0], in[1], in[2], loss, lse, workspace);
      return loss;
    },
    .backward = [](const OpCase& c, const std::vector<Tensor>& in, const Tensor& dy) {
      const int64_t N = c.dims_as<CrossEntropyDims>().N;
      Tensor loss = f32_beside(in[0], {1}), lse = f32_beside(in[0], {N});
      Tensor workspace = make_workspace(c, in[0]);
      ops::cross_entropy_forward(in[0], in[1], in[2], loss, lse, workspace);
      // dh is an activation gradient (h's dtype); dweight a parameter gradient (f32).
      Tensor dh = empty_like_input(in[0], in[0].shape());
      Tensor dweight = f32_zeros_beside(in[1], in[1].shape());
      ops::cross_entropy_backward(in[0], in[1], in[2], lse, host_scalar(dy), dh, dweight,
                                  Accumulate::No, workspace);
      return std::vector<Tensor>{dh, dweight, Tensor()};
    },
    // bf16 on the GPU: the loss sees the CPU's logits up to GEMM summation order (f32
    // accumulation of exact bf16 products), so it holds to ~1e-6; the backward rounds
    // dlogits to bf16 (2^-9 relative) before its GEMMs and dh is stored in bf16 (another
    // 2^-9), so dh and dweight move by up to ~2^-8 of sum |dlogits| |W| <= 2 |grad_scale|
    // max |W|, about 1e-2 of max(|value|, 1) at the table's unit-scale inputs.
    .bf16_tolerance = 1e-2,
});

// Inputs: logits [N, V] (scaled up so that the softmax is not flat), labels.
const bool registered_logits = register_op_harness("cross_entropy_logits", OpHarness{
    .make_inputs = [](const OpCase& c, uint64_t seed) {
      const auto& dims = c.dims_as<CrossEntropyLogitsDims>();
      return std::vector<Tensor>{random_tensor({dims.N, dims.V}, seed, 4.0f),
                                 make_labels(dims.N, dims.V, c.flags, seed)};
    },
    .input_names = {"logits", "labels"},
    .differentiable = {true, false},
    .reference = [](const OpCase& c, const std::vector<Values>& in) {
      const auto& dims = c.dims_as<CrossEntropyLogitsDims>();
      return Values{reference_loss(in[0], in[1], dims.N, dims.V)};
    },
    .forward = [](const OpCase& c, const std::vector<Tensor>& in) {
      const int64_t N = c.dims_as<CrossEntropyLogitsDims>().N;
      Tensor loss = f32_beside(in[0], {1}), lse = f32_beside(in[0], {N});
      ops::cross_entropy_logits_forward(in[0], in[1], loss, lse);
      return loss;
    },
    .backward = [](const OpCase& c, const std::vector<Tensor>& in, const Tensor& dy) {
      const int64_t N = c.dims_as<CrossEntropyLogitsDims>().N;
      Tensor loss = f32_beside(in[0], {1}), lse = f32_beside(in[0], {N});
      ops::cross_entropy_logits_forward(in[0], in[1], loss, lse);
      Tensor dlogits = empty_like_input(in[0], in[0].shape());
      ops::cross_entropy_logits_backward(in[0], in[1], lse, host_scalar(dy), dlogits,
                                         Accumulate::No);
      return std::vector<Tensor>{dlogits, Tensor()};
    },
    // bf16 on the GPU: the loss is the CPU's f32 arithmetic on the same (bf16) logits, and
    // dlogits, |dlogits| <= |grad_scale|, is stored in bf16: 2^-9 relative, under 1e-2.
    .bf16_tolerance = 1e-2,
});

// Everything one fused forward + backward touches, for the tests below.
struct Problem {
  Tensor h, weight, labels, loss, lse, dh, dweight;
  Problem(int64_t N, int64_t D, int64_t V, uint32_t flags, uint64_t seed = 5)
      : h(random_tensor({N, D}, seed)),
        weight(random_tensor({V, D}, seed + 1)),
        labels(make_labels(N, V, flags, seed)),
        loss(Tensor::empty({1}, DType::F32)),
        lse(Tensor::empty({N}, DType::F32)),
        dh(Tensor::empty({N, D}, DType::F32)),
        dweight(Tensor::zeros({V, D}, DType::F32)) {}
  void run(Tensor& workspace, float grad_scale) {
    ops::cross_entropy_forward(h, weight, labels, loss, lse, workspace);
    ops::cross_entropy_backward(h, weight, labels, lse, grad_scale, dh, dweight, Accumulate::No,
                                workspace);
  }
};

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.bytes() == b.bytes() && std::memcmp(a.raw_data(), b.raw_data(), size_t(a.bytes())) == 0;
}

TEST(CrossEntropy, WorkspaceStaysOneChunkAtLlama3Vocab) {
  constexpr int64_t kVocab = 128256, kDim = 8;
  // One chunk of logits: the same bytes for 1,024 and 4,096 tokens, within the budget,
  // where the whole [4096, V] logits would be 2 GiB.
  const int64_t workspace_bytes = ops::cross_entropy_workspace_bytes(4096, kVocab);
  EXPECT_EQ(workspace_bytes, ops::cross_entropy_workspace_bytes(1024, kVocab));
  EXPECT_LE(workspace_bytes, ops::kCrossEntropyChunkBudgetBytes);
  const int64_t chunk = ops::cross_entropy_workspace_shape(4096, kVocab)[0];

  // Forward + backward at two token counts, each several chunks and a short last one (at
  // N = 4,096 the ops would compute 2 GiB of logits four times over, too slow for the
  // suite; the memory story is the same). The allocator's peak while the ops run is what
  // the caller holds: the ops allocate nothing, and the workspace does not grow with N.
  Allocator& allocator = allocator_for(Device::cpu());
  std::vector<int64_t> workspace_held;
  for (int64_t tokens : {2 * chunk + 5, 4 * chunk + 5}) {
    const int64_t before = allocator.stats().current_bytes;
    Problem p(tokens, kDim, kVocab, kSomeIgnored);
    const int64_t problem_held = allocator.stats().current_bytes - before;
    Tensor workspace =
        Tensor::empty(ops::cross_entropy_workspace_shape(tokens, kVocab), DType::F32);
    EXPECT_EQ(workspace.bytes(), workspace_bytes);
    workspace_held.push_back(allocator.stats().current_bytes - before - problem_held);
    allocator.reset_peak();
    p.run(workspace, 1.0f / float(ops::cross_entropy_valid_tokens(p.labels)));
    EXPECT_EQ(allocator.stats().peak_bytes, before + problem_held + workspace_held.back())
        << tokens << " tokens";
    EXPECT_TRUE(std::isfinite(p.loss.data<float>()[0]));
  }
  EXPECT_EQ(workspace_held[0], workspace_held[1]);
  EXPECT_LE(workspace_held[0], workspace_bytes + workspace_bytes / 8);  // allocator rounding
}

// The vocab-parallel loss's op: slices of the vocabulary (uneven, as tensor parallelism
// cuts one that tp does not divide) give per-token statistics that combine into the whole
// lse and loss, and backward pieces that sum to dh and stack into dweight.
TEST(CrossEntropy, VocabSlicesCombineIntoTheWholeLoss) {
  constexpr int64_t N = 9, D = 5, V = 23;
  Problem p(N, D, V, kSomeIgnored);
  Tensor whole_workspace = Tensor::empty({4, V}, DType::F32);
  p.run(whole_workspace, 0.5f);
  const int64_t firsts[] = {0, 8, 16, V};
  std::vector<double> max(N, -INFINITY), sum(N, 0.0), label_logit(N, 0.0);
  std::vector<Values> maxes, sums;
  for (int s = 0; s < 3; ++s) {
    const int64_t first = firsts[s], rows = firsts[s + 1] - first;
    Tensor workspace = Tensor::empty({4, rows}, DType::F32);
    Tensor m = Tensor::empty({N}, DType::F32), e = Tensor::empty({N}, DType::F32);
    Tensor z = Tensor::empty({N}, DType::F32);
    ops::cross_entropy_slice_forward(p.h, p.weight.narrow(first, rows), p.labels, {first, V}, m,
                                     e, z, workspace);
    maxes.push_back(to_values(m));
    sums.push_back(to_values(e));
    for (int64_t n = 0; n < N; ++n) {
      max[size_t(n)] = std::max(max[size_t(n)], maxes.back()[size_t(n)]);
      label_logit[size_t(n)] += to_values(z)[size_t(n)];
    }
  }
  Tensor lse = Tensor::empty({N}, DType::F32);
  double loss = 0;
  const Values labels = to_values(p.labels);
  for (size_t n = 0; n < size_t(N); ++n) {
    for (int s = 0; s < 3; ++s) sum[n] += sums[s][n] * std::exp(maxes[s][n] - max[n]);
    lse.mutable_data<float>()[n] = float(max[n] + std::log(sum[n]));
    if (labels[n] != double(ops::kIgnoreIndex)) loss += lse.data<float>()[n] - label_logit[n];
  }
  expect_close(to_values(lse), to_values(p.lse), 1e-6, "lse");
  EXPECT_NEAR(loss, to_values(p.loss)[0], 1e-5 * std::abs(to_values(p.loss)[0]));
  Values dh(size_t(N * D), 0.0);
  for (int s = 0; s < 3; ++s) {
    const int64_t first = firsts[s], rows = firsts[s + 1] - first;
    Tensor workspace = Tensor::empty({4, rows}, DType::F32);
    Tensor dh_slice = Tensor::empty({N, D}, DType::F32);
    Tensor dweight = Tensor::zeros({rows, D}, DType::F32);
    ops::cross_entropy_slice_backward(p.h, p.weight.narrow(first, rows), p.labels, {first, V},
                                      p.lse, 0.5f, &dh_slice, &dweight, Accumulate::No, workspace);
    for (size_t i = 0; i < dh.size(); ++i) dh[i] += to_values(dh_slice)[i];
    expect_close(to_values(dweight), to_values(p.dweight.narrow(first, rows)), 1e-6,
                 "dweight rows from " + std::to_string(first));
  }
  expect_close(dh, to_values(p.dh), 1e-6, "dh summed over the slices");
}

TEST(CrossEntropy, WorkspaceShapeFollowsBudget) {
  EXPECT_EQ(ops::cross_entropy_workspace_shape(4096, 32000), (Shape{262, 32000}));
  EXPECT_EQ(ops::cross_entropy_workspace_shape(100, 32000), (Shape{100, 32000}));
  EXPECT_EQ(ops::cross_entropy_workspace_shape(0, 7), (Shape{1, 7}));
  EXPECT_EQ(ops::cross_entropy_workspace_shape(50, 1000, 1), (Shape{1, 1000}));  // at least 1
  EXPECT_EQ(ops::cross_entropy_workspace_bytes(50, 1000, 12000), 3 * 1000 * 4);
}

TEST(CrossEntropy, ChunkSizeDoesNotChangeResults) {
  constexpr int64_t N = 11, D = 6, V = 37;
  Problem whole(N, D, V, kSomeIgnored), chunked(N, D, V, kSomeIgnored);
  Tensor one_chunk = Tensor::empty({N, V}, DType::F32);
  Tensor chunks_of_4 = Tensor::empty({4, V}, DType::F32);
  whole.run(one_chunk, 0.25f);
  chunked.run(chunks_of_4, 0.25f);
  // Each token's loss and dh come from its own logits row, so only the GEMM library's
  // blocking could move their bits; dweight sums over chunks in another order.
  expect_close(to_values(chunked.loss), to_values(whole.loss), 1e-7, "loss");
  expect_close(to_values(chunked.lse), to_values(whole.lse), 1e-7, "lse");
  expect_close(to_values(chunked.dh), to_values(whole.dh), 1e-7, "dh");
  expect_close(to_values(chunked.dweight), to_values(whole.dweight), 1e-6, "dweight");
}

TEST(CrossEntropy, BackwardHalvesMatchCombinedBackward) {
  constexpr int64_t N = 9, D = 5, V = 23;
  Problem p(N, D, V, kSomeIgnored | kLabelsI64);
  Tensor workspace = Tensor::empty({4, V}, DType::F32);
  p.run(workspace, 0.5f);
  Tensor dh = Tensor::empty({N, D}, DType::F32), dweight = Tensor::zeros({V, D}, DType::F32);
  ops::cross_entropy_backward_input(p.h, p.weight, p.labels, p.lse, 0.5f, dh, Accumulate::No,
                                    workspace);
  ops::cross_entropy_backward_weight(p.h, p.weight, p.labels, p.lse, 0.5f, dweight, workspace);
  EXPECT_TRUE(same_bits(dh, p.dh));
  EXPECT_TRUE(same_bits(dweight, p.dweight));
}

// The training step's call: one logits GEMM per chunk for the loss and its gradients, the
// same bits as the forward then the backward (several chunks, a short last one, ignored
// tokens, dh accumulated into what it held).
TEST(CrossEntropy, ForwardBackwardIsForwardThenBackward) {
  constexpr int64_t N = 11, D = 6, V = 37;
  for (const Accumulate accumulate : {Accumulate::No, Accumulate::Yes}) {
    Problem apart(N, D, V, kSomeIgnored | kLabelsI64), fused(N, D, V, kSomeIgnored | kLabelsI64);
    apart.dh = random_tensor({N, D}, 9);
    fused.dh = random_tensor({N, D}, 9);
    Tensor workspace = Tensor::empty({4, V}, DType::F32);
    ops::cross_entropy_forward(apart.h, apart.weight, apart.labels, apart.loss, apart.lse,
                               workspace);
    ops::cross_entropy_backward(apart.h, apart.weight, apart.labels, apart.lse, 0.125f, apart.dh,
                                apart.dweight, accumulate, workspace);
    ops::cross_entropy_forward_backward(fused.h, fused.weight, fused.labels, 0.125f, fused.loss,
                                        fused.lse, fused.dh, fused.dweight, accumulate,
                                        workspace);
    EXPECT_TRUE(same_bits(fused.loss, apart.loss));
    EXPECT_TRUE(same_bits(fused.lse, apart.lse));
    EXPECT_TRUE(same_bits(fused.dh, apart.dh));
    EXPECT_TRUE(same_bits(fused.dweight, apart.dweight));
  }
  Problem p(N, D, V, 0);
  Tensor workspace = Tensor::empty({4, V}, DType::F32), wrong = Tensor::empty({N}, DType::F32);
  EXPECT_THROW(ops::cross_entropy_forward_backward(p.h, p.weight, p.labels, 1.0f, p.loss, p.lse,
                                                   wrong, p.dweight, Accumulate::No, workspace),
               Error);
}

TEST(CrossEntropy, GradientsAccumulateWhenAsked) {
  constexpr int64_t N = 6, D = 4, V = 13;
  Problem p(N, D, V, 0);
  Tensor workspace = Tensor::empty({4, V}, DType::F32);
  p.run(workspace, 1.0f);
  Tensor dh = random_tensor({N, D}, 8);
  Values expected_dh = to_values(dh);
  for (size_t i = 0; i < expected_dh.size(); ++i) expected_dh[i] += to_values(p.dh)[i];
  // dweight already holds one backward; a second adds the same again.
  const Values once = to_values(p.dweight);
  ops::cross_entropy_backward(p.h, p.weight, p.labels, p.lse, 1.0f, dh, p.dweight,
                              Accumulate::Yes, workspace);
  expect_close(to_values(dh), expected_dh, 1e-6, "dh += ");
  Values twice = once;
  for (double& v : twice) v *= 2;
  expect_close(to_values(p.dweight), twice, 1e-6, "dweight after two calls");
}

TEST(CrossEntropy, IgnoredTokensContributeNothing) {
  constexpr int64_t N = 4, D = 3, V = 5;
  Problem p(N, D, V, 0);
  for (int64_t n = 0; n < N; ++n) p.labels.mutable_data<int32_t>()[n] = int32_t(ops::kIgnoreIndex);
  EXPECT_EQ(ops::cross_entropy_valid_tokens(p.labels), 0);
  Tensor workspace = Tensor::empty({3, V}, DType::F32);
  p.dh = random_tensor({N, D}, 3);  // must be overwritten with zeros
  p.run(workspace, 1.0f);
  EXPECT_EQ(p.loss.data<float>()[0], 0.0f);
  for (double v : to_values(p.dh)) EXPECT_EQ(v, 0.0);
  for (double v : to_values(p.dweight)) EXPECT_EQ(v, 0.0);
}

TEST(CrossEntropy, CountsValidTokens) {
  EXPECT_EQ(ops::cross_entropy_valid_tokens(make_labels(10, 7, kSomeIgnored, 1)), 7);
  EXPECT_EQ(ops::cross_entropy_valid_tokens(make_labels(10, 7, kSomeIgnored | kLabelsI64, 1)), 7);
  EXPECT_EQ(ops::cross_entropy_valid_tokens(make_labels(10, 7, 0, 1)), 10);
}

TEST(CrossEntropy, FusedMatchesLossOnMaterializedLogits) {
  constexpr int64_t N = 7, D = 8, V = 19;
  Problem p(N, D, V, kSomeIgnored);
  Tensor workspace = Tensor::empty({3, V}, DType::F32);
  p.run(workspace, 0.125f);
  Tensor logits = Tensor::empty({N, V}, DType::F32);
  ops::linear_forward(p.h, p.weight, logits);
  Tensor loss = Tensor::empty({1}, DType::F32), lse = Tensor::empty({N}, DType::F32);
  ops::cross_entropy_logits_forward(logits, p.labels, loss, lse);
  EXPECT_FLOAT_EQ(loss.data<float>()[0], p.loss.data<float>()[0]);
  Tensor dlogits = Tensor::empty({N, V}, DType::F32), dh = Tensor::empty({N, D}, DType::F32);
  ops::cross_entropy_logits_backward(logits, p.labels, lse, 0.125f, dlogits, Accumulate::No);
  ops::linear_backward_input(dlogits, p.weight, dh, Accumulate::No);
  expect_close(to_values(dh), to_values(p.dh), 1e-6, "dh through materialized logits");
}

TEST(CrossEntropy, RejectsBadLabelsAndWorkspace) {
  constexpr int64_t N = 3, D = 2, V = 5;
  Problem p(N, D, V, 0);
  Tensor workspace = Tensor::empty({2, V}, DType::F32);
  auto forward = [&](const Tensor& labels, Tensor& ws) {
    ops::cross_entropy_forward(p.h, p.weight, labels, p.loss, p.lse, ws);
  };
  p.labels.mutable_data<int32_t>()[1] = int32_t(V);  // one past the vocabulary
  EXPECT_THROW(forward(p.labels, workspace), Error);
  p.labels.mutable_data<int32_t>()[1] = -1;  // negative, not the ignore index
  EXPECT_THROW(forward(p.labels, workspace), Error);
  p.labels.mutable_data<int32_t>()[1] = 0;
  Tensor wrong_vocab = Tensor::empty({2, V + 1}, DType::F32);
  EXPECT_THROW(forward(p.labels, wrong_vocab), Error);
  EXPECT_THROW(forward(random_tensor({N}, 1), workspace), Error);  // f32 labels
  EXPECT_NO_THROW(forward(p.labels, workspace));
}

}  // namespace
}  // namespace titan::testing
