#include "titan/models/deepseek_v3/hf_adapter.h"

#include <regex>
#include <sstream>

#include "titan/core/error.h"
#include "titan/models/deepseek_v3/args.h"
#include "titan/models/deepseek_v3/model.h"

namespace titan::models::deepseek_v3 {
namespace {

// The names that differ only after "layers.N." (with ".weight" on both sides).
const std::vector<std::pair<std::string, std::string>>& layer_names() {
  static const std::vector<std::pair<std::string, std::string>> names = {
      {"attention.wq", "self_attn.q_proj"},
      {"attention.wq_a", "self_attn.q_a_proj"},
      {"attention.q_norm", "self_attn.q_a_layernorm"},
      {"attention.wq_b", "self_attn.q_b_proj"},
      {"attention.wkv_a", "self_attn.kv_a_proj_with_mqa"},
      {"attention.kv_norm", "self_attn.kv_a_layernorm"},
      {"attention.wkv_b", "self_attn.kv_b_proj"},
      {"attention.wo", "self_attn.o_proj"},
      {"attention_norm", "input_layernorm"},
      {"ffn_norm", "post_attention_layernorm"},
      {"feed_forward.w1", "mlp.gate_proj"},
      {"feed_forward.w3", "mlp.up_proj"},
      {"feed_forward.w2", "mlp.down_proj"},
      {"moe.router.gate", "mlp.gate"},
      {"moe.shared_experts.w1", "mlp.shared_experts.gate_proj"},
      {"moe.shared_experts.w3", "mlp.shared_experts.up_proj"},
      {"moe.shared_experts.w2", "mlp.shared_experts.down_proj"},
  };
  return names;
}
const std::vector<std::pair<std::string, std::string>>& expert_names() {
  static const std::vector<std::pair<std::string, std::string>> names = {
      {"moe.experts.w1", "gate_proj"},
      {"moe.experts.w3", "up_proj"},
      {"moe.experts.w2", "down_proj"}};
  return names;
}
const std::vector<std::pair<std::string, std::string>>& top_names() {
  static const std::vector<std::pair<std::string, std::string>> names = {
      {"tok_embeddings.weight", "model.embed_tokens.weight"},
      {"norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"}};
  return names;
}

// "layers.N.rest" -> (N, rest); false for another name.
bool split_layer(const std::string& name, const std::string& prefix, int64_t& layer,
                 std::string& rest) {
  if (name.rfind(prefix, 0) != 0) return false;
  const size_t dot = name.find('.', prefix.size());
  if (dot == std::string::npos) return false;
  const std::string digits = name.substr(prefix.size(), dot - prefix.size());
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) return false;
  layer = std::stoll(digits);
  rest = name.substr(dot + 1);
  return true;
}

class HfAdapter final : public HfStateDictAdapter {
 public:
  std::string hf_model_type() const override { return "deepseek_v3"; }

  std::optional<std::string> to_hf_name(const std::string& name) const override {
    for (const auto& [titan, hf] : top_names()) {
      if (name == titan) return hf;
    }
    int64_t layer = 0;
    std::string rest;
    if (!split_layer(name, "layers.", layer, rest)) return std::nullopt;
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    if (rest == "moe.expert_bias") return p + "mlp.gate.e_score_correction_bias";
    for (const auto& [titan, hf] : layer_names()) {
      if (rest == titan + ".weight") return p + hf + ".weight";
    }
    return std::nullopt;  // the experts' stacked tensors have one HF name per expert
  }

  std::vector<std::string> to_hf_names(const std::string& name,
                                       const config::JobConfig& config) const override {
    int64_t layer = 0;
    std::string rest;
    if (split_layer(name, "layers.", layer, rest)) {
      for (const auto& [titan, hf] : expert_names()) {
        if (rest != titan) continue;
        std::vector<std::string> names;
        const int64_t experts = model_args_from_config(config).num_experts;
        for (int64_t j = 0; j < experts; ++j) {
          names.push_back("model.layers." + std::to_string(layer) + ".mlp.experts." +
                          std::to_string(j) + "." + hf + ".weight");
        }
        return names;
      }
    }
    const std::optional<std::string> hf = to_hf_name(name);
    TITAN_CHECK(hf.has_value()) << "deepseek_v3: no Hugging Face name for " << name;
    return {*hf};
  }

  std::optional<std::string> from_hf_name(const std::string& hf_name) const override {
    for (const auto& [titan, hf] : top_names()) {
      if (hf_name == hf) return titan;
    }
    int64_t layer = 0;
    std::string rest;
    if (!split_layer(hf_name, "model.layers.", layer, rest)) return std::nullopt;
    const std::string p = "layers." + std::to_string(layer) + ".";
    if (rest == "mlp.gate.e_score_correction_bias") return p + "moe.expert_bias";
    for (const auto& [titan, hf] : layer_names()) {
      if (rest == hf + ".weight") return p + titan + ".weight";
    }
    static const std::regex expert(R"(mlp\.experts\.\d+\.(gate_proj|up_proj|down_proj)\.weight)");
    std::smatch m;
    if (std::regex_match(rest, m, expert)) {
      for (const auto& [titan, hf] : expert_names()) {
        if (m[1] == hf) return p + titan;
      }
    }
    return std::nullopt;
  }

  // The published checkpoints' multi-token-prediction layer(s) past num_hidden_layers.
  bool skipped_on_import(const std::string& hf_name,
                         const config::JobConfig& config) const override {
    int64_t layer = 0;
    std::string rest;
    return split_layer(hf_name, "model.layers.", layer, rest) &&
           layer >= model_args_from_config(config).n_layers;
  }

  Tensor to_hf(const std::string&, const Tensor& value, const config::JobConfig&) const override {
    return value;
  }
  Tensor from_hf(const std::string&, const Tensor& value, const config::JobConfig&) const override {
    return value;
  }

  nlohmann::ordered_json hf_config(const config::JobConfig& config,
                                   const std::string& torch_dtype) const override {
    const ModelArgs a = model_args_from_config(config);
    nlohmann::ordered_json c;
    c["architectures"] = {"DeepseekV3ForCausalLM"};
    c["model_type"] = "deepseek_v3";
    c["vocab_size"] = a.vocab_size;
    c["hidden_size"] = a.dim;
    c["intermediate_size"] = a.inter_dim;
    c["moe_intermediate_size"] = a.moe_inter_dim;
    c["num_hidden_layers"] = a.n_layers;
    c["num_attention_heads"] = a.n_heads;
    c["num_key_value_heads"] = a.n_heads;
    c["n_shared_experts"] = a.num_shared_experts;
    c["n_routed_experts"] = a.num_experts;
    c["routed_scaling_factor"] = a.route_scale;
    c["kv_lora_rank"] = a.kv_lora_rank;
    c["q_lora_rank"] = a.q_lora_rank > 0 ? nlohmann::ordered_json(a.q_lora_rank) : nullptr;
    c["qk_rope_head_dim"] = a.qk_rope_head_dim;
    c["v_head_dim"] = a.v_head_dim;
    c["qk_nope_head_dim"] = a.qk_nope_head_dim;
    c["topk_method"] = "noaux_tc";
    c["n_group"] = a.n_expert_groups;
    c["topk_group"] = a.n_limited_groups;
    c["num_experts_per_tok"] = a.top_k;
    c["first_k_dense_replace"] = a.n_dense_layers;
    c["norm_topk_prob"] = a.route_norm;
    c["scoring_func"] = a.score_func == ops::RouterScore::Sigmoid ? "sigmoid" : "softmax";
    c["rms_norm_eps"] = a.norm_eps;
    c["rope_theta"] = a.rope_theta;
    c["max_position_embeddings"] = int64_t(double(a.original_seq_len) * a.rope_factor);
    c["rope_scaling"] = {{"type", "yarn"},
                         {"factor", a.rope_factor},
                         {"original_max_position_embeddings", a.original_seq_len},
                         {"beta_fast", a.beta_fast},
                         {"beta_slow", a.beta_slow},
                         {"mscale", a.mscale},
                         {"mscale_all_dim", a.mscale}};
    c["tie_word_embeddings"] = false;
    c["torch_dtype"] = torch_dtype;
    return c;
  }

  config::JobConfig job_config_from_hf(const nlohmann::json& c, const std::string& origin,
                                       const std::optional<std::string>& flavor) const override;
};

// config.json's model as titan.cpp's flavor fields, each checked.
ModelArgs model_args_from_hf(const nlohmann::json& c, const std::string& origin) {
  TITAN_CHECK_INPUT(c.is_object()) << origin << ": not a JSON object";
  auto value = [&](const nlohmann::json& object, const std::string& key,
                   const std::string& where) -> const nlohmann::json& {
    TITAN_CHECK_INPUT(object.contains(key)) << origin << ": '" << where << key << "' is missing";
    return object[key];
  };
  auto integer = [&](const char* key) -> int64_t {
    const nlohmann::json& v = value(c, key, "");
    TITAN_CHECK_INPUT(v.is_number_integer() && v.get<int64_t>() >= 0)
        << origin << ": '" << key << "' must be a non-negative integer, got " << v.dump();
    return v.get<int64_t>();
  };
  auto number = [&](const nlohmann::json& object, const char* key, const std::string& where) {
    const nlohmann::json& v = value(object, key, where);
    TITAN_CHECK_INPUT(v.is_number()) << origin << ": '" << where << key << "' must be a number";
    return v.get<double>();
  };
  ModelArgs a;
  a.dim = integer("hidden_size");
  a.n_layers = integer("num_hidden_layers");
  a.n_dense_layers = integer("first_k_dense_replace");
  a.n_heads = integer("num_attention_heads");
  a.vocab_size = integer("vocab_size");
  a.inter_dim = integer("intermediate_size");
  a.moe_inter_dim = integer("moe_intermediate_size");
  a.q_lora_rank = c.contains("q_lora_rank") && !c["q_lora_rank"].is_null() ? integer("q_lora_rank")
                                                                           : 0;
  a.kv_lora_rank = integer("kv_lora_rank");
  a.qk_nope_head_dim = integer("qk_nope_head_dim");
  a.qk_rope_head_dim = integer("qk_rope_head_dim");
  a.v_head_dim = integer("v_head_dim");
  a.norm_eps = number(c, "rms_norm_eps", "");
  a.rope_theta = number(c, "rope_theta", "");
  a.num_experts = integer("n_routed_experts");
  a.num_shared_experts = integer("n_shared_experts");
  a.top_k = integer("num_experts_per_tok");
  a.n_expert_groups = integer("n_group");
  a.n_limited_groups = integer("topk_group");
  a.route_scale = number(c, "routed_scaling_factor", "");
  const nlohmann::json& norm = value(c, "norm_topk_prob", "");
  TITAN_CHECK_INPUT(norm.is_boolean()) << origin << ": 'norm_topk_prob' must be true or false";
  a.route_norm = norm.get<bool>();
  const nlohmann::json& score = value(c, "scoring_func", "");
  TITAN_CHECK_INPUT(score == "sigmoid" || score == "softmax")
      << origin << ": scoring_func " << score.dump() << " is not \"sigmoid\" or \"softmax\"";
  a.score_func = score == "sigmoid" ? ops::RouterScore::Sigmoid : ops::RouterScore::Softmax;
  const nlohmann::json& scaling = value(c, "rope_scaling", "");
  TITAN_CHECK_INPUT(scaling.is_object() && scaling.value("type", "") == "yarn")
      << origin << ": rope_scaling must be DeepSeek's {\"type\": \"yarn\", ...}";
  a.rope_factor = number(scaling, "factor", "rope_scaling.");
  a.original_seq_len = int64_t(number(scaling, "original_max_position_embeddings",
                                      "rope_scaling."));
  a.beta_fast = number(scaling, "beta_fast", "rope_scaling.");
  a.beta_slow = number(scaling, "beta_slow", "rope_scaling.");
  a.mscale = number(scaling, "mscale", "rope_scaling.");
  TITAN_CHECK_INPUT(!scaling.contains("mscale_all_dim") ||
                    number(scaling, "mscale_all_dim", "rope_scaling.") == a.mscale)
      << origin << ": rope_scaling.mscale_all_dim differs from mscale, which torchtitan's "
      << "softmax scale does not model";
  return a;
}

// The flavor fields no model.* key sets: each must be config.json's.
std::string first_difference(const ModelArgs& f, const ModelArgs& a) {
  const std::vector<std::pair<const char*, bool>> same = {
      {"first_k_dense_replace", f.n_dense_layers == a.n_dense_layers},
      {"intermediate_size", f.inter_dim == a.inter_dim},
      {"moe_intermediate_size", f.moe_inter_dim == a.moe_inter_dim},
      {"q_lora_rank", f.q_lora_rank == a.q_lora_rank},
      {"kv_lora_rank", f.kv_lora_rank == a.kv_lora_rank},
      {"qk_nope_head_dim", f.qk_nope_head_dim == a.qk_nope_head_dim},
      {"qk_rope_head_dim", f.qk_rope_head_dim == a.qk_rope_head_dim},
      {"v_head_dim", f.v_head_dim == a.v_head_dim},
      {"n_routed_experts", f.num_experts == a.num_experts},
      {"n_shared_experts", f.num_shared_experts == a.num_shared_experts},
      {"num_experts_per_tok", f.top_k == a.top_k},
      {"n_group", f.n_expert_groups == a.n_expert_groups},
      {"topk_group", f.n_limited_groups == a.n_limited_groups},
      {"routed_scaling_factor", f.route_scale == a.route_scale},
      {"norm_topk_prob", f.route_norm == a.route_norm},
      {"scoring_func", f.score_func == a.score_func},
      {"rope_scaling.factor", f.rope_factor == a.rope_factor},
      {"rope_scaling.original_max_position_embeddings", f.original_seq_len == a.original_seq_len},
      {"rope_scaling.beta_fast", f.beta_fast == a.beta_fast},
      {"rope_scaling.beta_slow", f.beta_slow == a.beta_slow},
      {"rope_scaling.mscale", f.mscale == a.mscale},
  };
  for (const auto& [key, equal] : same) {
    if (!equal) return key;
  }
  return {};
}

config::JobConfig HfAdapter::job_config_from_hf(const nlohmann::json& c, const std::string& origin,
                                                const std::optional<std::string>& flavor) const {
  const ModelArgs a = model_args_from_hf(c, origin);
  const Flavor* chosen = nullptr;
  std::string closest_difference;
  std::ostringstream known;
  for (const Flavor& f : deepseek_v3_flavors()) {
    known << (known.tellp() > 0 ? ", " : "") << f.name;
    if (flavor && f.name != *flavor) continue;
    const std::string difference = first_difference(f.args, a);
    if (difference.empty()) {
      chosen = &f;
      break;
    }
    if (closest_difference.empty()) closest_difference = f.name + " differs in " + difference;
  }
  TITAN_CHECK_INPUT(chosen != nullptr)
      << origin << ": no deepseek_v3 flavor " << (flavor ? "'" + *flavor + "' " : "")
      << "has this model's architecture (" << closest_difference
      << ", which no model.* key sets); known flavors: " << known.str();
  config::JobConfig job;
  job.model.name = "deepseek_v3";
  job.model.flavor = chosen->name;
  const ModelArgs& f = chosen->args;
  if (a.dim != f.dim) job.model.dim = a.dim;
  if (a.n_layers != f.n_layers) job.model.n_layers = a.n_layers;
  if (a.n_heads != f.n_heads) job.model.n_heads = a.n_heads;
  if (a.vocab_size != f.vocab_size) job.model.vocab_size = a.vocab_size;
  if (a.rope_theta != f.rope_theta) job.model.rope_theta = a.rope_theta;
  if (a.norm_eps != f.norm_eps) job.model.norm_eps = a.norm_eps;
  job.training.seq_len = a.original_seq_len;
  return job;
}

}  // namespace

std::unique_ptr<HfStateDictAdapter> make_hf_adapter() { return std::make_unique<HfAdapter>(); }

}  // namespace titan::models::deepseek_v3
