// The token-shard loader: training batches cut from a ShardSet (shards.h).
//
//   auto shards = std::make_shared<const ShardSet>(
//       ShardSet::open("assets/data/sotu", ShardSplit::Train, /*vocab_size=*/2048));
//   ShardBatchSource source(shards, /*seed=*/0, /*batch=*/8, /*seq_len=*/256);
//   TokenBatch batch = source.next();        // [8, 256] inputs and labels
//
// Windows. The split's tokens (documents as BOS doc EOS, one after another) are cut into
// W = floor(tokens / (T + 1)) non-overlapping windows of T + 1 tokens; window w is tokens
// [w (T+1), (w+1)(T+1)). Inputs are its first T tokens, labels its last T (batch_source.h).
// The last tokens % (T + 1) tokens of the split are never read.
//
// Order. Global sequence g (0, 1, 2, ...) belongs to epoch e = g / W and is window
// perm_e(g % W), where perm_e is a pseudo-random permutation of [0, W) keyed by
// (seed, e): a Feistel network over the next power of four ≥ W, cycle-walked into range.
// Every window is read exactly once per epoch, each epoch in a new order, and any g maps to
// its window in O(1) time and memory: seek is free and needs no state but a number.
//
// Data parallelism. Sequence r of batch i on rank d of n is global sequence
// (i n + d) B + r, the rule SyntheticBatchSource follows: the n ranks' batches i, stacked
// in rank order, are the batch i of one rank with n B rows. A mesh change keeps the data.
//
// Position. batches_served() is the whole state: a checkpoint stores it and seek() puts it
// back, and the resumed run reads exactly the tokens the uninterrupted one would have.
//
// Epochs. Running out of windows starts the next epoch; the first batch that reads from
// a new epoch logs it (titan::log::info, once per epoch).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "titan/data/batch_source.h"
#include "titan/data/shards.h"

namespace titan::data {

class ShardBatchSource final : public BatchSource {
 public:
  // InputError when the split holds fewer than seq_len + 1 tokens.
  ShardBatchSource(std::shared_ptr<const ShardSet> shards, uint64_t seed, int64_t batch,
                   int64_t seq_len, int64_t dp_rank = 0, int64_t dp_degree = 1);

  TokenBatch next() override;
  std::string describe() const override;
  std::optional<int32_t> document_end() const override { return shards_->manifest().eos_id; }
  int64_t batches_served() const override { return batches_served_; }
  void seek(int64_t batches) override;

  // Windows per epoch (W above) and the epoch the next batch's first sequence reads from.
  int64_t windows_per_epoch() const { return windows_; }
  int64_t epoch() const;
  // The window that global sequence g reads (the order above), for tests and tools.
  int64_t window_of(int64_t global_sequence) const;
  const ShardSet& shards() const { return *shards_; }

 private:
  std::shared_ptr<const ShardSet> shards_;
  uint64_t seed_;
  int64_t batch_;
  int64_t seq_len_;
  int64_t dp_rank_;
  int64_t dp_degree_;
  int64_t windows_;
  int64_t batches_served_ = 0;
  int64_t logged_epoch_ = 0;  // the latest epoch announced (or seeked into)
};

// A pseudo-random permutation of [0, size) keyed by (seed, epoch): window_of's order.
// Exposed for tests; `index` must be in [0, size).
int64_t shard_window_permute(int64_t index, int64_t size, uint64_t seed, int64_t epoch);

}  // namespace titan::data
