// Placement and initialization: a model built as shard r of n holds only its rows, and the
// shards of every r put together are the one-rank model, value for value (DESIGN.md,
// "Tensors and placements").
#include <gtest/gtest.h>

#include <cstring>
#include <memory>

#include "support/gradient_check.h"
#include "titan/core/allocator.h"
#include "titan/models/llama3/model.h"
#include "titan/ops/cast.h"

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

TEST(PlacementBox, RowsSplitAsFsdp2WithTheLastShardsShorterOrEmpty) {
  // 10 rows over 4 ranks: ceil(10/4) = 3 rows each, the last gets 1.
  const Shape shape{10, 7};
  const int64_t offsets[] = {0, 3, 6, 9}, extents[] = {3, 3, 3, 1};
  for (int64_t r = 0; r < 4; ++r) {
    const nn::Box box = nn::placement_box(shape, {r, 4});
    EXPECT_EQ(box.offset, (Shape{offsets[r], 0})) << r;
    EXPECT_EQ(box.extent, (Shape{extents[r], 7})) << r;
  }
  // 3 rows over 4 ranks: the fourth has none.
  EXPECT_EQ(nn::placement_box({3}, {3, 4}).extent, Shape{0});
  EXPECT_EQ(nn::placement_box({3}, {2, 4}).extent, Shape{1});
  EXPECT_EQ(nn::rows_per_shard(10, 4), 3);
}

// A compute dtype other than f32 (mixed precision): value() is a copy of its own in that
// dtype, the f32 master cast (on the CPU too: the cast is the CPU's), refreshed on demand;
// the gradient stays the f32 shard gradient. Sharded, bound values must be in it.
TEST(ComputeCopy, Bf16ValueIsTheMasterCastAndFollowsItOnUpdate) {
  nn::Parameter p("w.weight", {6, 5}, nn::InitRule{nn::InitKind::Normal, 1.0, 0.0},
                  nn::Placement{0, 1, Device::cpu(), DType::BF16});
  EXPECT_EQ(p.compute_dtype(), DType::BF16);
  EXPECT_EQ(p.value().dtype(), DType::BF16);
  EXPECT_EQ(p.shard().dtype(), DType::F32);
  EXPECT_EQ(p.grad().dtype(), DType::F32);
  EXPECT_TRUE(p.grad().shares_storage_with(p.shard_grad()));
  EXPECT_FALSE(p.value().shares_storage_with(p.shard()));
  const auto expect_cast = [&](const char* when) {
    Tensor expected = Tensor::empty(p.shard().shape(), DType::BF16);
    ops::cast(p.shard(), expected);
    EXPECT_EQ(std::memcmp(expected.raw_data(), p.value().raw_data(), size_t(expected.bytes())), 0)
        << when;
  };
  p.initialize(5);
  expect_cast("after initialize");
  p.shard().mutable_data<float>()[7] = 3.0f;
  p.update_compute_copy();
  expect_cast("after update_compute_copy");

  nn::Parameter sharded("s.weight", {6, 5}, nn::InitRule{}, nn::Placement{1, 2, Device::cpu(), DType::BF16});
  EXPECT_THROW(sharded.bind_full(Tensor::zeros({6, 5}, DType::F32), Tensor()), Error);
  sharded.bind_full(Tensor::zeros({6, 5}, DType::BF16), Tensor::zeros({6, 5}, DType::F32));
  EXPECT_EQ(sharded.value().dtype(), DType::BF16);
}

class ShardedInit : public ::testing::TestWithParam<int> {};

TEST_P(ShardedInit, ShardsPutTogetherAreTheOneRankModel) {
  const int64_t n = GetParam();
  for (bool tied : {false, true}) {
    Llama3Model whole(tiny(tied));
    whole.initialize(7);
    std::vector<std::unique_ptr<Llama3Model>> shards;
    for (int64_t r = 0; r < n; ++r) {
      shards.push_back(std::make_unique<Llama3Model>(tiny(tied), nn::Placement{r, n}));
      shards.back()->initialize(7);
    }
    const std::vector<nn::Parameter*> reference = whole.parameters();
    for (size_t k = 0; k < reference.size(); ++k) {
      const testing::Values expected = testing::to_values(reference[k]->value());
      testing::Values joined;
      for (int64_t r = 0; r < n; ++r) {
        const nn::Parameter& p = *shards[size_t(r)]->parameters()[k];
        EXPECT_EQ(p.local_box().extent, p.shard().shape());
        EXPECT_FALSE(p.has_value()) << p.name() << ": a sharded parameter is not whole until gathered";
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
  auto model = std::make_unique<Llama3Model>(tiny(false), nn::Placement{n - 1, n});
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

}  // namespace
}  // namespace titan::models::llama3
