// How a decoder's modules split into pipeline stages: torchtitan's default split (the
// embedding and the output weighing first/last_stage_less_layers layers) and the checks of
// an explicit split (parallelism.module_fqns_per_model_part).
#include <gtest/gtest.h>

#include "titan/core/error.h"
#include "titan/models/pipeline_split.h"

namespace titan::models {
namespace {

using Split = std::vector<StageModules>;

std::string input_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(PipelineSplit, DefaultSplitIsTorchtitans) {
  // 8 layers + 1 + 1 over 2 stages: 5 each, the embedding and the output one of them.
  EXPECT_EQ(split_decoder_stages(8, 2, 1, 1),
            (Split{{"tok_embeddings", "layers.0", "layers.1", "layers.2", "layers.3"},
                   {"layers.4", "layers.5", "layers.6", "layers.7", "norm", "output"}}));
  // 8 + 2 over 4 stages: 3, 3, 2, 2.
  EXPECT_EQ(split_decoder_stages(8, 4, 1, 1),
            (Split{{"tok_embeddings", "layers.0", "layers.1"},
                   {"layers.2", "layers.3", "layers.4"},
                   {"layers.5", "layers.6"},
                   {"layers.7", "norm", "output"}}));
  // 6 + 2 over 8 stages: the embedding and the output alone.
  const Split eight = split_decoder_stages(6, 8, 1, 1);
  EXPECT_EQ(eight.front(), StageModules{"tok_embeddings"});
  EXPECT_EQ(eight.back(), (StageModules{"norm", "output"}));
  // Weights of 0: the first and last stages take whole layers too.
  EXPECT_EQ(split_decoder_stages(4, 2, 0, 0),
            (Split{{"tok_embeddings", "layers.0", "layers.1"},
                   {"layers.2", "layers.3", "norm", "output"}}));
  EXPECT_EQ(split_decoder_stages(2, 1, 1, 1),
            (Split{{"tok_embeddings", "layers.0", "layers.1", "norm", "output"}}));
}

TEST(PipelineSplit, ImpossibleSplitsAreBadInput) {
  // 8 + 2 effective layers cannot fill 11 stages.
  EXPECT_NE(input_error([] { split_decoder_stages(8, 11, 1, 1); }).find("at most 10 stages"),
            std::string::npos);
  // An embedding weighing 3 layers does not fit stages of 2.
  EXPECT_NE(input_error([] { split_decoder_stages(8, 6, 3, 1); })
                .find("pipeline_parallel_first_stage_less_layers 3"),
            std::string::npos);
}

TEST(PipelineSplit, ExplicitSplitsAreChecked) {
  const Split good = {{"tok_embeddings", "layers.0"}, {"layers.1", "norm", "output"}};
  EXPECT_NO_THROW(check_decoder_stages(good, 2, 2));
  EXPECT_NE(input_error([&] { check_decoder_stages(good, 2, 4); }).find("2 stages listed"),
            std::string::npos);
  const Split skipped = {{"tok_embeddings", "layers.1"}, {"layers.0", "norm", "output"}};
  EXPECT_NE(input_error([&] { check_decoder_stages(skipped, 2, 2); })
                .find("stage 0 lists layers.1 where layers.0 comes next"),
            std::string::npos);
  const Split unknown = {{"tok_embeddings", "layers.0"}, {"layers.1", "head"}};
  EXPECT_NE(input_error([&] { check_decoder_stages(unknown, 2, 2); }).find("lists head"),
            std::string::npos);
  const Split split_head = {{"tok_embeddings", "layers.0", "layers.1", "norm"}, {"output"}};
  EXPECT_NE(input_error([&] { check_decoder_stages(split_head, 2, 2); })
                .find("norm and output must share a stage"),
            std::string::npos);
  const Split missing = {{"tok_embeddings", "layers.0"}, {"layers.1", "norm"}};
  EXPECT_NE(input_error([&] { check_decoder_stages(missing, 2, 2); }).find("norm"),
            std::string::npos);
  const Split empty = {{"tok_embeddings", "layers.0", "layers.1", "norm", "output"}, {}};
  EXPECT_NE(input_error([&] { check_decoder_stages(empty, 2, 2); }).find("stage 1 lists no"),
            std::string::npos);
}

}  // namespace
}  // namespace titan::models
