// Placements (nn/placement.h): each rank's box for FSDP, tensor-parallel column and row
// splits and both composed, uneven splits, replicated shards, 1-D tensors and expert dims;
// on every layout the boxes of the ranks that write a checkpoint cover each element once.
#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "titan/nn/placement.h"

namespace titan::nn {
namespace {

// Rank r of a dp_replicate x fsdp x tp mesh, tp fastest (the mesh's order).
ParameterLayout layout_of(int64_t replicas, int64_t fsdp, int64_t tp, int64_t r) {
  ParameterLayout l;
  l.tp = {tp, r % tp};
  l.fsdp = {fsdp, r / tp % fsdp};
  l.dp_replicate = {replicas, r / (tp * fsdp)};
  return l;
}

ParameterPlan tp_plan(int dim, int64_t replicas = 1) {
  ParameterPlan plan;
  plan.tp_shard_dim = dim;
  plan.tp_replicas = replicas;
  return plan;
}

TEST(PlacementBox, RowsSplitAsFsdp2WithTheLastShardsShorterOrEmpty) {
  // 10 rows over 4 ranks: ceil(10/4) = 3 rows each, the last gets 1.
  const Shape shape{10, 7};
  const int64_t offsets[] = {0, 3, 6, 9}, extents[] = {3, 3, 3, 1};
  for (int64_t r = 0; r < 4; ++r) {
    const Box box = placement_box(shape, fsdp_placement(r, 4));
    EXPECT_EQ(box.offset, (Shape{offsets[r], 0})) << r;
    EXPECT_EQ(box.extent, (Shape{extents[r], 7})) << r;
  }
  // 3 rows over 4 ranks: the fourth has none.
  EXPECT_EQ(placement_box({3}, fsdp_placement(3, 4)).extent, Shape{0});
  EXPECT_EQ(placement_box({3}, fsdp_placement(2, 4)).extent, Shape{1});
  EXPECT_EQ(rows_per_shard(10, 4), 3);
}

TEST(PlacementBox, TensorParallelSplitsFirstThenFsdpSplitsItsPiece) {
  // dp_shard 2 x tp 2. Column-parallel wq [8, 4]: tp takes row halves, FSDP halves those.
  // Row-parallel wo [4, 8]: tp takes column halves, FSDP the rows of each.
  for (int64_t r = 0; r < 4; ++r) {
    const ParameterLayout layout = layout_of(1, 2, 2, r);
    const int64_t tp = layout.tp.index, fsdp = layout.fsdp.index;
    const Placement column = place_parameter(layout, tp_plan(0));
    EXPECT_EQ(column.describe(), "tp Shard(0), dp_shard_cp Shard(0)");
    EXPECT_EQ(placement_box({8, 4}, column).offset, (Shape{4 * tp + 2 * fsdp, 0})) << r;
    EXPECT_EQ(placement_box({8, 4}, column).extent, (Shape{2, 4})) << r;
    EXPECT_EQ(compute_box({8, 4}, column).offset, (Shape{4 * tp, 0})) << r;
    EXPECT_EQ(compute_box({8, 4}, column).extent, (Shape{4, 4})) << r;

    const Placement row = place_parameter(layout, tp_plan(1));
    EXPECT_EQ(placement_box({4, 8}, row).offset, (Shape{2 * fsdp, 4 * tp})) << r;
    EXPECT_EQ(placement_box({4, 8}, row).extent, (Shape{2, 4})) << r;
    EXPECT_EQ(compute_box({4, 8}, row).offset, (Shape{0, 4 * tp})) << r;
    EXPECT_EQ(compute_box({4, 8}, row).extent, (Shape{4, 4})) << r;
    ASSERT_NE(row.storage_split(), nullptr);
    EXPECT_EQ(row.storage_split()->mesh_dim, "dp_shard_cp");
    EXPECT_TRUE(row.writes_checkpoint());
  }
}

TEST(PlacementBox, UnevenSplitsTakeCeilPartsAtEveryLevel) {
  // odd [7, 5], tp 2 on columns (3 + 2), then dp_shard 3 on the rows (3 + 3 + 1).
  const Shape shape{7, 5};
  const int64_t row_offsets[] = {0, 3, 6}, row_extents[] = {3, 3, 1};
  for (int64_t r = 0; r < 6; ++r) {
    const ParameterLayout layout = layout_of(1, 3, 2, r);
    const Box box = placement_box(shape, place_parameter(layout, tp_plan(1)));
    const int64_t tp = layout.tp.index, fsdp = layout.fsdp.index;
    EXPECT_EQ(box.offset, (Shape{row_offsets[fsdp], 3 * tp})) << r;
    EXPECT_EQ(box.extent, (Shape{row_extents[fsdp], tp == 0 ? 3 : 2})) << r;
  }
  // Two rows on tp 4: the last parts are empty and start at the end.
  const Placement last = place_parameter(layout_of(1, 1, 4, 3), tp_plan(0));
  EXPECT_EQ(placement_box({2, 3}, last).offset, (Shape{2, 0}));
  EXPECT_EQ(placement_box({2, 3}, last).extent, (Shape{0, 3}));
}

TEST(PlacementBox, ReplicatedShardsShareTheirPieceAndOneOfThemWrites) {
  // Two kv heads of 2 rows on tp 4: ranks 0, 1 hold head 0; ranks 2, 3 head 1.
  for (int64_t r = 0; r < 4; ++r) {
    const Placement p = place_parameter(layout_of(1, 1, 4, r), tp_plan(0, 2));
    EXPECT_EQ(p.describe(), "tp Shard(0) x2");
    EXPECT_EQ(placement_box({4, 6}, p).offset, (Shape{r < 2 ? 0 : 2, 0})) << r;
    EXPECT_EQ(placement_box({4, 6}, p).extent, (Shape{2, 6})) << r;
    EXPECT_EQ(p.writes_checkpoint(), r % 2 == 0) << r;
  }
  // Replicate: every rank holds the whole; only coordinate 0 writes.
  const Placement replicated = place_parameter(layout_of(1, 1, 2, 1), ParameterPlan{});
  EXPECT_EQ(replicated.describe(), "tp Replicate");
  EXPECT_EQ(placement_box({6}, replicated).extent, Shape{6});
  EXPECT_FALSE(replicated.writes_checkpoint());
  EXPECT_FALSE(replicated.sharded());
  // A replicas count that does not divide the dim is a bug in the plan.
  EXPECT_THROW(placement_box({4, 6}, place_parameter(layout_of(1, 1, 4, 0), tp_plan(0, 3))),
               Error);
}

TEST(PlacementBox, OneDimensionalTensorsSplitTheirOnlyDim) {
  // A norm [6] replicated over tp 2, FSDP over 4: ceil(6/4) = 2, the last part empty.
  const int64_t offsets[] = {0, 2, 4, 6}, extents[] = {2, 2, 2, 0};
  for (int64_t r = 0; r < 8; ++r) {
    const ParameterLayout layout = layout_of(1, 4, 2, r);
    const Placement p = place_parameter(layout, ParameterPlan{});
    EXPECT_EQ(placement_box({6}, p).offset, Shape{offsets[layout.fsdp.index]}) << r;
    EXPECT_EQ(placement_box({6}, p).extent, Shape{extents[layout.fsdp.index]}) << r;
    EXPECT_EQ(compute_box({6}, p).extent, Shape{6}) << r;
  }
  // A 1-D Shard(0) over tp 3: 3, 3, 1 of 7.
  EXPECT_EQ(placement_box({7}, place_parameter(layout_of(1, 1, 3, 2), tp_plan(0))).extent,
            Shape{1});
}

TEST(PlacementBox, ExpertDimsSplitExpertsThenTheFsdpOfExperts) {
  // experts [8, 6, 4] on ep 4 x efsdp 2: 2 experts per ep rank, 1 per efsdp rank.
  ParameterPlan experts;
  experts.expert = true;
  for (int64_t ep = 0; ep < 4; ++ep) {
    for (int64_t efsdp = 0; efsdp < 2; ++efsdp) {
      ParameterLayout layout;
      layout.tp = {4, ep};  // tp ranks are among ep's: experts take no tp split
      layout.ep = {4, ep};
      layout.efsdp = {2, efsdp};
      const Placement p = place_parameter(layout, experts);
      EXPECT_EQ(p.describe(), "ep Shard(0), efsdp Shard(0)");
      EXPECT_EQ(placement_box({8, 6, 4}, p).offset, (Shape{2 * ep + efsdp, 0, 0}));
      EXPECT_EQ(placement_box({8, 6, 4}, p).extent, (Shape{1, 6, 4}));
      EXPECT_EQ(compute_box({8, 6, 4}, p).extent, (Shape{2, 6, 4}));
    }
  }
  // The FSDP of experts may split another dim when there are fewer experts than ranks.
  experts.fsdp_dim = 1;
  ParameterLayout layout;
  layout.efsdp = {3, 2};
  EXPECT_EQ(placement_box({2, 6, 4}, place_parameter(layout, experts)).offset, (Shape{0, 4, 0}));
}

// On every layout, for every kind of tensor, the boxes of the ranks that write cover each
// element of the global tensor exactly once, and every rank's box lies inside it.
TEST(PlacementBox, WritersBoxesTileTheTensorOnEveryLayout) {
  struct Case {
    Shape shape;
    ParameterPlan plan;
  };
  ParameterPlan experts;
  experts.expert = true;
  const std::vector<Case> cases = {{{10, 6}, tp_plan(0)},   {{6, 10}, tp_plan(1)},
                                   {{7, 5}, tp_plan(1)},    {{4, 6}, tp_plan(0, 2)},
                                   {{6}, ParameterPlan{}},  {{5}, tp_plan(0)},
                                   {{4, 3, 2}, experts}};
  const std::vector<std::array<int64_t, 3>> meshes = {
      {1, 1, 1}, {1, 4, 1}, {1, 1, 4}, {1, 2, 2}, {2, 2, 1}, {2, 1, 2}, {1, 3, 2}, {2, 2, 2}};
  for (const auto& [replicas, fsdp, tp] : meshes) {
    for (const Case& c : cases) {
      if (c.plan.tp_replicas > 1 && tp % c.plan.tp_replicas != 0) continue;
      std::vector<int> covered(size_t(shape_numel(c.shape)), 0);
      for (int64_t r = 0; r < replicas * fsdp * tp; ++r) {
        ParameterLayout layout = layout_of(replicas, fsdp, tp, r);
        layout.ep = layout.tp;  // experts: ep over the tp ranks, efsdp over fsdp's
        layout.efsdp = layout.fsdp;
        const Placement p = place_parameter(layout, c.plan);
        const Box box = placement_box(c.shape, p);
        for (size_t d = 0; d < c.shape.size(); ++d) {
          ASSERT_LE(box.offset[d] + box.extent[d], c.shape[d]);
        }
        if (!p.writes_checkpoint()) continue;
        for_each_box_run(c.shape, box, [&](int64_t global, int64_t, int64_t length) {
          for (int64_t i = 0; i < length; ++i) ++covered[size_t(global + i)];
        });
      }
      for (size_t i = 0; i < covered.size(); ++i) {
        ASSERT_EQ(covered[i], 1) << "element " << i << " of " << shape_string(c.shape)
                                 << " on replicas " << replicas << " x fsdp " << fsdp << " x tp "
                                 << tp;
      }
    }
  }
}

TEST(PlaceParameter, OrdersComputeThenStorageThenReplicasAndLeavesOutOneRankDims) {
  EXPECT_EQ(place_parameter(ParameterLayout{}, tp_plan(0)).describe(), "whole");
  const Placement p = place_parameter(layout_of(2, 2, 2, 5), tp_plan(1));
  EXPECT_EQ(p.describe(), "tp Shard(1), dp_shard_cp Shard(0), dp_replicate Replicate");
  EXPECT_TRUE(p.sharded());
  EXPECT_FALSE(p.writes_checkpoint()) << "dp_replicate coordinate 1";
  EXPECT_EQ(fsdp_placement(0, 1).describe(), "whole");
  // A Placer is a plan applied to a layout, by name.
  const Placer placer(layout_of(1, 1, 2, 0), [](const std::string& name) {
    return name == "norm.weight" ? ParameterPlan{} : tp_plan(0);
  });
  EXPECT_EQ(placer("norm.weight").describe(), "tp Replicate");
  EXPECT_EQ(placer("w.weight").describe(), "tp Shard(0)");
  EXPECT_EQ(Placer()("anything").describe(), "whole");
}

TEST(BoxRuns, WholeTrailingDimsMakeOneRunAndCutOnesARunPerOuterIndex) {
  std::vector<std::array<int64_t, 3>> runs;
  const auto record = [&](int64_t global, int64_t local, int64_t length) {
    runs.push_back({global, local, length});
  };
  // Rows [1, 3) of [4, 5]: one run of 10 elements at global 5.
  for_each_box_run({4, 5}, Box{{1, 0}, {2, 5}}, record);
  EXPECT_EQ(runs, (std::vector<std::array<int64_t, 3>>{{5, 0, 10}}));
  // Columns [2, 4) of [3, 5]: a run of 2 per row.
  runs.clear();
  for_each_box_run({3, 5}, Box{{0, 2}, {3, 2}}, record);
  EXPECT_EQ(runs, (std::vector<std::array<int64_t, 3>>{{2, 0, 2}, {7, 2, 2}, {12, 4, 2}}));
  // [2, 3, 4], box {1, 1, 0} + {1, 2, 4}: dims 1 and 2 from (1, 1) on, one run of 8.
  runs.clear();
  for_each_box_run({2, 3, 4}, Box{{1, 1, 0}, {1, 2, 4}}, record);
  EXPECT_EQ(runs, (std::vector<std::array<int64_t, 3>>{{16, 0, 8}}));
  // [2, 3, 4], box {0, 1, 1} + {2, 2, 2}: a run of 2 per (expert, row).
  runs.clear();
  for_each_box_run({2, 3, 4}, Box{{0, 1, 1}, {2, 2, 2}}, record);
  EXPECT_EQ(runs, (std::vector<std::array<int64_t, 3>>{
                      {5, 0, 2}, {9, 2, 2}, {17, 4, 2}, {21, 6, 2}}));
  // An empty box has no runs.
  runs.clear();
  for_each_box_run({3, 5}, Box{{3, 0}, {0, 5}}, record);
  EXPECT_TRUE(runs.empty());
}

}  // namespace
}  // namespace titan::nn
