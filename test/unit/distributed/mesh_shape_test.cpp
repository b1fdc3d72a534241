// Mesh shapes from the config, coordinates, and a mesh over a one-rank world (no MPI).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <map>
#include <memory>
#include <string>

#include "titan/build_config.h"
#include "titan/distributed/mesh.h"

namespace titan::distributed {
namespace {

config::ParallelismSection parallelism(int64_t replicate, int64_t shard) {
  config::ParallelismSection p;
  p.data_parallel_replicate_degree = replicate;
  p.data_parallel_shard_degree = shard;
  return p;
}

// The InputError's message, or a test failure when none is thrown.
std::string input_error(const config::ParallelismSection& p, int64_t world_size) {
  try {
    mesh_shape_from_config(p, world_size);
  } catch (const InputError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected an InputError, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected an InputError, got a shape";
  return "";
}

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "'" << part << "' not in: " << text;
}

TEST(MeshShape, ShardDegreeMinusOneTakesTheWholeWorld) {
  const MeshShape shape = mesh_shape_from_config(parallelism(1, -1), 8);
  EXPECT_EQ(shape[MeshDim::dp_shard], 8);
  EXPECT_EQ(shape.world_size(), 8);
  EXPECT_EQ(shape.dp_degree(), 8);
  EXPECT_EQ(shape.describe(), "pp 1 x dp_replicate 1 x dp_shard 8 x cp 1 x tp 1");
}

TEST(MeshShape, ShardDegreeMinusOneTakesWhatReplicationLeaves) {
  const MeshShape shape = mesh_shape_from_config(parallelism(2, -1), 4);
  EXPECT_EQ(shape[MeshDim::dp_replicate], 2);
  EXPECT_EQ(shape[MeshDim::dp_shard], 2);
  EXPECT_EQ(shape.dp_degree(), 4);
}

TEST(MeshShape, ExplicitHsdpTwoByTwo) {
  const MeshShape shape = mesh_shape_from_config(parallelism(2, 2), 4);
  EXPECT_EQ(shape.describe(), "pp 1 x dp_replicate 2 x dp_shard 2 x cp 1 x tp 1");
}

TEST(MeshShape, ProductOtherThanTheWorldIsBadInputWithEveryNumber) {
  const std::string message = input_error(parallelism(2, 4), 4);
  expect_contains(message, "data_parallel_replicate_degree 2");
  expect_contains(message, "data_parallel_shard_degree 4");
  expect_contains(message, "tensor_parallel_degree 1");
  expect_contains(message, "= 8");
  expect_contains(message, "world of 4 ranks");
  expect_contains(message, "data_parallel_shard_degree -1");  // the fix
}

TEST(MeshShape, MinusOneThatLeavesAFractionIsBadInput) {
  const std::string message = input_error(parallelism(3, -1), 4);
  expect_contains(message, "parallelism.data_parallel_shard_degree");
  expect_contains(message, "multiply to 3");
  expect_contains(message, "world of 4 ranks");
  expect_contains(message, "multiple of 3");
}

TEST(MeshShape, DegreesBelowOneAreBadInput) {
  expect_contains(input_error(parallelism(0, -1), 4), "data_parallel_replicate_degree: must be >= 1");
  expect_contains(input_error(parallelism(1, 0), 4), "or -1");
  expect_contains(input_error(parallelism(1, -2), 4), "got -2");
  config::ParallelismSection p = parallelism(1, -1);
  p.tensor_parallel_degree = 0;
  expect_contains(input_error(p, 4), "tensor_parallel_degree: must be >= 1");
}

TEST(MeshShape, ContextParallelTakesItsRanksBeforeTheShards) {
  config::ParallelismSection cp = parallelism(1, -1);
  cp.context_parallel_degree = 2;
  const MeshShape shape = mesh_shape_from_config(cp, 4);
  EXPECT_EQ(shape[MeshDim::cp], 2);
  EXPECT_EQ(shape[MeshDim::dp_shard], 2);
  cp.context_parallel_degree = 3;
  expect_contains(input_error(cp, 4), "context_parallel_degree 3");
}

TEST(MeshShape, TensorParallelTakesItsRanksFirst) {
  config::ParallelismSection tp = parallelism(1, -1);
  tp.tensor_parallel_degree = 2;
  const MeshShape shape = mesh_shape_from_config(tp, 8);
  EXPECT_EQ(shape[MeshDim::tp], 2);
  EXPECT_EQ(shape[MeshDim::dp_shard], 4);
  tp.tensor_parallel_degree = 8;
  expect_contains(input_error(tp, 4), "tensor_parallel_degree 8");
}

TEST(MeshCoordinates, RowMajorWithTensorParallelFastest) {
  MeshShape shape;
  shape[MeshDim::pp] = 2;
  shape[MeshDim::dp_replicate] = 3;
  shape[MeshDim::dp_shard] = 2;
  shape[MeshDim::cp] = 1;
  shape[MeshDim::tp] = 2;
  // rank = (((pp * 3 + replicate) * 2 + shard) * 1 + cp) * 2 + tp
  for (int64_t rank = 0; rank < shape.world_size(); ++rank) {
    const auto c = mesh_coordinates(shape, rank);
    EXPECT_EQ((((c[0] * 3 + c[1]) * 2 + c[2]) * 1 + c[3]) * 2 + c[4], rank);
  }
  EXPECT_EQ(mesh_coordinates(shape, 1), (std::array<int64_t, kMeshDims>{0, 0, 0, 0, 1}));
  EXPECT_EQ(mesh_coordinates(shape, 2), (std::array<int64_t, kMeshDims>{0, 0, 1, 0, 0}));
  EXPECT_EQ(mesh_coordinates(shape, 23), (std::array<int64_t, kMeshDims>{1, 2, 1, 0, 1}));
  EXPECT_THROW(mesh_coordinates(shape, 24), Error);
}

// Every communicator's membership and rank order for cluster-sized layouts, checked
// without the ranks: the groups of each kind partition the world, every member computes
// the same group, a member's index in it is its coordinate (row-major over the group's
// dims), and tp's ranks are consecutive (one node's GPUs under one rank per GPU).
void check_groups(const MeshShape& shape) {
  SCOPED_TRACE(shape.describe());
  const int64_t world = shape.world_size();
  const std::vector<std::pair<std::string, std::vector<MeshDim>>> kinds = {
      {"pp", {MeshDim::pp}},
      {"dp_replicate", {MeshDim::dp_replicate}},
      {"dp_shard", {MeshDim::dp_shard}},
      {"cp", {MeshDim::cp}},
      {"tp", {MeshDim::tp}},
      {"dp", {MeshDim::dp_replicate, MeshDim::dp_shard}},
      {"dp_shard_cp", {MeshDim::dp_shard, MeshDim::cp}}};
  for (const auto& [name, dims] : kinds) {
    SCOPED_TRACE(name);
    int64_t size = 1;
    for (MeshDim dim : dims) size *= shape[dim];
    std::vector<int64_t> seen(size_t(world), 0);
    std::map<int64_t, std::vector<int64_t>> groups;  // by color
    for (int64_t rank = 0; rank < world; ++rank) {
      const std::vector<int64_t> members = mesh_group_ranks(shape, rank, dims);
      ASSERT_EQ(int64_t(members.size()), size);
      ASSERT_TRUE(std::is_sorted(members.begin(), members.end()));
      const auto at = std::find(members.begin(), members.end(), rank);
      ASSERT_NE(at, members.end()) << rank;
      const int64_t color = mesh_group_color(shape, rank, dims);
      auto [group, fresh] = groups.emplace(color, members);
      if (fresh) {
        for (int64_t member : members) ++seen[size_t(member)];
      } else {
        ASSERT_EQ(group->second, members) << rank;  // one group per color
      }
      // The index in the group: row-major over the group's dims of the coordinates.
      const auto c = mesh_coordinates(shape, rank);
      int64_t index = 0;
      for (int d = 0; d < kMeshDims; ++d) {
        if (std::find(dims.begin(), dims.end(), MeshDim(d)) != dims.end()) {
          index = index * shape.degrees[size_t(d)] + c[size_t(d)];
        }
      }
      ASSERT_EQ(at - members.begin(), index) << rank;
    }
    EXPECT_EQ(int64_t(groups.size()), world / size);
    EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int64_t n) { return n == 1; }));
  }
  // tp innermost: a tp group is consecutive ranks.
  const std::vector<int64_t> tp = mesh_group_ranks(shape, world - 1, {MeshDim::tp});
  EXPECT_EQ(tp.back() - tp.front() + 1, shape[MeshDim::tp]);
}

TEST(MeshGroups, ClusterLayoutsOf512And1024Ranks) {
  config::ParallelismSection p;  // torchtitan's 405B layout: tp 8 x pp 8 x dp_shard 8
  p.tensor_parallel_degree = 8;
  p.pipeline_parallel_degree = 8;
  p.data_parallel_shard_degree = -1;
  const MeshShape shape_512 = mesh_shape_from_config(p, 512);
  EXPECT_EQ(shape_512[MeshDim::dp_shard], 8);
  check_groups(shape_512);
  // Rank 100 = pp 1, dp_shard 4, tp 4: its tp group is the node 96..103, its pp group one
  // rank per node group (stride 64), its FSDP group stride 8 inside the pp stage.
  EXPECT_EQ(mesh_group_ranks(shape_512, 100, {MeshDim::tp}),
            (std::vector<int64_t>{96, 97, 98, 99, 100, 101, 102, 103}));
  EXPECT_EQ(mesh_group_ranks(shape_512, 100, {MeshDim::pp}),
            (std::vector<int64_t>{36, 100, 164, 228, 292, 356, 420, 484}));
  EXPECT_EQ(mesh_group_ranks(shape_512, 100, {MeshDim::dp_shard}),
            (std::vector<int64_t>{68, 76, 84, 92, 100, 108, 116, 124}));
  p.data_parallel_replicate_degree = 2;  // 1024: HSDP 2 x FSDP 4 x CP 2 x TP 8 x PP 8
  p.context_parallel_degree = 2;
  const MeshShape shape_1024 = mesh_shape_from_config(p, 1024);
  EXPECT_EQ(shape_1024[MeshDim::dp_shard], 4);
  check_groups(shape_1024);
}

TEST(MeshGroups, DescribeRankNamesTheDimsAboveOne) {
  MeshShape shape;
  shape[MeshDim::dp_shard] = 2;
  shape[MeshDim::tp] = 2;
  EXPECT_EQ(describe_rank(shape, 3), "rank 3 (dp_shard 1, tp 1)");
  EXPECT_EQ(describe_rank(MeshShape{}, 0), "rank 0");
}

TEST(MeshDimNames, MatchTorchtitan) {
  EXPECT_STREQ(mesh_dim_name(MeshDim::pp), "pp");
  EXPECT_STREQ(mesh_dim_name(MeshDim::dp_replicate), "dp_replicate");
  EXPECT_STREQ(mesh_dim_name(MeshDim::dp_shard), "dp_shard");
  EXPECT_STREQ(mesh_dim_name(MeshDim::cp), "cp");
  EXPECT_STREQ(mesh_dim_name(MeshDim::tp), "tp");
}

TEST(MeshOverOneRank, EveryGroupHasOneRankAndItsName) {
  SelfCommunicator world("world");
  Mesh mesh(mesh_shape_from_config(parallelism(1, -1), 1), world);
  for (MeshDim dim : {MeshDim::pp, MeshDim::dp_replicate, MeshDim::dp_shard, MeshDim::cp, MeshDim::tp}) {
    EXPECT_EQ(mesh.group(dim).size(), 1);
    EXPECT_EQ(mesh.group(dim).rank(), 0);
    EXPECT_EQ(mesh.group(dim).name(), mesh_dim_name(dim));
    EXPECT_EQ(mesh.coordinate(dim), 0);
  }
  EXPECT_EQ(mesh.dp().name(), "dp");
  EXPECT_EQ(mesh.dp_shard_cp().name(), "dp_shard_cp");
  EXPECT_EQ(mesh.dp().size(), 1);
  EXPECT_EQ(mesh.dp_rank(), 0);
  EXPECT_EQ(mesh.dp_degree(), 1);
  EXPECT_EQ(&mesh.world(), &world);
}

TEST(MeshOverOneRank, TotalStatsSumEveryGroupAndResetClearsThem) {
  SelfCommunicator world("world");
  Mesh mesh(mesh_shape_from_config(parallelism(1, -1), 1), world);
  Tensor x = Tensor::zeros({10}, DType::F32);
  mesh.dp_shard().all_reduce(x).wait();
  mesh.dp().all_reduce(x).wait();
  world.barrier().wait();
  const CommStats total = mesh.total_stats();
  EXPECT_EQ(total[Collective::AllReduce].calls, 2);
  EXPECT_EQ(total[Collective::AllReduce].bytes, 80);
  EXPECT_EQ(total[Collective::Barrier].calls, 1);
  mesh.reset_stats();
  EXPECT_EQ(mesh.total_stats()[Collective::AllReduce].calls, 0);
  EXPECT_EQ(world.stats()[Collective::Barrier].calls, 0);
}

TEST(MeshOverOneRank, ShapeThatIsNotTheWorldIsAnError) {
  SelfCommunicator world("world");
  MeshShape shape;
  shape[MeshDim::dp_shard] = 2;
  EXPECT_THROW(Mesh(shape, world), Error);
}

// The tensor groups (mesh.h): on the CPU the host groups themselves, whatever the options.
TEST(MeshOverOneRank, CpuTensorGroupsAreTheHostGroups) {
  SelfCommunicator world("world");
  for (const bool nccl_for_one_rank_groups : {false, true}) {
    Mesh mesh(mesh_shape_from_config(parallelism(1, -1), 1), world, Device::cpu(),
              nccl_for_one_rank_groups);
    EXPECT_EQ(mesh.device(), Device::cpu());
    EXPECT_EQ(&mesh.tensor_dp_shard(), &mesh.dp_shard());
    EXPECT_EQ(&mesh.tensor_dp_replicate(), &mesh.dp_replicate());
    EXPECT_EQ(&mesh.tensor_dp(), &mesh.dp());
    EXPECT_EQ(&mesh.tensor_dp_shard_cp(), &mesh.dp_shard_cp());
    for (MeshDim dim : {MeshDim::pp, MeshDim::dp_replicate, MeshDim::dp_shard, MeshDim::cp, MeshDim::tp}) {
      EXPECT_EQ(&mesh.tensor_group(dim), &mesh.group(dim)) << mesh_dim_name(dim);
    }
  }
  Mesh by_default(mesh_shape_from_config(parallelism(1, -1), 1), world);
  EXPECT_EQ(by_default.device(), Device::cpu());
  EXPECT_EQ(&by_default.tensor_dp_shard_cp(), &by_default.dp_shard_cp());
}

// A world of one on a GPU: every group is a SelfCommunicator, which copies device tensors,
// so the host groups serve (no NCCL, no device call: this runs on any build).
TEST(MeshOverOneRank, CudaTensorGroupsOfOneRankAreTheHostSelfGroups) {
  SelfCommunicator world("world");
  Mesh mesh(mesh_shape_from_config(parallelism(1, -1), 1), world, Device::cuda(0));
  EXPECT_EQ(mesh.device(), Device::cuda(0));
  EXPECT_EQ(&mesh.tensor_dp_shard(), &mesh.dp_shard());
  EXPECT_EQ(&mesh.tensor_dp_replicate(), &mesh.dp_replicate());
  EXPECT_EQ(&mesh.tensor_dp(), &mesh.dp());
  EXPECT_EQ(&mesh.tensor_dp_shard_cp(), &mesh.dp_shard_cp());
}

// Rank 0 of a two-rank world whose collectives are never reached: the mesh must refuse a
// GPU without NCCL before its first split.
class TwoRankWorldThatMustNotBeUsed final : public Communicator {
 public:
  TwoRankWorldThatMustNotBeUsed() : Communicator(0, 2, "world") {}
  std::unique_ptr<Communicator> split(int, int, std::string) override { return fail("split"); }

 protected:
  std::unique_ptr<PendingOperation> start_all_reduce(Tensor&, ReduceOp) override { return fail(); }
  std::unique_ptr<PendingOperation> start_reduce_scatter(const Tensor&, Tensor&) override { return fail(); }
  std::unique_ptr<PendingOperation> start_all_gather(const Tensor&, Tensor&) override { return fail(); }
  std::unique_ptr<PendingOperation> start_broadcast(Tensor&, int) override { return fail(); }
  std::unique_ptr<PendingOperation> start_send(const Tensor&, int, int) override { return fail(); }
  std::unique_ptr<PendingOperation> start_recv(Tensor&, int, int) override { return fail(); }
  std::unique_ptr<PendingOperation> start_all_to_all(const Tensor&, const std::vector<int64_t>&,
                                                     Tensor&,
                                                     const std::vector<int64_t>&) override {
    return fail();
  }
  std::unique_ptr<PendingOperation> start_barrier() override { return fail(); }

 private:
  static std::nullptr_t fail(const char* what = "a collective") {
    ADD_FAILURE() << what << " on the world before the NCCL check";
    return nullptr;
  }
};

TEST(MeshOverTwoRanks, CudaDeviceWithoutNcclIsAnInputErrorBeforeAnyCollective) {
#if TITAN_HAVE_NCCL
  GTEST_SKIP() << "this build has NCCL";
#else
  TwoRankWorldThatMustNotBeUsed world;
  MeshShape shape;
  shape[MeshDim::dp_shard] = 2;
  std::string message = "no error";
  try {
    Mesh mesh(shape, world, Device::cuda(0));
  } catch (const InputError& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("cuda:0 with 2 ranks"), std::string::npos) << message;
  EXPECT_NE(message.find("no NCCL"), std::string::npos) << message;
  EXPECT_NE(message.find("TITAN_DEVICE=cpu"), std::string::npos) << message;
#endif
}

}  // namespace
}  // namespace titan::distributed
