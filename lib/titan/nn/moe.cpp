#include "titan/nn/moe.h"

#include <algorithm>
#include <cmath>

#include "titan/core/copy.h"
#include "titan/ops/elementwise.h"
#include "titan/ops/swiglu.h"

namespace titan::nn {

int64_t MoeRecord::bytes() const {
  int64_t total = shared.bytes();
  for (const Tensor* t : {&scores, &selected, &weights, &order, &to_local, &from_local, &xl, &a,
                          &b, &g, &ys, &dyl, &da, &db, &dlogits}) {
    if (t->defined()) total += t->bytes();
  }
  if (!tokens.shares_storage_with(x)) total += tokens.bytes();
  return total;  // x is the caller's
}

Moe::Moe(const std::string& prefix, const MoeDims& d, InitRule init, InitRule output_init,
         const Placer& placer)
    : dims_(d),
      ep_(placer.layout().ep_group()),
      tp_(placer.layout().tp_group()),
      expert_tp_(placer.layout().expert_tensor_parallel && tp_.size() > 1),
      w1_(prefix + ".experts.w1", {d.experts, d.hidden_dim, d.dim}, init,
          placer(prefix + ".experts.w1")),
      w2_(prefix + ".experts.w2", {d.experts, d.dim, d.hidden_dim}, output_init,
          placer(prefix + ".experts.w2")),
      w3_(prefix + ".experts.w3", {d.experts, d.hidden_dim, d.dim}, output_init,
          placer(prefix + ".experts.w3")),
      gate_(prefix + ".router.gate", d.dim, d.experts, output_init, placer) {
  TITAN_CHECK(ep_.size() == placer.layout().ep.size && d.experts % ep_.size() == 0)
      << prefix << ": " << d.experts << " experts over " << placer.layout().ep.size
      << " expert-parallel ranks (an exchange of " << ep_.size() << ")";
  if (d.shared_experts > 0) {
    shared_.emplace(prefix + ".shared_experts", d.dim, d.hidden_dim * d.shared_experts, init,
                    output_init, placer.without_tensor_parallel());
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
  const Device dev = x.device();
  const DType act = x.dtype();
  const int64_t D = dims_.dim, E = dims_.experts, K = dims_.router.top_k;
  const int64_t F = w1_.value().size(1);  // F, or F / tp under expert tensor parallelism
  r.x = x;
  // Route: the logits in the activations' dtype (the gate is a linear like any other), the
  // scores and weights in f32. The picks are sorted on the host (the exchange plan and the
  // grouped GEMMs' row ranges are host values); a GPU gets the order back. Under expert
  // TP the gate runs on the rank's rows and the router on all of them.
  Tensor logits = Tensor::empty({x.size(0), E}, act, dev);
  gate_.forward(x, logits);
  r.tokens = x;
  if (expert_tp_) {
    const UseRows whole = [](const Tensor&, int64_t) {};
    tp_.gather_rows(x, r.tokens, whole);
    Tensor own_logits = logits;
    tp_.gather_rows(own_logits, logits, whole);
  }
  const int64_t N = r.tokens.size(0), M = N * K;
  r.scores = Tensor::empty({N, E}, DType::F32, dev);
  r.selected = Tensor::empty({N, K}, DType::I32, dev);
  r.weights = Tensor::empty({N, K}, DType::F32, dev);
  ops::router_forward(logits, on_device(bias_, dev), dims_.router, r.scores, r.selected,
                      r.weights);
  const Tensor selected = on_device(r.selected, Device::cpu());
  Tensor order = Tensor::empty({M}, DType::I32);
  r.offsets = ops::sort_picks(selected, E, order);
  r.order = on_device(order, dev);
  if (count_load && !counting_mode()) {  // the picks of the rank's own rows
    float* load = load_.mutable_data<float>();
    const int32_t* picks = selected.data<int32_t>() + own_first(x, r.tokens) * K;
    for (int64_t p = 0; p < x.size(0) * K; ++p) load[picks[p]] += 1.0f;
  }
  // The routed experts on the sorted picks (on the ranks that hold them).
  const Tensor pick_weights = r.weights.reshape({M});
  Tensor xs = Tensor::empty({M, D}, act, dev);
  ops::moe_dispatch(r.tokens, r.order, K, dims_.score_before_experts ? pick_weights : Tensor(),
                    xs);
  plan_exchange(r);
  r.xl = to_local_experts(xs, r);
  const int64_t R = r.xl.size(0);
  r.a = Tensor::empty({R, F}, act, dev);
  r.b = Tensor::empty({R, F}, act, dev);
  ops::grouped_linear_forward(r.xl, w1_.value(), r.local_offsets, r.a);
  ops::grouped_linear_forward(r.xl, w3_.value(), r.local_offsets, r.b);
  r.g = Tensor::empty({R, F}, act, dev);
  ops::swiglu_forward(r.a, r.b, r.g);
  Tensor yl = Tensor::empty({R, D}, act, dev);
  ops::grouped_linear_forward(r.g, w2_.value(), r.local_offsets, yl);
  r.ys = from_local_experts(yl, r);
  // The shared experts, then each token's picks added in (under expert TP: the partial sums
  // of all N rows, reduced over tp to the rank's rows).
  if (shared_) {
    shared_->forward(x, y, r.shared);
  } else {
    ops::fill(y, 0.0f);
  }
  const Tensor combine_weights = dims_.score_before_experts ? Tensor() : pick_weights;
  if (!expert_tp_) {
    ops::moe_combine(r.ys, r.order, K, combine_weights, y);
    return;
  }
  Tensor partial = Tensor::zeros({N, D}, act, dev);
  ops::moe_combine(r.ys, r.order, K, combine_weights, partial);
  reduce_rows_into(tp_, y, N, ops::Accumulate::Yes,
                   [&](int64_t first, int64_t count, Tensor& out) {
                     copy_tensor(partial.narrow(first, count), out);
                   });
}

int64_t Moe::own_first(const Tensor& x, const Tensor& tokens) const {
  return tokens.size(0) == x.size(0) ? 0 : tp_.rank() * x.size(0);
}

void Moe::backward_input(const Tensor& dy, MoeRecord& r, Tensor& dx,
                         ops::Accumulate accumulate) const {
  const int64_t N = r.tokens.size(0), E = dims_.experts, K = dims_.router.top_k, M = N * K;
  const Device dev = dy.device();
  const DType act = dy.dtype();
  const Tensor pick_weights = r.weights.reshape({M});
  Tensor dweights = Tensor::empty({M}, DType::F32, dev);
  Tensor dys = Tensor::empty(r.ys.shape(), act, dev);
  Tensor dy_tokens = dy;  // the gradient at the routed rows (reduce_rows' backward)
  if (expert_tp_) tp_.gather_rows(dy, dy_tokens, [](const Tensor&, int64_t) {});
  ops::moe_combine_backward(dy_tokens, r.ys, r.order, K,
                            dims_.score_before_experts ? Tensor() : pick_weights, dys, dweights);
  r.dyl = to_local_experts(dys, r);
  Tensor dg = Tensor::empty(r.g.shape(), act, dev);
  ops::grouped_linear_backward_input(r.dyl, w2_.value(), r.local_offsets, dg,
                                     ops::Accumulate::No);
  r.da = Tensor::empty(r.a.shape(), act, dev);
  r.db = Tensor::empty(r.b.shape(), act, dev);
  ops::swiglu_backward(dg, r.a, r.b, r.da, r.db);
  Tensor dxl = Tensor::empty(r.xl.shape(), act, dev);
  ops::grouped_linear_backward_input(r.da, w1_.value(), r.local_offsets, dxl,
                                     ops::Accumulate::No);
  ops::grouped_linear_backward_input(r.db, w3_.value(), r.local_offsets, dxl,
                                     ops::Accumulate::Yes);
  const Tensor dxs = from_local_experts(dxl, r);
  Tensor dx_routed = Tensor::empty(r.tokens.shape(), act, dev);
  ops::moe_dispatch_backward(dxs, r.tokens, r.order, K,
                             dims_.score_before_experts ? pick_weights : Tensor(), dx_routed,
                             dweights);
  if (expert_tp_) {
    // Partial over the experts' hidden slices: dweights summed over tp, and the rows'
    // gradient reduced to the rank's rows (gather_rows' backward).
    tp_.all_reduce(dweights, RowReduce::Sum);
    Tensor partial = dx_routed;
    dx_routed = Tensor::empty(r.x.shape(), act, dev);
    reduce_rows_into(tp_, dx_routed, N, ops::Accumulate::No,
                     [&](int64_t first, int64_t count, Tensor& out) {
                       copy_tensor(partial.narrow(first, count), out);
                     });
  }
  Tensor dlogits = Tensor::empty({N, E}, act, dev);
  ops::router_backward(dweights.reshape({N, K}), r.scores, r.selected, dims_.router, dlogits);
  r.dlogits = dlogits.narrow(own_first(r.x, r.tokens), r.x.size(0));  // the gate's rows
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
  ops::grouped_linear_backward_weight(r.dyl, r.g, r.local_offsets, w2_.grad());
  ops::grouped_linear_backward_weight(r.da, r.xl, r.local_offsets, w1_.grad());
  ops::grouped_linear_backward_weight(r.db, r.xl, r.local_offsets, w3_.grad());
  gate_.backward_weight(r.dlogits, r.x);
  if (shared_) shared_->backward_weight(r.shared);
  r = MoeRecord{};
}

void Moe::plan_exchange(MoeRecord& r) const {
  const int64_t P = ep_.size(), E = dims_.experts, local = E / P;
  if (P == 1) {
    r.local_offsets = r.offsets;
    return;
  }
  if (counting_mode()) {  // a dry run moves nothing: count as many rows back as sent
    r.send_rows.assign(size_t(P), 0);
    for (int64_t p = 0; p < P; ++p) {
      r.send_rows[size_t(p)] = r.offsets[size_t((p + 1) * local)] - r.offsets[size_t(p * local)];
    }
    r.recv_rows = r.send_rows;
    const int64_t R = r.order.numel();
    r.to_local = Tensor::empty({R}, DType::I32);
    r.from_local = Tensor::empty({R}, DType::I32);
    r.local_offsets.assign(size_t(local) + 1, 0);
    for (int64_t j = 0; j <= local; ++j) r.local_offsets[size_t(j)] = R * j / local;
    return;
  }
  // Every rank tells each other how many rows it sends each of its experts.
  Tensor counts = Tensor::empty({E, 1}, DType::I64);
  for (int64_t e = 0; e < E; ++e) {
    counts.mutable_data<int64_t>()[e] = r.offsets[size_t(e) + 1] - r.offsets[size_t(e)];
  }
  const Device dev = r.order.device();  // where the group's communicator moves data
  Tensor got_here = Tensor::empty({P * local, 1}, DType::I64, dev);
  const std::vector<int64_t> per_rank(size_t(P), local);
  ep_.exchange(on_device(counts, dev), per_rank, got_here, per_rank);
  const Tensor got = on_device(got_here, Device::cpu());
  const int64_t* n = got.data<int64_t>();  // n[p * local + j]: rows from rank p for expert j
  r.send_rows.assign(size_t(P), 0);
  r.recv_rows.assign(size_t(P), 0);
  std::vector<int64_t> start(size_t(P * local));  // of block (p, j) in the received order
  int64_t received = 0;
  for (int64_t p = 0; p < P; ++p) {
    r.send_rows[size_t(p)] = r.offsets[size_t((p + 1) * local)] - r.offsets[size_t(p * local)];
    for (int64_t j = 0; j < local; ++j) {
      start[size_t(p * local + j)] = received;
      received += n[p * local + j];
      r.recv_rows[size_t(p)] += n[p * local + j];
    }
  }
  // The local order: by expert, then by source rank (the rows of one source in its order).
  r.to_local = Tensor::empty({received}, DType::I32);
  r.from_local = Tensor::empty({received}, DType::I32);
  int32_t* to = r.to_local.mutable_data<int32_t>();
  int32_t* from = r.from_local.mutable_data<int32_t>();
  r.local_offsets.assign(size_t(local) + 1, 0);
  int64_t m = 0;
  for (int64_t j = 0; j < local; ++j) {
    for (int64_t p = 0; p < P; ++p) {
      for (int64_t i = 0; i < n[p * local + j]; ++i, ++m) {
        to[m] = int32_t(start[size_t(p * local + j)] + i);
        from[to[m]] = int32_t(m);
      }
    }
    r.local_offsets[size_t(j) + 1] = m;
  }
  r.to_local = on_device(r.to_local, dev);
  r.from_local = on_device(r.from_local, dev);
}

Tensor Moe::to_local_experts(const Tensor& picked, const MoeRecord& r) const {
  if (ep_.size() == 1) return picked;
  const int64_t width = picked.size(1), R = r.to_local.numel();
  Tensor received = Tensor::empty({R, width}, picked.dtype(), picked.device());
  ep_.exchange(picked, r.send_rows, received, r.recv_rows);
  Tensor local = Tensor::empty({R, width}, picked.dtype(), picked.device());
  ops::moe_dispatch(received, r.to_local, 1, Tensor(), local);
  return local;
}

Tensor Moe::from_local_experts(const Tensor& local, const MoeRecord& r) const {
  if (ep_.size() == 1) return local;
  const int64_t width = local.size(1), R = r.from_local.numel();
  Tensor received = Tensor::empty({R, width}, local.dtype(), local.device());
  ops::moe_dispatch(local, r.from_local, 1, Tensor(), received);
  const int64_t M = r.order.numel();
  Tensor picked = Tensor::empty({M, width}, local.dtype(), local.device());
  ep_.exchange(received, r.recv_rows, picked, r.send_rows);
  return picked;
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
