// Parameters (nn/parameter.h): initialization by global index, so that a box of any
// placement holds the whole tensor's values at its place, and compute copies under mixed
// precision.
#include <gtest/gtest.h>

#include <cstring>

#include "support/gradient_check.h"
#include "titan/nn/parameter.h"
#include "titan/ops/cast.h"

namespace titan::nn {
namespace {

// The whole tensor's values at a box, by global index.
testing::Values values_at(const Parameter& whole, const Box& box) {
  const testing::Values all = testing::to_values(whole.shard());
  testing::Values out(size_t(shape_numel(box.extent)));
  for_each_box_run(whole.global_shape(), box, [&](int64_t global, int64_t local, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[size_t(local + i)] = all[size_t(global + i)];
  });
  return out;
}

TEST(ParameterInit, EveryBoxHoldsTheWholeTensorsValuesAtItsPlace) {
  const InitRule normal{InitKind::Normal, 1.0, 0.0}, truncated{InitKind::TruncatedNormal, 0.02, 2};
  ParameterPlan experts;
  experts.expert = true;
  struct Case {
    Shape shape;
    InitRule init;
    ParameterPlan plan;
  };
  ParameterPlan column, row;
  column.tp_shard_dim = 0;
  row.tp_shard_dim = 1;
  for (const Case& c : {Case{{7, 5}, normal, column}, Case{{7, 5}, truncated, row},
                        Case{{9}, normal, ParameterPlan{}}, Case{{4, 3, 2}, normal, experts}}) {
    Parameter whole("w.weight", c.shape, c.init);
    whole.initialize(3);
    for (int64_t r = 0; r < 6; ++r) {
      ParameterLayout layout;
      layout.tp = {2, r % 2};
      layout.fsdp = {3, r / 2};
      layout.ep = layout.tp;
      layout.efsdp = layout.fsdp;
      Parameter piece("w.weight", c.shape, c.init, place_parameter(layout, c.plan));
      piece.initialize(3);
      EXPECT_EQ(piece.shard().shape(), piece.local_box().extent);
      EXPECT_EQ(testing::to_values(piece.shard()), values_at(whole, piece.local_box()))
          << shape_string(c.shape) << " " << piece.placement().describe() << " rank " << r;
      // The compute piece (what FSDP gathers and the module computes with).
      EXPECT_EQ(piece.value_shape(), compute_box(c.shape, piece.placement()).extent);
      EXPECT_FALSE(piece.has_value()) << "sharded by FSDP: not whole until gathered";
    }
  }
}

TEST(ParameterInit, TensorParallelAloneComputesOnItsPiece) {
  ParameterLayout layout;
  layout.tp = {2, 1};
  ParameterPlan row;
  row.tp_shard_dim = 1;
  Parameter p("wo.weight", {4, 6}, InitRule{InitKind::Normal, 1.0, 0.0},
              place_parameter(layout, row));
  p.initialize(3);
  EXPECT_FALSE(p.placement().sharded());
  EXPECT_EQ(p.value_shape(), (Shape{4, 3}));
  EXPECT_TRUE(p.value().shares_storage_with(p.shard())) << "no FSDP: value() is the piece";
}

// A compute dtype other than f32 (mixed precision): value() is a copy of its own in that
// dtype, the f32 master cast (on the CPU too: the cast is the CPU's), refreshed on demand;
// the gradient stays the f32 shard gradient. Sharded, bound values must be in it.
TEST(ComputeCopy, Bf16ValueIsTheMasterCastAndFollowsItOnUpdate) {
  Parameter p("w.weight", {6, 5}, InitRule{InitKind::Normal, 1.0, 0.0},
              fsdp_placement(0, 1, Device::cpu(), DType::BF16));
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

  Parameter sharded("s.weight", {6, 5}, InitRule{},
                    fsdp_placement(1, 2, Device::cpu(), DType::BF16));
  EXPECT_THROW(sharded.bind_full(Tensor::zeros({6, 5}, DType::F32), Tensor()), Error);
  sharded.bind_full(Tensor::zeros({6, 5}, DType::BF16), Tensor::zeros({6, 5}, DType::F32));
  EXPECT_EQ(sharded.value().dtype(), DType::BF16);
}

}  // namespace
}  // namespace titan::nn
