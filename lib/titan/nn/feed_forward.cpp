#include "titan/nn/feed_forward.h"

#include "titan/ops/swiglu.h"

namespace titan::nn {

int64_t FeedForwardRecord::bytes() const {
  int64_t total = 0;
  for (const Tensor* t : {&a, &b, &g, &dy, &da, &db}) {
    if (t->defined()) total += t->bytes();
  }
  return total;
}

FeedForward::FeedForward(const std::string& prefix, int64_t dim, int64_t hidden_dim, InitRule init,
                         InitRule output_init, const Placer& placer)
    : w1_(prefix + ".w1", dim, hidden_dim, init, placer),
      w2_(prefix + ".w2", hidden_dim, dim, output_init, placer),
      w3_(prefix + ".w3", dim, hidden_dim, output_init, placer) {}

std::vector<Parameter*> FeedForward::parameters() {
  return {&w1_.weight(), &w2_.weight(), &w3_.weight()};
}

void FeedForward::forward(const Tensor& x, Tensor& y, FeedForwardRecord& r) const {
  const Tensor x2 = x.flatten_to_2d();
  const int64_t N = x2.size(0), F = w1_.out_features();
  const Device dev = x.device();
  const DType act = x.dtype();  // activations: the input's dtype and device
  r.a = Tensor::empty({N, F}, act, dev);
  r.b = Tensor::empty({N, F}, act, dev);
  r.g = Tensor::empty({N, F}, act, dev);
  w1_.forward(x2, r.a);
  w3_.forward(x2, r.b);
  ops::swiglu_forward(r.a, r.b, r.g);
  Tensor y2 = y.flatten_to_2d();
  w2_.forward(r.g, y2);
}

void FeedForward::backward_input(const Tensor& dy, FeedForwardRecord& r, Tensor& dx,
                                 ops::Accumulate accumulate) const {
  const Device dev = dy.device();
  const DType act = dy.dtype();
  r.dy = dy.flatten_to_2d();
  Tensor dg = Tensor::empty(r.g.shape(), act, dev);
  w2_.backward_input(r.dy, dg, ops::Accumulate::No);
  r.da = Tensor::empty(r.a.shape(), act, dev);
  r.db = Tensor::empty(r.b.shape(), act, dev);
  ops::swiglu_backward(dg, r.a, r.b, r.da, r.db);
  Tensor dx2 = dx.flatten_to_2d();
  w1_.backward_input(r.da, dx2, accumulate);
  w3_.backward_input(r.db, dx2, ops::Accumulate::Yes);
}

void FeedForward::backward_weight(const Tensor& x, FeedForwardRecord& r) {
  const Tensor x2 = x.flatten_to_2d();
  w2_.backward_weight(r.dy, r.g);
  w1_.backward_weight(r.da, x2);
  w3_.backward_weight(r.db, x2);
  r = FeedForwardRecord{};
}

}  // namespace titan::nn
