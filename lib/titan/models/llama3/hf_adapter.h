// Hugging Face Llama (LlamaForCausalLM) <-> torchtitan's Llama 3: tensor names, the RoPE
// row order of wq and wk, and config.json; HfAdapter puts them behind the family's
// HfStateDictAdapter (models/family.h), which titan-ckpt's export and import use.
//
//   hf_name_from_titan("layers.3.attention.wq.weight")  -> "model.layers.3.self_attn.q_proj.weight"
//   titan_name_from_hf("lm_head.weight")                 -> "output.weight"
//   Tensor q_hf = rope_rows_to_hf(wq, args.n_heads);     // before writing q_proj
//   nlohmann::ordered_json config = hf_config_from_model_args(args, "bfloat16");
//
// Names:
//   tok_embeddings.weight                  model.embed_tokens.weight
//   layers.N.attention.wq|wk|wv|wo.weight  model.layers.N.self_attn.q_proj|k_proj|v_proj|o_proj.weight
//   layers.N.feed_forward.w1|w2|w3.weight  model.layers.N.mlp.gate_proj|down_proj|up_proj.weight
//   layers.N.attention_norm.weight         model.layers.N.input_layernorm.weight
//   layers.N.ffn_norm.weight               model.layers.N.post_attention_layernorm.weight
//   norm.weight                            model.norm.weight
//   output.weight                          lm_head.weight (a tied model has neither)
// HF's model.layers.N.self_attn.rotary_emb.inv_freq (older exports) is a buffer, not a weight:
// importers drop it (hf_name_is_buffer).
//
// RoPE: titan (as Meta and torchtitan) rotates interleaved pairs (x[2j], x[2j+1]) of each head
// (ops/rope.h); HF's rotate_half rotates (x[j], x[j + hd/2]). The same rotation results when
// the rows of wq and wk are reordered within each head: HF row p*hd/2 + j = titan row 2j + p
// (p in {0, 1}, j < hd/2). wv and wo are not touched.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "titan/config/job_config.h"
#include "titan/core/tensor.h"
#include "titan/models/family.h"
#include "titan/models/llama3/args.h"

namespace titan::models::llama3 {

// The HF name of a titan parameter, or nullopt for a name that is not a Llama 3 parameter.
std::optional<std::string> hf_name_from_titan(const std::string& fqn);
// The titan name of an HF tensor, or nullopt for a name that is not a Llama weight.
std::optional<std::string> titan_name_from_hf(const std::string& hf_name);
// True for HF buffers that exports may carry but that are no weights (rotary_emb.inv_freq).
bool hf_name_is_buffer(const std::string& hf_name);

// The number of heads whose rows a titan parameter holds if it needs the RoPE reordering
// (wq: n_heads, wk: n_kv_heads), else nullopt.
std::optional<int64_t> rope_permuted_heads(const std::string& fqn, const ModelArgs& args);

// Reorders the rows of a [heads * hd, D] tensor (any dtype) within each head, titan's
// interleaved pairs -> HF's halves, and back. Each returns a new tensor; the two are inverse.
Tensor rope_rows_to_hf(const Tensor& weight, int64_t heads);
Tensor rope_rows_from_hf(const Tensor& weight, int64_t heads);

// config.json of LlamaForCausalLM for these dimensions; torch_dtype is "float32" or
// "bfloat16", the dtype the weights are written in.
nlohmann::ordered_json hf_config_from_model_args(const ModelArgs& args,
                                                 const std::string& torch_dtype);
// The dimensions a config.json describes (multiple_of and ffn_dim_multiplier are left at their
// defaults; ffn_dim holds intermediate_size). InputError naming `origin` and the key for a
// config that is not a Llama or has a value titan cannot represent (a head_dim other than
// hidden_size / num_attention_heads, a rope_scaling type other than llama3).
ModelArgs model_args_from_hf_config(const nlohmann::json& config, const std::string& origin);

// The job config an imported model is recorded with: the flavor `flavor` names, or when
// nullopt the flavor that needs the fewest model.* overrides, with the overrides that make
// model_args_from_config() give `args`' shapes, rope_theta and norm_eps, and training.seq_len
// = args.max_seq_len. InputError when the flavor is unknown, when its RoPE scaling differs
// from args' (no config key sets it), when it is tied but args is not (model.* can only turn
// tying on), or with --flavor given, when a tensor's shape differs from the flavor's (the
// first such tensor is named: an import is for the model it says it is).
config::JobConfig job_config_for_model_args(const ModelArgs& args,
                                            const std::optional<std::string>& flavor);

// The family's HfStateDictAdapter: the functions above, the model's dimensions taken from
// the job config.
class HfAdapter final : public HfStateDictAdapter {
 public:
  std::string hf_model_type() const override { return "llama"; }
  std::optional<std::string> to_hf_name(const std::string& name) const override;
  std::optional<std::string> from_hf_name(const std::string& hf_name) const override;
  bool skipped_on_import(const std::string& hf_name,
                         const config::JobConfig& config) const override;
  Tensor to_hf(const std::string& name, const Tensor& value,
               const config::JobConfig& config) const override;
  Tensor from_hf(const std::string& name, const Tensor& value,
                 const config::JobConfig& config) const override;
  nlohmann::ordered_json hf_config(const config::JobConfig& config,
                                   const std::string& torch_dtype) const override;
  config::JobConfig job_config_from_hf(const nlohmann::json& config_json,
                                       const std::string& origin,
                                       const std::optional<std::string>& flavor) const override;
};

}  // namespace titan::models::llama3
