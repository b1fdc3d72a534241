// DeepSeek V3's decoder block (torchtitan's deepseek_v3 TransformerBlock), pre-norm with two
// residual adds:
//   h   = x + attention(attention_norm(x))          multi-head latent attention
//   out = h + ffn(ffn_norm(h))                      a dense SwiGLU in the first
//                                                   n_dense_layers, else a mixture of experts
// Parameters under "layers.<i>.": attention.*, attention_norm, ffn_norm, then feed_forward.*
// or moe.* (torchtitan's order). Init: the attention's and feed-forward's input linears
// trunc_normal(0, 0.02); wo, w2, w3, the router's gate and the experts' w2, w3
// trunc_normal(0, 0.02 / sqrt(2 (i + 1))); norms 1.
//
// Activation checkpointing (nn::Recompute): Full reruns the forward (the experts' load is
// not counted again); CheapOps recomputes the two norms' outputs.
#pragma once

#include <memory>
#include <optional>

#include "titan/models/deepseek_v3/args.h"
#include "titan/nn/decoder_block.h"
#include "titan/nn/feed_forward.h"
#include "titan/nn/latent_attention.h"
#include "titan/nn/moe.h"

namespace titan::models::deepseek_v3 {

struct BlockRecord final : nn::DecoderBlockRecord {
  Tensor x;  // the block's input (the previous block's output; shared, not copied)
  Tensor xn, rstd_attention;
  nn::LatentAttentionRecord attention;
  Tensor h, hn, rstd_ffn;
  nn::FeedForwardRecord feed_forward;  // dense layers
  nn::MoeRecord moe;                   // MoE layers
  Tensor dxn, dhn;  // set by backward_input: gradients at the norms' outputs
  nn::Recompute dropped = nn::Recompute::None;
  int64_t bytes() const override;
};

class Block final : public nn::DecoderBlock {
 public:
  Block(int layer_id, const ModelArgs& args, const nn::Placer& placer);

  std::vector<nn::Parameter*> parameters() override;
  std::unique_ptr<nn::DecoderBlockRecord> new_record() const override;
  void forward(const Tensor& x, const nn::SequenceLayout& seq, Tensor& out,
               nn::DecoderBlockRecord& record) const override;
  void release_for_recompute(nn::DecoderBlockRecord& record, nn::Recompute mode) const override;
  void recompute(nn::DecoderBlockRecord& record, const nn::SequenceLayout& seq) const override;
  void backward_input(const Tensor& dout, const nn::SequenceLayout& seq,
                      nn::DecoderBlockRecord& record, Tensor& dx) const override;
  void backward_weight(nn::DecoderBlockRecord& record) override;

  nn::Moe* moe() { return moe_ ? &*moe_ : nullptr; }  // null in a dense layer

 private:
  void run_forward(const Tensor& x, const nn::SequenceLayout& seq, Tensor& out, BlockRecord& r,
                   bool count_load) const;
  nn::RmsNorm attention_norm_;
  nn::LatentAttention attention_;
  nn::RmsNorm ffn_norm_;
  std::optional<nn::FeedForward> feed_forward_;
  std::optional<nn::Moe> moe_;
};

}  // namespace titan::models::deepseek_v3
