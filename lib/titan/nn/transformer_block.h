// One Llama decoder block, pre-norm with two residual adds:
//   h   = x + attention(attention_norm(x))
//   out = h + feed_forward(ffn_norm(h))
// Shapes: x, h, out [n, D]: this rank's rows of the N = B x T token rows (all N without
// sequence parallelism, nn/tensor_parallel.h); the norms and the residual adds are per row.
// Parameters under "layers.<i>.": attention.{wq,wk,wv,wo},
// feed_forward.{w1,w2,w3}, attention_norm, ffn_norm (torchtitan's names).
#pragma once

#include "titan/nn/attention.h"
#include "titan/nn/feed_forward.h"

namespace titan::nn {

// Activation checkpointing: what a block recomputes before its backward instead of keeping
// it from forward.
enum class Recompute {
  None,      // keeps its whole record
  Full,      // keeps only its input x; reruns its forward
  CheapOps,  // keeps the matmul and attention outputs; recomputes the two norms' outputs and
             // the SwiGLU product (what torchtitan's per-op policy recomputes)
};

struct BlockRecord {
  Tensor x;             // the block's input (the previous block's output; shared, not copied)
  Tensor xn, rstd_attention;
  AttentionRecord attention;
  Tensor h, hn, rstd_ffn;
  FeedForwardRecord feed_forward;
  // Set by backward_input for backward_weight: gradients at the two norms' outputs.
  Tensor dxn, dhn;
  Recompute dropped = Recompute::None;  // what release_for_recompute took out
  int64_t bytes() const;
};

struct BlockDims {
  int64_t dim, n_heads, n_kv_heads, hidden_dim;
  double norm_eps;
};

class TransformerBlock {
 public:
  // `init` for wq, wk, wv, w1; `output_init` for wo, w2, w3.
  TransformerBlock(int layer_id, const BlockDims& dims, InitRule init, InitRule output_init,
                   const Placer& placer = {});

  std::vector<Parameter*> parameters();

  // seq: the microbatch's batch size, RoPE rows and mask (nn/context_parallel.h).
  void forward(const Tensor& x, const SequenceLayout& seq, Tensor& out, BlockRecord& record) const;
  // Activation checkpointing: after forward, drops what `mode` recomputes; before backward,
  // recompute() restores it, bitwise as forward made it (the same ops on the same inputs; on
  // a tensor-parallel group, with the same collectives, so every tp rank must call it).
  static void release_for_recompute(BlockRecord& record, Recompute mode);
  void recompute(BlockRecord& record, const SequenceLayout& seq) const;

  // dx = d(out)/dx^T dout (written); keeps the norms' output gradients for backward_weight.
  // The record must be whole (recompute() first).
  void backward_input(const Tensor& dout, const SequenceLayout& seq, BlockRecord& record,
                      Tensor& dx) const;
  // Every parameter gradient of the block (+=); releases the record.
  void backward_weight(BlockRecord& record);

 private:
  RmsNorm attention_norm_;
  Attention attention_;
  RmsNorm ffn_norm_;
  FeedForward feed_forward_;
};

}  // namespace titan::nn
