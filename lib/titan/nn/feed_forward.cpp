#include "titan/nn/feed_forward.h"

#include "titan/ops/swiglu.h"

namespace titan::nn {

int64_t FeedForwardRecord::bytes() const {
  int64_t total = 0;
  for (const Tensor* t : {&a, &b, &g, &dy, &da, &db}) {
    if (t->defined()) total += t->bytes();
  }
  return total + (x_gathered ? x.bytes() : 0);  // an input of the caller's is not ours
}

FeedForward::FeedForward(const std::string& prefix, int64_t dim, int64_t hidden_dim, InitRule init,
                         InitRule output_init, const Placer& placer)
    : tp_(placer.tp_group()),
      w1_(prefix + ".w1", dim, hidden_dim, init, placer),
      w2_(prefix + ".w2", hidden_dim, dim, output_init, placer),
      w3_(prefix + ".w3", dim, hidden_dim, output_init, placer) {}

std::vector<Parameter*> FeedForward::parameters() {
  return {&w1_.weight(), &w2_.weight(), &w3_.weight()};
}

void FeedForward::forward(const Tensor& x, Tensor& y, FeedForwardRecord& r) const {
  const int64_t N = x.size(0) * (tp_.sequence_parallel() ? tp_.size() : 1);
  const int64_t F = w1_.weight().value_shape()[0];  // this rank's slice of the hidden dim
  const Device dev = x.device();
  const DType act = x.dtype();  // activations: the input's dtype and device
  r.a = Tensor::empty({N, F}, act, dev);
  r.b = Tensor::empty({N, F}, act, dev);
  r.g = Tensor::empty({N, F}, act, dev);
  r.x_gathered = tp_.sequence_parallel();
  const GemmOperand w1 = w1_.forward_weight(), w3 = w3_.forward_weight();
  const Float8Scales s1 = w1_.input_scales(x), s3 = w3_.input_scales(x);
  tp_.gather_rows(x, r.x, [&](const Tensor& rows, int64_t first) {
    const int64_t n = rows.size(0);
    Tensor a = r.a.narrow(first, n), b = r.b.narrow(first, n);
    w1_.forward(rows, s1.rows(first, n), w1, a);
    w3_.forward(rows, s3.rows(first, n), w3, b);
  });
  ops::swiglu_forward(r.a, r.b, r.g);
  const GemmOperand w2 = w2_.forward_weight();
  const Float8Scales s2 = w2_.input_scales(r.g);
  tp_.reduce_rows(y, N, [&](int64_t first, int64_t count, Tensor& partial) {
    w2_.forward(r.g.narrow(first, count), s2.rows(first, count), w2, partial);
  });
}

void FeedForward::backward_input(const Tensor& dy, FeedForwardRecord& r, Tensor& dx,
                                 ops::Accumulate accumulate) const {
  const Device dev = dy.device();
  const DType act = dy.dtype();
  Tensor dg = Tensor::empty(r.g.shape(), act, dev);
  const GemmOperand w2 = w2_.grad_input_weight();
  const Float8Scales s2 = w2_.grad_output_scales(dy);
  tp_.gather_rows(dy, r.dy, [&](const Tensor& rows, int64_t first) {
    Tensor d = dg.narrow(first, rows.size(0));
    w2_.backward_input(rows, s2.rows(first, rows.size(0)), w2, d, ops::Accumulate::No);
  });
  r.da = Tensor::empty(r.a.shape(), act, dev);
  r.db = Tensor::empty(r.b.shape(), act, dev);
  ops::swiglu_backward(dg, r.a, r.b, r.da, r.db);
  const GemmOperand w1 = w1_.grad_input_weight(), w3 = w3_.grad_input_weight();
  const Float8Scales s1 = w1_.grad_output_scales(r.da), s3 = w3_.grad_output_scales(r.db);
  reduce_rows_into(tp_, dx, r.a.size(0), accumulate,
                   [&](int64_t first, int64_t count, Tensor& partial) {
                     w1_.backward_input(r.da.narrow(first, count), s1.rows(first, count), w1,
                                        partial, ops::Accumulate::No);
                     w3_.backward_input(r.db.narrow(first, count), s3.rows(first, count), w3,
                                        partial, ops::Accumulate::Yes);
                   });
}

void FeedForward::backward_weight(FeedForwardRecord& r) {
  w2_.backward_weight(r.dy, r.g);
  w1_.backward_weight(r.da, r.x);
  w3_.backward_weight(r.db, r.x);
  r = FeedForwardRecord{};
}

}  // namespace titan::nn
