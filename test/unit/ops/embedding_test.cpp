#include <gtest/gtest.h>

#include "op_harness.h"
#include "titan/ops/embedding.h"

namespace titan::testing {
namespace {

// Ids with repeats, so that the backward's scatter-add is exercised.
Tensor repeating_ids(int64_t n, int64_t vocab, uint64_t seed) {
  Tensor ids = Tensor::empty({n}, DType::I64);
  for (int64_t i = 0; i < n; ++i) ids.mutable_data<int64_t>()[i] = int64_t((seed * 7 + i * i * 3) % uint64_t(vocab));
  return ids;
}

// Inputs: ids [N], table [V, D]; the table is differentiable.
const bool registered = register_op_harness("embedding", OpHarness{
    .make_inputs = [](const OpCase& c, uint64_t seed) {
      const auto& dims = c.dims_as<EmbeddingDims>();
      return std::vector<Tensor>{repeating_ids(dims.N, dims.V, seed),
                                 random_tensor({dims.V, dims.D}, seed + 1)};
    },
    .input_names = {"ids", "table"},
    .differentiable = {false, true},
    .reference = [](const OpCase& c, const std::vector<Values>& in) {
      const auto& dims = c.dims_as<EmbeddingDims>();
      const int64_t N = dims.N, D = dims.D;
      Values y(size_t(N * D));
      for (int64_t n = 0; n < N; ++n)
        for (int64_t d = 0; d < D; ++d) y[n * D + d] = in[1][int64_t(in[0][n]) * D + d];
      return y;
    },
    .forward = [](const OpCase& c, const std::vector<Tensor>& in) {
      const auto& dims = c.dims_as<EmbeddingDims>();
      Tensor y = empty_like_input(in[1], {dims.N, dims.D});
      ops::embedding_forward(in[0], in[1], y);
      return y;
    },
    .backward = [](const OpCase&, const std::vector<Tensor>& in, const Tensor& dy) {
      Tensor dtable = zeros_like_input(in[1], in[1].shape());
      ops::embedding_backward_weight(in[0], dy, dtable);
      return std::vector<Tensor>{Tensor(), dtable};
    },
    // bf16 on the GPU: the forward copies bits (exact). A bf16 dtable is rounded after each
    // token added to a row: up to 4 tokens per row in these rows, so 3 roundings of partial
    // sums below 4, each off by <= 2^-8 * 4 = 0.016. An indexing bug is off by ~1.
    .bf16_tolerance = 5e-2,
});

// The vocab-parallel embedding's op: slices of the table (uneven) give lookups that sum to
// the whole table's and gradients that are the whole gradient's rows, bit for bit.
TEST(Embedding, TableSlicesSumToTheWholeLookup) {
  constexpr int64_t N = 12, V = 10, D = 3;
  const Tensor ids = repeating_ids(N, V, 3);
  const Tensor table = random_tensor({V, D}, 4), dout = random_tensor({N, D}, 5);
  Tensor whole = Tensor::empty({N, D}, DType::F32), dtable = Tensor::zeros({V, D}, DType::F32);
  ops::embedding_forward(ids, table, whole);
  ops::embedding_backward_weight(ids, dout, dtable);
  Values sum(size_t(N * D), 0.0);
  const int64_t firsts[] = {0, 4, 8, V};
  for (int s = 0; s < 3; ++s) {
    const int64_t first = firsts[s], rows = firsts[s + 1] - first;
    Tensor out = Tensor::empty({N, D}, DType::F32);
    Tensor dslice = Tensor::zeros({rows, D}, DType::F32);
    ops::embedding_slice_forward(ids, table.narrow(first, rows), first, out);
    ops::embedding_slice_backward_weight(ids, dout, first, dslice);
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += to_values(out)[i];
    EXPECT_EQ(to_values(dslice), to_values(dtable.narrow(first, rows))) << "rows from " << first;
  }
  EXPECT_EQ(sum, to_values(whole));
}

TEST(Embedding, RejectsIdOutsideVocabulary) {
  Tensor ids = Tensor::empty({2}, DType::I32);
  ids.mutable_data<int32_t>()[0] = 1;
  ids.mutable_data<int32_t>()[1] = 9;
  const Tensor table = random_tensor({4, 3}, 1);
  Tensor out = Tensor::empty({2, 3}, DType::F32);
  EXPECT_THROW(ops::embedding_forward(ids, table, out), Error);
}

TEST(Embedding, AcceptsInt32Ids) {
  Tensor ids = Tensor::empty({3}, DType::I32);
  for (int i = 0; i < 3; ++i) ids.mutable_data<int32_t>()[i] = 2 - i;
  const Tensor table = random_tensor({3, 4}, 1);
  Tensor out = Tensor::empty({3, 4}, DType::F32);
  ops::embedding_forward(ids, table, out);
  for (int d = 0; d < 4; ++d) EXPECT_EQ(out.data<float>()[d], table.data<float>()[2 * 4 + d]);
}

}  // namespace
}  // namespace titan::testing
