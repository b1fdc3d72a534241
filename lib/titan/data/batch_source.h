// What the trainer pulls token batches from: synthetic tokens now, token shards later.
//
//   std::unique_ptr<BatchSource> source = ...;
//   TokenBatch batch = source->next();        // inputs, labels: [B, T] i64
//   int64_t position = source->batches_served();   // saved in a checkpoint
//   source->seek(position);                   // after a restart: the same batches follow
//
// torchtitan's sample semantics: a source cuts windows of T + 1 tokens; inputs are the
// first T, labels the last T, so labels[b][t] = inputs[b][t + 1] for t < T - 1 and the
// model predicts each next token. No padding; every label is a real token.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "titan/core/tensor.h"

namespace titan::data {

struct TokenBatch {
  Tensor inputs;  // [B, T] i64 token ids
  Tensor labels;  // [B, T] i64: the window shifted by one
};

class BatchSource {
 public:
  virtual ~BatchSource() = default;

  // The next batch, in new tensors (the caller may hold several, e.g. all the
  // microbatches of an accumulation step).
  virtual TokenBatch next() = 0;
  // One line for the start-up log: what is read and how it is cut.
  virtual std::string describe() const = 0;
  // The token that ends each document in the packed sequences (the tokenizer's EOS id),
  // for per-document attention; none for data without documents (synthetic tokens).
  virtual std::optional<int32_t> document_end() const { return std::nullopt; }

  // How many batches next() has returned since the start (or since the position seek()
  // set); seek(n) makes the next batch the one a fresh source returns as its n-th (0-based).
  virtual int64_t batches_served() const = 0;
  virtual void seek(int64_t batches) = 0;
};

}  // namespace titan::data
