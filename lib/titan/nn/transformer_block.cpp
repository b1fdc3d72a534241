#include "titan/nn/transformer_block.h"

#include "titan/core/copy.h"
#include "titan/core/trace.h"
#include "titan/ops/elementwise.h"
#include "titan/ops/swiglu.h"

namespace titan::nn {

int64_t BlockRecord::bytes() const {
  int64_t total = attention.bytes() + feed_forward.bytes();
  for (const Tensor* t : {&xn, &rstd_attention, &h, &hn, &rstd_ffn, &dxn, &dhn}) {
    if (t->defined()) total += t->bytes();
  }
  return total;  // x belongs to whoever produced it
}

TransformerBlock::TransformerBlock(int layer_id, const BlockDims& d, InitRule init,
                                   InitRule output_init, const Placer& placer)
    : attention_norm_("layers." + std::to_string(layer_id) + ".attention_norm", d.dim, d.norm_eps,
                      placer),
      attention_("layers." + std::to_string(layer_id) + ".attention", d.dim, d.n_heads,
                 d.n_kv_heads, init, output_init, placer),
      ffn_norm_("layers." + std::to_string(layer_id) + ".ffn_norm", d.dim, d.norm_eps, placer),
      feed_forward_("layers." + std::to_string(layer_id) + ".feed_forward", d.dim, d.hidden_dim,
                    init, output_init, placer) {}

std::unique_ptr<DecoderBlockRecord> TransformerBlock::new_record() const {
  return std::make_unique<BlockRecord>();
}

std::vector<Parameter*> TransformerBlock::parameters() {
  std::vector<Parameter*> params = attention_.parameters();
  for (Parameter* p : feed_forward_.parameters()) params.push_back(p);
  params.push_back(&attention_norm_.weight());
  params.push_back(&ffn_norm_.weight());
  return params;
}

void TransformerBlock::forward(const Tensor& x, const SequenceLayout& seq, Tensor& out,
                               DecoderBlockRecord& record) const {
  BlockRecord& r = block_record_as<BlockRecord>(record);
  const int64_t n = x.size(0), D = x.size(1);
  const Device dev = x.device();
  const DType act = x.dtype();  // activations: the input's dtype; statistics f32
  r.x = x;
  r.xn = Tensor::empty({n, D}, act, dev);
  r.rstd_attention = Tensor::empty({n}, DType::F32, dev);
  {
    TraceSpan span("attention_norm");
    attention_norm_.forward(x, r.xn, r.rstd_attention);
  }
  r.h = Tensor::empty({n, D}, act, dev);
  {
    TraceSpan span("attention");
    attention_.forward(r.xn, seq, r.h, r.attention);
  }
  ops::accumulate(x, r.h);  // residual
  r.hn = Tensor::empty({n, D}, act, dev);
  r.rstd_ffn = Tensor::empty({n}, DType::F32, dev);
  {
    TraceSpan span("ffn_norm");
    ffn_norm_.forward(r.h, r.hn, r.rstd_ffn);
  }
  {
    TraceSpan span("feed_forward");
    feed_forward_.forward(r.hn, out, r.feed_forward);
  }
  ops::accumulate(r.h, out);  // residual
}

void TransformerBlock::release_for_recompute(DecoderBlockRecord& record, Recompute mode) const {
  BlockRecord& r = block_record_as<BlockRecord>(record);
  switch (mode) {
    case Recompute::None:
      return;
    case Recompute::Full: {
      const Tensor x = r.x;
      r = BlockRecord{};
      r.x = x;
      break;
    }
    case Recompute::CheapOps:
      // Under sequence parallelism the matmuls read gathered copies, which stay; the local
      // norm outputs are then not read again at all.
      r.xn = Tensor();
      if (!r.attention.x_gathered) r.attention.x = Tensor();
      r.hn = Tensor();
      if (!r.feed_forward.x_gathered) r.feed_forward.x = Tensor();
      r.feed_forward.g = Tensor();
      break;
  }
  r.dropped = mode;
}

void TransformerBlock::recompute(DecoderBlockRecord& record, const SequenceLayout& seq) const {
  BlockRecord& r = block_record_as<BlockRecord>(record);
  const Recompute dropped = r.dropped;
  r.dropped = Recompute::None;
  if (dropped == Recompute::None) return;
  TraceSpan span("recompute");
  const int64_t n = r.x.size(0), D = r.x.size(1);
  const Device dev = r.x.device();
  const DType act = r.x.dtype();
  if (dropped == Recompute::Full) {
    Tensor out = Tensor::empty({n, D}, act, dev);  // the block's output is had already
    forward(r.x, seq, out, r);
    return;
  }
  Tensor rstd = Tensor::empty({n}, DType::F32, dev);  // equal to the kept one
  if (!r.attention.x.defined()) {
    r.xn = Tensor::empty({n, D}, act, dev);
    attention_norm_.forward(r.x, r.xn, rstd);
    r.attention.x = r.xn;
  }
  if (!r.feed_forward.x.defined()) {
    r.hn = Tensor::empty({n, D}, act, dev);
    ffn_norm_.forward(r.h, r.hn, rstd);
    r.feed_forward.x = r.hn;
  }
  r.feed_forward.g = Tensor::empty(r.feed_forward.a.shape(), act, dev);
  ops::swiglu_forward(r.feed_forward.a, r.feed_forward.b, r.feed_forward.g);
}

void TransformerBlock::backward_input(const Tensor& dout, const SequenceLayout& seq,
                                      DecoderBlockRecord& record, Tensor& dx) const {
  BlockRecord& r = block_record_as<BlockRecord>(record);
  TITAN_CHECK(r.dropped == Recompute::None) << "backward_input of a block record to recompute";
  const int64_t n = r.x.size(0), D = r.x.size(1);  // this rank's rows
  const Device dev = dout.device();
  const DType act = dout.dtype();
  const Tensor dout2 = dout.reshape({n, D});
  // Through the feed-forward branch; the residual passes dout straight to dh.
  r.dhn = Tensor::empty({n, D}, act, dev);
  feed_forward_.backward_input(dout2, r.feed_forward, r.dhn, ops::Accumulate::No);
  Tensor dh = Tensor::empty({n, D}, act, dev);
  copy_tensor(dout2, dh);
  ffn_norm_.backward_input(r.dhn, r.h, r.rstd_ffn, dh, ops::Accumulate::Yes);
  // Through attention; the residual passes dh straight to dx.
  r.dxn = Tensor::empty({n, D}, act, dev);
  attention_.backward_input(dh, seq, r.attention, r.dxn, ops::Accumulate::No);
  Tensor dx2 = dx.reshape({n, D});
  copy_tensor(dh, dx2);
  attention_norm_.backward_input(r.dxn, r.x, r.rstd_attention, dx2, ops::Accumulate::Yes);
}

void TransformerBlock::backward_weight(DecoderBlockRecord& record) {
  BlockRecord& r = block_record_as<BlockRecord>(record);
  feed_forward_.backward_weight(r.feed_forward);
  ffn_norm_.backward_weight(r.dhn, r.h, r.rstd_ffn);
  attention_.backward_weight(r.attention);
  attention_norm_.backward_weight(r.dxn, r.x, r.rstd_attention);
  r = BlockRecord{};
}

}  // namespace titan::nn
