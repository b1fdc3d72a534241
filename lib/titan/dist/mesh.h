// The device mesh: the world's ranks arranged as pp x dp_replicate x dp_shard x cp x tp
// (slowest to fastest; tp innermost so a tensor-parallel group shares a node), with one
// communicator per dim and the flattened groups the parallelisms use (DESIGN.md,
// "Parallelism").
//
//   MeshShape shape = mesh_shape_from_config(config.parallelism, world.size());  // exit 2 if bad
//   Mesh mesh(shape, world);
//   mesh.dp_shard()        FSDP's group: parameters are sharded over it
//   mesh.dp_replicate()    HSDP/DDP replicas: shard gradients are all-reduced over it
//   mesh.dp()              dp_replicate x dp_shard flattened: where the batch is split
//   mesh.dp_shard_cp()     dp_shard x cp flattened: FSDP's group once CP lands
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "titan/config/job_config.h"
#include "titan/dist/communicator.h"

namespace titan::dist {

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
// size, when -1 leaves a fraction, or when a degree needs a parallelism that is not built
// (tp, cp, pp > 1 today); the message has the numbers and the fix.
MeshShape mesh_shape_from_config(const config::ParallelismSection& parallelism, int64_t world_size);

// A rank's coordinate along each dim (row-major over the degrees, tp fastest).
std::array<int64_t, kMeshDims> mesh_coordinates(const MeshShape& shape, int64_t rank);

class Mesh {
 public:
  // Splits `world` (collective over it); world must outlive the mesh.
  Mesh(const MeshShape& shape, Communicator& world);
  ~Mesh();

  const MeshShape& shape() const { return shape_; }
  int64_t coordinate(MeshDim dim) const { return coordinates_[size_t(dim)]; }

  Communicator& world() { return world_; }
  Communicator& group(MeshDim dim) { return *groups_[size_t(dim)]; }
  Communicator& dp_replicate() { return group(MeshDim::dp_replicate); }
  Communicator& dp_shard() { return group(MeshDim::dp_shard); }
  Communicator& dp() { return *dp_; }
  Communicator& dp_shard_cp() { return *dp_shard_cp_; }

  // This rank's place among the data-parallel ranks (which slice of each global batch).
  int64_t dp_rank() const;
  int64_t dp_degree() const { return shape_.dp_degree(); }

  // Sums of every group's counters, and a reset of all of them.
  CommStats total_stats() const;
  void reset_stats();

 private:
  MeshShape shape_;
  std::array<int64_t, kMeshDims> coordinates_{};
  Communicator& world_;
  std::array<std::unique_ptr<Communicator>, kMeshDims> groups_;
  std::unique_ptr<Communicator> dp_, dp_shard_cp_;
};

}  // namespace titan::dist
