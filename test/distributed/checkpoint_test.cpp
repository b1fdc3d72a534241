// Checkpoint files on several ranks: every rank writes its box and reads back only the box
// of the layout it reads with (a bytes-read counter shows it), values landing where the
// global index says; boxes of every kind of placement (column and row splits, uneven ones,
// replicated shards, 1-D tensors, expert dims) written on one layout read back on another.
// Run under mpirun by CTest (distributed.Checkpoint.np4).
#include <gtest/gtest.h>

#include <filesystem>

#include "distributed_test_main.h"
#include "support/gradient_check.h"
#include "titan/build_config.h"
#include "titan/ckpt/checkpoint_file.h"
#include "titan/distributed/communicator.h"
#include "titan/nn/parameter.h"

namespace titan::ckpt {
namespace {

#if TITAN_HAVE_HDF5
// Element i of a tensor holds i (exact in float below 2^24).
Tensor numbered_box(const Shape& global, const nn::Box& box) {
  Tensor t = Tensor::empty(box.extent, DType::F32);
  const int64_t cols = global.size() == 2 ? global[1] : 1;
  const int64_t row_numel = box.extent.size() == 2 ? box.extent[1] : 1;
  float* p = t.mutable_data<float>();
  for (int64_t r = 0; r < box.extent[0]; ++r) {
    for (int64_t c = 0; c < row_numel; ++c) {
      p[r * row_numel + c] = float((box.offset[0] + r) * cols + c);
    }
  }
  return t;
}

std::vector<TensorPiece> pieces_for(const nn::Placement& placement, bool fill) {
  std::vector<TensorPiece> pieces;
  for (const auto& [path, shape] : std::vector<std::pair<std::string, Shape>>{
           {"model/w", {10, 7}}, {"model/norm", {5}}, {"optimizer/exp_avg/w", {10, 7}}}) {
    const nn::Box box = nn::placement_box(shape, placement);
    pieces.push_back({path, shape, box,
                      fill ? numbered_box(shape, box) : Tensor::zeros(box.extent, DType::F32)});
  }
  return pieces;
}

TEST(Checkpoint, EachRankReadsOnlyItsBoxOfAnotherLayout) {
  distributed::Communicator& world = test_world();
  if (world.size() != 4) GTEST_SKIP() << "needs 4 ranks";
  std::unique_ptr<distributed::Communicator> io = world.split(0, world.rank(), "checkpoint");
  const std::string path =
      (std::filesystem::temp_directory_path() / "titan_dist_checkpoint_test.h5").string();
  // Written as 4 row shards (10 rows: 3, 3, 3, 1; norm 5: 2, 2, 1, 0).
  CheckpointMeta meta;
  meta.step = 7;
  meta.mesh = "dp_shard 4";
  meta.world_size = 4;
  write_checkpoint_file(path, *io, meta, pieces_for(nn::fsdp_placement(world.rank(), 4), true));
  EXPECT_EQ(read_checkpoint_meta(path, *io).step, 7);
  // Read as 2 shards, replicated twice (HSDP 2 x 2).
  const nn::Placement reader = nn::fsdp_placement(world.rank() % 2, 2);
  std::vector<TensorPiece> pieces = pieces_for(reader, false);
  const int64_t before = checkpoint_io_counters().bytes_read;
  read_checkpoint_tensors(path, *io, pieces);
  int64_t box_bytes = 0;
  for (const TensorPiece& piece : pieces) {
    box_bytes += piece.local.bytes();
    const Tensor expected = numbered_box(piece.global_shape, piece.box);
    for (int64_t i = 0; i < expected.numel(); ++i) {
      ASSERT_EQ(piece.local.data<float>()[i], expected.data<float>()[i]) << piece.path << " " << i;
    }
  }
  EXPECT_EQ(checkpoint_io_counters().bytes_read - before, box_bytes);
  EXPECT_LT(box_bytes, 4 * (70 + 5 + 70)) << "a box is not the whole";
  io->barrier().wait();
  if (world.rank() == 0) std::filesystem::remove(path);
}

// Tensors of every kind a placement splits, each with its plan (nn/placement.h).
struct PlannedTensor {
  const char* name;
  Shape shape;
  nn::ParameterPlan plan;
};

nn::ParameterPlan tp_plan(int dim, int64_t replicas = 1) {
  nn::ParameterPlan plan;
  plan.tp_shard_dim = dim;
  plan.tp_replicas = replicas;
  return plan;
}

std::vector<PlannedTensor> planned_tensors(int64_t tp) {
  nn::ParameterPlan experts;
  experts.expert = true;
  return {
      {"col.weight", {10, 6}, tp_plan(0)},                // column-parallel
      {"row.weight", {6, 10}, tp_plan(1)},                // row-parallel: a column range
      {"kv.weight", {4, 6}, tp_plan(0, tp > 2 ? tp / 2 : 1)},  // 2 heads, replicated when tp > 2
      {"norm.weight", {6}, nn::ParameterPlan{}},          // 1-D, replicated over tp
      {"odd.weight", {7, 5}, tp_plan(1)},                 // uneven columns and rows
      {"experts.weight", {4, 3, 2}, experts},             // expert dims
  };
}

// Rank r's coordinates on the layouts of a 4-rank world (tp innermost, as the mesh).
nn::ParameterLayout layout_of(const std::string& name, int64_t r) {
  nn::ParameterLayout l;
  if (name == "dp_shard 2 x tp 2, ep 2 x efsdp 2") {
    l.tp = {2, r % 2};
    l.fsdp = {2, r / 2};
    l.ep = {2, r % 2};
    l.efsdp = {2, r / 2};
  } else if (name == "tp 4, ep 4") {
    l.tp = {4, r};
    l.ep = {4, r};
  } else if (name == "dp_replicate 2 x dp_shard 2") {
    l.fsdp = {2, r % 2};
    l.efsdp = {2, r % 2};
    l.dp_replicate = {2, r / 2};
  } else {
    EXPECT_EQ(name, "dp_shard 4");
    l.fsdp = {4, r};
    l.efsdp = {4, r};
  }
  return l;
}

// The parameters of a layout, initialized from Philox (their value depends on the global
// index only, so every layout's boxes hold pieces of the same tensors).
std::vector<std::unique_ptr<nn::Parameter>> placed_parameters(const nn::ParameterLayout& layout) {
  std::vector<std::unique_ptr<nn::Parameter>> parameters;
  for (const PlannedTensor& t : planned_tensors(layout.tp.size)) {
    parameters.push_back(std::make_unique<nn::Parameter>(
        t.name, t.shape, nn::InitRule{nn::InitKind::Normal, 1.0, 0.0},
        nn::place_parameter(layout, t.plan)));
    parameters.back()->initialize(11);
  }
  return parameters;
}

TEST(Checkpoint, BoxesOfEveryPlacementReadBackOnAnotherLayout) {
  distributed::Communicator& world = test_world();
  if (world.size() != 4) GTEST_SKIP() << "needs 4 ranks";
  std::unique_ptr<distributed::Communicator> io = world.split(0, world.rank(), "checkpoint");
  const std::vector<std::pair<std::string, std::string>> writes_then_reads = {
      {"dp_shard 2 x tp 2, ep 2 x efsdp 2", "tp 4, ep 4"},
      {"tp 4, ep 4", "dp_replicate 2 x dp_shard 2"},
      {"dp_replicate 2 x dp_shard 2", "dp_shard 2 x tp 2, ep 2 x efsdp 2"},
      {"dp_shard 4", "tp 4, ep 4"},
  };
  int64_t global_bytes = 0;
  for (const PlannedTensor& t : planned_tensors(1)) global_bytes += 4 * shape_numel(t.shape);
  for (const auto& [written_on, read_on] : writes_then_reads) {
    SCOPED_TRACE(written_on + " -> " + read_on);
    const std::string path =
        (std::filesystem::temp_directory_path() / "titan_dist_placements_test.h5").string();
    const auto writers = placed_parameters(layout_of(written_on, world.rank()));
    std::vector<TensorPiece> pieces;
    for (const auto& p : writers) {
      pieces.push_back({"model/" + p->name(), p->global_shape(), p->local_box(), p->shard(),
                        p->placement().writes_checkpoint()});
    }
    const int64_t written_before = checkpoint_io_counters().bytes_written;
    write_checkpoint_file(path, *io, CheckpointMeta{}, pieces);
    // Of the ranks holding the same box only the first wrote it: every element once.
    EXPECT_EQ(distributed::all_reduce_scalar(
                  world, checkpoint_io_counters().bytes_written - written_before),
              global_bytes);

    const auto readers = placed_parameters(layout_of(read_on, world.rank()));
    pieces.clear();
    for (const auto& p : readers) {
      pieces.push_back({"model/" + p->name(), p->global_shape(), p->local_box(),
                        Tensor::zeros(p->local_box().extent, DType::F32)});
    }
    read_checkpoint_tensors(path, *io, pieces);
    for (size_t i = 0; i < pieces.size(); ++i) {
      EXPECT_EQ(testing::to_values(pieces[i].local), testing::to_values(readers[i]->shard()))
          << pieces[i].path << " on rank " << world.rank() << " ("
          << readers[i]->placement().describe() << ")";
    }
    io->barrier().wait();
    if (world.rank() == 0) std::filesystem::remove(path);
    io->barrier().wait();
  }
}
#endif

}  // namespace
}  // namespace titan::ckpt
