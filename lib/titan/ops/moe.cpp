// Device-independent parts of ops/moe.h: the router's checks, the sort of the picks by
// expert (a host computation) and the grouped GEMMs, which are the linear ops on views.
#include "titan/ops/moe.h"

#include "titan/ops/matmul.h"

namespace titan::ops {

void check_router(const Tensor& logits, const Tensor& bias, const RouterOptions& o,
                  const Tensor& scores, const Tensor& selected, const Tensor& weights,
                  FloatDTypes accepted) {
  const char* op = "router_forward";
  check_float_dtype(logits, accepted, op, "logits");
  TITAN_CHECK(logits.dim() == 2) << op << ": logits must be [N, E], got "
                                 << shape_string(logits.shape());
  const int64_t N = logits.size(0), E = logits.size(1);
  TITAN_CHECK(o.top_k >= 1 && o.groups >= 1 && E % o.groups == 0 && o.limited_groups >= 1 &&
              o.limited_groups <= o.groups && o.top_k <= o.limited_groups * (E / o.groups))
      << op << ": top " << o.top_k << " of " << E << " experts in " << o.groups
      << " groups, " << o.limited_groups << " of them kept, cannot be chosen";
  TITAN_CHECK(o.groups == 1 || E / o.groups >= 2)
      << op << ": a group's score sums its two best experts; groups of " << E / o.groups;
  if (bias.defined()) {
    check_shape(bias, {E}, op, "bias");
    check_dtype(bias, DType::F32, op, "bias");
  }
  check_shape(scores, {N, E}, op, "scores");
  check_dtype(scores, DType::F32, op, "scores");
  check_shape(selected, {N, o.top_k}, op, "selected");
  check_dtype(selected, DType::I32, op, "selected");
  check_shape(weights, {N, o.top_k}, op, "weights");
  check_dtype(weights, DType::F32, op, "weights");
}

void check_router_backward(const Tensor& dweights, const Tensor& scores, const Tensor& selected,
                           const RouterOptions& o, const Tensor& dlogits, FloatDTypes accepted) {
  const char* op = "router_backward";
  check_dtype(scores, DType::F32, op, "scores");
  TITAN_CHECK(scores.dim() == 2) << op << ": scores must be [N, E], got "
                                 << shape_string(scores.shape());
  const int64_t N = scores.size(0), E = scores.size(1);
  check_shape(selected, {N, o.top_k}, op, "selected");
  check_dtype(selected, DType::I32, op, "selected");
  check_shape(dweights, {N, o.top_k}, op, "dweights");
  check_dtype(dweights, DType::F32, op, "dweights");
  check_shape(dlogits, {N, E}, op, "dlogits");
  check_float_dtype(dlogits, accepted, op, "dlogits");
}

namespace {

// picks [M, D] against tokens [N, D], N K = M, of one accepted dtype; weights and dweights.
MoeRows check_rows(const Tensor& picks, const Tensor& tokens, const Tensor& order, int64_t K,
                   const Tensor& weights, const Tensor* dweights, FloatDTypes accepted,
                   const char* op) {
  check_float_dtype(picks, accepted, op, "rows");
  check_float_dtype(tokens, accepted, op, "tokens");
  TITAN_CHECK(picks.dtype() == tokens.dtype())
      << op << ": rows are " << dtype_name(picks.dtype()) << ", tokens "
      << dtype_name(tokens.dtype());
  check_dtype(order, DType::I32, op, "order");
  const int64_t D = picks.dim() == 0 ? 0 : picks.size(picks.dim() - 1);
  const int64_t M = D == 0 ? 0 : picks.numel() / D;
  const int64_t N = D == 0 ? 0 : tokens.numel() / D;
  TITAN_CHECK(D > 0 && K >= 1 && order.numel() == M && tokens.dim() > 0 &&
              tokens.size(tokens.dim() - 1) == D && N * K == M)
      << op << ": " << M << " picked rows of " << D << " for " << N << " tokens of " << K
      << " picks";
  if (weights.defined()) {
    TITAN_CHECK(weights.numel() == M && weights.dtype() == DType::F32)
        << op << ": weights must be f32 [" << M << "]";
    if (dweights) {
      check_shape(*dweights, {M}, op, "dweights");
      check_dtype(*dweights, DType::F32, op, "dweights");
    }
  }
  return {M, D};
}

// A backward's saved input, shaped and typed as the gradient beside it.
void check_saved(const Tensor& saved, const Tensor& like, const char* op, const char* arg) {
  check_shape(saved, like.shape(), op, arg);
  TITAN_CHECK(saved.dtype() == like.dtype())
      << op << ": " << arg << " is " << dtype_name(saved.dtype()) << ", its gradient "
      << dtype_name(like.dtype());
}

}  // namespace

MoeRows check_moe_dispatch(const Tensor& x, const Tensor& order, int64_t K,
                           const Tensor& weights, const Tensor& xs, FloatDTypes accepted) {
  return check_rows(xs, x, order, K, weights, nullptr, accepted, "moe_dispatch");
}

MoeRows check_moe_dispatch_backward(const Tensor& dxs, const Tensor& x, const Tensor& order,
                                    int64_t K, const Tensor& weights, const Tensor& dx,
                                    const Tensor& dweights, FloatDTypes accepted) {
  const char* op = "moe_dispatch_backward";
  const MoeRows rows = check_rows(dxs, dx, order, K, weights, &dweights, accepted, op);
  check_saved(x, dx, op, "x");
  return rows;
}

MoeRows check_moe_combine(const Tensor& ys, const Tensor& order, int64_t K,
                          const Tensor& weights, const Tensor& out, FloatDTypes accepted) {
  return check_rows(ys, out, order, K, weights, nullptr, accepted, "moe_combine");
}

MoeRows check_moe_combine_backward(const Tensor& dout, const Tensor& ys, const Tensor& order,
                                   int64_t K, const Tensor& weights, const Tensor& dys,
                                   const Tensor& dweights, FloatDTypes accepted) {
  const char* op = "moe_combine_backward";
  const MoeRows rows = check_rows(dys, dout, order, K, weights, &dweights, accepted, op);
  check_saved(ys, dys, op, "ys");
  return rows;
}

std::vector<int64_t> sort_picks(const Tensor& selected, int64_t experts, Tensor& order) {
  check_dtype(selected, DType::I32, "sort_picks", "selected");
  check_dtype(order, DType::I32, "sort_picks", "order");
  TITAN_CHECK(selected.device().is_cpu() && order.device().is_cpu() &&
              order.numel() == selected.numel())
      << "sort_picks: selected and order must be host tensors of the same size";
  std::vector<int64_t> offsets(size_t(experts) + 1, 0);
  const int64_t picks = selected.numel();
  if (counting_mode()) {  // no routing ran (a dry run): an even split, for the memory counts
    for (int64_t e = 0; e <= experts; ++e) offsets[size_t(e)] = picks * e / experts;
    return offsets;
  }
  const int32_t* sel = selected.data<int32_t>();
  for (int64_t p = 0; p < picks; ++p) {
    TITAN_CHECK(sel[p] >= 0 && sel[p] < experts) << "sort_picks: expert " << sel[p];
    ++offsets[size_t(sel[p]) + 1];
  }
  for (int64_t e = 0; e < experts; ++e) offsets[size_t(e) + 1] += offsets[size_t(e)];
  std::vector<int64_t> next(offsets.begin(), offsets.end() - 1);
  int32_t* out = order.mutable_data<int32_t>();
  for (int64_t p = 0; p < picks; ++p) out[next[size_t(sel[p])]++] = int32_t(p);
  return offsets;
}

namespace {

// Expert e's [out, in] matrix of a [E, out, in] weight, and rows [first, first + n) of t.
Tensor expert_matrix(const Tensor& w, int64_t e) {
  return w.narrow(e, 1).reshape({w.size(1), w.size(2)});
}

void check_grouped(const Tensor& x, const Tensor& w, const std::vector<int64_t>& offsets,
                   const char* op) {
  TITAN_CHECK(w.dim() == 3 && int64_t(offsets.size()) == w.size(0) + 1 &&
              offsets.front() == 0 && offsets.back() == x.size(0))
      << op << ": weight " << shape_string(w.shape()) << " with " << offsets.size()
      << " offsets over " << x.size(0) << " rows";
}

}  // namespace

void grouped_linear_forward(const Tensor& x, const Tensor& weight,
                            const std::vector<int64_t>& offsets, Tensor& y) {
  check_grouped(x, weight, offsets, "grouped_linear_forward");
  for (int64_t e = 0; e + 1 < int64_t(offsets.size()); ++e) {
    const int64_t first = offsets[size_t(e)], n = offsets[size_t(e) + 1] - first;
    if (n == 0) continue;
    Tensor ye = y.narrow(first, n);
    linear_forward(x.narrow(first, n), expert_matrix(weight, e), ye);
  }
}

void grouped_linear_backward_input(const Tensor& dy, const Tensor& weight,
                                   const std::vector<int64_t>& offsets, Tensor& dx,
                                   Accumulate accumulate) {
  check_grouped(dy, weight, offsets, "grouped_linear_backward_input");
  for (int64_t e = 0; e + 1 < int64_t(offsets.size()); ++e) {
    const int64_t first = offsets[size_t(e)], n = offsets[size_t(e) + 1] - first;
    if (n == 0) continue;
    Tensor dxe = dx.narrow(first, n);
    linear_backward_input(dy.narrow(first, n), expert_matrix(weight, e), dxe, accumulate);
  }
}

void grouped_linear_backward_weight(const Tensor& dy, const Tensor& x,
                                    const std::vector<int64_t>& offsets, Tensor& dweight) {
  check_grouped(x, dweight, offsets, "grouped_linear_backward_weight");
  TITAN_CHECK(dy.size(0) == x.size(0))
      << "grouped_linear_backward_weight: " << dy.size(0) << " gradient rows for " << x.size(0)
      << " input rows";
  for (int64_t e = 0; e + 1 < int64_t(offsets.size()); ++e) {
    const int64_t first = offsets[size_t(e)], n = offsets[size_t(e) + 1] - first;
    if (n == 0) continue;
    Tensor dwe = expert_matrix(dweight, e);
    linear_backward_weight(dy.narrow(first, n), x.narrow(first, n), dwe);
  }
}

}  // namespace titan::ops
