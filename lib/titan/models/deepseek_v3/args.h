// DeepSeek V3 model dimensions: the flavor table, overrides from the job config, parameter
// and FLOP counts as torchtitan computes them (its deepseek_v3 args and flavors).
//
//   tiny        the test model: dim 64, 3 layers (1 dense), 4 heads, a query rank, 8 experts
//               in 4 groups (2 kept), top 2, sigmoid scores with route_norm (the 671B's
//               router), 1 shared expert, YaRN from 32 positions (active at seq_len 64),
//               vocab 2048
//   debugmodel, debugmodel_flex_attn   torchtitan's debug models: dim 256, 6 layers, 8
//               experts, top 3, softmax (the flex variant masks per document)
//   16B, 236B, 671B   torchtitan's flavors (DeepSeek-V2-Lite, V2 and V3), per-document
//               attention as torchtitan builds them
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "titan/config/job_config.h"
#include "titan/ops/moe.h"

namespace titan::models::deepseek_v3 {

struct ModelArgs {
  int64_t dim = 2048;
  int64_t n_layers = 27;
  int64_t n_dense_layers = 1;  // the first layers have a dense feed-forward, the rest MoE
  int64_t n_heads = 16;
  int64_t vocab_size = 102400;
  int64_t inter_dim = 10944;   // the dense feed-forward's hidden dim
  int64_t moe_inter_dim = 1408;  // each expert's
  double norm_eps = 1e-5;
  // Multi-head latent attention (nn/latent_attention.h).
  int64_t q_lora_rank = 0;
  int64_t kv_lora_rank = 512;
  int64_t qk_nope_head_dim = 128, qk_rope_head_dim = 64, v_head_dim = 128;
  // RoPE with YaRN (ops/rope.h), active when max_seq_len > original_seq_len.
  double rope_theta = 10000.0;
  double rope_factor = 40.0;
  double beta_fast = 32.0, beta_slow = 1.0;
  int64_t original_seq_len = 4096;
  double mscale = 1.0;
  // Mixture of experts (nn/moe.h).
  int64_t num_experts = 64, num_shared_experts = 2;
  int64_t top_k = 6;
  ops::RouterScore score_func = ops::RouterScore::Softmax;
  bool route_norm = false;
  double route_scale = 1.0;
  bool score_before_experts = false;
  int64_t n_expert_groups = 1, n_limited_groups = 1;
  std::optional<double> load_balance_coeff = 1e-3;
  bool force_load_balance = false;  // debug.moe_force_load_balance: round-robin routing
  int64_t max_seq_len = 4096 * 4;  // training.seq_len overwrites it, as in torchtitan
  config::AttentionMaskType attn_mask_type = config::AttentionMaskType::Causal;

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool yarn() const { return max_seq_len > original_seq_len; }
  // qk_head_dim^-1/2, times (0.1 mscale ln(rope_factor) + 1)^2 with YaRN.
  float softmax_scale() const;
  bool is_moe_layer(int64_t layer) const { return layer >= n_dense_layers; }
  int64_t moe_layers() const { return n_layers - std::min(n_dense_layers, n_layers); }
  ops::RouterOptions router() const;
};

struct Flavor {
  std::string name;
  ModelArgs args;
};
const std::vector<Flavor>& deepseek_v3_flavors();

// The flavor named by model.flavor with model.* overrides and training.seq_len applied,
// validated. Bad values throw InputError naming the key (exit 2).
ModelArgs model_args_from_config(const config::JobConfig& config);

struct ParameterCounts {
  int64_t total = 0;
  int64_t embedding = 0;
  int64_t routed_experts = 0;  // every MoE layer's experts.w1, w2, w3
  int64_t active = 0;          // what a token uses: routed experts counted top_k / E
};
ParameterCounts count_parameters(const ModelArgs& args);

// Training FLOPs per token, torchtitan's MoE formula: 6 (active - embedding) +
// 6 L H (qk_head_dim + v_head_dim) T.
double flops_per_token(const ModelArgs& args, int64_t seq_len);

}  // namespace titan::models::deepseek_v3
