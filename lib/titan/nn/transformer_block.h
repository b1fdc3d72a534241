// One Llama decoder block, pre-norm with two residual adds:
//   h   = x + attention(attention_norm(x))
//   out = h + feed_forward(ffn_norm(h))
// Shapes: x, h, out [n, D]: this rank's rows of the N = B x T token rows (all N without
// sequence parallelism, nn/tensor_parallel.h); the norms and the residual adds are per row.
// Parameters under "layers.<i>.": attention.{wq,wk,wv,wo},
// feed_forward.{w1,w2,w3}, attention_norm, ffn_norm (torchtitan's names).
#pragma once

#include "titan/nn/attention.h"
#include "titan/nn/decoder_block.h"
#include "titan/nn/feed_forward.h"

namespace titan::nn {

// Activation checkpointing (nn/decoder_block.h): CheapOps recomputes the two norms' outputs
// and the SwiGLU product.
struct BlockRecord final : DecoderBlockRecord {
  Tensor x;             // the block's input (the previous block's output; shared, not copied)
  Tensor xn, rstd_attention;
  AttentionRecord attention;
  Tensor h, hn, rstd_ffn;
  FeedForwardRecord feed_forward;
  // Set by backward_input for backward_weight: gradients at the two norms' outputs.
  Tensor dxn, dhn;
  Recompute dropped = Recompute::None;  // what release_for_recompute took out
  int64_t bytes() const override;
};

struct BlockDims {
  int64_t dim, n_heads, n_kv_heads, hidden_dim;
  double norm_eps;
};

class TransformerBlock final : public DecoderBlock {
 public:
  // `init` for wq, wk, wv, w1; `output_init` for wo, w2, w3.
  TransformerBlock(int layer_id, const BlockDims& dims, InitRule init, InitRule output_init,
                   const Placer& placer = {});

  std::vector<Parameter*> parameters() override;
  std::unique_ptr<DecoderBlockRecord> new_record() const override;

  void forward(const Tensor& x, const SequenceLayout& seq, Tensor& out,
               DecoderBlockRecord& record) const override;
  void release_for_recompute(DecoderBlockRecord& record, Recompute mode) const override;
  void recompute(DecoderBlockRecord& record, const SequenceLayout& seq) const override;
  // Keeps the norms' output gradients for backward_weight.
  void backward_input(const Tensor& dout, const SequenceLayout& seq, DecoderBlockRecord& record,
                      Tensor& dx) const override;
  void backward_weight(DecoderBlockRecord& record) override;

 private:
  RmsNorm attention_norm_;
  Attention attention_;
  RmsNorm ffn_norm_;
  FeedForward feed_forward_;
};

}  // namespace titan::nn
