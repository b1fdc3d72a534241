#include <gtest/gtest.h>

#include "titan/config/job_config.h"
#include "titan/core/error.h"
#include "titan/models/llama3/args.h"

namespace titan::models::llama3 {
namespace {

ModelArgs flavor(const std::string& name) {
  for (const Flavor& f : llama3_flavors()) {
    if (f.name == name) return f.args;
  }
  ADD_FAILURE() << "no flavor " << name;
  return {};
}

// Counts computed by hand from torchtitan's shapes (its models/llama3 args,
// get_nparams_and_flops).
TEST(Llama3Args, ParameterCountsMatchTorchtitan) {
  EXPECT_EQ(count_parameters(flavor("debugmodel")).total, 6'163'712);
  EXPECT_EQ(count_parameters(flavor("8B")).total, 8'030'261'248);
  EXPECT_EQ(count_parameters(flavor("70B")).total, 70'553'706'496);
  EXPECT_EQ(count_parameters(flavor("405B")).total, 405'853'388'800);
}

TEST(Llama3Args, FeedForwardWidthsFollowTheRule) {
  EXPECT_EQ(flavor("debugmodel").hidden_dim(), 768);
  EXPECT_EQ(flavor("8B").hidden_dim(), 14336);
  EXPECT_EQ(flavor("70B").hidden_dim(), 28672);
  EXPECT_EQ(flavor("405B").hidden_dim(), 53248);
  EXPECT_EQ(flavor("1B").hidden_dim(), 8192);  // Llama 3.2's published intermediate sizes
  EXPECT_EQ(flavor("3B").hidden_dim(), 8192);
  EXPECT_EQ(flavor("tiny").hidden_dim(), 192);
}

TEST(Llama3Args, Llama32FlavorsAreTiedWithTheirOwnRopeFactor) {
  EXPECT_TRUE(flavor("1B").weight_tying);
  EXPECT_TRUE(flavor("3B").weight_tying);
  EXPECT_EQ(flavor("1B").rope_scaling.factor, 32.0);
  EXPECT_FALSE(flavor("8B").weight_tying);
  EXPECT_EQ(flavor("8B").rope_scaling.factor, 8.0);
  // 1B: 2048 x 128256 embedding shared with the output, 16 layers: Llama 3.2 1B's 1.24e9.
  EXPECT_EQ(count_parameters(flavor("1B")).total, 1'235'814'400);
}

TEST(Llama3Args, FlopsPerTokenMatchTorchtitan) {
  EXPECT_DOUBLE_EQ(flops_per_token(flavor("debugmodel"), 2048), 71'585'280.0);
  EXPECT_NEAR(flops_per_token(flavor("8B"), 8192) / 5.791e10, 1.0, 1e-3);
  EXPECT_NEAR(flops_per_token(flavor("70B"), 8192) / 4.814e11, 1.0, 1e-3);
  EXPECT_NEAR(flops_per_token(flavor("405B"), 8192) / 2.625e12, 1.0, 1e-3);
}

// torchtitan's flex and varlen variants: the same model, attention within documents.
TEST(Llama3Args, FlexAndVarlenFlavorsMaskPerDocument) {
  using config::AttentionMaskType;
  for (const char* base : {"debugmodel", "8B"}) {
    EXPECT_EQ(flavor(base).attn_mask_type, AttentionMaskType::Causal) << base;
  }
  for (const char* name : {"debugmodel_flex_attn", "debugmodel_varlen_attn"}) {
    EXPECT_EQ(flavor(name).attn_mask_type, AttentionMaskType::BlockCausal) << name;
    EXPECT_EQ(count_parameters(flavor(name)).total, count_parameters(flavor("debugmodel")).total);
  }
  for (const char* name : {"8B_flex", "8B_varlen"}) {
    EXPECT_EQ(flavor(name).attn_mask_type, AttentionMaskType::BlockCausal) << name;
    EXPECT_EQ(count_parameters(flavor(name)).total, count_parameters(flavor("8B")).total);
  }
  config::JobConfig c;
  c.model.flavor = "debugmodel_flex_attn";
  c.model.attn_mask_type = AttentionMaskType::Causal;  // the override wins
  EXPECT_EQ(model_args_from_config(c).attn_mask_type, AttentionMaskType::Causal);
}

TEST(Llama3Args, OverridesApplyAndSeqLenBecomesMaxSeqLen) {
  config::JobConfig c;
  c.model.flavor = "tiny";
  c.model.dim = 96;
  c.model.n_heads = 6;
  c.model.n_kv_heads = 3;
  c.model.ffn_dim = 100;
  c.model.vocab_size = 1000;
  c.training.seq_len = 33;
  const ModelArgs a = model_args_from_config(c);
  EXPECT_EQ(a.dim, 96);
  EXPECT_EQ(a.head_dim(), 16);
  EXPECT_EQ(a.hidden_dim(), 100);
  EXPECT_EQ(a.vocab_size, 1000);
  EXPECT_EQ(a.max_seq_len, 33);
  EXPECT_EQ(a.n_layers, 8);
}

TEST(Llama3Args, BadDimensionsAreInputErrorsNamingTheKey) {
  auto message = [](auto mutate) {
    config::JobConfig c;
    c.model.flavor = "tiny";
    mutate(c);
    try {
      model_args_from_config(c);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([](config::JobConfig& c) { c.model.flavor = "7B"; }).find("known: tiny, debugmodel"),
            std::string::npos);
  EXPECT_NE(message([](config::JobConfig& c) { c.model.n_heads = 5; }).find("model.n_heads"),
            std::string::npos);
  EXPECT_NE(message([](config::JobConfig& c) { c.model.n_kv_heads = 3; }).find("model.n_kv_heads"),
            std::string::npos);
  EXPECT_NE(message([](config::JobConfig& c) { c.model.dim = 60; c.model.n_heads = 4; }).find("even"),
            std::string::npos);
}

}  // namespace
}  // namespace titan::models::llama3
