// Mixture of experts, DeepSeek V3's feed-forward (torchtitan's MoE): shared experts that
// every token passes, and E routed experts of which the router picks top_k per token.
//   out = shared_experts(x) + sum over token n's picks k of  w[n,k] expert_e(x[n])
//         (score_before_experts: expert_e(w[n,k] x[n]) instead)
//   expert_e(x) = w2[e] (silu(w1[e] x) * w3[e] x)            (a SwiGLU, hidden dim F)
// The router (ops/moe.h): gate logits x gate^T [N, E], sigmoid or softmax scores, the
// load-balancing bias added for the choice only, group-limited top-k, route_norm and
// route_scale. Dropless: every pick is computed. The routed experts run as one GEMM per
// expert over its rows of the picks sorted by expert (ops::grouped_linear_*).
//
// Auxiliary-loss-free load balancing (DeepSeek V3): forward counts the picks each expert
// received (not when it recomputes); once per optimizer step the model sums the counts
// over every data-parallel rank and calls update_bias, which moves each expert's bias by
// coeff * sign(mean count - its count), minus the mean of those moves, so that under-used
// experts are chosen more.
//
// Parameters under <prefix>.: experts.w1 [E, F, D], experts.w2 [E, D, F], experts.w3
// [E, F, D], router.gate.weight [E, D], shared_experts.{w1,w2,w3}.weight (hidden F S), in
// torchtitan's order. Init: experts.w1 and shared_experts.w1 `init`, everything else
// `output_init` (torchtitan's depth-scaled std). The bias [E] is a buffer, zero at start.
//
// Expert parallelism (nn/expert_parallel.h): with an ep group of P ranks this rank holds
// experts [r E / P, (r + 1) E / P) (the experts' weights are placed so, their value() the
// local [E / P, ...] piece). After the router, the picks' rows sorted by expert go to the
// ranks of their experts (one exchange of the per-expert counts, one of the rows), are
// regrouped by local expert, pass the local experts' GEMMs and come back the same way; the
// backward moves the gradients along the same paths. Each expert's weight gradient sums the
// rows every rank of the group sent it. The router, the shared experts and the combine stay
// on the token's rank.
//
// Tensor parallel: the layer takes whatever rows it is given (a rank's rows of the residual
// stream under sequence parallelism, all of them without) with its weights replicated over
// tp, as torchtitan's MoE without expert tensor parallelism. With expert tensor parallelism
// (ParameterLayout::expert_tensor_parallel) each tp rank holds the experts' hidden slice
// F / tp (w1, w3 Shard(1), w2 Shard(2)); the routed part then runs on all N rows
// (gather_rows), every tp rank routing the same tokens, and its partial sums leave by
// reduce_rows; the pick weights' gradient, partial over the slices, is summed over tp before
// the router's backward. The router's gate, the shared experts and the load counts stay on
// the rank's own rows.
#pragma once

#include <string>
#include <vector>

#include "titan/nn/expert_parallel.h"
#include "titan/nn/feed_forward.h"
#include "titan/nn/tensor_parallel.h"
#include "titan/ops/moe.h"

namespace titan::nn {

struct MoeDims {
  int64_t dim = 0, hidden_dim = 0;  // D and each expert's F
  int64_t experts = 0, shared_experts = 0;
  ops::RouterOptions router;
  bool score_before_experts = false;
  std::optional<double> load_balance_coeff;  // none: no bias
};

struct MoeRecord {
  Tensor x;                          // the input (the caller's)
  Tensor tokens;                     // the routed rows: x, or all N rows under expert TP
  Tensor scores, selected, weights;  // the router's [N, E], [N, K] i32, [N, K]
  Tensor order;                      // picks sorted by expert [N K] i32 (x's device)
  std::vector<int64_t> offsets;      // each expert's rows of the sorted picks
  // Expert parallelism: rows sent to and received from each rank, and the permutations
  // between the received order (by source, then local expert) and the local experts' order
  // (by local expert, then source), as row indices [R] i32 on x's device.
  std::vector<int64_t> send_rows, recv_rows;
  Tensor to_local, from_local;
  std::vector<int64_t> local_offsets;  // each local expert's rows (= offsets on one rank)
  // The local experts' rows [R, D] (the sorted picks on one rank), their a, b, g [R, F], and
  // the experts' outputs back at the sorted picks [M, D].
  Tensor xl, a, b, g, ys;
  FeedForwardRecord shared;
  // Set by backward_input for backward_weight:
  Tensor dyl, da, db, dlogits;  // dyl: the gradient at the local experts' outputs
  int64_t bytes() const;
};

class Moe {
 public:
  Moe(const std::string& prefix, const MoeDims& dims, InitRule init, InitRule output_init,
      const Placer& placer = {});

  std::vector<Parameter*> parameters();

  // x, y [N, D]. count_load: add the picks to the expert load (false when recomputing).
  void forward(const Tensor& x, Tensor& y, MoeRecord& record, bool count_load) const;
  void backward_input(const Tensor& dy, MoeRecord& record, Tensor& dx,
                      ops::Accumulate accumulate) const;
  void backward_weight(MoeRecord& record);

  int64_t experts() const { return dims_.experts; }
  bool expert_tensor_parallel() const { return expert_tp_; }
  // Picks per expert since the last update_bias [E] (f32, host).
  const Tensor& load() const { return load_; }
  // [E] f32 on the host (each forward copies it to x's device), undefined without balancing.
  const Tensor& bias() const { return bias_; }
  // The step's update from `load` [E], the counts summed over the data-parallel ranks;
  // clears load().
  void update_bias(const float* load);

 private:
  // Expert parallelism's moves (above): the exchange plan from the sorted picks; rows
  // [M, w] of the sorted picks to the local experts' rows [R, w], and back.
  void plan_exchange(MoeRecord& record) const;
  Tensor to_local_experts(const Tensor& picked, const MoeRecord& record) const;
  Tensor from_local_experts(const Tensor& local, const MoeRecord& record) const;
  // Rows [first, first + x rows) of the routed tokens are this rank's own.
  int64_t own_first(const Tensor& x, const Tensor& tokens) const;
  MoeDims dims_;
  const ExpertParallel& ep_;
  const TensorParallel& tp_;
  bool expert_tp_;  // the experts' hidden dim split over tp
  Parameter w1_, w2_, w3_;
  Linear gate_;
  std::optional<FeedForward> shared_;
  mutable Tensor load_;
  Tensor bias_;
};

}  // namespace titan::nn
