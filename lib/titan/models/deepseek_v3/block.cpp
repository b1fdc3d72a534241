#include "titan/models/deepseek_v3/block.h"

#include <cmath>

#include "titan/core/copy.h"
#include "titan/core/trace.h"
#include "titan/ops/elementwise.h"

namespace titan::models::deepseek_v3 {
namespace {

constexpr double kWeightStd = 0.02;

nn::InitRule truncated(double std) {
  return nn::InitRule{nn::InitKind::TruncatedNormal, std, 2.0};  // torch's default +-2
}

std::string prefix(int layer) { return "layers." + std::to_string(layer); }

nn::LatentAttentionDims attention_dims(const ModelArgs& a) {
  nn::LatentAttentionDims d;
  d.dim = a.dim;
  d.n_heads = a.n_heads;
  d.q_lora_rank = a.q_lora_rank;
  d.kv_lora_rank = a.kv_lora_rank;
  d.qk_nope_head_dim = a.qk_nope_head_dim;
  d.qk_rope_head_dim = a.qk_rope_head_dim;
  d.v_head_dim = a.v_head_dim;
  d.norm_eps = a.norm_eps;
  d.softmax_scale = a.softmax_scale();
  return d;
}

nn::MoeDims moe_dims(const ModelArgs& a) {
  nn::MoeDims d;
  d.dim = a.dim;
  d.hidden_dim = a.moe_inter_dim;
  d.experts = a.num_experts;
  d.shared_experts = a.num_shared_experts;
  d.router = a.router();
  d.score_before_experts = a.score_before_experts;
  d.load_balance_coeff = a.load_balance_coeff;
  return d;
}

double depth_std(int layer) { return kWeightStd / std::sqrt(2.0 * (layer + 1)); }

}  // namespace

int64_t BlockRecord::bytes() const {
  int64_t total = attention.bytes() + feed_forward.bytes() + moe.bytes();
  for (const Tensor* t : {&xn, &rstd_attention, &h, &hn, &rstd_ffn, &dxn, &dhn}) {
    if (t->defined()) total += t->bytes();
  }
  return total;
}

Block::Block(int layer, const ModelArgs& a, const nn::Placer& placer)
    : attention_norm_(prefix(layer) + ".attention_norm", a.dim, a.norm_eps, placer),
      attention_(prefix(layer) + ".attention", attention_dims(a), truncated(kWeightStd),
                 truncated(depth_std(layer)), placer),
      ffn_norm_(prefix(layer) + ".ffn_norm", a.dim, a.norm_eps, placer) {
  if (a.is_moe_layer(layer)) {
    moe_.emplace(prefix(layer) + ".moe", moe_dims(a), truncated(kWeightStd),
                 truncated(depth_std(layer)), placer);
  } else {
    feed_forward_.emplace(prefix(layer) + ".feed_forward", a.dim, a.inter_dim,
                          truncated(kWeightStd), truncated(depth_std(layer)), placer);
  }
}

std::vector<nn::Parameter*> Block::parameters() {
  std::vector<nn::Parameter*> params = attention_.parameters();
  params.push_back(&attention_norm_.weight());
  params.push_back(&ffn_norm_.weight());
  for (nn::Parameter* p : moe_ ? moe_->parameters() : feed_forward_->parameters()) {
    params.push_back(p);
  }
  return params;
}

std::unique_ptr<nn::DecoderBlockRecord> Block::new_record() const {
  return std::make_unique<BlockRecord>();
}

void Block::forward(const Tensor& x, const nn::SequenceLayout& seq, Tensor& out,
                    nn::DecoderBlockRecord& record) const {
  run_forward(x, seq, out, nn::block_record_as<BlockRecord>(record), true);
}

void Block::run_forward(const Tensor& x, const nn::SequenceLayout& seq, Tensor& out,
                        BlockRecord& r, bool count_load) const {
  const int64_t n = x.size(0), D = x.size(1);
  const Device dev = x.device();
  const DType act = x.dtype();
  r.x = x;
  r.xn = Tensor::empty({n, D}, act, dev);
  r.rstd_attention = Tensor::empty({n}, DType::F32, dev);
  attention_norm_.forward(x, r.xn, r.rstd_attention);
  r.h = Tensor::empty({n, D}, act, dev);
  {
    TraceSpan span("attention");
    attention_.forward(r.xn, seq, r.h, r.attention);
  }
  ops::accumulate(x, r.h);  // residual
  r.hn = Tensor::empty({n, D}, act, dev);
  r.rstd_ffn = Tensor::empty({n}, DType::F32, dev);
  ffn_norm_.forward(r.h, r.hn, r.rstd_ffn);
  if (moe_) {
    TraceSpan span("moe");
    moe_->forward(r.hn, out, r.moe, count_load);
  } else {
    TraceSpan span("feed_forward");
    feed_forward_->forward(r.hn, out, r.feed_forward);
  }
  ops::accumulate(r.h, out);  // residual
}

void Block::release_for_recompute(nn::DecoderBlockRecord& record, nn::Recompute mode) const {
  BlockRecord& r = nn::block_record_as<BlockRecord>(record);
  switch (mode) {
    case nn::Recompute::None:
      return;
    case nn::Recompute::Full: {
      const Tensor x = r.x;
      r = BlockRecord{};
      r.x = x;
      break;
    }
    case nn::Recompute::CheapOps:
      r.xn = r.attention.x = Tensor();
      r.hn = r.feed_forward.x = r.moe.x = Tensor();
      break;
  }
  r.dropped = mode;
}

void Block::recompute(nn::DecoderBlockRecord& record, const nn::SequenceLayout& seq) const {
  BlockRecord& r = nn::block_record_as<BlockRecord>(record);
  const nn::Recompute dropped = r.dropped;
  r.dropped = nn::Recompute::None;
  if (dropped == nn::Recompute::None) return;
  TraceSpan span("recompute");
  const int64_t n = r.x.size(0), D = r.x.size(1);
  const Device dev = r.x.device();
  const DType act = r.x.dtype();
  if (dropped == nn::Recompute::Full) {
    Tensor out = Tensor::empty({n, D}, act, dev);  // the block's output is had already
    run_forward(r.x, seq, out, r, false);
    return;
  }
  Tensor rstd = Tensor::empty({n}, DType::F32, dev);  // equal to the kept one
  r.xn = Tensor::empty({n, D}, act, dev);
  attention_norm_.forward(r.x, r.xn, rstd);
  r.attention.x = r.xn;
  r.hn = Tensor::empty({n, D}, act, dev);
  ffn_norm_.forward(r.h, r.hn, rstd);
  (moe_ ? r.moe.x : r.feed_forward.x) = r.hn;
}

void Block::backward_input(const Tensor& dout, const nn::SequenceLayout& seq,
                           nn::DecoderBlockRecord& record, Tensor& dx) const {
  BlockRecord& r = nn::block_record_as<BlockRecord>(record);
  TITAN_CHECK(r.dropped == nn::Recompute::None) << "backward_input of a block record to recompute";
  const int64_t n = r.x.size(0), D = r.x.size(1);
  const Device dev = dout.device();
  const DType act = dout.dtype();
  const Tensor dout2 = dout.reshape({n, D});
  r.dhn = Tensor::empty({n, D}, act, dev);
  if (moe_) {
    moe_->backward_input(dout2, r.moe, r.dhn, ops::Accumulate::No);
  } else {
    feed_forward_->backward_input(dout2, r.feed_forward, r.dhn, ops::Accumulate::No);
  }
  Tensor dh = Tensor::empty({n, D}, act, dev);
  copy_tensor(dout2, dh);
  ffn_norm_.backward_input(r.dhn, r.h, r.rstd_ffn, dh, ops::Accumulate::Yes);
  r.dxn = Tensor::empty({n, D}, act, dev);
  attention_.backward_input(dh, seq, r.attention, r.dxn, ops::Accumulate::No);
  Tensor dx2 = dx.reshape({n, D});
  copy_tensor(dh, dx2);
  attention_norm_.backward_input(r.dxn, r.x, r.rstd_attention, dx2, ops::Accumulate::Yes);
}

void Block::backward_weight(nn::DecoderBlockRecord& record) {
  BlockRecord& r = nn::block_record_as<BlockRecord>(record);
  if (moe_) {
    moe_->backward_weight(r.moe);
  } else {
    feed_forward_->backward_weight(r.feed_forward);
  }
  ffn_norm_.backward_weight(r.dhn, r.h, r.rstd_ffn);
  attention_.backward_weight(r.attention);
  attention_norm_.backward_weight(r.dxn, r.x, r.rstd_attention);
  r = BlockRecord{};
}

}  // namespace titan::models::deepseek_v3
