// HF Llama mapping (models/llama3/hf_adapter.h): names both ways for every parameter of the
// model, the parameter table against Llama3Model itself, the RoPE row order (by hand, round
// trip, and as the rotation it stands for), config.json both ways, and the flavor an import
// records.
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <string>

#include "titan/core/float_formats.h"
#include "titan/models/llama3/hf_adapter.h"
#include "titan/models/llama3/model.h"
#include "titan/ops/rope.h"

namespace titan::models::llama3 {
namespace {

ModelArgs flavor(const std::string& name, bool tied = false) {
  for (const Flavor& f : llama3_flavors()) {
    if (f.name == name) {
      ModelArgs a = f.args;
      a.weight_tying = a.weight_tying || tied;
      a.max_seq_len = 64;
      return a;
    }
  }
  ADD_FAILURE() << "no flavor " << name;
  return {};
}

// The InputError message of f, or "" if it throws none.
template <class F>
std::string input_error(F f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

// A [rows, cols] F32 tensor whose element (r, c) is r * cols + c.
Tensor counting(int64_t rows, int64_t cols) {
  Tensor t = Tensor::empty({rows, cols}, DType::F32);
  for (int64_t i = 0; i < t.numel(); ++i) t.mutable_data<float>()[i] = float(i);
  return t;
}

std::vector<float> values(const Tensor& t) {
  const float* p = t.data<float>();
  return std::vector<float>(p, p + t.numel());
}

TEST(HfLlamaNames, MapEveryTinyParameterBothWays) {
  for (bool tied : {false, true}) {
    Llama3Model model(flavor("tiny", tied));
    std::set<std::string> hf_names;
    for (nn::Parameter* p : model.parameters()) {
      const std::optional<std::string> hf = hf_name_from_titan(p->name());
      ASSERT_TRUE(hf.has_value()) << p->name();
      EXPECT_EQ(titan_name_from_hf(*hf), p->name());
      EXPECT_TRUE(hf_names.insert(*hf).second) << *hf << " twice";
      EXPECT_FALSE(hf_name_is_buffer(*hf));
    }
    EXPECT_EQ(hf_names.size(), tied ? 74u : 75u);
    EXPECT_EQ(hf_names.count("lm_head.weight"), tied ? 0u : 1u);
  }
}

TEST(HfLlamaNames, FollowTheTable) {
  const std::pair<const char*, const char*> table[] = {
      {"tok_embeddings.weight", "model.embed_tokens.weight"},
      {"layers.0.attention.wq.weight", "model.layers.0.self_attn.q_proj.weight"},
      {"layers.1.attention.wk.weight", "model.layers.1.self_attn.k_proj.weight"},
      {"layers.2.attention.wv.weight", "model.layers.2.self_attn.v_proj.weight"},
      {"layers.3.attention.wo.weight", "model.layers.3.self_attn.o_proj.weight"},
      {"layers.4.feed_forward.w1.weight", "model.layers.4.mlp.gate_proj.weight"},
      {"layers.5.feed_forward.w2.weight", "model.layers.5.mlp.down_proj.weight"},
      {"layers.6.feed_forward.w3.weight", "model.layers.6.mlp.up_proj.weight"},
      {"layers.7.attention_norm.weight", "model.layers.7.input_layernorm.weight"},
      {"layers.10.ffn_norm.weight", "model.layers.10.post_attention_layernorm.weight"},
      {"norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"},
  };
  for (const auto& [titan, hf] : table) {
    EXPECT_EQ(hf_name_from_titan(titan), hf);
    EXPECT_EQ(titan_name_from_hf(hf), titan);
  }
}

TEST(HfLlamaNames, RejectNamesThatAreNoLlamaWeights) {
  for (const char* name : {"layers.x.attention.wq.weight", "layers.01.ffn_norm.weight", "layers.0.attention.wq",
                           "model.embed_tokens.weight", "norm", ""}) {
    EXPECT_EQ(hf_name_from_titan(name), std::nullopt) << name;
  }
  for (const char* name : {"model.layers.0.self_attn.rotary_emb.inv_freq", "model.layers.0.mlp.gate_proj",
                           "tok_embeddings.weight", "model.lm_head.weight", "model.layers..mlp.up_proj.weight"}) {
    EXPECT_EQ(titan_name_from_hf(name), std::nullopt) << name;
  }
  EXPECT_TRUE(hf_name_is_buffer("model.layers.3.self_attn.rotary_emb.inv_freq"));
  EXPECT_FALSE(hf_name_is_buffer("model.layers.3.self_attn.q_proj.weight"));
}

TEST(HfLlamaShapes, MatchTheModelsParametersInOrder) {
  ModelArgs uneven = flavor("tiny");
  uneven.n_layers = 3;
  uneven.n_kv_heads = 1;
  uneven.ffn_dim = 100;
  for (const ModelArgs& args : {flavor("tiny"), flavor("tiny", true), uneven}) {
    Llama3Model model(args);
    const auto shapes = parameter_shapes(args);
    const auto parameters = model.parameters();
    ASSERT_EQ(shapes.size(), parameters.size());
    for (size_t i = 0; i < shapes.size(); ++i) {
      ASSERT_EQ(shapes[i].name, parameters[i]->name()) << "parameter " << i;
      ASSERT_EQ(shapes[i].shape, parameters[i]->global_shape()) << shapes[i].name;
    }
  }
}

TEST(HfLlamaRope, PermutedHeadsAreWqAndWkOnly) {
  const ModelArgs tiny = flavor("tiny");
  EXPECT_EQ(rope_permuted_heads("layers.3.attention.wq.weight", tiny), 4);
  EXPECT_EQ(rope_permuted_heads("layers.3.attention.wk.weight", tiny), 2);
  for (const char* name : {"layers.3.attention.wv.weight", "layers.3.attention.wo.weight",
                           "tok_embeddings.weight", "output.weight", "layers.0.feed_forward.w1.weight"}) {
    EXPECT_EQ(rope_permuted_heads(name, tiny), std::nullopt) << name;
  }
}

// Rows hold their own index: HF row p*hd/2 + j is titan row 2j + p within each head.
TEST(HfLlamaRope, RowOrderByHand) {
  EXPECT_EQ(values(rope_rows_to_hf(counting(4, 1), 1)), (std::vector<float>{0, 2, 1, 3}));
  EXPECT_EQ(values(rope_rows_to_hf(counting(6, 1), 1)), (std::vector<float>{0, 2, 4, 1, 3, 5}));
  EXPECT_EQ(values(rope_rows_to_hf(counting(8, 1), 2)), (std::vector<float>{0, 2, 1, 3, 4, 6, 5, 7}));
  // Whole rows move: two columns.
  EXPECT_EQ(values(rope_rows_to_hf(counting(4, 2), 1)), (std::vector<float>{0, 1, 4, 5, 2, 3, 6, 7}));
  EXPECT_EQ(values(rope_rows_from_hf(counting(6, 1), 1)), (std::vector<float>{0, 3, 1, 4, 2, 5}));
}

TEST(HfLlamaRope, RoundTripIsTheIdentity) {
  const ModelArgs tiny = flavor("tiny");
  for (int64_t heads : {tiny.n_heads, tiny.n_kv_heads}) {
    const Tensor w = counting(heads * tiny.head_dim(), tiny.dim);
    const Tensor hf = rope_rows_to_hf(w, heads);
    EXPECT_NE(values(hf), values(w));
    EXPECT_EQ(values(rope_rows_from_hf(hf, heads)), values(w));
    EXPECT_EQ(values(rope_rows_to_hf(rope_rows_from_hf(w, heads), heads)), values(w));
  }
  // Any dtype: the bytes of rows move.
  Tensor bf = Tensor::empty({8, 3}, DType::BF16);
  for (int64_t i = 0; i < bf.numel(); ++i) bf.mutable_data<bf16_t>()[i] = bf16_from_f32(float(i));
  const Tensor back = rope_rows_from_hf(rope_rows_to_hf(bf, 2), 2);
  for (int64_t i = 0; i < bf.numel(); ++i) EXPECT_EQ(back.data<bf16_t>()[i].bits, bf.data<bf16_t>()[i].bits);
  EXPECT_THROW(rope_rows_to_hf(counting(6, 1), 2), Error);  // head dim 3 is odd
}

// What the permutation is for: q = Wq x rotated by titan's interleaved RoPE equals, after
// reordering, HF's rotate_half applied to (reordered Wq) x. The reordering of q's entries is
// the reordering of Wq's rows, so both sides permute q as a [H * hd, 1] matrix.
TEST(HfLlamaRope, HalfSplitRotationOfReorderedRowsEqualsInterleavedRotation) {
  const int64_t T = 5, H = 3, hd = 8, half = hd / 2;
  Tensor freqs = Tensor::empty({T, half, 2}, DType::F32);
  ops::rope_table(hd, 10000.0, ops::RopeScaling{}, 0, freqs);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  Tensor q = Tensor::empty({1, T, H, hd}, DType::F32);
  for (int64_t i = 0; i < q.numel(); ++i) q.mutable_data<float>()[i] = normal(rng);
  Tensor rotated = Tensor::empty(q.shape(), DType::F32);
  ops::rope_forward(q, freqs, rotated);

  const float* f = freqs.data<float>();
  for (int64_t t = 0; t < T; ++t) {
    const Tensor q_t = q.reshape({T, H * hd}).narrow(t, 1).reshape({H * hd, 1});
    const Tensor expected = rope_rows_to_hf(rotated.reshape({T, H * hd}).narrow(t, 1).reshape({H * hd, 1}), H);
    const Tensor q_hf = rope_rows_to_hf(q_t, H);
    for (int64_t h = 0; h < H; ++h) {
      const float* x = q_hf.data<float>() + h * hd;
      for (int64_t j = 0; j < hd; ++j) {
        // HF: q * cos + rotate_half(q) * sin, cos/sin of frequency j mod hd/2.
        const float c = f[(t * half + j % half) * 2], s = f[(t * half + j % half) * 2 + 1];
        const float rotate_half = j < half ? -x[j + half] : x[j - half];
        EXPECT_NEAR(x[j] * c + rotate_half * s, expected.data<float>()[h * hd + j], 1e-5f)
            << "t " << t << " head " << h << " dim " << j;
      }
    }
  }
}

TEST(HfLlamaConfig, TinyConfigJsonHasLlamaForCausalLMKeys) {
  const nlohmann::ordered_json c = hf_config_from_model_args(flavor("tiny"), "bfloat16");
  EXPECT_EQ(c["architectures"], nlohmann::json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(c["model_type"], "llama");
  EXPECT_EQ(c["hidden_size"], 64);
  EXPECT_EQ(c["intermediate_size"], 192);
  EXPECT_EQ(c["num_hidden_layers"], 8);
  EXPECT_EQ(c["num_attention_heads"], 4);
  EXPECT_EQ(c["num_key_value_heads"], 2);
  EXPECT_EQ(c["head_dim"], 16);
  EXPECT_EQ(c["vocab_size"], 2048);
  EXPECT_EQ(c["rms_norm_eps"], 1e-5);
  EXPECT_EQ(c["rope_theta"], 500000.0);
  EXPECT_EQ(c["rope_scaling"]["rope_type"], "llama3");
  EXPECT_EQ(c["rope_scaling"]["factor"], 8.0);
  EXPECT_EQ(c["rope_scaling"]["low_freq_factor"], 1.0);
  EXPECT_EQ(c["rope_scaling"]["high_freq_factor"], 4.0);
  EXPECT_EQ(c["rope_scaling"]["original_max_position_embeddings"], 8192);
  EXPECT_EQ(c["tie_word_embeddings"], false);
  EXPECT_EQ(c["max_position_embeddings"], 64);
  EXPECT_EQ(c["torch_dtype"], "bfloat16");
  EXPECT_EQ(hf_config_from_model_args(flavor("1B"), "float32")["tie_word_embeddings"], true);
  EXPECT_EQ(hf_config_from_model_args(flavor("1B"), "float32")["rope_scaling"]["factor"], 32.0);
}

TEST(HfLlamaConfig, ModelArgsRoundTripThroughConfigJson) {
  for (const char* name : {"tiny", "debugmodel", "1B", "8B", "405B"}) {
    const ModelArgs a = flavor(name);
    const ModelArgs b = model_args_from_hf_config(nlohmann::json::parse(hf_config_from_model_args(a, "float32").dump()), "c");
    EXPECT_EQ(parameter_shapes(b), parameter_shapes(a)) << name;
    EXPECT_EQ(b.rope_theta, a.rope_theta);
    EXPECT_EQ(b.norm_eps, a.norm_eps);
    EXPECT_EQ(b.weight_tying, a.weight_tying);
    EXPECT_EQ(b.max_seq_len, a.max_seq_len);
    EXPECT_EQ(b.rope_scaling.factor, a.rope_scaling.factor);
    EXPECT_TRUE(b.rope_scaling.enabled);
  }
}

TEST(HfLlamaConfig, RejectsWhatTitanCannotRepresent) {
  const nlohmann::json tiny = nlohmann::json::parse(hf_config_from_model_args(flavor("tiny"), "float32").dump());
  auto with = [&tiny](const char* key, nlohmann::json value) {
    nlohmann::json c = tiny;
    c[key] = value;
    return input_error([&] { model_args_from_hf_config(c, "dir/config.json"); });
  };
  EXPECT_NE(with("model_type", "mistral").find("dir/config.json: model_type \"mistral\""), std::string::npos);
  EXPECT_NE(with("head_dim", 32).find("head_dim"), std::string::npos);
  EXPECT_NE(with("rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}}).find("\"yarn\""), std::string::npos);
  EXPECT_NE(with("hidden_size", "64").find("hidden_size"), std::string::npos);
  EXPECT_NE(with("num_key_value_heads", 3).find("num_key_value_heads"), std::string::npos);
  nlohmann::json no_layers = tiny;
  no_layers.erase("num_hidden_layers");
  EXPECT_NE(input_error([&] { model_args_from_hf_config(no_layers, "c"); }).find("'num_hidden_layers' is missing"),
            std::string::npos);
  nlohmann::json unscaled = tiny;
  unscaled["rope_scaling"] = nullptr;
  EXPECT_FALSE(model_args_from_hf_config(unscaled, "c").rope_scaling.enabled);
}

TEST(HfLlamaImportConfig, PicksTheFlavorWhoseShapesMatch) {
  for (const char* name : {"tiny", "debugmodel", "1B", "8B"}) {
    const config::JobConfig job = job_config_for_model_args(flavor(name), std::nullopt);
    EXPECT_EQ(job.model.flavor, name);
    EXPECT_FALSE(job.model.dim || job.model.n_layers || job.model.n_heads || job.model.n_kv_heads ||
                 job.model.ffn_dim || job.model.vocab_size || job.model.rope_theta || job.model.norm_eps)
        << name;
    EXPECT_EQ(job.training.seq_len, 64);
  }
}

TEST(HfLlamaImportConfig, OverridesMakeTheClosestFlavorMatch) {
  ModelArgs a = flavor("tiny", true);
  a.dim = 128;
  a.n_layers = 2;
  a.ffn_dim = 320;
  a.rope_theta = 10000;
  const config::JobConfig job = job_config_for_model_args(a, std::nullopt);
  EXPECT_EQ(job.model.flavor, "tiny");
  EXPECT_EQ(job.model.dim, 128);
  EXPECT_EQ(job.model.n_layers, 2);
  EXPECT_EQ(job.model.ffn_dim, 320);
  EXPECT_EQ(job.model.rope_theta, 10000.0);
  EXPECT_TRUE(job.model.enable_weight_tying);
  const ModelArgs back = model_args_from_config(job);
  EXPECT_EQ(parameter_shapes(back), parameter_shapes(a));
  EXPECT_EQ(back.rope_theta, 10000.0);
}

TEST(HfLlamaImportConfig, AnExplicitFlavorNamesTheFirstMismatchedTensor) {
  const std::string message = input_error([] { job_config_for_model_args(flavor("tiny"), std::string("debugmodel")); });
  EXPECT_NE(message.find("model.embed_tokens.weight (tok_embeddings.weight) is [2048, 64]"), std::string::npos) << message;
  ModelArgs more_layers = flavor("tiny");
  more_layers.n_layers = 9;
  EXPECT_NE(input_error([&] { job_config_for_model_args(more_layers, std::string("tiny")); }).find("layers.8"),
            std::string::npos);
  ModelArgs more_heads = flavor("tiny");
  more_heads.n_heads = 8;  // head dim 8 with 4 kv heads: every shape is tiny's
  more_heads.n_kv_heads = 4;
  EXPECT_NE(input_error([&] { job_config_for_model_args(more_heads, std::string("tiny")); })
                .find("flavor tiny has 4 heads and 2 kv heads, the model 8 and 4"),
            std::string::npos);
  EXPECT_NE(input_error([] { job_config_for_model_args(flavor("tiny"), std::string("7B")); }).find("known: tiny"),
            std::string::npos);
  // Tied flavors cannot be untied; the 1B's RoPE factor 32 is no other flavor's.
  ModelArgs untied_1b = flavor("1B");
  untied_1b.weight_tying = false;
  EXPECT_NE(input_error([&] { job_config_for_model_args(untied_1b, std::string("1B")); }).find("lm_head.weight"),
            std::string::npos);
  EXPECT_NE(input_error([] { job_config_for_model_args(flavor("tiny"), std::string("1B")); }).find("RoPE scaling"),
            std::string::npos);
  ModelArgs unscaled = flavor("tiny");
  unscaled.rope_scaling.enabled = false;
  EXPECT_NE(input_error([&] { job_config_for_model_args(unscaled, std::nullopt); }).find("RoPE scaling none"),
            std::string::npos);
  EXPECT_EQ(job_config_for_model_args(flavor("tiny", true), std::string("tiny")).model.enable_weight_tying, true);
}

}  // namespace
}  // namespace titan::models::llama3
