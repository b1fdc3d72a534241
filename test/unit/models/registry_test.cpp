// The model seam (models/family.h, models/registry.h): model.name finds its family, an
// unknown name lists the known ones, and a family's description of a model (parameter
// shapes, summary, plan, HF adapter) is what it builds.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "titan/models/llama3/args.h"
#include "titan/models/registry.h"
#include "titan/nn/placement.h"

namespace titan::models {
namespace {

config::JobConfig job(const std::string& flavor, bool tied = false,
                      const std::string& family = "llama3") {
  config::JobConfig c;
  c.model.name = family;
  c.model.flavor = flavor;
  c.model.enable_weight_tying = tied;
  c.training.seq_len = 64;
  return c;
}

TEST(ModelRegistry, ModelNameFindsItsFamilyAndUnknownNamesListTheKnown) {
  EXPECT_EQ(model_family("llama3").name(), "llama3");
  ASSERT_FALSE(model_families().empty());
  for (const ModelFamily* family : model_families()) {
    EXPECT_EQ(&model_family(family->name()), family);
  }
  try {
    model_family("gpt2");
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()),
              "model.name: 'gpt2' is not a known model; known: llama3, deepseek_v3");
  }
}

TEST(ModelRegistry, HfModelTypeFindsTheFamilyThatReadsIt) {
  EXPECT_EQ(model_family_for_hf({{"model_type", "llama"}}, "config.json").name(), "llama3");
  EXPECT_EQ(model_family_for_hf(nlohmann::json::object(), "config.json").name(), "llama3");
  try {
    model_family_for_hf({{"model_type", "mistral"}}, "dir/config.json");
    FAIL() << "no error";
  } catch (const InputError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("dir/config.json: model_type \"mistral\""), std::string::npos)
        << message;
    EXPECT_NE(message.find("\"llama\""), std::string::npos) << message;
  }
}

// What a family says of a model before building it is what it builds: the parameters'
// names and shapes in order, their count, and the vocabulary.
TEST(ModelFamily, DescribesTheModelItBuilds) {
  for (const ModelFamily* family : model_families()) {
    const bool ties = family->name() == "llama3";  // the one family with a tied flavor
    for (bool tied : {false, true}) {
      if (tied && !ties) continue;
      const config::JobConfig config = job("tiny", tied, family->name());
      const std::vector<ParameterShape> shapes = family->parameter_shapes(config);
      const ModelSummary summary = family->summarize(config);
      std::unique_ptr<Model> model = family->build(config, nn::ParameterLayout{});
      const std::vector<nn::Parameter*> parameters = model->parameters();
      ASSERT_EQ(shapes.size(), parameters.size());
      int64_t count = 0;
      for (size_t i = 0; i < shapes.size(); ++i) {
        EXPECT_EQ(shapes[i].name, parameters[i]->name());
        EXPECT_EQ(shapes[i].shape, parameters[i]->global_shape()) << shapes[i].name;
        count += shape_numel(shapes[i].shape);
      }
      EXPECT_EQ(summary.parameters, count) << family->name() << (tied ? " tied" : "");
      EXPECT_EQ(summary.vocab_size, model->vocab_size());
      if (ties) {  // a dense model: at least 6 FLOPs per parameter outside the embedding
        EXPECT_GT(summary.flops_per_token, 6.0 * double(count - summary.vocab_size * 64));
      }
      EXPECT_NE(summary.description.find(family->name() + " tiny"), std::string::npos);
      // Every parameter has a rule in the plan, and HF names (one, or one per row of a
      // stacked tensor) that map back, as every buffer's do.
      const nn::ParallelPlan plan = family->parallel_plan(config, nn::ParameterLayout{});
      const HfStateDictAdapter& hf = family->hf_adapter();
      std::vector<ParameterShape> state = shapes;
      for (const ParameterShape& b : family->buffer_shapes(config)) state.push_back(b);
      for (const ParameterShape& p : state) {
        EXPECT_NO_THROW(plan(p.name)) << p.name;
        const std::vector<std::string> hf_names = hf.to_hf_names(p.name, config);
        ASSERT_TRUE(hf_names.size() == 1 || int64_t(hf_names.size()) == p.shape[0]) << p.name;
        for (const std::string& hf_name : hf_names) EXPECT_EQ(hf.from_hf_name(hf_name), p.name);
      }
    }
  }
}

TEST(ModelFamily, BadModelKeysAreInputErrorsNamingTheKey) {
  config::JobConfig config = job("tiny");
  config.model.flavor = "huge";
  EXPECT_THROW(model_family("llama3").summarize(config), InputError);
  config = job("tiny");
  config.model.n_kv_heads = 3;
  try {
    model_family("llama3").summarize(config);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("model.n_kv_heads"), std::string::npos) << e.what();
  }
  config = job("tiny");
  config.parallelism.expert_tensor_parallel_degree = 2;
  EXPECT_THROW(model_family("llama3").summarize(config), InputError);
  // deepseek_v3: Llama's keys that mean nothing there, a tensor-parallel degree that does
  // not split its 4 heads.
  config = job("tiny", false, "deepseek_v3");
  config.model.n_kv_heads = 2;
  EXPECT_THROW(model_family("deepseek_v3").summarize(config), InputError);
  config = job("tiny", true, "deepseek_v3");
  EXPECT_THROW(model_family("deepseek_v3").summarize(config), InputError);
  config = job("tiny", false, "deepseek_v3");
  config.parallelism.tensor_parallel_degree = 2;
  config.parallelism.expert_tensor_parallel_degree = 4;  // neither 1 nor tp
  EXPECT_THROW(model_family("deepseek_v3").summarize(config), InputError);
  config = job("tiny", false, "deepseek_v3");
  config.parallelism.tensor_parallel_degree = 3;
  try {
    model_family("deepseek_v3").summarize(config);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("parallelism.tensor_parallel_degree"),
              std::string::npos) << e.what();
  }
}

// DeepSeek V3's experts under EP 2 x TP 2: whole on the tp ranks without expert tensor
// parallelism (ep spans tp), their hidden dim split over tp with it; the router replicated.
TEST(ModelFamily, DeepSeekV3PlacesExpertsByExpertTensorParallelism) {
  const config::JobConfig config = job("tiny", false, "deepseek_v3");
  nn::ParameterLayout layout;
  layout.tp = {2, 1};
  layout.ep = {2, 0};
  const ModelFamily& family = model_family("deepseek_v3");
  const auto placed = [&](const std::string& name) {
    return nn::place_parameter(layout, family.parallel_plan(config, layout)(name)).describe();
  };
  EXPECT_EQ(placed("layers.1.moe.experts.w1"), "ep Shard(0)");
  EXPECT_EQ(placed("layers.1.moe.router.gate.weight"), "tp Replicate");
  layout.expert_tensor_parallel = true;
  EXPECT_EQ(placed("layers.1.moe.experts.w1"), "ep Shard(0), tp Shard(1)");
  EXPECT_EQ(placed("layers.1.moe.experts.w3"), "ep Shard(0), tp Shard(1)");
  EXPECT_EQ(placed("layers.1.moe.experts.w2"), "ep Shard(0), tp Shard(2)");
  EXPECT_EQ(placed("layers.1.moe.router.gate.weight"), "tp Replicate");
}

}  // namespace
}  // namespace titan::models
