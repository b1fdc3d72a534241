// Sampling: greedy is the first largest logit, top-k 1 is greedy, and draws follow
// softmax(logits / temperature) (frequencies over many positions, Philox-seeded, so the
// test is deterministic).
#include <gtest/gtest.h>

#include <cmath>

#include "titan/infer/generate.h"

namespace titan::infer {
namespace {

TEST(SampleToken, GreedyTakesTheFirstLargestLogit) {
  const float logits[] = {0.5f, 2.0f, -1.0f, 2.0f};
  SamplingOptions greedy;
  greedy.temperature = 0;
  EXPECT_EQ(sample_token(logits, 4, greedy, 0), 1);
  SamplingOptions top1;
  top1.top_k = 1;
  for (int64_t position = 0; position < 50; ++position) {
    EXPECT_EQ(sample_token(logits, 4, top1, position), 1) << position;
  }
}

TEST(SampleToken, DrawsFollowTheSoftmaxAndTopKCutsTheTail) {
  // softmax(log 1, log 2, log 3, log 4 - 20) at temperature 1: 1/6, 2/6, 3/6, ~0.
  const float logits[] = {0.0f, std::log(2.0f), std::log(3.0f), std::log(4.0f) - 20.0f};
  SamplingOptions options;
  options.seed = 11;
  const int64_t draws = 60000;
  std::vector<int64_t> counts(4, 0);
  for (int64_t p = 0; p < draws; ++p) ++counts[size_t(sample_token(logits, 4, options, p))];
  EXPECT_NEAR(double(counts[0]) / draws, 1.0 / 6, 0.01);
  EXPECT_NEAR(double(counts[1]) / draws, 2.0 / 6, 0.01);
  EXPECT_NEAR(double(counts[2]) / draws, 3.0 / 6, 0.01);
  // Temperature 2 flattens: weights 1, sqrt 2, sqrt 3 over the top 2 only with top_k 2.
  options.temperature = 2;
  options.top_k = 2;
  std::fill(counts.begin(), counts.end(), 0);
  for (int64_t p = 0; p < draws; ++p) ++counts[size_t(sample_token(logits, 4, options, p))];
  EXPECT_EQ(counts[0] + counts[3], 0) << "outside the top 2";
  EXPECT_NEAR(double(counts[1]) / draws, std::sqrt(2.0) / (std::sqrt(2.0) + std::sqrt(3.0)), 0.01);
}

TEST(SampleToken, TheSeedChoosesTheDraws) {
  std::vector<float> logits(100, 0.0f);
  SamplingOptions a, b;
  a.seed = 1;
  b.seed = 2;
  int same = 0;
  for (int64_t p = 0; p < 100; ++p) {
    EXPECT_EQ(sample_token(logits.data(), 100, a, p), sample_token(logits.data(), 100, a, p));
    same += sample_token(logits.data(), 100, a, p) == sample_token(logits.data(), 100, b, p);
  }
  EXPECT_LT(same, 10);
}

}  // namespace
}  // namespace titan::infer
