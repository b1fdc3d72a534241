// Synthetic tokens: one Philox block per token; synthetic.h gives the addressing.
#include "titan/data/synthetic.h"

#include <sstream>

#include "titan/core/error.h"
#include "titan/core/philox.h"

namespace titan::data {
namespace {

// The Philox stream of synthetic tokens, apart from every parameter's stream.
constexpr uint64_t kTokenStream = philox_stream_key("data.synthetic.tokens");

// A token id uniform in [0, vocab_size): 64 random bits scaled by multiply-high (Lemire),
// which needs no division; each id's probability is off by at most vocab_size / 2^64.
int64_t token_at(uint64_t seed, int64_t index, int64_t vocab_size) {
  const PhiloxCounter block = philox_block(seed, kTokenStream, index);
  const uint64_t bits = (uint64_t(block[1]) << 32) | block[0];
  return int64_t((static_cast<unsigned __int128>(bits) * uint64_t(vocab_size)) >> 64);
}

}  // namespace

SyntheticBatchSource::SyntheticBatchSource(uint64_t seed, int64_t vocab_size, int64_t batch,
                                           int64_t seq_len, int64_t dp_rank, int64_t dp_degree)
    : seed_(seed),
      vocab_size_(vocab_size),
      batch_(batch),
      seq_len_(seq_len),
      dp_rank_(dp_rank),
      dp_degree_(dp_degree) {
  TITAN_CHECK(vocab_size >= 1) << "synthetic data: vocab_size must be >= 1, got " << vocab_size;
  TITAN_CHECK(batch >= 1) << "synthetic data: batch must be >= 1, got " << batch;
  TITAN_CHECK(seq_len >= 1) << "synthetic data: seq_len must be >= 1, got " << seq_len;
  TITAN_CHECK(dp_degree >= 1 && dp_rank >= 0 && dp_rank < dp_degree)
      << "synthetic data: rank " << dp_rank << " of " << dp_degree;
}

TokenBatch SyntheticBatchSource::next() {
  TokenBatch batch{Tensor::empty({batch_, seq_len_}, DType::I64),
                   Tensor::empty({batch_, seq_len_}, DType::I64)};
  int64_t* inputs = batch.inputs.mutable_data<int64_t>();
  int64_t* labels = batch.labels.mutable_data<int64_t>();
  const int64_t window = seq_len_ + 1;
  const int64_t first_sequence = (batches_served_ * dp_degree_ + dp_rank_) * batch_;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < batch_; ++row) {
    const int64_t first_index = (first_sequence + row) * window;
    int64_t* row_inputs = inputs + row * seq_len_;
    int64_t* row_labels = labels + row * seq_len_;
    // Token t of the window is input t (t < T) and label t - 1 (t > 0).
    for (int64_t t = 0; t < window; ++t) {
      const int64_t token = token_at(seed_, first_index + t, vocab_size_);
      if (t < seq_len_) row_inputs[t] = token;
      if (t > 0) row_labels[t - 1] = token;
    }
  }
  ++batches_served_;
  return batch;
}

std::string SyntheticBatchSource::describe() const {
  std::ostringstream out;
  out << "synthetic tokens: seed " << seed_ << ", vocab " << vocab_size_ << ", batch " << batch_
      << " x seq_len " << seq_len_ << ", data-parallel rank " << dp_rank_ << " of "
      << dp_degree_;
  return out.str();
}

void SyntheticBatchSource::seek(int64_t batches) {
  TITAN_CHECK(batches >= 0) << "synthetic data: seek to batch " << batches;
  batches_served_ = batches;
}

}  // namespace titan::data
