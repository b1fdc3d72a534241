// A decoder block as a model drives it (models/decoder_model.h): the residual stream in,
// the residual stream out, an explicit forward and a backward split in two, and a record
// of what the forward keeps, owned by the caller (one per microbatch in flight). Llama's
// block (nn/transformer_block.h) and DeepSeek V3's (models/deepseek_v3/block.h) implement it.
//
// Shapes: x, out, dout, dx [n, D], this rank's rows of the N = B x T token rows
// (nn/tensor_parallel.h); seq names the microbatch's RoPE rows and mask.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "titan/core/error.h"
#include "titan/nn/context_parallel.h"
#include "titan/nn/parameter.h"

namespace titan::nn {

// Activation checkpointing: what a block recomputes before its backward instead of keeping
// it from forward.
enum class Recompute {
  None,      // keeps its whole record
  Full,      // keeps only its input x; reruns its forward
  CheapOps,  // keeps the matmul and attention outputs; recomputes the norms' outputs and
             // the SwiGLU products (what torchtitan's per-op policy recomputes)
};

struct DecoderBlockRecord {
  virtual ~DecoderBlockRecord() = default;
  virtual int64_t bytes() const = 0;  // what the record holds (its input is the caller's)
};

// `record` as a block's own record type (another block's record is a bug).
template <class Record>
Record& block_record_as(DecoderBlockRecord& record) {
  auto* own = dynamic_cast<Record*>(&record);
  TITAN_CHECK(own != nullptr) << "a decoder block was given another block's record";
  return *own;
}

class DecoderBlock {
 public:
  virtual ~DecoderBlock() = default;

  virtual std::vector<Parameter*> parameters() = 0;
  virtual std::unique_ptr<DecoderBlockRecord> new_record() const = 0;

  virtual void forward(const Tensor& x, const SequenceLayout& seq, Tensor& out,
                       DecoderBlockRecord& record) const = 0;
  // After forward, drops what `mode` recomputes; before backward, recompute() restores it,
  // bitwise as forward made it (the same ops on the same inputs; under tensor parallelism
  // with the same collectives, so every tp rank must call it).
  virtual void release_for_recompute(DecoderBlockRecord& record, Recompute mode) const = 0;
  virtual void recompute(DecoderBlockRecord& record, const SequenceLayout& seq) const = 0;
  // dx = d(out)/dx^T dout (written); keeps what backward_weight needs. The record must be
  // whole (recompute() first).
  virtual void backward_input(const Tensor& dout, const SequenceLayout& seq,
                              DecoderBlockRecord& record, Tensor& dx) const = 0;
  // Every parameter gradient of the block (+=); releases the record.
  virtual void backward_weight(DecoderBlockRecord& record) = 0;
};

}  // namespace titan::nn
