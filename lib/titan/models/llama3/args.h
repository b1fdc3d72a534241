// Llama 3 model dimensions: the flavor table, the FFN size rule, overrides from the job
// config, parameter and FLOP counts as torchtitan computes them.
//
// Flavors are rows of one table, never code paths:
//   tiny        the test model (docs/design.md): dim 64, 8 layers, 4 heads, 2 kv heads,
//               vocab 2048
//   debugmodel  torchtitan's debug model: dim 256, 6 layers, 16 heads, vocab 2048
//   1B, 3B      Llama 3.2's published configs: output tied to the embedding, RoPE factor 32
//   8B, 70B, 405B  torchtitan's Llama 3.1 flavors
//   debugmodel_flex_attn, debugmodel_varlen_attn, 8B_flex, 8B_varlen  torchtitan's
//               block-causal variants (per-document attention; one CPU kernel serves both
//               of torchtitan's attention backends)
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "titan/config/job_config.h"
#include "titan/ops/rope.h"

namespace titan::models::llama3 {

struct ModelArgs {
  int64_t dim = 4096;
  int64_t n_layers = 32;
  int64_t n_heads = 32;
  int64_t n_kv_heads = 32;
  int64_t vocab_size = 128256;
  int64_t multiple_of = 256;
  std::optional<double> ffn_dim_multiplier;
  std::optional<int64_t> ffn_dim;  // an explicit hidden size wins over the rule
  double norm_eps = 1e-5;
  double rope_theta = 500000.0;
  ops::RopeScaling rope_scaling;  // Llama 3.1's, applied to every flavor as torchtitan does
  bool weight_tying = false;
  int64_t max_seq_len = 2048;     // training.seq_len overwrites it, as in torchtitan
  // block_causal: attention within each document of the packed sequences only
  // (nn/context_parallel.h); the flex and varlen flavors' mask.
  config::AttentionMaskType attn_mask_type = config::AttentionMaskType::Causal;

  int64_t head_dim() const { return dim / n_heads; }
  int64_t hidden_dim() const;     // the feed-forward width
};

struct Flavor {
  std::string name;
  ModelArgs args;
};
const std::vector<Flavor>& llama3_flavors();

// h = 4 dim; h = floor(2h/3); h = floor(multiplier * h) if given; round up to multiple_of.
int64_t ffn_hidden_dim(int64_t dim, int64_t multiple_of, std::optional<double> multiplier);

// The flavor named by model.flavor with model.* overrides and training.seq_len applied,
// validated. Bad values throw InputError naming the key (exit 2).
ModelArgs model_args_from_config(const config::JobConfig& config);

struct ParameterCounts {
  int64_t total = 0;      // unique parameters (a tied output counts once)
  int64_t embedding = 0;  // the token embedding's V x D
};
ParameterCounts count_parameters(const ModelArgs& args);

// Training FLOPs per token, torchtitan's formula: 6 (N - N_emb) + 12 L D T, with N the
// unique parameters, N_emb the embedding and T the sequence length (attention's QK^T and
// AV counted in full, without the causal half).
double flops_per_token(const ModelArgs& args, int64_t seq_len);

}  // namespace titan::models::llama3
