// Seeded random tokens of the model's vocabulary: a data source that needs no files, for
// tests, benchmarks and smoke runs (Megatron's mock dataset plays the same part).
//
//   SyntheticBatchSource source(/*seed=*/0, /*vocab_size=*/2048, /*batch=*/8, /*seq_len=*/64);
//   TokenBatch batch = source.next();     // [8, 64] inputs and labels, ids in [0, 2048)
//
// Every token is a pure function of (seed, global sequence number, position) through
// Philox (core/philox.h): sequence r of batch i on data-parallel rank d of n is global
// sequence (i * n + d) * batch + r, and it is a window of seq_len + 1 tokens cut into
// inputs and labels as every source does (batch_source.h). So
//   - seek is O(1) and a run repeats bitwise, resumed or not;
//   - n ranks with `batch` rows each read, between them, exactly the rows one rank with
//     n * batch rows reads: any data-parallel layout trains on the same tokens.
// Tokens are uniform over the vocabulary: the loss starts near ln(vocab_size) and, the
// data being noise, cannot go far below it.
#pragma once

#include <cstdint>
#include <string>

#include "titan/data/batch_source.h"

namespace titan::data {

class SyntheticBatchSource final : public BatchSource {
 public:
  SyntheticBatchSource(uint64_t seed, int64_t vocab_size, int64_t batch, int64_t seq_len,
                       int64_t dp_rank = 0, int64_t dp_degree = 1);

  TokenBatch next() override;
  std::string describe() const override;
  int64_t batches_served() const override { return batches_served_; }
  void seek(int64_t batches) override;

 private:
  uint64_t seed_;
  int64_t vocab_size_;
  int64_t batch_;
  int64_t seq_len_;
  int64_t dp_rank_;
  int64_t dp_degree_;
  int64_t batches_served_ = 0;
};

}  // namespace titan::data
