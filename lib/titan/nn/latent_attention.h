// Multi-head latent attention (MLA), DeepSeek V2/V3's layer (torchtitan's deepseek_v3
// Attention). Keys and values come from a low-rank latent c, RoPE acts on separate dims:
//   q   = x wq^T, or wq_b(q_norm(x wq_a^T)) with a query rank (q_lora_rank > 0)
//         viewed [B, T, H, nope + rope]; RoPE on each head's last `rope` dims
//   [c, k_pe] = x wkv_a^T                 c [N, kv_lora_rank], k_pe [N, rope] (RoPE; one
//                                          head, shared by every head)
//   [k_nope, v] = kv_norm(c) wkv_b^T      viewed [B, T, H, nope + v_head_dim]
//   k   = [k_nope, k_pe]                  [B, T, H, nope + rope]
//   o   = causal softmax(q k^T * scale) v,  y = o wo^T      (o [N, H v_head_dim])
// scale = (nope + rope)^-1/2, times mscale^2 with YaRN (models/deepseek_v3/args.h). The
// attention op takes one head dim for q, k and v, so v is padded with zero columns to
// nope + rope (v_head_dim may not exceed it); those columns of o are zero and dropped.
//
// Parameters under <prefix>.: wq (or wq_a, q_norm, wq_b), wkv_a, kv_norm, wkv_b, wo, in
// torchtitan's order of definition; linears trunc_normal(0, 0.02), wo the output rule
// given, norms 1.
//
// Tensor parallel (nn/tensor_parallel.h; torchtitan's plan): wq, wq_b and wkv_b
// column-parallel (a rank computes its n_heads / tp heads), wo row-parallel; wq_a, q_norm,
// wkv_a and kv_norm replicated, computing on the rank's rows of the residual stream (all
// N without sequence parallelism). The query rank's output, the latent and the rotary key
// are gathered before the heads' projections, and the heads' partial gradients of them are
// summed over the tp ranks into the rank's rows. Context parallel through the cp group's
// attention, as Llama's (nn/attention.h).
#pragma once

#include <string>
#include <vector>

#include "titan/nn/context_parallel.h"
#include "titan/nn/linear.h"

namespace titan::nn {

struct LatentAttentionDims {
  int64_t dim = 0, n_heads = 0;
  int64_t q_lora_rank = 0;  // 0: one projection wq
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0, qk_rope_head_dim = 0, v_head_dim = 0;
  double norm_eps = 1e-5;   // q_norm's and kv_norm's
  float softmax_scale = 0;  // required: qk_head_dim^-1/2 (times mscale^2 with YaRN)
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
};

struct LatentAttentionRecord {
  Tensor x;                  // the input: this rank's rows (the caller's)
  Tensor x_all, qn_all, cn_all;  // x, qn and cn of all N rows (the same tensors without SP)
  Tensor qa, qn, rstd_q;     // with a query rank: x wq_a^T, q_norm's output and rstd
  Tensor c, cn, rstd_kv;     // the latent, kv_norm's output and rstd
  Tensor q, k, v;            // the attention's inputs [B, T, H, nope + rope] (v padded)
  Tensor out, lse;           // the attention's output and log-sum-exp
  Tensor o;                  // wo's input [N, H v_head_dim]
  // Set by backward_input for backward_weight:
  Tensor dy, dq, dqn, dqa, dkvb, dcn, dkva;
  int64_t bytes() const;
};

class LatentAttention {
 public:
  LatentAttention(const std::string& prefix, const LatentAttentionDims& dims, InitRule init,
                  InitRule output_init, const Placer& placer = {});

  std::vector<Parameter*> parameters();

  // x, y: this rank's rows of the [N, D] residual stream, N = seq.batch x T.
  void forward(const Tensor& x, const SequenceLayout& seq, Tensor& y,
               LatentAttentionRecord& record) const;
  // dx (= or += per accumulate) from dy; keeps what backward_weight needs.
  void backward_input(const Tensor& dy, const SequenceLayout& seq, LatentAttentionRecord& record,
                      Tensor& dx, ops::Accumulate accumulate) const;
  void backward_weight(LatentAttentionRecord& record);

 private:
  LatentAttentionDims dims_;
  const TensorParallel& tp_;
  const ContextParallel& cp_;
  std::optional<Linear> wq_, wq_a_, wq_b_;
  std::optional<RmsNorm> q_norm_;
  Linear wkv_a_;
  RmsNorm kv_norm_;
  Linear wkv_b_, wo_;
};

}  // namespace titan::nn
