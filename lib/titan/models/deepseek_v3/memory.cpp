#include "titan/models/deepseek_v3/memory.h"

#include <numeric>

#include "titan/ops/cross_entropy.h"

namespace titan::models::deepseek_v3 {
namespace {

// v += more (a loop: GCC 12 warns falsely on vector::insert of short initializer lists).
void append(std::vector<int64_t>& v, std::initializer_list<int64_t> more) {
  for (const int64_t bytes : more) v.push_back(bytes);
}
void append(std::vector<int64_t>& v, const std::vector<int64_t>& more) {
  for (const int64_t bytes : more) v.push_back(bytes);
}

}  // namespace

std::string fsdp_unit_of(const std::string& parameter) {
  const std::string first = parameter.substr(0, parameter.find('.'));
  if (first == "layers") return parameter.substr(0, parameter.find('.', first.size() + 1));
  if (first == "norm" || first == "output") return "norm, output";
  return first;
}

ActivationMemory activation_memory(const ModelArgs& a, const ActivationShape& s) {
  const int64_t act = dtype_bytes(s.dtype), f32 = 4, i32 = 4;
  const int64_t N = s.batch * (s.seq_len / s.cp);  // one tp rank: every row is this rank's
  const int64_t D = a.dim, H = a.n_heads, qk = a.qk_head_dim();
  const int64_t kvl = a.kv_lora_rank, ql = a.q_lora_rank, E = a.num_experts, K = a.top_k;
  const int64_t M = N * K, F = a.moe_inter_dim, S = F * a.num_shared_experts;
  const int64_t residual = N * D * act, heads = N * H * qk * act;

  // Latent attention's forward record: the query path, the latent and its norm, q, k, v
  // (padded), out, lse and wo's input.
  std::vector<int64_t> attention;
  if (ql > 0) append(attention, {N * ql * act, N * ql * act, N * f32});
  append(attention, {heads, N * kvl * act, N * kvl * act, N * f32, heads, heads,
                                     heads, N * H * f32, N * H * a.v_head_dim * act});
  // The MoE's: the router's scores, choices and weights, the sorted picks, the routed rows
  // (xs, a, b, g, ys) and the shared experts' a, b, g.
  std::vector<int64_t> moe = {N * E * f32, M * i32, M * f32, M * i32, M * D * act, M * F * act,
                              M * F * act, M * F * act, M * D * act};
  if (S > 0) append(moe, {N * S * act, N * S * act, N * S * act});

  auto block_forward = [&](bool cheap_ops) {
    std::vector<int64_t> kept = {residual};  // the output
    if (!cheap_ops) kept.push_back(residual);  // xn
    append(kept, {N * f32, residual});  // rstd, h
    append(kept, attention);
    if (!cheap_ops) kept.push_back(residual);  // hn
    kept.push_back(N * f32);
    append(kept, moe);
    return kept;
  };
  ActivationMemory m;
  m.block_kept[0] = block_forward(false);
  m.block_kept[1] = {residual};
  m.block_kept[2] = block_forward(true);
  // The backward at its most: the attention's (dout, dx, dh, dxn, wo's input gradient, the
  // padded dout, dq, dk, dv, dkvb, the latent's gradients) while the MoE's gradients kept for
  // its weights (dys, da, db, dlogits) are alive.
  const int64_t kv_up = N * H * (a.qk_nope_head_dim + a.v_head_dim) * act;
  const int64_t latent = N * kvl * act, latent_rope = N * (kvl + a.qk_rope_head_dim) * act;
  std::vector<int64_t> backward = {residual, residual, residual, residual, M * D * act,
                                   M * F * act, M * F * act, N * E * f32};
  append(backward, {N * H * a.v_head_dim * act, heads, heads, heads, heads, kv_up, latent,
                    latent, latent_rope});
  m.block_backward = backward;
  m.block_weight_inputs = {residual, residual, M * D * act, M * F * act, M * F * act,
                           N * E * f32, heads, kv_up, latent, latent_rope};
  m.embedding_kept = {residual};
  m.head_kept = {residual, N * f32, N * f32};  // the final norm's output and rstd, the lse
  m.head_backward = {residual, ops::cross_entropy_workspace_bytes(N, a.vocab_size)};
  m.buffers = {a.max_seq_len * a.qk_rope_head_dim * f32};  // cos and sin per position
  return m;
}

}  // namespace titan::models::deepseek_v3
