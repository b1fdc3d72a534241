// Activation checkpointing: which blocks each mode recomputes, gradients bitwise those of
// `none` in every mode (fused and split backward), and the peak memory of a forward and
// backward falling by what the mode drops.
#include <gtest/gtest.h>

#include "support/gradient_check.h"
#include "titan/core/allocator.h"
#include "titan/core/philox.h"
#include "titan/models/activation_checkpoint.h"
#include "titan/models/llama3/model.h"

namespace titan::models {
namespace {

using config::ActivationCheckpointMode;
using nn::Recompute;

config::ActivationCheckpointSection section(ActivationCheckpointMode mode,
                                            std::string option = "2", double budget = 0.5) {
  config::ActivationCheckpointSection s;
  s.mode = mode;
  s.selective_ac_option = std::move(option);
  s.memory_budget = budget;
  return s;
}

const std::vector<int> kEightLayers = {0, 1, 2, 3, 4, 5, 6, 7};

std::vector<int> recomputed(const std::vector<Recompute>& plan) {
  std::vector<int> blocks;
  for (size_t k = 0; k < plan.size(); ++k) {
    if (plan[k] != Recompute::None) blocks.push_back(int(k));
  }
  return blocks;
}

TEST(ActivationCheckpointPlan, EachModePicksTorchtitansBlocks) {
  using V = std::vector<int>;
  EXPECT_EQ(recomputed(activation_checkpoint_plan(section(ActivationCheckpointMode::None),
                                                  kEightLayers)),
            V{});
  EXPECT_EQ(recomputed(activation_checkpoint_plan(section(ActivationCheckpointMode::Full),
                                                  kEightLayers)),
            (V{0, 1, 2, 3, 4, 5, 6, 7}));
  // torchtitan counts blocks from 1 and wraps every N-th: layers 1, 3, 5, 7 for N = 2.
  EXPECT_EQ(recomputed(activation_checkpoint_plan(
                section(ActivationCheckpointMode::Selective, "2"), kEightLayers)),
            (V{1, 3, 5, 7}));
  EXPECT_EQ(recomputed(activation_checkpoint_plan(
                section(ActivationCheckpointMode::Selective, "3"), kEightLayers)),
            (V{2, 5}));
  EXPECT_EQ(recomputed(activation_checkpoint_plan(
                section(ActivationCheckpointMode::Selective, "0"), kEightLayers)),
            (V{0, 1, 2, 3, 4, 5, 6, 7}));
  // A pipeline stage holding layers 4..7 counts by global index.
  EXPECT_EQ(recomputed(activation_checkpoint_plan(
                section(ActivationCheckpointMode::Selective, "2"), {4, 5, 6, 7})),
            (V{1, 3}));
  const std::vector<Recompute> op = activation_checkpoint_plan(
      section(ActivationCheckpointMode::Selective, "op"), kEightLayers);
  EXPECT_EQ(op, std::vector<Recompute>(8, Recompute::CheapOps));
  // memory_budget b: ceil((1 - b) L) blocks, spread evenly.
  auto budget = [](double b) {
    return recomputed(activation_checkpoint_plan(
        section(ActivationCheckpointMode::MemoryBudget, "2", b), kEightLayers));
  };
  EXPECT_EQ(budget(1.0), V{});
  EXPECT_EQ(budget(0.5), (V{1, 3, 5, 7}));
  EXPECT_EQ(budget(0.75), (V{3, 7}));
  EXPECT_EQ(budget(0.7), (V{2, 5, 7}));
  EXPECT_EQ(budget(0.0), (V{0, 1, 2, 3, 4, 5, 6, 7}));
}

llama3::ModelArgs tiny() {
  for (const llama3::Flavor& f : llama3::llama3_flavors()) {
    if (f.name == "tiny") {
      llama3::ModelArgs a = f.args;
      a.max_seq_len = 32;
      return a;
    }
  }
  return {};
}

Tensor random_tokens(int64_t B, int64_t T, uint64_t seed) {
  Tensor t = Tensor::empty({B, T}, DType::I64);
  for (int64_t i = 0; i < B * T; ++i) {
    t.mutable_data<int64_t>()[i] = int64_t(philox_block(seed, 7, i)[0] % 2048);
  }
  return t;
}

struct Pass {
  std::vector<testing::Values> grads;
  int64_t peak = 0;  // the activations/* tags' bytes at the forward and backward's peak
};

// One microbatch's forward and backward (split or fused) under `mode`.
Pass run(const config::ActivationCheckpointSection& mode, bool split) {
  llama3::Llama3Model model(tiny());
  model.set_activation_checkpointing(mode);
  model.initialize(3);
  const Tensor tokens = random_tokens(2, 32, 1), labels = random_tokens(2, 32, 2);
  Allocator& allocator = allocator_for(Device::cpu());
  allocator.reset_peak();
  llama3::ModelRecord record;
  model.forward(tokens, labels, record);
  if (split) {
    model.backward_input(record, 1.0f / 64);
    model.backward_weight(record, 1.0f / 64);
  } else {
    model.backward(record, 1.0f / 64);
  }
  Pass pass;
  for (const TagUsage& usage : allocator.usage_at_peak()) {
    if (usage.tag.rfind("activations/", 0) == 0) pass.peak += usage.bytes;
  }
  for (nn::Parameter* p : model.parameters()) pass.grads.push_back(testing::to_values(p->grad()));
  return pass;
}

struct Mode {
  const char* name;
  config::ActivationCheckpointSection section;
};

const std::vector<Mode>& modes() {
  static const std::vector<Mode> all = {
      {"full", section(ActivationCheckpointMode::Full)},
      {"selective 2", section(ActivationCheckpointMode::Selective, "2")},
      {"selective op", section(ActivationCheckpointMode::Selective, "op")},
      {"memory_budget 0.5", section(ActivationCheckpointMode::MemoryBudget, "2", 0.5)},
  };
  return all;
}

TEST(ActivationCheckpoint, GradientsAreBitwiseThoseOfNone) {
  for (const bool split : {false, true}) {
    const Pass none = run(section(ActivationCheckpointMode::None), split);
    for (const Mode& mode : modes()) {
      const Pass pass = run(mode.section, split);
      ASSERT_EQ(pass.grads.size(), none.grads.size());
      for (size_t i = 0; i < pass.grads.size(); ++i) {
        EXPECT_EQ(pass.grads[i], none.grads[i]) << mode.name << " split=" << split << " #" << i;
      }
    }
  }
}

// What a release drops from one block of the tiny model on [2, 32] tokens (f32):
//   full  everything but the input x: xn, h, hn ([N, D] each), q ([N, D]), k, v ([N, D/2]
//         each: 2 of 4 heads), the attention output ([N, D]), lse ([B, H, T]), a, b, g
//         ([N, F] each), and the two rstd ([N] each)
//   op    xn, hn ([N, D] each) and g ([N, F])
// The peak is the memory snapshot's: the activations/* tags' bytes when the allocator peaked.
// Without checkpointing the peak comes at the start of backward, every record alive. A mode
// that recomputes k blocks lowers it by k blocks' drops, less at most one: its own peak may
// come while a recomputed block is whole again for its backward.
TEST(ActivationCheckpoint, PeakMemoryFallsByWhatTheModeDrops) {
  constexpr int64_t N = 64, D = 64, F = 192, B = 2, H = 4, T = 32, kF32 = 4;
  const int64_t full_block = (5 * N * D + 2 * N * D / 2 + B * H * T + 3 * N * F + 2 * N) * kF32;
  const int64_t op_block = (2 * N * D + N * F) * kF32;
  const int64_t none = run(section(ActivationCheckpointMode::None), false).peak;
  struct Expected {
    int64_t blocks;  // that recompute
    int64_t block_bytes;
  };
  const Expected expected[] = {{8, full_block},   // full
                               {4, full_block},   // selective 2: layers 1, 3, 5, 7
                               {8, op_block},     // selective op
                               {4, full_block}};  // memory_budget 0.5: 4 of 8 blocks
  for (size_t i = 0; i < modes().size(); ++i) {
    const Expected& e = expected[i];
    const int64_t drop = none - run(modes()[i].section, false).peak;
    EXPECT_GE(drop, (e.blocks - 1) * e.block_bytes) << modes()[i].name;
    EXPECT_LE(drop, e.blocks * e.block_bytes) << modes()[i].name;
  }
}

}  // namespace
}  // namespace titan::models
