// Llama 3 on a layout: the parallelization plan (parallelize.h) gives each parameter
// Megatron's placement; a model built as rank r of a layout holds only its boxes, and the
// boxes of every rank put together are the one-rank model, value for value.
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "support/gradient_check.h"
#include "titan/core/allocator.h"
#include "titan/models/llama3/model.h"
#include "titan/models/llama3/parallelize.h"

namespace titan::models::llama3 {
namespace {

ModelArgs tiny(bool tied) {
  ModelArgs a;
  for (const Flavor& f : llama3_flavors()) {
    if (f.name == "tiny") a = f.args;
  }
  a.weight_tying = tied;
  return a;
}

// tp must split the heads, and the kv heads split or be shared: exit 2 with the degrees
// that would work.
TEST(Llama3Plan, TensorParallelDegreesThatDoNotSplitTheHeadsAreRefused) {
  ModelArgs a = tiny(false);  // 4 heads, 2 kv heads
  for (int64_t tp : {1, 2, 4}) EXPECT_NO_THROW(check_tensor_parallel(a, tp)) << tp;
  try {
    check_tensor_parallel(a, 3);
    ADD_FAILURE() << "tp 3 splits 4 heads";
  } catch (const InputError& e) {
    const std::string message = e.what();
    for (const char* part : {"tensor_parallel_degree 3", "4 heads", "2 kv heads",
                             "degrees that work: 1, 2, 4"}) {
      EXPECT_NE(message.find(part), std::string::npos) << message;
    }
  }
  a.n_heads = 8;
  a.n_kv_heads = 4;
  a.dim = 128;
  EXPECT_THROW(check_tensor_parallel(a, 8 * 3), InputError);
  EXPECT_NO_THROW(check_tensor_parallel(a, 8));  // each kv head shared by two ranks
}

TEST(Llama3Plan, ColumnParallelRowParallelAndReplicatedNormsAsMegatron) {
  const ModelArgs args = tiny(false);  // 4 heads, 2 kv heads
  const auto tp_dim = [&](const std::string& name, int64_t tp) {
    return parameter_plan(name, args, tp).tp_shard_dim.value_or(-1);
  };
  for (const char* name : {"tok_embeddings.weight", "output.weight", "layers.0.attention.wq.weight",
                           "layers.7.attention.wk.weight", "layers.7.attention.wv.weight",
                           "layers.3.feed_forward.w1.weight", "layers.3.feed_forward.w3.weight"}) {
    EXPECT_EQ(tp_dim(name, 2), 0) << name;
  }
  EXPECT_EQ(tp_dim("layers.1.attention.wo.weight", 2), 1);
  EXPECT_EQ(tp_dim("layers.1.feed_forward.w2.weight", 2), 1);
  for (const char* name : {"layers.2.attention_norm.weight", "layers.2.ffn_norm.weight",
                           "norm.weight"}) {
    EXPECT_EQ(tp_dim(name, 2), -1) << name;
  }
  // kv heads: split while tp <= 2, shared by tp / 2 ranks beyond.
  EXPECT_EQ(parameter_plan("layers.0.attention.wk.weight", args, 2).tp_replicas, 1);
  EXPECT_EQ(parameter_plan("layers.0.attention.wk.weight", args, 4).tp_replicas, 2);
  EXPECT_EQ(parameter_plan("layers.0.attention.wq.weight", args, 4).tp_replicas, 1);
  EXPECT_THROW(parameter_plan("layers.0.attention.wz.weight", args, 2), Error);
}

class ShardedInit : public ::testing::TestWithParam<int> {};

TEST_P(ShardedInit, ShardsPutTogetherAreTheOneRankModel) {
  const int64_t n = GetParam();
  for (bool tied : {false, true}) {
    Llama3Model whole(tiny(tied));
    whole.initialize(7);
    std::vector<std::unique_ptr<Llama3Model>> shards;
    for (int64_t r = 0; r < n; ++r) {
      shards.push_back(
          std::make_unique<Llama3Model>(tiny(tied), nn::ParameterLayout::fsdp_only(r, n)));
      shards.back()->initialize(7);
    }
    const std::vector<nn::Parameter*> reference = whole.parameters();
    for (size_t k = 0; k < reference.size(); ++k) {
      const testing::Values expected = testing::to_values(reference[k]->value());
      testing::Values joined;
      for (int64_t r = 0; r < n; ++r) {
        const nn::Parameter& p = *shards[size_t(r)]->parameters()[k];
        EXPECT_EQ(p.local_box().extent, p.shard().shape());
        EXPECT_FALSE(p.has_value())
            << p.name() << ": a sharded parameter is not whole until gathered";
        const testing::Values part = testing::to_values(p.shard());
        joined.insert(joined.end(), part.begin(), part.end());
      }
      EXPECT_EQ(joined, expected) << reference[k]->name() << (tied ? " (tied)" : "");
    }
  }
}

// A rank allocates its box and nothing of the whole tensor, construction and init together:
// the allocator's peak stays at the shard's bytes (value + gradient).
TEST_P(ShardedInit, InitAllocatesOnlyTheBox) {
  const int64_t n = GetParam();
  Allocator& allocator = allocator_for(Device::cpu());
  const int64_t before = allocator.stats().current_bytes;
  allocator.reset_peak();
  auto model =
      std::make_unique<Llama3Model>(tiny(false), nn::ParameterLayout::fsdp_only(n - 1, n));
  model->initialize(7);
  int64_t shard_bytes = 0, whole_bytes = 0;
  for (nn::Parameter* p : model->parameters()) {
    shard_bytes += 2 * p->shard().bytes();
    whole_bytes += 2 * int64_t(sizeof(float)) * shape_numel(p->global_shape());
  }
  // Beside the shards: the RoPE table, a few KiB at tiny's sequence length.
  EXPECT_LE(allocator.stats().peak_bytes - before, shard_bytes + (256 << 10));
  EXPECT_LT(shard_bytes, whole_bytes / n + whole_bytes / 100) << "the last shard is the short one";
}

INSTANTIATE_TEST_SUITE_P(Ranks, ShardedInit, ::testing::Values(2, 3, 4, 5));

// Tensor-parallel layouts (column and row splits, kv heads shared on tp 4) composed with
// FSDP and replicas: each rank's shard is the one-rank model's values at its box, and the
// boxes of the ranks that write a checkpoint cover every parameter once.
TEST(Llama3Layouts, EveryRanksBoxesHoldTheOneRankModel) {
  struct Mesh {
    int64_t replicas, fsdp, tp;
  };
  Llama3Model whole(tiny(false));
  whole.initialize(7);
  const std::vector<nn::Parameter*> reference = whole.parameters();
  for (const Mesh& m : {Mesh{1, 2, 2}, Mesh{1, 1, 4}, Mesh{2, 1, 2}, Mesh{1, 3, 2}}) {
    std::vector<int64_t> written(reference.size(), 0);
    for (int64_t r = 0; r < m.replicas * m.fsdp * m.tp; ++r) {
      nn::ParameterLayout layout;
      layout.tp = {m.tp, r % m.tp};
      layout.fsdp = {m.fsdp, r / m.tp % m.fsdp};
      layout.dp_replicate = {m.replicas, r / (m.tp * m.fsdp)};
      Llama3Model model(tiny(false), layout);
      model.initialize(7);
      const std::vector<nn::Parameter*> parameters = model.parameters();
      for (size_t k = 0; k < reference.size(); ++k) {
        const nn::Parameter& p = *parameters[k];
        const testing::Values all = testing::to_values(reference[k]->value());
        testing::Values expected(size_t(p.shard().numel()));
        nn::for_each_box_run(p.global_shape(), p.local_box(),
                             [&](int64_t global, int64_t local, int64_t n) {
                               for (int64_t i = 0; i < n; ++i) {
                                 expected[size_t(local + i)] = all[size_t(global + i)];
                               }
                             });
        ASSERT_EQ(testing::to_values(p.shard()), expected)
            << p.name() << " (" << p.placement().describe() << ") rank " << r;
        if (p.placement().writes_checkpoint()) written[k] += p.shard().numel();
      }
    }
    for (size_t k = 0; k < reference.size(); ++k) {
      EXPECT_EQ(written[k], reference[k]->shard().numel()) << reference[k]->name();
    }
  }
}

}  // namespace
}  // namespace titan::models::llama3
