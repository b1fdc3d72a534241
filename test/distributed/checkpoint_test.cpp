// Checkpoint files on several ranks: every rank writes its box and reads back only the box
// of the layout it reads with (a bytes-read counter shows it), values landing where the
// global index says. Run under mpirun by CTest (distributed.Checkpoint.np4).
#include <gtest/gtest.h>

#include <filesystem>

#include "distributed_test_main.h"
#include "titan/build_config.h"
#include "titan/ckpt/checkpoint_file.h"

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
    for (int64_t c = 0; c < row_numel; ++c) p[r * row_numel + c] = float((box.offset[0] + r) * cols + c);
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
  write_checkpoint_file(path, *io, meta, pieces_for({world.rank(), 4}, true));
  EXPECT_EQ(read_checkpoint_meta(path, *io).step, 7);
  // Read as 2 shards, replicated twice (HSDP 2 x 2).
  const nn::Placement reader{world.rank() % 2, 2};
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
#endif

}  // namespace
}  // namespace titan::ckpt
