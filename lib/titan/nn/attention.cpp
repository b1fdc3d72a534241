#include "titan/nn/attention.h"

#include <cmath>

#include "titan/ops/attention.h"
#include "titan/ops/rope.h"

namespace titan::nn {

int64_t AttentionRecord::bytes() const {
  int64_t total = 0;
  for (const Tensor* t : {&q, &k, &v, &out, &lse, &dy, &dq, &dk, &dv}) {
    if (t->defined()) total += t->bytes();
  }
  return total + (x_gathered ? x.bytes() : 0);  // an input of the caller's is not ours
}

Attention::Attention(const std::string& prefix, int64_t dim, int64_t n_heads, int64_t n_kv_heads,
                     InitRule init, InitRule output_init, const Placer& placer)
    : head_dim_(dim / n_heads),
      tp_(placer.tp_group()),
      cp_(placer.cp_group()),
      wq_(prefix + ".wq", dim, n_heads * (dim / n_heads), init, placer),
      wk_(prefix + ".wk", dim, n_kv_heads * (dim / n_heads), init, placer),
      wv_(prefix + ".wv", dim, n_kv_heads * (dim / n_heads), init, placer),
      wo_(prefix + ".wo", n_heads * (dim / n_heads), dim, output_init, placer) {}

std::vector<Parameter*> Attention::parameters() {
  return {&wq_.weight(), &wk_.weight(), &wv_.weight(), &wo_.weight()};
}

namespace {

float attention_scale(int64_t head_dim) { return 1.0f / std::sqrt(float(head_dim)); }

// Rows [first, first + count) of a [rows, cols] view.
Tensor rows_of(const Tensor& t, int64_t first, int64_t count) { return t.narrow(first, count); }

}  // namespace

void Attention::forward(const Tensor& x, const SequenceLayout& seq, Tensor& y,
                        AttentionRecord& r) const {
  const int64_t N = x.size(0) * (tp_.sequence_parallel() ? tp_.size() : 1);
  const int64_t B = seq.batch, T = N / B, hd = head_dim_;
  // This rank's heads: those of its wq and wk pieces.
  const int64_t hq = wq_.weight().value_shape()[0] / hd, hkv = wk_.weight().value_shape()[0] / hd;
  const Device dev = x.device();
  const DType act = x.dtype();  // activations: the input's dtype and device
  r.q = Tensor::empty({B, T, hq, hd}, act, dev);
  r.k = Tensor::empty({B, T, hkv, hd}, act, dev);
  r.v = Tensor::empty({B, T, hkv, hd}, act, dev);
  const Tensor q2 = r.q.reshape({N, hq * hd}), k2 = r.k.reshape({N, hkv * hd});
  const Tensor v2 = r.v.reshape({N, hkv * hd});
  r.x_gathered = tp_.sequence_parallel();
  const GemmOperand wq = wq_.forward_weight(), wk = wk_.forward_weight();
  const GemmOperand wv = wv_.forward_weight();
  const Float8Scales sq = wq_.input_scales(x), sk = wk_.input_scales(x), sv = wv_.input_scales(x);
  tp_.gather_rows(x, r.x, [&](const Tensor& rows, int64_t first) {
    const int64_t n = rows.size(0);
    Tensor q = rows_of(q2, first, n), k = rows_of(k2, first, n), v = rows_of(v2, first, n);
    wq_.forward(rows, sq.rows(first, n), wq, q);
    wk_.forward(rows, sk.rows(first, n), wk, k);
    wv_.forward(rows, sv.rows(first, n), wv, v);
  });
  ops::rope_forward(r.q, seq.freqs, r.q);
  ops::rope_forward(r.k, seq.freqs, r.k);
  r.out = Tensor::empty(r.q.shape(), act, dev);
  r.lse = Tensor::empty({B, hq, T}, DType::F32, dev);
  cp_.attention_forward(r.q, r.k, r.v, attention_scale(hd), seq, r.out, r.lse);
  const Tensor out2 = r.out.reshape({N, hq * hd});
  const GemmOperand wo = wo_.forward_weight();
  const Float8Scales so = wo_.input_scales(out2);
  tp_.reduce_rows(y, N, [&](int64_t first, int64_t count, Tensor& partial) {
    wo_.forward(rows_of(out2, first, count), so.rows(first, count), wo, partial);
  });
}

void Attention::backward_input(const Tensor& dy, const SequenceLayout& seq, AttentionRecord& r,
                               Tensor& dx, ops::Accumulate accumulate) const {
  const int64_t B = r.q.size(0), T = r.q.size(1), hq = r.q.size(2), hkv = r.k.size(2);
  const int64_t N = B * T, hd = head_dim_;
  const Device dev = dy.device();
  const DType act = dy.dtype();
  Tensor dout = Tensor::empty(r.out.shape(), act, dev);
  const Tensor dout2 = dout.reshape({N, hq * hd});
  const GemmOperand wo = wo_.grad_input_weight();
  const Float8Scales so = wo_.grad_output_scales(dy);
  tp_.gather_rows(dy, r.dy, [&](const Tensor& rows, int64_t first) {
    Tensor d = rows_of(dout2, first, rows.size(0));
    wo_.backward_input(rows, so.rows(first, rows.size(0)), wo, d, ops::Accumulate::No);
  });
  r.dq = Tensor::empty(r.q.shape(), act, dev);
  r.dk = Tensor::empty(r.k.shape(), act, dev);
  r.dv = Tensor::empty(r.v.shape(), act, dev);
  cp_.attention_backward(dout, r.q, r.k, r.v, r.out, r.lse, attention_scale(hd), seq, r.dq, r.dk,
                         r.dv);
  ops::rope_backward(r.dq, seq.freqs, r.dq);
  ops::rope_backward(r.dk, seq.freqs, r.dk);
  r.dq = r.dq.reshape({N, hq * hd});
  r.dk = r.dk.reshape({N, hkv * hd});
  r.dv = r.dv.reshape({N, hkv * hd});
  const GemmOperand wq = wq_.grad_input_weight(), wk = wk_.grad_input_weight();
  const GemmOperand wv = wv_.grad_input_weight();
  const Float8Scales sq = wq_.grad_output_scales(r.dq), sk = wk_.grad_output_scales(r.dk);
  const Float8Scales sv = wv_.grad_output_scales(r.dv);
  reduce_rows_into(tp_, dx, N, accumulate, [&](int64_t first, int64_t count, Tensor& partial) {
    using ops::Accumulate;
    wq_.backward_input(rows_of(r.dq, first, count), sq.rows(first, count), wq, partial,
                       Accumulate::No);
    wk_.backward_input(rows_of(r.dk, first, count), sk.rows(first, count), wk, partial,
                       Accumulate::Yes);
    wv_.backward_input(rows_of(r.dv, first, count), sv.rows(first, count), wv, partial,
                       Accumulate::Yes);
  });
}

void Attention::backward_weight(AttentionRecord& r) {
  const int64_t rows = r.x.size(0);
  wo_.backward_weight(r.dy, r.out.reshape({rows, -1}));
  wq_.backward_weight(r.dq, r.x);
  wk_.backward_weight(r.dk, r.x);
  wv_.backward_weight(r.dv, r.x);
  r = AttentionRecord{};  // the microbatch is done with this layer
}

}  // namespace titan::nn
