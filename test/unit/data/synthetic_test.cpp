// The synthetic token source: shapes and ranges, labels as inputs shifted by one, runs that
// repeat bitwise, seek equal to replay, and data-parallel ranks that split one global batch.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "titan/core/error.h"
#include "titan/data/synthetic.h"

namespace titan::data {
namespace {

std::vector<int64_t> values(const Tensor& t) {
  const int64_t* p = t.data<int64_t>();
  return std::vector<int64_t>(p, p + t.numel());
}

bool same(const TokenBatch& a, const TokenBatch& b) {
  return values(a.inputs) == values(b.inputs) && values(a.labels) == values(b.labels);
}

TEST(SyntheticBatchSource, ShapesDtypesAndIdsInVocabulary) {
  SyntheticBatchSource source(/*seed=*/3, /*vocab_size=*/37, /*batch=*/4, /*seq_len=*/16);
  const TokenBatch batch = source.next();
  for (const Tensor* t : {&batch.inputs, &batch.labels}) {
    EXPECT_EQ(t->dtype(), DType::I64);
    EXPECT_EQ(t->shape(), (Shape{4, 16}));
    for (int64_t id : values(*t)) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, 37);
    }
  }
  EXPECT_FALSE(batch.inputs.shares_storage_with(batch.labels));
}

TEST(SyntheticBatchSource, LabelsAreInputsShiftedByOne) {
  SyntheticBatchSource source(0, 2048, 3, 10);
  for (int b = 0; b < 3; ++b) {
    const TokenBatch batch = source.next();
    const std::vector<int64_t> inputs = values(batch.inputs), labels = values(batch.labels);
    for (int64_t row = 0; row < 3; ++row)
      for (int64_t t = 0; t + 1 < 10; ++t)
        EXPECT_EQ(labels[size_t(row * 10 + t)], inputs[size_t(row * 10 + t + 1)]);
  }
}

TEST(SyntheticBatchSource, RunsRepeatBitwise) {
  SyntheticBatchSource a(11, 2048, 2, 32), b(11, 2048, 2, 32);
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(same(a.next(), b.next())) << "batch " << i;
}

TEST(SyntheticBatchSource, SeekEqualsReplay) {
  SyntheticBatchSource replay(5, 2048, 2, 8);
  std::vector<TokenBatch> batches;
  for (int i = 0; i < 6; ++i) batches.push_back(replay.next());
  EXPECT_EQ(replay.batches_served(), 6);

  SyntheticBatchSource resumed(5, 2048, 2, 8);
  resumed.seek(4);
  EXPECT_EQ(resumed.batches_served(), 4);
  EXPECT_TRUE(same(resumed.next(), batches[4]));
  EXPECT_TRUE(same(resumed.next(), batches[5]));
  EXPECT_EQ(resumed.batches_served(), 6);
  resumed.seek(1);  // backwards too
  EXPECT_TRUE(same(resumed.next(), batches[1]));
  // Consecutive batches are not the same batch.
  EXPECT_FALSE(same(batches[0], batches[1]));
}

TEST(SyntheticBatchSource, DifferentSeedsGiveDifferentTokens) {
  SyntheticBatchSource a(1, 2048, 4, 64), b(2, 2048, 4, 64);
  const std::vector<int64_t> x = values(a.next().inputs), y = values(b.next().inputs);
  int64_t equal = 0;
  for (size_t i = 0; i < x.size(); ++i) equal += x[i] == y[i];
  EXPECT_LT(equal, int64_t(x.size()) / 20);  // chance alone: 1 in 2048
}

TEST(SyntheticBatchSource, TokensCoverTheVocabularyEvenly) {
  // 8 ids over 64 x 64 inputs: 512 each expected, standard deviation about 21.
  SyntheticBatchSource source(9, 8, 64, 64);
  std::vector<int64_t> counts(8, 0);
  for (int64_t id : values(source.next().inputs)) ++counts[size_t(id)];
  for (int64_t c : counts) {
    EXPECT_GT(c, 400);
    EXPECT_LT(c, 624);
  }
}

TEST(SyntheticBatchSource, DataParallelRanksSplitTheOneRankBatch) {
  // Two ranks of 2 rows read, between them, the rows of one rank with 4, batch by batch.
  SyntheticBatchSource whole(7, 2048, 4, 12);
  SyntheticBatchSource rank0(7, 2048, 2, 12, /*dp_rank=*/0, /*dp_degree=*/2);
  SyntheticBatchSource rank1(7, 2048, 2, 12, /*dp_rank=*/1, /*dp_degree=*/2);
  for (int i = 0; i < 3; ++i) {
    const TokenBatch w = whole.next(), r0 = rank0.next(), r1 = rank1.next();
    std::vector<int64_t> joined = values(r0.inputs), joined_labels = values(r0.labels);
    for (int64_t id : values(r1.inputs)) joined.push_back(id);
    for (int64_t id : values(r1.labels)) joined_labels.push_back(id);
    EXPECT_EQ(joined, values(w.inputs)) << "batch " << i;
    EXPECT_EQ(joined_labels, values(w.labels)) << "batch " << i;
  }
}

TEST(SyntheticBatchSource, DescribesItselfAndRejectsBadShapes) {
  const std::string line = SyntheticBatchSource(42, 2048, 8, 64).describe();
  EXPECT_NE(line.find("seed 42"), std::string::npos) << line;
  EXPECT_NE(line.find("vocab 2048"), std::string::npos) << line;
  EXPECT_THROW(SyntheticBatchSource(0, 0, 1, 1), Error);
  EXPECT_THROW(SyntheticBatchSource(0, 10, 0, 1), Error);
  EXPECT_THROW(SyntheticBatchSource(0, 10, 1, 0), Error);
  EXPECT_THROW(SyntheticBatchSource(0, 10, 1, 1, 2, 2), Error);
  SyntheticBatchSource source(0, 10, 1, 1);
  EXPECT_THROW(source.seek(-1), Error);
}

}  // namespace
}  // namespace titan::data
