// Mixture-of-experts routing and token movement (nn/moe.h, DeepSeek V3's MoE layer).
//
// Router, per token n of N, over E experts in G groups of E / G:
//   s[n, e]      = sigmoid(logits[n, e]), or softmax over e                 (f32)
//   c[n, e]      = s[n, e] + bias[e]                  (bias: load balancing; undefined = 0)
//   groups       G > 1: a group's score is the sum of its two largest c; the token keeps
//                the limited_groups best groups and may not choose outside them
//   selected[n]  the top_k experts of largest c among the kept ones, in that order; equal
//                values go to the lower expert (and the lower group) index, so a choice
//                never depends on how the experts are laid out
//   t[n, k]      = s[n, selected[n, k]]               (the bias chooses, it never weighs)
//   weights[n,k] = route_scale * t[n, k] / (sum_k t[n, k] + 1e-20)  with route_norm,
//                  route_scale * t[n, k] without
// router_backward takes the weights' gradient back to the logits' (=): through the norm,
// the selected scores and the sigmoid or softmax; the selection itself is constant.
//
// Token movement: a pick p = n K + k is token n's k-th choice. sort_picks orders the N K
// picks by expert (stably: by token within an expert) into `order` [N K] and gives the
// expert's rows [offsets[e], offsets[e + 1]) of the sorted rows.
//   dispatch:   xs[m] = x[order[m] / K]          (times weights[order[m]] when given)
//   combine:    out[order[m] / K] += ys[m]       (times weights[order[m]] when given),
//               added in the order of m, so each token sums its picks in a fixed order
// and their backwards (the gradients of x or ys (=), and of the weights (=) when given).
//
// Dtypes: scores, weights and their gradients f32; logits, dlogits and the rows f32 or bf16
// (the rows of one call share one dtype; both backends compute in f32); `selected` and
// `order` i32. Every tensor of a call on one device: order too, though sort_picks makes it
// on the host (the GPU's caller copies it over).
#pragma once

#include <cstdint>
#include <vector>

#include "titan/ops/checks.h"
#include "titan/ops/dispatch.h"

namespace titan::ops {

enum class RouterScore { Sigmoid, Softmax };

struct RouterOptions {
  RouterScore score = RouterScore::Sigmoid;
  int64_t top_k = 1;
  int64_t groups = 1;          // n_expert_groups
  int64_t limited_groups = 1;  // the groups a token may choose from (with groups > 1)
  bool route_norm = false;
  float route_scale = 1.0f;
  // debug.moe_force_load_balance (torchtitan's): pick p = n K + k goes to expert p mod E
  // whatever the scores, which still weigh it.
  bool force_balance = false;
};

// The checks every backend makes first (ops/moe.cpp), given its float dtypes.
void check_router(const Tensor& logits, const Tensor& bias, const RouterOptions& options,
                  const Tensor& scores, const Tensor& selected, const Tensor& weights,
                  FloatDTypes accepted);
void check_router_backward(const Tensor& dweights, const Tensor& scores, const Tensor& selected,
                           const RouterOptions& options, const Tensor& dlogits,
                           FloatDTypes accepted);
// The token-movement ops' checks (the rows of x and xs, ys and out, and their gradients, of
// one dtype; weights [M] f32 or undefined, dweights [M] f32 with weights). Return {M, D}.
struct MoeRows {
  int64_t M, D;
};
MoeRows check_moe_dispatch(const Tensor& x, const Tensor& order, int64_t top_k,
                           const Tensor& weights, const Tensor& xs, FloatDTypes accepted);
MoeRows check_moe_dispatch_backward(const Tensor& dxs, const Tensor& x, const Tensor& order,
                                    int64_t top_k, const Tensor& weights, const Tensor& dx,
                                    const Tensor& dweights, FloatDTypes accepted);
MoeRows check_moe_combine(const Tensor& ys, const Tensor& order, int64_t top_k,
                          const Tensor& weights, const Tensor& out, FloatDTypes accepted);
MoeRows check_moe_combine_backward(const Tensor& dout, const Tensor& ys, const Tensor& order,
                                   int64_t top_k, const Tensor& weights, const Tensor& dys,
                                   const Tensor& dweights, FloatDTypes accepted);

namespace cpu {
void router_forward(const Tensor& logits, const Tensor& bias, const RouterOptions& options,
                    Tensor& scores, Tensor& selected, Tensor& weights);
void router_backward(const Tensor& dweights, const Tensor& scores, const Tensor& selected,
                     const RouterOptions& options, Tensor& dlogits);
void moe_dispatch(const Tensor& x, const Tensor& order, int64_t top_k, const Tensor& weights,
                  Tensor& xs);
void moe_dispatch_backward(const Tensor& dxs, const Tensor& x, const Tensor& order,
                           int64_t top_k, const Tensor& weights, Tensor& dx, Tensor& dweights);
void moe_combine(const Tensor& ys, const Tensor& order, int64_t top_k, const Tensor& weights,
                 Tensor& out);
void moe_combine_backward(const Tensor& dout, const Tensor& ys, const Tensor& order,
                          int64_t top_k, const Tensor& weights, Tensor& dys, Tensor& dweights);
}  // namespace cpu
#if TITAN_HAVE_CUDA
namespace cuda {
void router_forward(const Tensor& logits, const Tensor& bias, const RouterOptions& options,
                    Tensor& scores, Tensor& selected, Tensor& weights);
void router_backward(const Tensor& dweights, const Tensor& scores, const Tensor& selected,
                     const RouterOptions& options, Tensor& dlogits);
void moe_dispatch(const Tensor& x, const Tensor& order, int64_t top_k, const Tensor& weights,
                  Tensor& xs);
void moe_dispatch_backward(const Tensor& dxs, const Tensor& x, const Tensor& order,
                           int64_t top_k, const Tensor& weights, Tensor& dx, Tensor& dweights);
void moe_combine(const Tensor& ys, const Tensor& order, int64_t top_k, const Tensor& weights,
                 Tensor& out);
void moe_combine_backward(const Tensor& dout, const Tensor& ys, const Tensor& order,
                          int64_t top_k, const Tensor& weights, Tensor& dys, Tensor& dweights);
}  // namespace cuda
#endif  // TITAN_HAVE_CUDA

// scores [N, E], selected i32 [N, K] and weights [N, K] from logits [N, E].
inline void router_forward(const Tensor& logits, const Tensor& bias, const RouterOptions& options,
                           Tensor& scores, Tensor& selected, Tensor& weights) {
  TITAN_DISPATCH_CPU_CUDA(logits, router_forward, logits, bias, options, scores, selected, weights);
}
inline void router_backward(const Tensor& dweights, const Tensor& scores, const Tensor& selected,
                            const RouterOptions& options, Tensor& dlogits) {
  TITAN_DISPATCH_CPU_CUDA(dweights, router_backward, dweights, scores, selected, options, dlogits);
}

// Picks per expert of selected i32 [N, K] (host): order i32 [N K] (written) and the
// E + 1 row offsets of each expert's rows.
std::vector<int64_t> sort_picks(const Tensor& selected, int64_t experts, Tensor& order);

// x [N, D], xs [M, D] (M = order's length), weights [N K] or undefined (no scaling).
inline void moe_dispatch(const Tensor& x, const Tensor& order, int64_t top_k,
                         const Tensor& weights, Tensor& xs) {
  TITAN_DISPATCH_CPU_CUDA(x, moe_dispatch, x, order, top_k, weights, xs);
}
// dx (=) from dxs; with weights, dweights[p] = dxs[m] . x[p / K] (=) for p = order[m].
inline void moe_dispatch_backward(const Tensor& dxs, const Tensor& x, const Tensor& order,
                                  int64_t top_k, const Tensor& weights, Tensor& dx,
                                  Tensor& dweights) {
  TITAN_DISPATCH_CPU_CUDA(dxs, moe_dispatch_backward, dxs, x, order, top_k, weights, dx, dweights);
}
// out [N, D] += the picks' rows of ys [M, D].
inline void moe_combine(const Tensor& ys, const Tensor& order, int64_t top_k,
                        const Tensor& weights, Tensor& out) {
  TITAN_DISPATCH_CPU_CUDA(ys, moe_combine, ys, order, top_k, weights, out);
}
// dys (=) from dout; with weights, dweights[p] = dout[p / K] . ys[m] (=).
inline void moe_combine_backward(const Tensor& dout, const Tensor& ys, const Tensor& order,
                                 int64_t top_k, const Tensor& weights, Tensor& dys,
                                 Tensor& dweights) {
  TITAN_DISPATCH_CPU_CUDA(dout, moe_combine_backward, dout, ys, order, top_k, weights, dys,
                          dweights);
}

// Routed experts as one GEMM per expert over its contiguous rows of the sorted picks
// (offsets from sort_picks), on any device the linear ops run on:
//   forward           y[rows of e] = x[rows of e] w[e]^T        x [M, in], w [E, out, in]
//   backward_input    dx[rows of e] (= or +=) dy[rows of e] w[e]
//   backward_weight   dw[e] += dy[rows of e]^T x[rows of e]
void grouped_linear_forward(const Tensor& x, const Tensor& weight,
                            const std::vector<int64_t>& offsets, Tensor& y);
void grouped_linear_backward_input(const Tensor& dy, const Tensor& weight,
                                   const std::vector<int64_t>& offsets, Tensor& dx,
                                   Accumulate accumulate);
void grouped_linear_backward_weight(const Tensor& dy, const Tensor& x,
                                    const std::vector<int64_t>& offsets, Tensor& dweight);

}  // namespace titan::ops
