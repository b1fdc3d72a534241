#include "titan/models/llama3/hf_adapter.h"

#include <cstring>
#include <map>
#include <sstream>

#include "titan/core/error.h"
#include "titan/models/llama3/model.h"

namespace titan::models::llama3 {
namespace {

// Per-layer suffixes, titan <-> HF (after "layers.N." and "model.layers.N.").
constexpr std::pair<const char*, const char*> kLayerNames[] = {
    {"attention.wq.weight", "self_attn.q_proj.weight"},
    {"attention.wk.weight", "self_attn.k_proj.weight"},
    {"attention.wv.weight", "self_attn.v_proj.weight"},
    {"attention.wo.weight", "self_attn.o_proj.weight"},
    {"feed_forward.w1.weight", "mlp.gate_proj.weight"},
    {"feed_forward.w2.weight", "mlp.down_proj.weight"},
    {"feed_forward.w3.weight", "mlp.up_proj.weight"},
    {"attention_norm.weight", "input_layernorm.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
};
// Whole names outside the layers.
constexpr std::pair<const char*, const char*> kTopNames[] = {
    {"tok_embeddings.weight", "model.embed_tokens.weight"},
    {"norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};

// Splits "<prefix><digits>.<rest>" into the layer number and rest; false if it is not that.
bool split_layer(const std::string& name, const std::string& prefix, std::string& layer,
                 std::string& rest) {
  if (name.rfind(prefix, 0) != 0) return false;
  size_t i = prefix.size();
  while (i < name.size() && name[i] >= '0' && name[i] <= '9') ++i;
  // One digit at least, no leading zero ("layers.01" is not a parameter), then a dot.
  if (i == prefix.size() || i >= name.size() || name[i] != '.') return false;
  if (name[prefix.size()] == '0' && i > prefix.size() + 1) return false;
  layer = name.substr(prefix.size(), i - prefix.size());
  rest = name.substr(i + 1);
  return true;
}

// Moves row blocks of each head: out row `to(r)` = in row r, for r < hd, per head.
template <class RowMap>
Tensor permute_head_rows(const Tensor& weight, int64_t heads, RowMap to) {
  TITAN_CHECK(weight.dim() == 2) << "RoPE row order: expected a [heads * hd, D] matrix, got "
                                 << shape_string(weight.shape());
  TITAN_CHECK(heads > 0 && weight.size(0) % heads == 0 && (weight.size(0) / heads) % 2 == 0)
      << "RoPE row order: " << weight.size(0) << " rows are not " << heads
      << " heads of an even head dim";
  const int64_t hd = weight.size(0) / heads;
  const int64_t row_bytes = weight.size(1) * dtype_bytes(weight.dtype());
  Tensor out = Tensor::empty(weight.shape(), weight.dtype(), weight.device());
  const auto* in = static_cast<const uint8_t*>(weight.raw_data());
  auto* dst = static_cast<uint8_t*>(out.raw_mutable_data());
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t r = 0; r < hd; ++r) {
      std::memcpy(dst + (h * hd + to(r, hd)) * row_bytes, in + (h * hd + r) * row_bytes,
                  size_t(row_bytes));
    }
  }
  return out;
}

// The shape-deciding dimensions of a flavor against args: each that differs is one override.
struct Overrides {
  config::ModelSection model;  // only the optional fields are set
  int count = 0;
};

Overrides overrides_for(const ModelArgs& flavor, const ModelArgs& args) {
  Overrides o;
  auto set = [&o](std::optional<int64_t>& key, int64_t want, int64_t have) {
    if (want != have) key = want, ++o.count;
  };
  set(o.model.dim, args.dim, flavor.dim);
  set(o.model.n_layers, args.n_layers, flavor.n_layers);
  set(o.model.n_heads, args.n_heads, flavor.n_heads);
  set(o.model.n_kv_heads, args.n_kv_heads, flavor.n_kv_heads);
  set(o.model.vocab_size, args.vocab_size, flavor.vocab_size);
  // The flavor's FFN rule depends on dim: compare the widths that result.
  ModelArgs resized = flavor;
  if (o.model.dim) resized.dim = *o.model.dim;
  set(o.model.ffn_dim, args.hidden_dim(), resized.hidden_dim());
  return o;
}

bool same_rope_scaling(const ops::RopeScaling& a, const ops::RopeScaling& b) {
  if (a.enabled != b.enabled) return false;
  return !a.enabled || (a.factor == b.factor && a.low_freq_factor == b.low_freq_factor &&
                        a.high_freq_factor == b.high_freq_factor &&
                        a.original_max_positions == b.original_max_positions);
}

std::string rope_scaling_text(const ops::RopeScaling& s) {
  if (!s.enabled) return "none";
  std::ostringstream text;
  text << "llama3 factor " << s.factor << ", low " << s.low_freq_factor << ", high "
       << s.high_freq_factor << ", original " << s.original_max_positions;
  return text.str();
}

}  // namespace

std::optional<std::string> hf_name_from_titan(const std::string& fqn) {
  for (const auto& [titan, hf] : kTopNames) {
    if (fqn == titan) return std::string(hf);
  }
  std::string layer, rest;
  if (!split_layer(fqn, "layers.", layer, rest)) return std::nullopt;
  for (const auto& [titan, hf] : kLayerNames) {
    if (rest == titan) return "model.layers." + layer + "." + hf;
  }
  return std::nullopt;
}

std::optional<std::string> titan_name_from_hf(const std::string& hf_name) {
  for (const auto& [titan, hf] : kTopNames) {
    if (hf_name == hf) return std::string(titan);
  }
  std::string layer, rest;
  if (!split_layer(hf_name, "model.layers.", layer, rest)) return std::nullopt;
  for (const auto& [titan, hf] : kLayerNames) {
    if (rest == hf) return "layers." + layer + "." + titan;
  }
  return std::nullopt;
}

bool hf_name_is_buffer(const std::string& hf_name) {
  std::string layer, rest;
  return split_layer(hf_name, "model.layers.", layer, rest) && rest == "self_attn.rotary_emb.inv_freq";
}

std::optional<int64_t> rope_permuted_heads(const std::string& fqn, const ModelArgs& args) {
  std::string layer, rest;
  if (!split_layer(fqn, "layers.", layer, rest)) return std::nullopt;
  if (rest == "attention.wq.weight") return args.n_heads;
  if (rest == "attention.wk.weight") return args.n_kv_heads;
  return std::nullopt;
}

Tensor rope_rows_to_hf(const Tensor& weight, int64_t heads) {
  // titan row r = 2j + p goes to HF row p * hd/2 + j.
  return permute_head_rows(weight, heads,
                           [](int64_t r, int64_t hd) { return (r % 2) * (hd / 2) + r / 2; });
}

Tensor rope_rows_from_hf(const Tensor& weight, int64_t heads) {
  // HF row r = p * hd/2 + j goes to titan row 2j + p.
  return permute_head_rows(weight, heads,
                           [](int64_t r, int64_t hd) { return 2 * (r % (hd / 2)) + r / (hd / 2); });
}

nlohmann::ordered_json hf_config_from_model_args(const ModelArgs& a, const std::string& torch_dtype) {
  nlohmann::ordered_json c;
  c["architectures"] = {"LlamaForCausalLM"};
  c["model_type"] = "llama";
  c["hidden_size"] = a.dim;
  c["intermediate_size"] = a.hidden_dim();
  c["num_hidden_layers"] = a.n_layers;
  c["num_attention_heads"] = a.n_heads;
  c["num_key_value_heads"] = a.n_kv_heads;
  c["head_dim"] = a.head_dim();
  c["hidden_act"] = "silu";
  c["rms_norm_eps"] = a.norm_eps;
  c["rope_theta"] = a.rope_theta;
  if (a.rope_scaling.enabled) {
    c["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", a.rope_scaling.factor},
                         {"low_freq_factor", a.rope_scaling.low_freq_factor},
                         {"high_freq_factor", a.rope_scaling.high_freq_factor},
                         {"original_max_position_embeddings",
                          int64_t(a.rope_scaling.original_max_positions)}};
  } else {
    c["rope_scaling"] = nullptr;
  }
  c["vocab_size"] = a.vocab_size;
  c["max_position_embeddings"] = a.max_seq_len;
  c["tie_word_embeddings"] = a.weight_tying;
  c["attention_bias"] = false;
  c["mlp_bias"] = false;
  c["torch_dtype"] = torch_dtype;
  return c;
}

ModelArgs model_args_from_hf_config(const nlohmann::json& c, const std::string& origin) {
  TITAN_CHECK_INPUT(c.is_object()) << origin << ": not a JSON object";
  auto integer = [&](const char* key) -> int64_t {
    TITAN_CHECK_INPUT(c.contains(key)) << origin << ": '" << key << "' is missing";
    TITAN_CHECK_INPUT(c[key].is_number_integer() && c[key].get<int64_t>() > 0)
        << origin << ": '" << key << "' must be a positive integer, got " << c[key].dump();
    return c[key].get<int64_t>();
  };
  auto number = [&](const char* key, double fallback) -> double {
    if (!c.contains(key)) return fallback;
    TITAN_CHECK_INPUT(c[key].is_number() && c[key].get<double>() > 0)
        << origin << ": '" << key << "' must be a positive number, got " << c[key].dump();
    return c[key].get<double>();
  };
  if (c.contains("model_type")) {
    TITAN_CHECK_INPUT(c["model_type"] == "llama")
        << origin << ": model_type " << c["model_type"].dump() << " is not \"llama\"";
  }
  ModelArgs a;
  a.dim = integer("hidden_size");
  a.n_layers = integer("num_hidden_layers");
  a.n_heads = integer("num_attention_heads");
  a.n_kv_heads = c.contains("num_key_value_heads") ? integer("num_key_value_heads") : a.n_heads;
  a.vocab_size = integer("vocab_size");
  a.ffn_dim = integer("intermediate_size");
  a.norm_eps = number("rms_norm_eps", 1e-6);   // LlamaConfig's defaults
  a.rope_theta = number("rope_theta", 10000.0);
  a.max_seq_len = c.contains("max_position_embeddings") ? integer("max_position_embeddings") : 2048;
  if (c.contains("tie_word_embeddings")) {
    TITAN_CHECK_INPUT(c["tie_word_embeddings"].is_boolean())
        << origin << ": 'tie_word_embeddings' must be true or false";
    a.weight_tying = c["tie_word_embeddings"].get<bool>();
  }
  TITAN_CHECK_INPUT(a.dim % a.n_heads == 0 && a.head_dim() % 2 == 0)
      << origin << ": hidden_size " << a.dim << " is not num_attention_heads " << a.n_heads
      << " heads of an even size";
  TITAN_CHECK_INPUT(a.n_heads % a.n_kv_heads == 0)
      << origin << ": num_key_value_heads " << a.n_kv_heads << " must divide num_attention_heads "
      << a.n_heads;
  if (c.contains("head_dim") && !c["head_dim"].is_null()) {
    TITAN_CHECK_INPUT(integer("head_dim") == a.head_dim())
        << origin << ": head_dim " << c["head_dim"].dump() << " differs from hidden_size / "
        << "num_attention_heads = " << a.head_dim() << ", which titan.cpp's Llama requires";
  }
  const nlohmann::json* scaling = c.contains("rope_scaling") ? &c["rope_scaling"] : nullptr;
  if (scaling == nullptr || scaling->is_null()) {
    a.rope_scaling.enabled = false;
  } else {
    TITAN_CHECK_INPUT(scaling->is_object()) << origin << ": 'rope_scaling' must be an object or null";
    const nlohmann::json& type = scaling->contains("rope_type") ? (*scaling)["rope_type"]
                                 : scaling->contains("type")    ? (*scaling)["type"]
                                                                : nlohmann::json();
    TITAN_CHECK_INPUT(type == "llama3")
        << origin << ": rope_scaling type " << type.dump() << " is not supported (only \"llama3\")";
    auto field = [&](const char* key) {
      TITAN_CHECK_INPUT(scaling->contains(key) && (*scaling)[key].is_number())
          << origin << ": rope_scaling." << key << " is missing or not a number";
      return (*scaling)[key].get<double>();
    };
    a.rope_scaling.enabled = true;
    a.rope_scaling.factor = field("factor");
    a.rope_scaling.low_freq_factor = field("low_freq_factor");
    a.rope_scaling.high_freq_factor = field("high_freq_factor");
    a.rope_scaling.original_max_positions = field("original_max_position_embeddings");
  }
  return a;
}

config::JobConfig job_config_for_model_args(const ModelArgs& args,
                                            const std::optional<std::string>& flavor) {
  const Flavor* chosen = nullptr;
  Overrides best;
  std::ostringstream known;
  for (const Flavor& f : llama3_flavors()) {
    known << (known.tellp() > 0 ? ", " : "") << f.name;
    if (flavor && f.name != *flavor) continue;
    if (!flavor && (!same_rope_scaling(f.args.rope_scaling, args.rope_scaling) ||
                    (f.args.weight_tying && !args.weight_tying))) {
      continue;  // not reachable from this flavor with model.* keys
    }
    const Overrides o = overrides_for(f.args, args);
    if (chosen == nullptr || o.count < best.count) chosen = &f, best = o;
  }
  TITAN_CHECK_INPUT(!flavor || chosen != nullptr)
      << "--flavor: '" << *flavor << "' is not a llama3 flavor; known: " << known.str();
  TITAN_CHECK_INPUT(chosen != nullptr)
      << "no llama3 flavor has RoPE scaling " << rope_scaling_text(args.rope_scaling)
      << (args.weight_tying ? "" : " and untied output weights")
      << ", which no model.* key can set; known flavors: " << known.str();
  TITAN_CHECK_INPUT(same_rope_scaling(chosen->args.rope_scaling, args.rope_scaling))
      << "flavor " << chosen->name << " has RoPE scaling " << rope_scaling_text(chosen->args.rope_scaling)
      << ", the model has " << rope_scaling_text(args.rope_scaling) << "; no model.* key sets it";
  TITAN_CHECK_INPUT(!chosen->args.weight_tying || args.weight_tying)
      << "flavor " << chosen->name << " ties the output to the embedding, the model does not "
      << "(lm_head.weight); no model.* key unties it";
  if (flavor && best.count > 0) {
    // An explicit flavor is a claim about the shapes: name the first tensor that breaks it.
    ModelArgs expected = chosen->args;
    expected.weight_tying = args.weight_tying;
    std::map<std::string, Shape> want;
    for (auto& [name, shape] : parameter_shapes(expected)) want[name] = shape;
    for (const auto& [name, shape] : parameter_shapes(args)) {
      const auto it = want.find(name);
      TITAN_CHECK_INPUT(it != want.end())
          << "flavor " << chosen->name << " has no " << name << " (" << *hf_name_from_titan(name)
          << "): it has " << expected.n_layers << " layers, the model " << args.n_layers;
      TITAN_CHECK_INPUT(it->second == shape)
          << "flavor " << chosen->name << ": " << *hf_name_from_titan(name) << " (" << name
          << ") is " << shape_string(shape) << ", the flavor's is " << shape_string(it->second);
    }
    // Same shapes, other heads: the attention (and the RoPE row order) would differ.
    TITAN_FAIL_INPUT() << "flavor " << chosen->name << " has " << expected.n_heads << " heads and "
                       << expected.n_kv_heads << " kv heads, the model " << args.n_heads << " and "
                       << args.n_kv_heads;
  }

  config::JobConfig job;
  job.model.name = "llama3";
  job.model.flavor = chosen->name;
  job.model.dim = best.model.dim;
  job.model.n_layers = best.model.n_layers;
  job.model.n_heads = best.model.n_heads;
  job.model.n_kv_heads = best.model.n_kv_heads;
  job.model.vocab_size = best.model.vocab_size;
  job.model.ffn_dim = best.model.ffn_dim;
  // Values that change no shape are kept whenever they differ from the flavor's.
  if (args.rope_theta != chosen->args.rope_theta) job.model.rope_theta = args.rope_theta;
  if (args.norm_eps != chosen->args.norm_eps) job.model.norm_eps = args.norm_eps;
  job.model.enable_weight_tying = args.weight_tying && !chosen->args.weight_tying;
  job.training.seq_len = args.max_seq_len;
  return job;
}

std::optional<std::string> HfAdapter::to_hf_name(const std::string& name) const {
  return hf_name_from_titan(name);
}

std::optional<std::string> HfAdapter::from_hf_name(const std::string& hf_name) const {
  return titan_name_from_hf(hf_name);
}

bool HfAdapter::skipped_on_import(const std::string& hf_name,
                                  const config::JobConfig& config) const {
  // A tied model's lm_head, where an exporter kept it, is the embedding again: HF re-ties it.
  return hf_name_is_buffer(hf_name) ||
         (hf_name == "lm_head.weight" && model_args_from_config(config).weight_tying);
}

Tensor HfAdapter::to_hf(const std::string& name, const Tensor& value,
                        const config::JobConfig& config) const {
  const auto heads = rope_permuted_heads(name, model_args_from_config(config));
  return heads ? rope_rows_to_hf(value, *heads) : value;
}

Tensor HfAdapter::from_hf(const std::string& name, const Tensor& value,
                          const config::JobConfig& config) const {
  const auto heads = rope_permuted_heads(name, model_args_from_config(config));
  return heads ? rope_rows_from_hf(value, *heads) : value;
}

nlohmann::ordered_json HfAdapter::hf_config(const config::JobConfig& config,
                                            const std::string& torch_dtype) const {
  return hf_config_from_model_args(model_args_from_config(config), torch_dtype);
}

config::JobConfig HfAdapter::job_config_from_hf(const nlohmann::json& config_json,
                                                const std::string& origin,
                                                const std::optional<std::string>& flavor) const {
  const ModelArgs args = model_args_from_hf_config(config_json, origin);
  config::JobConfig job = job_config_for_model_args(args, flavor);
  // What training will build from the recorded config must be what config.json describes.
  TITAN_CHECK(parameter_shapes(model_args_from_config(job)) == parameter_shapes(args))
      << origin << ": the recorded config does not reproduce config.json's shapes";
  return job;
}

}  // namespace titan::models::llama3
