#include "titan/models/deepseek_v3/args.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "titan/core/error.h"

namespace titan::models::deepseek_v3 {
namespace {

using ops::RouterScore;

ModelArgs tiny() {
  ModelArgs a;
  a.dim = 64;
  a.n_layers = 3;
  a.n_dense_layers = 1;
  a.n_heads = 4;
  a.vocab_size = 2048;
  a.inter_dim = 128;
  a.moe_inter_dim = 32;
  a.q_lora_rank = 32;
  a.kv_lora_rank = 32;
  a.qk_nope_head_dim = 16;
  a.qk_rope_head_dim = 8;
  a.v_head_dim = 16;
  a.rope_factor = 4.0;
  a.original_seq_len = 32;
  a.mscale = 0.7;
  a.num_experts = 8;
  a.num_shared_experts = 1;
  a.top_k = 2;
  a.score_func = RouterScore::Sigmoid;
  a.route_norm = true;
  a.route_scale = 2.5;
  a.n_expert_groups = 4;
  a.n_limited_groups = 2;
  return a;
}

ModelArgs debugmodel(bool block_causal) {
  ModelArgs a;
  a.dim = 256;
  a.n_layers = 6;
  a.n_heads = 16;
  a.vocab_size = 2048;
  a.inter_dim = 1024;
  a.moe_inter_dim = 256;
  a.mscale = 0.70;
  a.num_experts = 8;
  a.num_shared_experts = 2;
  a.top_k = 3;
  if (block_causal) a.attn_mask_type = config::AttentionMaskType::BlockCausal;
  return a;
}

ModelArgs v2_lite_16b() {
  ModelArgs a;  // the defaults are the 16B's
  a.mscale = 0.70;
  a.attn_mask_type = config::AttentionMaskType::BlockCausal;
  return a;
}

ModelArgs v2_236b() {
  ModelArgs a;
  a.dim = 5120;
  a.n_layers = 60;
  a.n_heads = 128;
  a.inter_dim = 12288;
  a.moe_inter_dim = 1536;
  a.q_lora_rank = 1536;
  a.num_experts = 160;
  a.route_scale = 16.0;
  a.n_expert_groups = 8;
  a.n_limited_groups = 3;
  a.attn_mask_type = config::AttentionMaskType::BlockCausal;
  return a;
}

ModelArgs v3_671b() {
  ModelArgs a;
  a.dim = 7168;
  a.n_layers = 61;
  a.n_dense_layers = 3;
  a.n_heads = 128;
  a.vocab_size = 129280;
  a.inter_dim = 18432;
  a.moe_inter_dim = 2048;
  a.q_lora_rank = 1536;
  a.num_experts = 256;
  a.num_shared_experts = 1;
  a.top_k = 8;
  a.score_func = RouterScore::Sigmoid;
  a.route_norm = true;
  a.route_scale = 2.5;
  a.n_expert_groups = 8;
  a.n_limited_groups = 4;
  a.attn_mask_type = config::AttentionMaskType::BlockCausal;
  return a;
}

}  // namespace

float ModelArgs::softmax_scale() const {
  double scale = 1.0 / std::sqrt(double(qk_head_dim()));
  if (yarn()) {
    const double m = 0.1 * mscale * std::log(rope_factor) + 1.0;
    scale *= m * m;
  }
  return float(scale);
}

ops::RouterOptions ModelArgs::router() const {
  ops::RouterOptions o;
  o.score = score_func;
  o.top_k = top_k;
  o.groups = n_expert_groups;
  o.limited_groups = n_limited_groups;
  o.route_norm = route_norm;
  o.route_scale = float(route_scale);
  o.force_balance = force_load_balance;
  return o;
}

const std::vector<Flavor>& deepseek_v3_flavors() {
  static const std::vector<Flavor> flavors = {
      {"tiny", tiny()},
      {"debugmodel", debugmodel(false)},
      {"debugmodel_flex_attn", debugmodel(true)},
      {"16B", v2_lite_16b()},
      {"236B", v2_236b()},
      {"671B", v3_671b()},
  };
  return flavors;
}

ModelArgs model_args_from_config(const config::JobConfig& config) {
  const config::ModelSection& m = config.model;
  TITAN_CHECK(m.name == "deepseek_v3") << "deepseek_v3 model arguments for model.name '"
                                       << m.name << "'";
  const Flavor* found = nullptr;
  std::ostringstream known;
  for (const Flavor& f : deepseek_v3_flavors()) {
    if (f.name == m.flavor) found = &f;
    known << (known.tellp() > 0 ? ", " : "") << f.name;
  }
  TITAN_CHECK_INPUT(found != nullptr)
      << "model.flavor: '" << m.flavor << "' is not a deepseek_v3 flavor; known: " << known.str();
  // Keys that describe a Llama and have no meaning here.
  TITAN_CHECK_INPUT(!m.n_kv_heads) << "model.n_kv_heads: deepseek_v3's attention has no kv "
                                   << "heads (its keys come from a latent); remove the key";
  TITAN_CHECK_INPUT(!m.ffn_dim) << "model.ffn_dim: deepseek_v3's feed-forward widths are its "
                                << "flavor's; remove the key";
  TITAN_CHECK_INPUT(!m.enable_weight_tying)
      << "model.enable_weight_tying: deepseek_v3 does not tie its output; remove the key";
  ModelArgs a = found->args;
  if (m.dim) a.dim = *m.dim;
  if (m.n_layers) a.n_layers = *m.n_layers;
  if (m.n_heads) a.n_heads = *m.n_heads;
  if (m.vocab_size) a.vocab_size = *m.vocab_size;
  if (m.rope_theta) a.rope_theta = *m.rope_theta;
  if (m.norm_eps) a.norm_eps = *m.norm_eps;
  if (m.attn_mask_type) a.attn_mask_type = *m.attn_mask_type;
  a.force_load_balance = config.debug.moe_force_load_balance;
  a.max_seq_len = config.training.seq_len;

  TITAN_CHECK_INPUT(a.dim > 0) << "model.dim: must be positive, got " << a.dim;
  TITAN_CHECK_INPUT(a.n_layers > 0) << "model.n_layers: must be positive, got " << a.n_layers;
  TITAN_CHECK_INPUT(a.n_heads > 0) << "model.n_heads: must be positive, got " << a.n_heads;
  TITAN_CHECK_INPUT(a.vocab_size > 0) << "model.vocab_size: must be positive, got " << a.vocab_size;
  TITAN_CHECK_INPUT(a.rope_theta > 0) << "model.rope_theta: must be positive, got " << a.rope_theta;
  TITAN_CHECK_INPUT(a.norm_eps > 0) << "model.norm_eps: must be positive, got " << a.norm_eps;
  TITAN_CHECK_INPUT(a.max_seq_len > 0)
      << "training.seq_len: must be positive, got " << a.max_seq_len;
  return a;
}

ParameterCounts count_parameters(const ModelArgs& a) {
  const int64_t D = a.dim, H = a.n_heads, qk = a.qk_head_dim();
  const int64_t query = a.q_lora_rank == 0
                            ? D * H * qk
                            : D * a.q_lora_rank + a.q_lora_rank + a.q_lora_rank * H * qk;
  const int64_t attention = query + D * (a.kv_lora_rank + a.qk_rope_head_dim) + a.kv_lora_rank +
                            a.kv_lora_rank * H * (a.qk_nope_head_dim + a.v_head_dim) +
                            H * a.v_head_dim * D;
  const int64_t dense = 3 * D * a.inter_dim;
  const int64_t experts = 3 * a.num_experts * a.moe_inter_dim * D;
  const int64_t moe_rest = a.num_experts * D + 3 * D * a.moe_inter_dim * a.num_shared_experts;
  const int64_t L_moe = a.moe_layers(), L_dense = a.n_layers - L_moe;
  ParameterCounts c;
  c.embedding = a.vocab_size * D;
  c.routed_experts = L_moe * experts;
  const int64_t everything_else = c.embedding + a.n_layers * (attention + 2 * D) +
                                  L_dense * dense + L_moe * moe_rest + D + a.vocab_size * D;
  c.total = everything_else + c.routed_experts;
  c.active = everything_else + L_moe * 3 * a.top_k * a.moe_inter_dim * D;
  return c;
}

double flops_per_token(const ModelArgs& a, int64_t seq_len) {
  const ParameterCounts c = count_parameters(a);
  return 6.0 * double(c.active - c.embedding) +
         6.0 * double(a.n_layers) * double(a.n_heads) *
             double(a.qk_head_dim() + a.v_head_dim) * double(seq_len);
}

}  // namespace titan::models::deepseek_v3
