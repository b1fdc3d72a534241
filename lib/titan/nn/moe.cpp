#include "titan/nn/moe.h"

#include <algorithm>
#include <cmath>

#include "titan/core/copy.h"
#include "titan/ops/elementwise.h"
#include "titan/ops/swiglu.h"

namespace titan::nn {

int64_t MoeRecord::bytes() const {
  int64_t total = shared.bytes();
  for (const Tensor* t : {&scores, &selected, &weights, &order, &xs, &a, &b, &g, &ys, &dys, &da,
                          &db, &dlogits}) {
    if (t->defined()) total += t->bytes();
  }
  return total;  // x is the caller's
}

Moe::Moe(const std::string& prefix, const MoeDims& d, InitRule init, InitRule output_init,
         const Placer& placer)
    : dims_(d),
      w1_(prefix + ".experts.w1", {d.experts, d.hidden_dim, d.dim}, init,
          placer(prefix + ".experts.w1")),
      w2_(prefix + ".experts.w2", {d.experts, d.dim, d.hidden_dim}, output_init,
          placer(prefix + ".experts.w2")),
      w3_(prefix + ".experts.w3", {d.experts, d.hidden_dim, d.dim}, output_init,
          placer(prefix + ".experts.w3")),
      gate_(prefix + ".router.gate", d.dim, d.experts, output_init, placer) {
  TITAN_CHECK(placer.tp_group().size() == 1 && placer.layout().ep.size == 1)
      << prefix << ": the mixture of experts runs on one tensor- and expert-parallel rank";
  if (d.shared_experts > 0) {
    shared_.emplace(prefix + ".shared_experts", d.dim, d.hidden_dim * d.shared_experts, init,
                    output_init, placer);
  }
  load_ = Tensor::zeros({d.experts}, DType::F32);
  if (d.load_balance_coeff) bias_ = Tensor::zeros({d.experts}, DType::F32);
}

std::vector<Parameter*> Moe::parameters() {
  std::vector<Parameter*> params = {&w1_, &w2_, &w3_, &gate_.weight()};
  if (shared_) {
    for (Parameter* p : shared_->parameters()) params.push_back(p);
  }
  return params;
}

void Moe::forward(const Tensor& x, Tensor& y, MoeRecord& r, bool count_load) const {
  const int64_t N = x.size(0), D = dims_.dim, E = dims_.experts, K = dims_.router.top_k;
  const int64_t F = dims_.hidden_dim, M = N * K;
  const Device dev = x.device();
  const DType act = x.dtype();
  r.x = x;
  // Route.
  Tensor logits = Tensor::empty({N, E}, DType::F32, dev);
  gate_.forward(x, logits);
  r.scores = Tensor::empty({N, E}, DType::F32, dev);
  r.selected = Tensor::empty({N, K}, DType::I32, dev);
  r.weights = Tensor::empty({N, K}, DType::F32, dev);
  ops::router_forward(logits, bias_, dims_.router, r.scores, r.selected, r.weights);
  r.order = Tensor::empty({M}, DType::I32);
  r.offsets = ops::sort_picks(r.selected, E, r.order);
  if (count_load && !counting_mode()) {
    float* load = load_.mutable_data<float>();
    for (int64_t e = 0; e < E; ++e) {
      load[e] += float(r.offsets[size_t(e) + 1] - r.offsets[size_t(e)]);
    }
  }
  // The routed experts on the sorted picks.
  const Tensor pick_weights = r.weights.reshape({M});
  r.xs = Tensor::empty({M, D}, act, dev);
  ops::moe_dispatch(x, r.order, K, dims_.score_before_experts ? pick_weights : Tensor(), r.xs);
  r.a = Tensor::empty({M, F}, act, dev);
  r.b = Tensor::empty({M, F}, act, dev);
  ops::grouped_linear_forward(r.xs, w1_.value(), r.offsets, r.a);
  ops::grouped_linear_forward(r.xs, w3_.value(), r.offsets, r.b);
  r.g = Tensor::empty({M, F}, act, dev);
  ops::swiglu_forward(r.a, r.b, r.g);
  r.ys = Tensor::empty({M, D}, act, dev);
  ops::grouped_linear_forward(r.g, w2_.value(), r.offsets, r.ys);
  // The shared experts, then each token's picks added in.
  if (shared_) {
    shared_->forward(x, y, r.shared);
  } else {
    ops::fill(y, 0.0f);
  }
  ops::moe_combine(r.ys, r.order, K, dims_.score_before_experts ? Tensor() : pick_weights, y);
}

void Moe::backward_input(const Tensor& dy, MoeRecord& r, Tensor& dx,
                         ops::Accumulate accumulate) const {
  const int64_t N = r.x.size(0), E = dims_.experts, K = dims_.router.top_k, M = N * K;
  const Device dev = dy.device();
  const DType act = dy.dtype();
  const Tensor pick_weights = r.weights.reshape({M});
  Tensor dweights = Tensor::empty({M}, DType::F32, dev);
  r.dys = Tensor::empty(r.ys.shape(), act, dev);
  ops::moe_combine_backward(dy, r.ys, r.order, K,
                            dims_.score_before_experts ? Tensor() : pick_weights, r.dys, dweights);
  Tensor dg = Tensor::empty(r.g.shape(), act, dev);
  ops::grouped_linear_backward_input(r.dys, w2_.value(), r.offsets, dg, ops::Accumulate::No);
  r.da = Tensor::empty(r.a.shape(), act, dev);
  r.db = Tensor::empty(r.b.shape(), act, dev);
  ops::swiglu_backward(dg, r.a, r.b, r.da, r.db);
  Tensor dxs = Tensor::empty(r.xs.shape(), act, dev);
  ops::grouped_linear_backward_input(r.da, w1_.value(), r.offsets, dxs, ops::Accumulate::No);
  ops::grouped_linear_backward_input(r.db, w3_.value(), r.offsets, dxs, ops::Accumulate::Yes);
  Tensor dx_routed = Tensor::empty(r.x.shape(), act, dev);
  ops::moe_dispatch_backward(dxs, r.x, r.order, K,
                             dims_.score_before_experts ? pick_weights : Tensor(), dx_routed,
                             dweights);
  r.dlogits = Tensor::empty({N, E}, DType::F32, dev);
  ops::router_backward(dweights.reshape({N, K}), r.scores, r.selected, dims_.router, r.dlogits);
  if (shared_) {
    shared_->backward_input(dy, r.shared, dx, accumulate);
    ops::accumulate(dx_routed, dx);
  } else if (accumulate == ops::Accumulate::Yes) {
    ops::accumulate(dx_routed, dx);
  } else {
    copy_tensor(dx_routed, dx);
  }
  gate_.backward_input(r.dlogits, dx, ops::Accumulate::Yes);
}

void Moe::backward_weight(MoeRecord& r) {
  ops::grouped_linear_backward_weight(r.dys, r.g, r.offsets, w2_.grad());
  ops::grouped_linear_backward_weight(r.da, r.xs, r.offsets, w1_.grad());
  ops::grouped_linear_backward_weight(r.db, r.xs, r.offsets, w3_.grad());
  gate_.backward_weight(r.dlogits, r.x);
  if (shared_) shared_->backward_weight(r.shared);
  r = MoeRecord{};
}

void Moe::update_bias(const float* load) {
  const int64_t E = dims_.experts;
  if (bias_.defined()) {
    double mean = 0;
    for (int64_t e = 0; e < E; ++e) mean += load[e];
    mean /= double(E);
    // torchtitan's rule in f32: delta = coeff sign(mean - c), then delta - mean(delta).
    std::vector<float> delta(static_cast<size_t>(E));
    float delta_sum = 0;
    for (int64_t e = 0; e < E; ++e) {
      const double gap = mean - double(load[e]);
      delta[size_t(e)] = float(*dims_.load_balance_coeff) * float((gap > 0) - (gap < 0));
      delta_sum += delta[size_t(e)];
    }
    float* bias = bias_.mutable_data<float>();
    for (int64_t e = 0; e < E; ++e) bias[e] += delta[size_t(e)] - delta_sum / float(E);
  }
  ops::fill(load_, 0.0f);
}

}  // namespace titan::nn
