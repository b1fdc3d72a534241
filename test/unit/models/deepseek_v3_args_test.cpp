// DeepSeek V3's dimensions (models/deepseek_v3/args.h): the flavors' parameter counts are the
// published models' (DeepSeek-V2-Lite 15.7B, V2 236B with 21B active, V3 671B with 37B
// active), torchtitan's FLOP formula, YaRN's softmax scale, and the keys that are bad input.
#include <gtest/gtest.h>

#include <cmath>

#include "titan/core/error.h"
#include "titan/models/deepseek_v3/args.h"

namespace titan::models::deepseek_v3 {
namespace {

ModelArgs flavor(const std::string& name, int64_t seq_len = 4096) {
  config::JobConfig c;
  c.model.name = "deepseek_v3";
  c.model.flavor = name;
  c.training.seq_len = seq_len;
  return model_args_from_config(c);
}

TEST(DeepSeekV3Args, FlavorsHaveThePublishedParameterCounts) {
  struct Published {
    const char* flavor;
    double total_b, active_b;  // billions; active counts the embedding and the output
  };
  for (const Published& p : {Published{"16B", 15.71, 2.66}, Published{"236B", 235.74, 21.38},
                             Published{"671B", 671.03, 37.55}}) {
    const ParameterCounts c = count_parameters(flavor(p.flavor));
    EXPECT_NEAR(double(c.total) / 1e9, p.total_b, 0.01) << p.flavor;
    EXPECT_NEAR(double(c.active) / 1e9, p.active_b, 0.01) << p.flavor;
  }
  // 671B: 58 MoE layers of 256 experts of 3 x 2048 x 7168.
  EXPECT_EQ(count_parameters(flavor("671B")).routed_experts, 58LL * 256 * 3 * 2048 * 7168);
}

TEST(DeepSeekV3Args, FlopsAreTorchtitansMoeFormula) {
  const ModelArgs a = flavor("tiny", 64);
  const ParameterCounts c = count_parameters(a);
  // 6 (active - embedding) + 6 L H (qk_head_dim + v_head_dim) T
  const double expected = 6.0 * double(c.active - 2048 * 64) + 6.0 * 3 * 4 * (24 + 16) * 64;
  EXPECT_DOUBLE_EQ(flops_per_token(a, 64), expected);
  EXPECT_LT(c.active, c.total);  // 2 of 8 experts per token
}

TEST(DeepSeekV3Args, YarnScalesTheSoftmaxOnlyBeyondTheOriginalLength) {
  // tiny: original_seq_len 32, rope_factor 4, mscale 0.7.
  EXPECT_FALSE(flavor("tiny", 32).yarn());
  EXPECT_FLOAT_EQ(flavor("tiny", 32).softmax_scale(), float(1 / std::sqrt(24.0)));
  const double m = 0.1 * 0.7 * std::log(4.0) + 1.0;
  EXPECT_TRUE(flavor("tiny", 64).yarn());
  EXPECT_FLOAT_EQ(flavor("tiny", 64).softmax_scale(), float(m * m / std::sqrt(24.0)));
}

TEST(DeepSeekV3Args, BadKeysAreInputErrorsNamingTheKey) {
  auto message = [](auto&& change) {
    config::JobConfig c;
    c.model.name = "deepseek_v3";
    c.model.flavor = "tiny";
    c.training.seq_len = 64;
    change(c);
    try {
      model_args_from_config(c);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([](config::JobConfig& c) { c.model.flavor = "8B"; }).find("model.flavor"),
            std::string::npos);
  EXPECT_NE(message([](config::JobConfig& c) { c.model.n_kv_heads = 2; }).find("model.n_kv_heads"),
            std::string::npos);
  EXPECT_NE(message([](config::JobConfig& c) { c.model.ffn_dim = 2; }).find("model.ffn_dim"),
            std::string::npos);
  EXPECT_NE(message([](config::JobConfig& c) { c.model.n_layers = 0; }).find("model.n_layers"),
            std::string::npos);
}

}  // namespace
}  // namespace titan::models::deepseek_v3
