#include <gtest/gtest.h>

#include <cmath>

#include "support/gradient_check.h"
#include "titan/core/philox.h"
#include "titan/models/llama3/model.h"

namespace titan::models::llama3 {
namespace {

using testing::to_values;

ModelArgs tiny(int64_t seq_len = 16, bool tied = false) {
  ModelArgs a;
  for (const Flavor& f : llama3_flavors()) {
    if (f.name == "tiny") a = f.args;
  }
  a.max_seq_len = seq_len;
  a.weight_tying = tied;
  return a;
}

Tensor random_tokens(int64_t B, int64_t T, int64_t vocab, uint64_t seed) {
  Tensor t = Tensor::empty({B, T}, DType::I64);
  for (int64_t i = 0; i < B * T; ++i) {
    t.mutable_data<int64_t>()[i] = int64_t(philox_block(seed, 7, i)[0] % uint64_t(vocab));
  }
  return t;
}

std::vector<testing::Values> grads_of(Llama3Model& model) {
  std::vector<testing::Values> g;
  for (nn::Parameter* p : model.parameters()) g.push_back(to_values(p->grad()));
  return g;
}

TEST(Llama3Model, ParameterNamesAndShapesAreTorchtitans) {
  Llama3Model model(tiny());
  const std::vector<nn::Parameter*> params = model.parameters();
  ASSERT_EQ(params.size(), size_t(1 + 8 * 9 + 2));
  EXPECT_EQ(params[0]->name(), "tok_embeddings.weight");
  EXPECT_EQ(params[0]->global_shape(), (Shape{2048, 64}));
  EXPECT_EQ(params[1]->name(), "layers.0.attention.wq.weight");
  EXPECT_EQ(params[1]->global_shape(), (Shape{64, 64}));
  EXPECT_EQ(params[2]->name(), "layers.0.attention.wk.weight");
  EXPECT_EQ(params[2]->global_shape(), (Shape{32, 64}));
  EXPECT_EQ(params[4]->name(), "layers.0.attention.wo.weight");
  EXPECT_EQ(params[5]->name(), "layers.0.feed_forward.w1.weight");
  EXPECT_EQ(params[5]->global_shape(), (Shape{192, 64}));
  EXPECT_EQ(params[6]->name(), "layers.0.feed_forward.w2.weight");
  EXPECT_EQ(params[6]->global_shape(), (Shape{64, 192}));
  EXPECT_EQ(params[8]->name(), "layers.0.attention_norm.weight");
  EXPECT_EQ(params[9]->name(), "layers.0.ffn_norm.weight");
  EXPECT_EQ(params[params.size() - 2]->name(), "norm.weight");
  EXPECT_EQ(params.back()->name(), "output.weight");
  int64_t total = 0;
  for (nn::Parameter* p : params) total += p->value().numel();
  EXPECT_EQ(total, count_parameters(tiny()).total);
  Llama3Model tied(tiny(16, true));
  EXPECT_EQ(tied.parameters().size(), params.size() - 1);
  EXPECT_EQ(&tied.output_weight(), tied.parameters()[0]);
}

// Sample mean and std of every parameter against torchtitan's rule for it, within a few
// standard errors (n ~ 4k to 130k elements).
TEST(Llama3Model, InitializationFollowsTorchtitansRules) {
  Llama3Model model(tiny());
  model.initialize(0);
  const double kTruncated3Sigma = 0.98664;  // std of a normal cut at +-3 sigma, in sigmas
  for (nn::Parameter* p : model.parameters()) {
    const testing::Values v = to_values(p->value());
    double mean = 0, sq = 0;
    for (double x : v) mean += x;
    mean /= double(v.size());
    for (double x : v) sq += (x - mean) * (x - mean);
    const double std = std::sqrt(sq / double(v.size()));
    const std::string& name = p->name();
    double expected = 0;
    if (name.find("norm") != std::string::npos) {
      EXPECT_EQ(mean, 1.0) << name;
      EXPECT_EQ(std, 0.0) << name;
      continue;
    } else if (name == "tok_embeddings.weight") {
      expected = 1.0;
    } else if (name == "output.weight") {
      expected = kTruncated3Sigma / 8.0;  // dim^-1/2 = 1/8
    } else {
      const bool depth_scaled = name.find(".wo.") != std::string::npos ||
                                name.find(".w2.") != std::string::npos ||
                                name.find(".w3.") != std::string::npos;
      const int layer = std::stoi(name.substr(7));
      expected = depth_scaled ? 0.02 / std::sqrt(2.0 * (layer + 1)) : 0.02;
    }
    const double n = double(v.size());
    EXPECT_LT(std::fabs(mean), 5 * expected / std::sqrt(n)) << name;
    EXPECT_LT(std::fabs(std / expected - 1), 5 / std::sqrt(2 * n)) << name << " std " << std;
  }
}

TEST(Llama3Model, InitialLossIsNearLogVocab) {
  Llama3Model model(tiny());
  model.initialize(0);
  const Tensor tokens = random_tokens(2, 16, 2048, 1), labels = random_tokens(2, 16, 2048, 2);
  ModelRecord record;
  const double mean_loss = model.forward(tokens, labels, record) / 32.0;
  // Logits have variance ~0.97 (unit-rms norm output, output std D^-1/2 cut at 3 sigma), so
  // the expected loss is ln V + 0.97 / 2; 32 tokens leave a sampling error of ~0.2.
  EXPECT_NEAR(mean_loss, std::log(2048.0) + 0.487, 0.6);
}

TEST(Llama3Model, SplitBackwardEqualsBackwardBitwise) {
  for (bool tied : {false, true}) {
    Llama3Model model(tiny(16, tied));
    model.initialize(3);
    const Tensor tokens = random_tokens(2, 16, 2048, 1), labels = random_tokens(2, 16, 2048, 2);
    ModelRecord record;
    model.forward(tokens, labels, record);
    model.backward(record, 1.0f / 32);
    const auto together = grads_of(model);
    model.zero_grads();
    model.forward(tokens, labels, record);
    model.backward_input(record, 1.0f / 32);
    model.backward_weight(record, 1.0f / 32);
    const auto apart = grads_of(model);
    ASSERT_EQ(together.size(), apart.size());
    for (size_t i = 0; i < apart.size(); ++i) {
      EXPECT_EQ(apart[i], together[i]) << model.parameters()[i]->name() << " tied=" << tied;
    }
  }
}

// A training step knows grad_scale before its forward and defers the loss to the backward
// (StageTensors::defer_loss): one logits GEMM per chunk instead of two, the same bits.
TEST(Llama3Model, DeferredLossEqualsForwardThenBackwardBitwise) {
  for (bool tied : {false, true}) {
    Llama3Model model(tiny(16, tied));
    model.initialize(3);
    const Tensor tokens = random_tokens(2, 16, 2048, 1), labels = random_tokens(2, 16, 2048, 2);
    ModelRecord record;
    const double loss = model.forward(tokens, labels, record);
    model.backward(record, 1.0f / 32);
    const auto apart = grads_of(model);
    model.zero_grads();
    ModelRecord deferred;
    deferred.pipeline.defer_loss = true;
    EXPECT_EQ(model.forward(tokens, labels, deferred), 0.0) << "the loss waits for backward";
    model.backward(deferred, 1.0f / 32);
    EXPECT_EQ(deferred.pipeline.deferred_loss, loss) << "tied=" << tied;
    const auto together = grads_of(model);
    ASSERT_EQ(together.size(), apart.size());
    for (size_t i = 0; i < apart.size(); ++i) {
      EXPECT_EQ(together[i], apart[i]) << model.parameters()[i]->name() << " tied=" << tied;
    }
    // The split backward cannot take a deferred loss (its halves would need it twice).
    model.forward(tokens, labels, deferred);
    EXPECT_THROW(model.backward_input(deferred, 1.0f / 32), Error);
  }
}

// Mixed precision on the CPU (ops/cpu/bf16_storage.h): bf16 compute copies of the weights
// and bf16 activations, f32 gradients; on any CPU (the GEMMs widen to f32 where it has no
// AVX512_BF16). The loss and every weight gradient stay near the f32 model's: bf16 keeps 8
// bits, so the loss within 2e-2 and each gradient's norm within 5% (the GPU's bf16 bounds).
TEST(Llama3Model, Bf16ComputeStaysNearF32) {
  nn::ParameterLayout bf16_layout;
  bf16_layout.compute_dtype = DType::BF16;
  Llama3Model f32(tiny()), bf16(tiny(), bf16_layout);
  f32.initialize(4);
  bf16.initialize(4);
  const Tensor tokens = random_tokens(2, 16, 2048, 1), labels = random_tokens(2, 16, 2048, 2);
  ModelRecord f32_record, bf16_record;
  const double f32_loss = f32.forward(tokens, labels, f32_record);
  const double bf16_loss = bf16.forward(tokens, labels, bf16_record);
  EXPECT_NEAR(bf16_loss, f32_loss, 2e-2 * 32);  // summed over 32 tokens
  f32.backward(f32_record, 1.0f / 32);
  bf16.backward(bf16_record, 1.0f / 32);
  const std::vector<nn::Parameter*> p32 = f32.parameters(), p16 = bf16.parameters();
  for (size_t i = 0; i < p32.size(); ++i) {
    EXPECT_EQ(p16[i]->value().dtype(), DType::BF16) << p16[i]->name();
    ASSERT_EQ(p16[i]->grad().dtype(), DType::F32) << p16[i]->name();
    const testing::Values g32 = to_values(p32[i]->grad()), g16 = to_values(p16[i]->grad());
    double norm = 0, diff = 0;
    for (size_t j = 0; j < g32.size(); ++j) {
      norm += g32[j] * g32[j];
      diff += (g16[j] - g32[j]) * (g16[j] - g32[j]);
    }
    EXPECT_LE(std::sqrt(diff), 0.05 * std::sqrt(norm)) << p16[i]->name();
  }
}

TEST(Llama3Model, TwoRunsAreBitwiseIdentical) {
  std::vector<std::vector<testing::Values>> runs;
  std::vector<double> losses;
  for (int run = 0; run < 2; ++run) {
    Llama3Model model(tiny());
    model.initialize(5);
    ModelRecord record;
    losses.push_back(model.forward(random_tokens(2, 16, 2048, 1), random_tokens(2, 16, 2048, 2), record));
    model.backward(record, 0.5f);
    runs.push_back(grads_of(model));
  }
  EXPECT_EQ(losses[0], losses[1]);
  EXPECT_EQ(runs[0], runs[1]);
}

TEST(Llama3Model, RecordKnowsItsBytesAndBackwardReleasesIt) {
  Llama3Model model(tiny());
  model.initialize(0);
  ModelRecord record;
  model.forward(random_tokens(1, 16, 2048, 1), random_tokens(1, 16, 2048, 2), record);
  const int64_t bytes = record.bytes();
  // Per layer at least x, xn, h, hn (4 N D) and a, b, g (3 N F) floats.
  EXPECT_GT(bytes, 8 * (4 * 16 * 64 + 3 * 16 * 192) * 4);
  const int64_t in_use = allocator_for(Device::cpu()).stats().current_bytes;
  model.backward(record, 1.0f);
  EXPECT_EQ(record.bytes(), 0);
  EXPECT_LE(allocator_for(Device::cpu()).stats().current_bytes, in_use - bytes);
}

TEST(Llama3Model, IgnoredLabelsContributeNothing) {
  Llama3Model model(tiny());
  model.initialize(0);
  const Tensor tokens = random_tokens(1, 16, 2048, 1);
  Tensor labels = random_tokens(1, 16, 2048, 2);
  ModelRecord record;
  const double full = model.forward(tokens, labels, record);
  for (int64_t t = 8; t < 16; ++t) labels.mutable_data<int64_t>()[t] = -100;
  const double half = model.forward(tokens, labels, record);
  EXPECT_LT(half, full);
  EXPECT_GT(half, 0.3 * full);
}

}  // namespace
}  // namespace titan::models::llama3
