// The device mesh: the world's ranks arranged as pp x dp_replicate x dp_shard x cp x tp
// (slowest to fastest; tp innermost so a tensor-parallel group shares a node), with one
// communicator per dim and the flattened groups the parallelisms use (docs/design.md,
// "Parallelism").
//
//   MeshShape shape = mesh_shape_from_config(config.parallelism, world.size());  // exit 2 if bad
//   Mesh mesh(shape, world);
//   mesh.dp_shard()        FSDP's group: parameters are sharded over it
//   mesh.dp_replicate()    HSDP/DDP replicas: shard gradients are all-reduced over it
//   mesh.dp()              dp_replicate x dp_shard flattened: where the batch is split
//   mesh.dp_shard_cp()     dp_shard x cp flattened: FSDP's group (context parallel ranks
//                          hold different tokens of the same sequences)
//
// Host groups and tensor groups. The accessors above are the host groups (MPI, or
// SelfCommunicator in a world of one): host tensors only. They carry the scalars
// (all_reduce_scalar of losses, token counts, norms), checkpoint I/O and barriers. The
// tensors of the training device (FSDP's all-gathers and reduce-scatters, HSDP's replica
// all-reduces) go through the tensor groups, one rule for all of them:
//   mesh.tensor_dp_shard_cp()  mesh.tensor_dp_shard()  mesh.tensor_dp_replicate()
//   mesh.tensor_dp()           mesh.tensor_group(dim)
//   mesh.tensor_ep()           mesh.tensor_efsdp()    (after make_expert_groups)
//   - CPU device (the default): the host group itself (the same object).
//   - CUDA device, a group of one rank: the host group when it is a SelfCommunicator (a
//     world of one), else a SelfCommunicator of the group's name (MPI takes no device
//     tensors, not even for one rank). SelfCommunicator copies device tensors on the
//     device's compute stream.
//   - CUDA device, a group of several ranks: an NcclCommunicator bootstrapped over the host
//     group (its unique id travels over it). Groups of the same ranks share one: dp_shard_cp
//     is dp_shard's while cp is 1, dp is dp_shard's while dp_replicate is 1 (and
//     dp_replicate's while dp_shard is 1), so a world of N ranks with one data-parallel
//     dim makes one NCCL communicator, not three. A shared one keeps the name of the group
//     it was made for first (dp_shard, dp_replicate, dp, dp_shard_cp, then pp, cp, tp; the
//     expert groups ep, then efsdp, when made). Every rank makes them in that order: each
//     construction is collective over its group.
// A CUDA device on a world of more than one rank in a build without NCCL (TITAN_HAVE_NCCL
// 0) is an InputError (exit 2), thrown before any collective. total_stats() and
// reset_stats() cover the host groups and the tensor groups the mesh made (each once).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "titan/config/job_config.h"
#include "titan/core/device.h"
#include "titan/distributed/communicator.h"
#include "titan/nn/placement.h"

namespace titan::distributed {

enum class MeshDim : int { pp, dp_replicate, dp_shard, cp, tp };
inline constexpr int kMeshDims = 5;
const char* mesh_dim_name(MeshDim dim);  // "pp", "dp_replicate", ...

struct MeshShape {
  std::array<int64_t, kMeshDims> degrees{1, 1, 1, 1, 1};
  int64_t operator[](MeshDim d) const { return degrees[size_t(d)]; }
  int64_t& operator[](MeshDim d) { return degrees[size_t(d)]; }
  int64_t world_size() const;
  int64_t dp_degree() const { return (*this)[MeshDim::dp_replicate] * (*this)[MeshDim::dp_shard]; }
  std::string describe() const;  // "pp 1 x dp_replicate 2 x dp_shard 2 x cp 1 x tp 1"
};

// The degrees of `parallelism` for a world of `world_size` ranks: data_parallel_shard_degree
// -1 takes what the others leave. InputError (exit 2) when the product is not the world
// size or when -1 leaves a fraction; the message has the numbers and the fix.
MeshShape mesh_shape_from_config(const config::ParallelismSection& parallelism, int64_t world_size);

// A rank's coordinate along each dim (row-major over the degrees, tp fastest).
std::array<int64_t, kMeshDims> mesh_coordinates(const MeshShape& shape, int64_t rank);

// "rank 3 (pp 0, dp_shard 1, tp 1)": the rank and its coordinates along the dims above 1.
std::string describe_rank(const MeshShape& shape, int64_t rank);

// The group of `rank` over `group_dims` (the ranks that differ from it only along those
// dims): its color, the same for every member and different for every other group (the
// rank's position along the other dims, row-major), and its world ranks in group order
// (ascending: row-major over the group's dims). What the Mesh's communicators are split
// by; pure, so layouts of any size are checked without their ranks.
int64_t mesh_group_color(const MeshShape& shape, int64_t rank,
                         const std::vector<MeshDim>& group_dims);
std::vector<int64_t> mesh_group_ranks(const MeshShape& shape, int64_t rank,
                                      const std::vector<MeshDim>& group_dims);

class Mesh {
 public:
  // Splits `world` (collective over it); world must outlive the mesh. `device` is the
  // training device, which decides the tensor groups (above); on a CUDA device with NCCL,
  // it becomes the calling thread's current device (use_device) before the NCCL
  // communicators are made. `nccl_for_one_rank_groups` (tests: the NCCL path on one GPU)
  // makes an NcclCommunicator for one-rank groups too, on a CUDA device in a build with
  // NCCL; elsewhere it changes nothing.
  Mesh(const MeshShape& shape, Communicator& world, Device device = Device::cpu(),
       bool nccl_for_one_rank_groups = false);
  ~Mesh();

  const MeshShape& shape() const { return shape_; }
  int64_t coordinate(MeshDim dim) const { return coordinates_[size_t(dim)]; }

  Communicator& world() { return world_; }
  Communicator& group(MeshDim dim) { return *groups_[size_t(dim)]; }
  Communicator& dp_replicate() { return group(MeshDim::dp_replicate); }
  Communicator& dp_shard() { return group(MeshDim::dp_shard); }
  Communicator& dp() { return *dp_; }
  Communicator& dp_shard_cp() { return *dp_shard_cp_; }

  // The tensor groups (see the top of this file): the same ranks, in the same order, as the
  // host group of the same name; pass these to FSDP.
  Device device() const { return device_; }
  Communicator& tensor_group(MeshDim dim) { return *tensor_groups_[size_t(dim)]; }
  Communicator& tensor_dp_replicate() { return tensor_group(MeshDim::dp_replicate); }
  Communicator& tensor_dp_shard() { return tensor_group(MeshDim::dp_shard); }
  Communicator& tensor_dp() { return *tensor_dp_; }
  Communicator& tensor_dp_shard_cp() { return *tensor_dp_shard_cp_; }

  // Expert parallelism (parallelism.expert_parallel_degree, which does not multiply into
  // the world size): the dp_shard x cp ranks (x tp with `over_tp`, torchtitan's EP without
  // expert tensor parallelism) in blocks of `ep` consecutive ones are the ep groups; the
  // ranks at the same place of each block are the experts' FSDP group (efsdp). Collective
  // over the world; ep must divide the ranks (the config's check). Without it both are this
  // rank alone. Made once per mesh (a second call with the same layout does nothing), with
  // their tensor groups.
  void make_expert_groups(int64_t ep, bool over_tp = false);
  Communicator& ep() { return ep_ ? *ep_ : *self_ep_; }
  Communicator& efsdp() { return efsdp_ ? *efsdp_ : *self_efsdp_; }
  Communicator& tensor_ep() { return tensor_ep_ ? *tensor_ep_ : ep(); }
  Communicator& tensor_efsdp() { return tensor_efsdp_ ? *tensor_efsdp_ : efsdp(); }

  // This rank's place in each group that places parameters (nn/placement.h): tp, FSDP's
  // dp_shard x cp, dp_replicate, and the expert groups above.
  nn::ParameterLayout parameter_layout(Device device, DType compute_dtype) const;

  // This rank's place among the data-parallel ranks (which slice of each global batch).
  int64_t dp_rank() const;
  int64_t dp_degree() const { return shape_.dp_degree(); }

  // Sums of every group's counters, and a reset of all of them.
  CommStats total_stats() const;
  void reset_stats();

 private:
  void make_tensor_groups();
  // The tensor group of `host` (see the top): host itself on the CPU; on a GPU a
  // SelfCommunicator for one rank (unless nccl_for_one_rank_groups_) or a new NCCL
  // communicator over host's ranks. Collective over host.
  Communicator* make_tensor_group(Communicator& host);

  MeshShape shape_;
  std::array<int64_t, kMeshDims> coordinates_{};
  Communicator& world_;
  std::array<std::unique_ptr<Communicator>, kMeshDims> groups_;
  std::unique_ptr<Communicator> dp_, dp_shard_cp_;
  std::unique_ptr<Communicator> ep_, efsdp_;  // make_expert_groups's
  std::unique_ptr<Communicator> expert_base_;  // dp_shard x cp x tp, when EP spans tp
  std::unique_ptr<Communicator> self_ep_ = std::make_unique<SelfCommunicator>("ep");
  std::unique_ptr<Communicator> self_efsdp_ = std::make_unique<SelfCommunicator>("efsdp");
  Device device_;
  bool nccl_for_one_rank_groups_;
  // The tensor groups made for this mesh (NCCL, or SelfCommunicator for a one-rank group
  // on a CUDA device), each once; destroyed before the host groups.
  std::vector<std::unique_ptr<Communicator>> own_tensor_groups_;
  std::array<Communicator*, kMeshDims> tensor_groups_{};
  Communicator* tensor_dp_ = nullptr;
  Communicator* tensor_dp_shard_cp_ = nullptr;
  Communicator* tensor_ep_ = nullptr;
  Communicator* tensor_efsdp_ = nullptr;
};

}  // namespace titan::distributed
