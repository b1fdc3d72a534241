#include "titan/nn/attention.h"

#include <cmath>

#include "titan/core/threads.h"
#include "titan/ops/attention.h"
#include "titan/ops/rope.h"

namespace titan::nn {

int64_t AttentionRecord::bytes() const {
  int64_t total = 0;
  for (const Tensor* t : {&q, &k, &v, &out, &lse, &dy, &dq, &dk, &dv}) {
    if (t->defined()) total += t->bytes();
  }
  return total;
}

Attention::Attention(const std::string& prefix, int64_t dim, int64_t n_heads, int64_t n_kv_heads,
                     InitRule init, InitRule output_init, const Placer& placer)
    : n_heads_(n_heads),
      n_kv_heads_(n_kv_heads),
      head_dim_(dim / n_heads),
      wq_(prefix + ".wq", dim, n_heads * (dim / n_heads), init, placer),
      wk_(prefix + ".wk", dim, n_kv_heads * (dim / n_heads), init, placer),
      wv_(prefix + ".wv", dim, n_kv_heads * (dim / n_heads), init, placer),
      wo_(prefix + ".wo", n_heads * (dim / n_heads), dim, output_init, placer) {}

std::vector<Parameter*> Attention::parameters() {
  return {&wq_.weight(), &wk_.weight(), &wv_.weight(), &wo_.weight()};
}

namespace {

Tensor workspace_for(int64_t bytes, Device device) {
  return Tensor::empty({bytes}, DType::U8, device);
}

float attention_scale(int64_t head_dim) { return 1.0f / std::sqrt(float(head_dim)); }

}  // namespace

void Attention::forward(const Tensor& x, const Tensor& freqs, Tensor& y, AttentionRecord& r) const {
  const int64_t B = x.size(0), T = x.size(1), hd = head_dim_;
  const Device dev = x.device();
  const DType act = x.dtype();  // activations: the input's dtype and device
  const Tensor x2 = x.flatten_to_2d();
  r.q = Tensor::empty({B, T, n_heads_, hd}, act, dev);
  r.k = Tensor::empty({B, T, n_kv_heads_, hd}, act, dev);
  r.v = Tensor::empty({B, T, n_kv_heads_, hd}, act, dev);
  Tensor q2 = r.q.reshape({B * T, n_heads_ * hd}), k2 = r.k.reshape({B * T, n_kv_heads_ * hd});
  Tensor v2 = r.v.reshape({B * T, n_kv_heads_ * hd});
  wq_.forward(x2, q2);
  wk_.forward(x2, k2);
  wv_.forward(x2, v2);
  ops::rope_forward(r.q, freqs, r.q);
  ops::rope_forward(r.k, freqs, r.k);
  r.out = Tensor::empty(r.q.shape(), act, dev);
  r.lse = Tensor::empty({B, n_heads_, T}, DType::F32, dev);
  Tensor workspace = workspace_for(
      ops::attention_forward_workspace_bytes(r.q.device(), B, T, n_heads_, n_kv_heads_, hd,
                                             thread_count()), r.q.device());
  ops::attention_forward(r.q, r.k, r.v, attention_scale(hd), ops::AttentionMask::Causal, r.out,
                         r.lse, workspace);
  Tensor y2 = y.flatten_to_2d();
  wo_.forward(r.out.reshape({B * T, n_heads_ * hd}), y2);
}

void Attention::backward_input(const Tensor& dy, const Tensor& freqs, AttentionRecord& r,
                               Tensor& dx, ops::Accumulate accumulate) const {
  const int64_t B = r.q.size(0), T = r.q.size(1), hd = head_dim_;
  const Device dev = dy.device();
  const DType act = dy.dtype();
  r.dy = dy.flatten_to_2d();
  Tensor dout = Tensor::empty(r.out.shape(), act, dev);
  Tensor dout2 = dout.reshape({B * T, n_heads_ * hd});
  wo_.backward_input(r.dy, dout2, ops::Accumulate::No);
  r.dq = Tensor::empty(r.q.shape(), act, dev);
  r.dk = Tensor::empty(r.k.shape(), act, dev);
  r.dv = Tensor::empty(r.v.shape(), act, dev);
  Tensor workspace = workspace_for(
      ops::attention_backward_workspace_bytes(r.q.device(), B, T, n_heads_, n_kv_heads_, hd,
                                              thread_count()), r.q.device());
  ops::attention_backward(dout, r.q, r.k, r.v, r.out, r.lse, attention_scale(hd),
                          ops::AttentionMask::Causal, r.dq, r.dk, r.dv, ops::Accumulate::No,
                          workspace);
  ops::rope_backward(r.dq, freqs, r.dq);
  ops::rope_backward(r.dk, freqs, r.dk);
  r.dq = r.dq.reshape({B * T, n_heads_ * hd});
  r.dk = r.dk.reshape({B * T, n_kv_heads_ * hd});
  r.dv = r.dv.reshape({B * T, n_kv_heads_ * hd});
  Tensor dx2 = dx.flatten_to_2d();
  wq_.backward_input(r.dq, dx2, accumulate);
  wk_.backward_input(r.dk, dx2, ops::Accumulate::Yes);
  wv_.backward_input(r.dv, dx2, ops::Accumulate::Yes);
}

void Attention::backward_weight(const Tensor& x, AttentionRecord& r) {
  const Tensor x2 = x.flatten_to_2d();
  const int64_t rows = x2.size(0);
  wo_.backward_weight(r.dy, r.out.reshape({rows, -1}));
  wq_.backward_weight(r.dq, x2);
  wk_.backward_weight(r.dk, x2);
  wv_.backward_weight(r.dv, x2);
  r = AttentionRecord{};  // the microbatch is done with this layer
}

}  // namespace titan::nn
