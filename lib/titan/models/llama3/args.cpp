#include "titan/models/llama3/args.h"

#include <cmath>
#include <sstream>

#include "titan/core/error.h"

namespace titan::models::llama3 {
namespace {

ModelArgs make(int64_t dim, int64_t layers, int64_t heads, int64_t kv_heads, int64_t vocab,
               int64_t multiple_of, std::optional<double> multiplier) {
  ModelArgs a;
  a.dim = dim;
  a.n_layers = layers;
  a.n_heads = heads;
  a.n_kv_heads = kv_heads;
  a.vocab_size = vocab;
  a.multiple_of = multiple_of;
  a.ffn_dim_multiplier = multiplier;
  return a;
}

// Llama 3.2's 1B and 3B: weight tying and a RoPE scaling factor of 32 (their HF configs).
ModelArgs llama32(int64_t dim, int64_t layers, int64_t heads, std::optional<double> multiplier) {
  ModelArgs a = make(dim, layers, heads, 8, 128256, 1024, multiplier);
  a.weight_tying = true;
  a.rope_scaling.factor = 32.0;
  return a;
}

// torchtitan's flex / varlen variants: the same model, attention masked per document.
ModelArgs block_causal(ModelArgs a) {
  a.attn_mask_type = config::AttentionMaskType::BlockCausal;
  return a;
}

}  // namespace

int64_t ffn_hidden_dim(int64_t dim, int64_t multiple_of, std::optional<double> multiplier) {
  int64_t h = 4 * dim;
  h = 2 * h / 3;
  if (multiplier) h = int64_t(std::floor(*multiplier * double(h)));
  return (h + multiple_of - 1) / multiple_of * multiple_of;
}

int64_t ModelArgs::hidden_dim() const {
  return ffn_dim ? *ffn_dim : ffn_hidden_dim(dim, multiple_of, ffn_dim_multiplier);
}

const std::vector<Flavor>& llama3_flavors() {
  static const std::vector<Flavor> flavors = {
      {"tiny", make(64, 8, 4, 2, 2048, 64, std::nullopt)},
      {"debugmodel", make(256, 6, 16, 16, 2048, 256, std::nullopt)},
      {"debugmodel_flex_attn", block_causal(make(256, 6, 16, 16, 2048, 256, std::nullopt))},
      {"debugmodel_varlen_attn", block_causal(make(256, 6, 16, 16, 2048, 256, std::nullopt))},
      {"1B", llama32(2048, 16, 32, 1.5)},
      {"3B", llama32(3072, 28, 24, 1.0)},
      {"8B", make(4096, 32, 32, 8, 128256, 1024, 1.3)},
      {"8B_flex", block_causal(make(4096, 32, 32, 8, 128256, 1024, 1.3))},
      {"8B_varlen", block_causal(make(4096, 32, 32, 8, 128256, 1024, 1.3))},
      {"70B", make(8192, 80, 64, 8, 128256, 4096, 1.3)},
      {"405B", make(16384, 126, 128, 8, 128256, 4096, 1.2)},
  };
  return flavors;
}

ModelArgs model_args_from_config(const config::JobConfig& config) {
  const config::ModelSection& m = config.model;
  TITAN_CHECK(m.name == "llama3") << "llama3 model arguments for model.name '" << m.name << "'";
  const Flavor* found = nullptr;
  std::ostringstream known;
  for (const Flavor& f : llama3_flavors()) {
    if (f.name == m.flavor) found = &f;
    known << (known.tellp() > 0 ? ", " : "") << f.name;
  }
  TITAN_CHECK_INPUT(found != nullptr)
      << "model.flavor: '" << m.flavor << "' is not a llama3 flavor; known: " << known.str();
  ModelArgs a = found->args;
  if (m.dim) a.dim = *m.dim;
  if (m.n_layers) a.n_layers = *m.n_layers;
  if (m.n_heads) a.n_heads = *m.n_heads;
  if (m.n_kv_heads) a.n_kv_heads = *m.n_kv_heads;
  if (m.ffn_dim) a.ffn_dim = *m.ffn_dim;
  if (m.vocab_size) a.vocab_size = *m.vocab_size;
  if (m.rope_theta) a.rope_theta = *m.rope_theta;
  if (m.norm_eps) a.norm_eps = *m.norm_eps;
  if (m.enable_weight_tying) a.weight_tying = true;
  if (m.attn_mask_type) a.attn_mask_type = *m.attn_mask_type;
  a.max_seq_len = config.training.seq_len;

  TITAN_CHECK_INPUT(a.dim > 0) << "model.dim: must be positive, got " << a.dim;
  TITAN_CHECK_INPUT(a.n_layers > 0) << "model.n_layers: must be positive, got " << a.n_layers;
  TITAN_CHECK_INPUT(a.n_heads > 0 && a.dim % a.n_heads == 0)
      << "model.n_heads: " << a.n_heads << " must divide model.dim " << a.dim;
  TITAN_CHECK_INPUT(a.n_kv_heads > 0 && a.n_heads % a.n_kv_heads == 0)
      << "model.n_kv_heads: " << a.n_kv_heads << " must divide model.n_heads " << a.n_heads;
  TITAN_CHECK_INPUT(a.head_dim() % 2 == 0)
      << "model.dim / model.n_heads = " << a.head_dim() << " must be even for RoPE";
  TITAN_CHECK_INPUT(a.hidden_dim() > 0) << "model.ffn_dim: must be positive, got " << a.hidden_dim();
  TITAN_CHECK_INPUT(a.vocab_size > 0) << "model.vocab_size: must be positive, got " << a.vocab_size;
  TITAN_CHECK_INPUT(a.rope_theta > 0) << "model.rope_theta: must be positive, got " << a.rope_theta;
  TITAN_CHECK_INPUT(a.norm_eps > 0) << "model.norm_eps: must be positive, got " << a.norm_eps;
  TITAN_CHECK_INPUT(a.max_seq_len > 0) << "training.seq_len: must be positive, got " << a.max_seq_len;
  return a;
}

ParameterCounts count_parameters(const ModelArgs& a) {
  const int64_t D = a.dim, hd = a.head_dim(), F = a.hidden_dim();
  const int64_t attention = D * a.n_heads * hd + 2 * D * a.n_kv_heads * hd + a.n_heads * hd * D;
  const int64_t feed_forward = 3 * D * F;
  const int64_t norms = 2 * D;
  ParameterCounts c;
  c.embedding = a.vocab_size * D;
  c.total = c.embedding + a.n_layers * (attention + feed_forward + norms) + D +
            (a.weight_tying ? 0 : a.vocab_size * D);
  return c;
}

double flops_per_token(const ModelArgs& a, int64_t seq_len) {
  const ParameterCounts c = count_parameters(a);
  return 6.0 * double(c.total - c.embedding) +
         12.0 * double(a.n_layers) * double(a.dim) * double(seq_len);
}

}  // namespace titan::models::llama3
