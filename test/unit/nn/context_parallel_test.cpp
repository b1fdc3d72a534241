// How a sequence is dealt to the cp ranks (head-tail and contiguous), each rank's tokens and
// RoPE rows, and the documents cut at the EOS: the sequence layout the model builds once per
// microbatch (nn/context_parallel.h). The ring itself runs under mpirun
// (test/distributed/context_parallel_test.cpp).
#include "titan/nn/context_parallel.h"

#include <gtest/gtest.h>

#include "support/attention_reference.h"
#include "titan/core/error.h"

namespace titan::nn {
namespace {

// A cp rank's view without a group: its place and split; attention is not asked of it.
class Place final : public ContextParallel {
 public:
  Place(int64_t size, int64_t rank, SequenceSplit split)
      : size_(size), rank_(rank), split_(split) {}
  int64_t size() const override { return size_; }
  int64_t rank() const override { return rank_; }
  SequenceSplit split() const override { return split_; }
  void attention_forward(const Tensor&, const Tensor&, const Tensor&, float, const SequenceLayout&,
                         Tensor&, Tensor&) const override {
    TITAN_FAIL() << "not a group";
  }
  void attention_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                          const Tensor&, const Tensor&, float, const SequenceLayout&, Tensor&,
                          Tensor&, Tensor&) const override {
    TITAN_FAIL() << "not a group";
  }
  void all_reduce_max(Tensor&) const override { TITAN_FAIL() << "not a group"; }

 private:
  int64_t size_, rank_;
  SequenceSplit split_;
};

std::vector<int32_t> values(const Tensor& t) {
  return {t.data<int32_t>(), t.data<int32_t>() + t.numel()};
}

Tensor counting_tokens(int64_t B, int64_t T) {
  Tensor t = Tensor::empty({B, T}, DType::I64);
  for (int64_t i = 0; i < B * T; ++i) t.mutable_data<int64_t>()[i] = 100 + i;
  return t;
}

TEST(SequenceSplit, HeadTailGivesRankRChunksRAndTwoCpMinusOneMinusR) {
  // T = 16 over cp 2: chunks of 4; rank 0 holds chunks 0 and 3, rank 1 chunks 1 and 2.
  EXPECT_EQ(Place(2, 0, SequenceSplit::HeadTail).positions_of(0, 16),
            (std::vector<int32_t>{0, 1, 2, 3, 12, 13, 14, 15}));
  EXPECT_EQ(Place(2, 1, SequenceSplit::HeadTail).positions_of(1, 16),
            (std::vector<int32_t>{4, 5, 6, 7, 8, 9, 10, 11}));
  EXPECT_EQ(Place(2, 1, SequenceSplit::Contiguous).positions_of(1, 16),
            (std::vector<int32_t>{8, 9, 10, 11, 12, 13, 14, 15}));
  // Every position exactly once over the ranks, cp 4.
  std::vector<int> seen(64, 0);
  const Place cp4(4, 0, SequenceSplit::HeadTail);
  for (int64_t r = 0; r < 4; ++r) {
    for (const int32_t p : cp4.positions_of(r, 64)) ++seen[size_t(p)];
  }
  EXPECT_EQ(seen, std::vector<int>(64, 1));
  EXPECT_THROW(cp4.positions_of(0, 60), Error);  // 60 does not cut into 8 chunks
}

TEST(SequenceLayout, EachRankTakesItsTokensAndTheirRopeRows) {
  const Place cp(2, 1, SequenceSplit::HeadTail);
  const Tensor tokens = counting_tokens(2, 8);
  const Tensor mine = local_tokens(cp, tokens);
  ASSERT_EQ(mine.shape(), (Shape{2, 4}));
  // Rank 1 of 2 holds positions 2, 3, 4, 5 of each row.
  const std::vector<int64_t> want = {102, 103, 104, 105, 110, 111, 112, 113};
  EXPECT_EQ(std::vector<int64_t>(mine.data<int64_t>(), mine.data<int64_t>() + 8), want);

  Tensor freqs = Tensor::empty({8, 1, 2}, DType::F32);
  for (int64_t i = 0; i < 16; ++i) freqs.mutable_data<float>()[i] = float(i);
  const SequenceLayout seq = sequence_layout(cp, tokens, freqs, std::nullopt, Device::cpu());
  EXPECT_EQ(seq.batch, 2);
  ASSERT_EQ(seq.freqs.shape(), (Shape{4, 1, 2}));
  for (int64_t t = 0; t < 4; ++t) EXPECT_EQ(seq.freqs.data<float>()[2 * t], float(2 * (t + 2)));
  // One mask per owner: this rank's positions against each owner's, no documents.
  ASSERT_EQ(seq.masks.size(), 2u);
  EXPECT_EQ(values(seq.masks[0].q_position), (std::vector<int32_t>{2, 3, 4, 5}));
  EXPECT_EQ(values(seq.masks[0].k_position), (std::vector<int32_t>{0, 1, 6, 7}));
  EXPECT_FALSE(seq.masks[0].has_documents());
}

TEST(SequenceLayout, OneRankCausalIsThePlainMask) {
  const Tensor tokens = counting_tokens(1, 8);
  Tensor freqs = Tensor::zeros({16, 1, 2}, DType::F32);
  const SequenceLayout seq =
      sequence_layout(no_context_parallel(), tokens, freqs, std::nullopt, Device::cpu());
  EXPECT_TRUE(seq.masks.empty());
  EXPECT_EQ(seq.mask_against(0), nullptr);  // the kernels' unmasked fast path
  EXPECT_EQ(seq.freqs.shape(), (Shape{8, 1, 2}));
  EXPECT_EQ(local_tokens(no_context_parallel(), tokens).data<int64_t>(), tokens.data<int64_t>());
}

// torchtitan's rule: the EOS is the last token of its document; a document's id is the
// count of EOS before it. Positions are not reset per document.
TEST(SequenceLayout, DocumentsEndAtTheEosAndTravelWithTheChunks) {
  constexpr int64_t kEos = 9;
  Tensor tokens = Tensor::empty({1, 8}, DType::I64);
  const std::vector<int64_t> ids = {5, kEos, 6, 7, kEos, 8, kEos, kEos};
  std::copy(ids.begin(), ids.end(), tokens.mutable_data<int64_t>());
  const Tensor freqs = Tensor::zeros({8, 1, 2}, DType::F32);
  const std::vector<int32_t> whole = {0, 0, 1, 1, 1, 2, 2, 3};
  EXPECT_EQ(testing::documents_at_eos(ids, 1, 8, kEos), whole);

  const SequenceLayout one =
      sequence_layout(no_context_parallel(), tokens, freqs, int32_t(kEos), Device::cpu());
  ASSERT_EQ(one.masks.size(), 1u);
  EXPECT_FALSE(one.masks[0].has_positions());
  EXPECT_EQ(values(one.masks[0].q_document), whole);

  const Place cp(2, 0, SequenceSplit::HeadTail);  // positions 0, 1, 6, 7 and 2, 3, 4, 5
  const SequenceLayout seq = sequence_layout(cp, tokens, freqs, int32_t(kEos), Device::cpu());
  EXPECT_EQ(values(seq.masks[1].q_document), (std::vector<int32_t>{0, 0, 2, 3}));
  EXPECT_EQ(values(seq.masks[1].k_document), (std::vector<int32_t>{1, 1, 1, 2}));
  EXPECT_EQ(values(seq.masks[1].k_position), (std::vector<int32_t>{2, 3, 4, 5}));
}

}  // namespace
}  // namespace titan::nn
