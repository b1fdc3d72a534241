// The token-shard loader; shard_loader.h gives the window order and the rank rule.
#include "titan/data/shard_loader.h"

#include <bit>
#include <sstream>
#include <vector>

#include "titan/core/error.h"
#include "titan/core/logging.h"
#include "titan/core/philox.h"

namespace titan::data {
namespace {

// The Philox key of the window order, apart from every other stream.
constexpr uint64_t kWindowOrderStream = philox_stream_key("data.shards.window_order");
constexpr int kFeistelRounds = 4;

// One Feistel pass over [0, 4^half_bits): four rounds, each XORing a keyed Philox
// function of the right half into the left half and swapping. A bijection for any round
// function, so it permutes the domain whatever the key.
uint64_t feistel(uint64_t x, int half_bits, uint64_t seed, int64_t epoch) {
  const uint64_t mask = (uint64_t(1) << half_bits) - 1;
  uint64_t left = x >> half_bits;
  uint64_t right = x & mask;
  const uint64_t key = seed ^ kWindowOrderStream;
  for (int round = 0; round < kFeistelRounds; ++round) {
    const PhiloxCounter block = philox4x32_10(
        {uint32_t(right), uint32_t(right >> 32), uint32_t(round), uint32_t(epoch)},
        {uint32_t(key), uint32_t(key >> 32) ^ uint32_t(uint64_t(epoch) >> 32)});
    const uint64_t f = (uint64_t(block[1]) << 32) | block[0];
    const uint64_t next_right = left ^ (f & mask);
    left = right;
    right = next_right;
  }
  return (left << half_bits) | right;
}

}  // namespace

int64_t shard_window_permute(int64_t index, int64_t size, uint64_t seed, int64_t epoch) {
  TITAN_CHECK(size >= 1 && index >= 0 && index < size)
      << "window permutation: index " << index << " of " << size;
  if (size == 1) return 0;
  // The smallest even bit count whose domain holds [0, size): at most 4 x size values, so
  // cycle walking (apply again until the value lands below size) takes < 4 passes on
  // average, and it stays a permutation of [0, size) because the domain's is.
  const int bits = std::bit_width(uint64_t(size - 1));
  const int half_bits = (bits + 1) / 2;
  uint64_t x = uint64_t(index);
  do {
    x = feistel(x, half_bits, seed, epoch);
  } while (x >= uint64_t(size));
  return int64_t(x);
}

ShardBatchSource::ShardBatchSource(std::shared_ptr<const ShardSet> shards, uint64_t seed,
                                   int64_t batch, int64_t seq_len, int64_t dp_rank,
                                   int64_t dp_degree)
    : shards_(std::move(shards)),
      seed_(seed),
      batch_(batch),
      seq_len_(seq_len),
      dp_rank_(dp_rank),
      dp_degree_(dp_degree) {
  TITAN_CHECK(shards_ != nullptr) << "shard loader: no shards";
  TITAN_CHECK(batch >= 1) << "shard loader: batch must be >= 1, got " << batch;
  TITAN_CHECK(seq_len >= 1) << "shard loader: seq_len must be >= 1, got " << seq_len;
  TITAN_CHECK(dp_degree >= 1 && dp_rank >= 0 && dp_rank < dp_degree)
      << "shard loader: rank " << dp_rank << " of " << dp_degree;
  windows_ = shards_->total_tokens() / (seq_len + 1);
  TITAN_CHECK_INPUT(windows_ >= 1)
      << "token shards " << shards_->folder() << ": the " << shard_split_name(shards_->split())
      << " split holds " << shards_->total_tokens() << " tokens, fewer than one window of "
      << "training.seq_len + 1 = " << seq_len + 1 << ": use a shorter training.seq_len or more text";
}

int64_t ShardBatchSource::window_of(int64_t global_sequence) const {
  TITAN_CHECK(global_sequence >= 0) << "shard loader: sequence " << global_sequence;
  return shard_window_permute(global_sequence % windows_, windows_, seed_,
                              global_sequence / windows_);
}

int64_t ShardBatchSource::epoch() const {
  return ((batches_served_ * dp_degree_ + dp_rank_) * batch_) / windows_;
}

TokenBatch ShardBatchSource::next() {
  TokenBatch batch{Tensor::empty({batch_, seq_len_}, DType::I64),
                   Tensor::empty({batch_, seq_len_}, DType::I64)};
  int64_t* inputs = batch.inputs.mutable_data<int64_t>();
  int64_t* labels = batch.labels.mutable_data<int64_t>();
  const int64_t window = seq_len_ + 1;
  const int64_t first_sequence = (batches_served_ * dp_degree_ + dp_rank_) * batch_;
  std::vector<int64_t> tokens(static_cast<size_t>(window));
  for (int64_t row = 0; row < batch_; ++row) {
    const int64_t sequence = first_sequence + row;
    const int64_t epoch = sequence / windows_;
    if (epoch > logged_epoch_) {
      log::info("data: the %s split of %s is used up (%lld windows of %lld tokens); epoch %lld "
                "begins, in a new order",
                std::string(shard_split_name(shards_->split())).c_str(),
                shards_->folder().c_str(), (long long)windows_, (long long)window,
                (long long)epoch + 1);
      logged_epoch_ = epoch;
    }
    shards_->read(window_of(sequence) * window, window, tokens.data());
    std::copy(tokens.begin(), tokens.end() - 1, inputs + row * seq_len_);
    std::copy(tokens.begin() + 1, tokens.end(), labels + row * seq_len_);
  }
  ++batches_served_;
  return batch;
}

std::string ShardBatchSource::describe() const {
  std::ostringstream out;
  out << "token shards " << shards_->folder() << " (" << shard_split_name(shards_->split())
      << " split: " << shards_->total_tokens() << " tokens in " << shards_->shard_count()
      << " shards, tokenizer '" << shards_->manifest().tokenizer << "', vocab "
      << shards_->manifest().vocab_size << "): " << windows_ << " windows of " << seq_len_ + 1
      << " tokens per epoch, shuffled with seed " << seed_ << "; batch " << batch_
      << ", data-parallel rank " << dp_rank_ << " of " << dp_degree_;
  return out.str();
}

void ShardBatchSource::seek(int64_t batches) {
  TITAN_CHECK(batches >= 0) << "shard loader: seek to batch " << batches;
  batches_served_ = batches;
  logged_epoch_ = epoch();
}

}  // namespace titan::data
