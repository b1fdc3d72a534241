// The mesh's tensor groups on one GPU (distributed/mesh.h): a one-rank mesh on cuda:0 moves CUDA
// tensors through tensor_dp_shard() and the other tensor accessors. Two ways:
//   - as built for training in a world of one: the tensor groups are the host
//     SelfCommunicators, which copy device tensors on the device;
//   - with nccl_for_one_rank_groups: every tensor group is one shared one-rank
//     NcclCommunicator bootstrapped over the host group, the path a multi-rank mesh takes.
// Outputs start filled with a sentinel (0x7f bytes) and results are compared as bits. Without
// a GPU every test skips, saying why; without CUDA in the build the file is one skipped test.
#include <gtest/gtest.h>

#include "titan/build_config.h"

#if !TITAN_HAVE_CUDA

TEST(CudaMesh, NeedsACudaBuild) {
  GTEST_SKIP() << "built without CUDA (TITAN_CUDA=OFF, or no nvcc at configure time)";
}

#else

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "support/cuda_device.h"
#include "titan/core/copy.h"
#include "titan/distributed/communicator.h"
#include "titan/distributed/mesh.h"
#if TITAN_HAVE_NCCL
#include "titan/distributed/nccl/nccl_communicator.h"
#endif

namespace titan::distributed {
namespace {

using testing::to_host;
using testing::expect_same_bytes;

using testing::cuda_unavailable_reason;

const Device kGpu = Device::cuda(0);

MeshShape one_rank() { return MeshShape{}; }  // every degree 1

Tensor host_f32(int64_t n, int first) {
  Tensor t = Tensor::empty({n}, DType::F32);
  for (int64_t i = 0; i < n; ++i) t.mutable_data<float>()[i] = float(first + int(i % 89) - 40);
  return t;
}

Tensor device_sentinel(int64_t n) {
  Tensor t = Tensor::empty({n}, DType::F32, kGpu);
  EXPECT_EQ(cudaMemset(t.raw_mutable_data(), 0x7f, size_t(t.bytes())), cudaSuccess);
  return t;
}

// An all_gather and a reduce_scatter of CUDA tensors through `group` (one rank: copies).
void gather_and_scatter(Communicator& group, const std::string& what) {
  ASSERT_EQ(group.size(), 1) << what;
  const Tensor values = host_f32(333, 7);
  Tensor gathered = device_sentinel(333);
  group.all_gather(to_device(values, kGpu), gathered).wait();
  expect_same_bytes(to_host(gathered), values, what + " all_gather");

  Tensor scattered = device_sentinel(333);
  group.reduce_scatter(to_device(values, kGpu), scattered).wait();
  expect_same_bytes(to_host(scattered), values, what + " reduce_scatter");
}

class CudaMesh : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string reason = cuda_unavailable_reason();
    if (!reason.empty()) GTEST_SKIP() << "no CUDA device: " << reason;
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  }
  SelfCommunicator world_{"world"};
};

TEST_F(CudaMesh, OneRankTensorGroupsAreTheSelfGroupsAndCopyDeviceTensors) {
  Mesh mesh(one_rank(), world_, kGpu);
  EXPECT_EQ(&mesh.tensor_dp_shard_cp(), &mesh.dp_shard_cp());
  mesh.reset_stats();
  gather_and_scatter(mesh.tensor_dp_shard_cp(), "dp_shard_cp");
  gather_and_scatter(mesh.tensor_dp_shard(), "dp_shard");
  Tensor data = to_device(host_f32(64, 3), kGpu);
  mesh.tensor_dp_replicate().all_reduce(data).wait();
  expect_same_bytes(to_host(data), host_f32(64, 3), "dp_replicate all_reduce");
  const CommStats total = mesh.total_stats();
  EXPECT_EQ(total[Collective::AllGather].calls, 2);
  EXPECT_EQ(total[Collective::ReduceScatter].calls, 2);
  EXPECT_EQ(total[Collective::AllReduce].calls, 1);
}

#if TITAN_HAVE_NCCL

TEST_F(CudaMesh, NcclForOneRankGroupsSharesOneNcclCommunicatorAndCountsIt) {
  Mesh mesh(one_rank(), world_, kGpu, /*nccl_for_one_rank_groups=*/true);
  auto* nccl = dynamic_cast<NcclCommunicator*>(&mesh.tensor_dp_shard());
  ASSERT_NE(nccl, nullptr) << "tensor_dp_shard() is not an NcclCommunicator";
  EXPECT_EQ(nccl->name(), "dp_shard");
  EXPECT_EQ(nccl->device(), 0);
  // Every group holds the same (one) rank, so all share the communicator made first.
  EXPECT_EQ(&mesh.tensor_dp_shard_cp(), nccl);
  EXPECT_EQ(&mesh.tensor_dp(), nccl);
  EXPECT_EQ(&mesh.tensor_dp_replicate(), nccl);
  for (MeshDim dim : {MeshDim::pp, MeshDim::cp, MeshDim::tp}) {
    EXPECT_EQ(&mesh.tensor_group(dim), nccl) << mesh_dim_name(dim);
  }
  // The unique id went over the host group dp_shard, once.
  EXPECT_EQ(mesh.dp_shard().stats()[Collective::Broadcast].calls, 1);
  EXPECT_EQ(mesh.total_stats()[Collective::Broadcast].calls, 1);

  mesh.reset_stats();
  gather_and_scatter(mesh.tensor_dp_shard_cp(), "nccl dp_shard_cp");
  Tensor data = to_device(host_f32(64, 3), kGpu);
  mesh.tensor_dp_replicate().all_reduce(data).wait();
  expect_same_bytes(to_host(data), host_f32(64, 3), "nccl all_reduce");
  // The mesh's counters (the step line's comm %) include the NCCL group.
  const CommStats total = mesh.total_stats();
  EXPECT_EQ(total[Collective::AllGather].calls, 1);
  EXPECT_EQ(total[Collective::AllGather].bytes, 333 * 4);
  EXPECT_EQ(total[Collective::ReduceScatter].calls, 1);
  EXPECT_EQ(total[Collective::AllReduce].calls, 1);
  EXPECT_EQ(mesh.dp_shard().stats()[Collective::AllGather].calls, 0);  // not the host group
  mesh.reset_stats();
  EXPECT_EQ(nccl->stats()[Collective::AllGather].calls, 0);
}

#endif  // TITAN_HAVE_NCCL

}  // namespace
}  // namespace titan::distributed

#endif  // TITAN_HAVE_CUDA
