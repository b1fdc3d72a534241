// The device mesh over a real MPI world (run at np 4): group sizes, members and ranks.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "distributed_test_main.h"
#include "distributed_test_util.h"
#include "titan/build_config.h"
#include "titan/distributed/mesh.h"

namespace titan::distributed {
namespace {

using testing_util::group_members;

config::ParallelismSection parallelism(int64_t replicate, int64_t shard) {
  config::ParallelismSection p;
  p.data_parallel_replicate_degree = replicate;
  p.data_parallel_shard_degree = shard;
  return p;
}

std::vector<int64_t> range(int64_t begin, int64_t end, int64_t step = 1) {
  std::vector<int64_t> values;
  for (int64_t v = begin; v < end; v += step) values.push_back(v);
  return values;
}

TEST(Mesh, ShardDegreeMinusOneShardsOverTheWholeWorld) {
  Communicator& world = test_world();
  const int rank = world.rank(), size = world.size();
  Mesh mesh(mesh_shape_from_config(parallelism(1, -1), size), world);
  EXPECT_EQ(mesh.shape()[MeshDim::dp_shard], size);
  EXPECT_EQ(mesh.dp_shard().size(), size);
  EXPECT_EQ(mesh.dp_shard().rank(), rank);
  EXPECT_EQ(group_members(mesh.dp_shard(), rank), range(0, size));
  EXPECT_EQ(group_members(mesh.dp(), rank), range(0, size));
  EXPECT_EQ(group_members(mesh.dp_shard_cp(), rank), range(0, size));
  for (MeshDim dim : {MeshDim::pp, MeshDim::dp_replicate, MeshDim::cp, MeshDim::tp}) {
    EXPECT_EQ(group_members(mesh.group(dim), rank), std::vector<int64_t>{rank}) << mesh_dim_name(dim);
  }
  EXPECT_EQ(mesh.dp_rank(), rank);
  EXPECT_EQ(mesh.dp_degree(), size);
}

TEST(Mesh, HsdpTwoByTwoGroupsHaveTheRightMembers) {
  Communicator& world = test_world();
  if (world.size() != 4) GTEST_SKIP() << "needs 4 ranks";
  const int rank = world.rank();
  Mesh mesh(mesh_shape_from_config(parallelism(2, -1), 4), world);
  // Row-major, dp_shard faster than dp_replicate: rank = replica * 2 + shard.
  const int64_t replica = rank / 2, shard = rank % 2;
  EXPECT_EQ(mesh.coordinate(MeshDim::dp_replicate), replica);
  EXPECT_EQ(mesh.coordinate(MeshDim::dp_shard), shard);
  EXPECT_EQ(mesh.dp_shard().name(), "dp_shard");
  EXPECT_EQ(mesh.dp_replicate().name(), "dp_replicate");
  EXPECT_EQ(group_members(mesh.dp_shard(), rank), (std::vector<int64_t>{replica * 2, replica * 2 + 1}));
  EXPECT_EQ(group_members(mesh.dp_replicate(), rank), (std::vector<int64_t>{shard, shard + 2}));
  EXPECT_EQ(group_members(mesh.dp(), rank), range(0, 4));
  EXPECT_EQ(group_members(mesh.dp_shard_cp(), rank), (std::vector<int64_t>{replica * 2, replica * 2 + 1}));
  EXPECT_EQ(mesh.dp_shard().rank(), shard);
  EXPECT_EQ(mesh.dp_replicate().rank(), replica);
  EXPECT_EQ(mesh.dp_rank(), replica * 2 + shard);
  EXPECT_EQ(mesh.dp_rank(), mesh.dp().rank());
  EXPECT_EQ(mesh.dp_degree(), 4);
}

TEST(Mesh, GroupsReduceOverTheirMembersAndTotalStatsCountEveryGroup) {
  Communicator& world = test_world();
  if (world.size() != 4) GTEST_SKIP() << "needs 4 ranks";
  const int rank = world.rank();
  Mesh mesh(mesh_shape_from_config(parallelism(2, 2), 4), world);
  mesh.reset_stats();
  Tensor x = Tensor::empty({1}, DType::I64);
  x.mutable_data<int64_t>()[0] = rank;
  mesh.dp_shard().all_reduce(x).wait();  // 0+1 or 2+3
  EXPECT_EQ(x.data<int64_t>()[0], rank < 2 ? 1 : 5);
  mesh.dp_replicate().all_reduce(x).wait();  // 1+5 everywhere
  EXPECT_EQ(x.data<int64_t>()[0], 6);
  world.barrier().wait();
  const CommStats total = mesh.total_stats();
  EXPECT_EQ(total[Collective::AllReduce].calls, 2);
  EXPECT_EQ(total[Collective::AllReduce].bytes, 16);
  EXPECT_EQ(total[Collective::Barrier].calls, 1);
  mesh.reset_stats();
  EXPECT_EQ(mesh.total_stats()[Collective::AllReduce].calls, 0);
}

TEST(Mesh, DegreesThatDoNotFitTheWorldAreRejectedOnEveryRank) {
  Communicator& world = test_world();
  const int size = world.size();
  EXPECT_THROW(mesh_shape_from_config(parallelism(size + 1, -1), size), InputError);
  EXPECT_THROW(mesh_shape_from_config(parallelism(1, 2 * size), size), InputError);
  MeshShape too_big;
  too_big[MeshDim::dp_shard] = 2 * size;
  EXPECT_THROW(Mesh(too_big, world), Error);
  world.barrier().wait();
}

// A CPU mesh (the default device) hands FSDP its host groups: MPI carries host tensors.
TEST(Mesh, TensorGroupsOfACpuMeshAreTheHostGroups) {
  Communicator& world = test_world();
  if (world.size() != 4) GTEST_SKIP() << "needs 4 ranks";
  for (const bool default_device : {true, false}) {
    std::unique_ptr<Mesh> mesh =
        default_device ? std::make_unique<Mesh>(mesh_shape_from_config(parallelism(2, 2), 4), world)
                       : std::make_unique<Mesh>(mesh_shape_from_config(parallelism(2, 2), 4), world,
                                                Device::cpu(), /*nccl_for_one_rank_groups=*/true);
    EXPECT_EQ(mesh->device(), Device::cpu());
    EXPECT_EQ(&mesh->tensor_dp_shard(), &mesh->dp_shard());
    EXPECT_EQ(&mesh->tensor_dp_replicate(), &mesh->dp_replicate());
    EXPECT_EQ(&mesh->tensor_dp(), &mesh->dp());
    EXPECT_EQ(&mesh->tensor_dp_shard_cp(), &mesh->dp_shard_cp());
    for (MeshDim dim : {MeshDim::pp, MeshDim::dp_replicate, MeshDim::dp_shard, MeshDim::cp, MeshDim::tp}) {
      EXPECT_EQ(&mesh->tensor_group(dim), &mesh->group(dim)) << mesh_dim_name(dim);
    }
    // Counted once: the tensor groups are the host groups.
    mesh->reset_stats();
    Tensor x = Tensor::zeros({2}, DType::F32);
    mesh->tensor_dp_shard().all_reduce(x).wait();
    EXPECT_EQ(mesh->total_stats()[Collective::AllReduce].calls, 1);
  }
}

// Several ranks on a GPU need NCCL: without it every rank stops before any collective.
TEST(Mesh, CudaMeshWithoutNcclIsAnInputErrorOnEveryRank) {
#if TITAN_HAVE_NCCL
  GTEST_SKIP() << "this build has NCCL";
#else
  Communicator& world = test_world();
  const MeshShape shape = mesh_shape_from_config(parallelism(1, -1), world.size());
  try {
    Mesh mesh(shape, world, Device::cuda(0));
    ADD_FAILURE() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("NCCL"), std::string::npos) << e.what();
  }
  world.barrier().wait();
#endif
}

}  // namespace
}  // namespace titan::distributed
