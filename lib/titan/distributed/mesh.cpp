#include "titan/distributed/mesh.h"

#include <iterator>
#include <map>
#include <sstream>

#include "titan/build_config.h"
#include "titan/core/device_select.h"
#include "titan/core/error.h"
#if TITAN_HAVE_NCCL
#include "titan/distributed/nccl/nccl_backend.h"
#endif

namespace titan::distributed {
namespace {

constexpr MeshDim kAllDims[kMeshDims] = {MeshDim::pp, MeshDim::dp_replicate, MeshDim::dp_shard,
                                         MeshDim::cp, MeshDim::tp};

// The config key that sets each dim's degree (section `parallelism`).
const char* degree_key(MeshDim dim) {
  switch (dim) {
    case MeshDim::pp: return "pipeline_parallel_degree";
    case MeshDim::dp_replicate: return "data_parallel_replicate_degree";
    case MeshDim::dp_shard: return "data_parallel_shard_degree";
    case MeshDim::cp: return "context_parallel_degree";
    case MeshDim::tp: return "tensor_parallel_degree";
  }
  return "?";
}

// Every degree as the user wrote it, their product (none while dp_shard is -1) and the
// world, for each error message: "pipeline_parallel_degree 1 x ... x tensor_parallel_degree
// 1 = 8 for a world of 4 ranks".
std::string degrees_line(const MeshShape& shape, int64_t world_size) {
  std::ostringstream os;
  bool all_set = true;
  for (MeshDim dim : kAllDims) {
    os << (dim == MeshDim::pp ? "" : " x ") << degree_key(dim) << " " << shape[dim];
    all_set = all_set && shape[dim] >= 1;
  }
  if (all_set) os << " = " << shape.world_size();
  os << " for a world of " << world_size << (world_size == 1 ? " rank" : " ranks");
  return os.str();
}

bool in_dims(MeshDim dim, const std::vector<MeshDim>& dims) {
  for (MeshDim d : dims) {
    if (d == dim) return true;
  }
  return false;
}

// A sub-communicator of the ranks that differ only along `group_dims`: split by
// mesh_group_color, keyed by world rank (so group ranks follow world order).
std::unique_ptr<Communicator> split_over(Communicator& world, const MeshShape& shape,
                                         const std::vector<MeshDim>& group_dims,
                                         std::string name) {
  const int64_t color = mesh_group_color(shape, world.rank(), group_dims);
  const std::vector<int64_t> ranks = mesh_group_ranks(shape, world.rank(), group_dims);
  const int64_t index = std::find(ranks.begin(), ranks.end(), world.rank()) - ranks.begin();
  return world.split_known(int(color), world.rank(), int(ranks.size()), int(index),
                           std::move(name));
}

void add_stats(CommStats& total, const CommStats& stats) {
  for (int i = 0; i < kCollectiveCount; ++i) {
    total.collectives[size_t(i)].calls += stats.collectives[size_t(i)].calls;
    total.collectives[size_t(i)].bytes += stats.collectives[size_t(i)].bytes;
  }
  total.wait_seconds += stats.wait_seconds;
}

}  // namespace

std::string describe_rank(const MeshShape& shape, int64_t rank) {
  const std::array<int64_t, kMeshDims> c = mesh_coordinates(shape, rank);
  std::string text = "rank " + std::to_string(rank);
  std::string coordinates;
  for (MeshDim dim : kAllDims) {
    if (shape[dim] == 1) continue;
    coordinates += (coordinates.empty() ? "" : ", ") + std::string(mesh_dim_name(dim)) + " " +
                   std::to_string(c[size_t(dim)]);
  }
  return coordinates.empty() ? text : text + " (" + coordinates + ")";
}

int64_t mesh_group_color(const MeshShape& shape, int64_t rank,
                         const std::vector<MeshDim>& group_dims) {
  const std::array<int64_t, kMeshDims> coordinates = mesh_coordinates(shape, rank);
  int64_t color = 0;
  for (MeshDim dim : kAllDims) {
    if (!in_dims(dim, group_dims)) color = color * shape[dim] + coordinates[size_t(dim)];
  }
  return color;
}

std::vector<int64_t> mesh_group_ranks(const MeshShape& shape, int64_t rank,
                                      const std::vector<MeshDim>& group_dims) {
  // Row-major over the group's dims from the rank's coordinates along the others.
  std::array<int64_t, kMeshDims> at = mesh_coordinates(shape, rank);
  int64_t size = 1;
  for (MeshDim dim : group_dims) size *= shape[dim];
  std::vector<int64_t> ranks;
  ranks.reserve(size_t(size));
  for (int64_t index = 0; index < size; ++index) {
    int64_t rest = index;
    for (auto dim = std::rbegin(kAllDims); dim != std::rend(kAllDims); ++dim) {
      if (!in_dims(*dim, group_dims)) continue;
      at[size_t(*dim)] = rest % shape[*dim];
      rest /= shape[*dim];
    }
    int64_t world_rank = 0;
    for (MeshDim dim : kAllDims) world_rank = world_rank * shape[dim] + at[size_t(dim)];
    ranks.push_back(world_rank);
  }
  return ranks;
}

const char* mesh_dim_name(MeshDim dim) {
  switch (dim) {
    case MeshDim::pp: return "pp";
    case MeshDim::dp_replicate: return "dp_replicate";
    case MeshDim::dp_shard: return "dp_shard";
    case MeshDim::cp: return "cp";
    case MeshDim::tp: return "tp";
  }
  return "?";
}

int64_t MeshShape::world_size() const {
  int64_t product = 1;
  for (int64_t degree : degrees) product *= degree;
  return product;
}

std::string MeshShape::describe() const {
  std::ostringstream os;
  for (MeshDim dim : kAllDims) {
    os << (dim == MeshDim::pp ? "" : " x ") << mesh_dim_name(dim) << " " << (*this)[dim];
  }
  return os.str();
}

MeshShape mesh_shape_from_config(const config::ParallelismSection& parallelism, int64_t world_size) {
  MeshShape shape;
  shape[MeshDim::pp] = parallelism.pipeline_parallel_degree;
  shape[MeshDim::dp_replicate] = parallelism.data_parallel_replicate_degree;
  shape[MeshDim::dp_shard] = parallelism.data_parallel_shard_degree;
  shape[MeshDim::cp] = parallelism.context_parallel_degree;
  shape[MeshDim::tp] = parallelism.tensor_parallel_degree;

  for (MeshDim dim : kAllDims) {
    const bool fills_the_rest = dim == MeshDim::dp_shard && shape[dim] == -1;
    TITAN_CHECK_INPUT(shape[dim] >= 1 || fills_the_rest)
        << "parallelism." << degree_key(dim) << ": must be >= 1"
        << (dim == MeshDim::dp_shard ? " or -1 (the rest of the world)" : "") << ", got "
        << shape[dim] << " (" << degrees_line(shape, world_size) << ")";
  }
  if (shape[MeshDim::dp_shard] == -1) {
    const int64_t others = -shape.world_size();  // the product with dp_shard = -1
    TITAN_CHECK_INPUT(world_size % others == 0)
        << "parallelism.data_parallel_shard_degree: -1 takes the ranks the other degrees leave, "
        << "but they multiply to " << others << ", which does not divide the world of "
        << world_size << " ranks (" << degrees_line(shape, world_size)
        << "); launch a multiple of " << others << " ranks or change the other degrees";
    shape[MeshDim::dp_shard] = world_size / others;
  }
  TITAN_CHECK_INPUT(shape.world_size() == world_size)
      << "parallelism: the degrees multiply to " << shape.world_size() << ", not the world size ("
      << degrees_line(shape, world_size) << "); make their product " << world_size
      << ", or set data_parallel_shard_degree -1 to take the rest";
  return shape;
}

std::array<int64_t, kMeshDims> mesh_coordinates(const MeshShape& shape, int64_t rank) {
  TITAN_CHECK(rank >= 0 && rank < shape.world_size())
      << "rank " << rank << " is not in the mesh " << shape.describe();
  std::array<int64_t, kMeshDims> coordinates{};
  for (int d = kMeshDims - 1; d >= 0; --d) {  // tp fastest
    coordinates[size_t(d)] = rank % shape.degrees[size_t(d)];
    rank /= shape.degrees[size_t(d)];
  }
  return coordinates;
}

Mesh::Mesh(const MeshShape& shape, Communicator& world, Device device, bool nccl_for_one_rank_groups)
    : shape_(shape),
      world_(world),
      device_(device),
      nccl_for_one_rank_groups_(nccl_for_one_rank_groups && TITAN_HAVE_NCCL) {
  TITAN_CHECK(shape.world_size() == world.size())
      << "mesh " << shape.describe() << " has " << shape.world_size() << " ranks, but the world "
      << "communicator has " << world.size();
  // Before any collective, so that every rank fails the same way.
  TITAN_CHECK_INPUT(TITAN_HAVE_NCCL || !device.is_cuda() || world.size() == 1)
      << "training on " << device << " with " << world.size() << " ranks moves tensors between "
      << "GPUs with NCCL, and this build has no NCCL (CMake found no nccl.h / libnccl beside "
      << "the CUDA toolkit; its summary line says NCCL=0); rebuild with NCCL, run one rank, or "
      << "train on the CPU (TITAN_DEVICE=cpu)";
  coordinates_ = mesh_coordinates(shape, world.rank());
  // Every rank splits in the same order: splits are collective over the world.
  for (MeshDim dim : kAllDims) {
    groups_[size_t(dim)] = split_over(world, shape_, {dim}, mesh_dim_name(dim));
  }
  dp_ = split_over(world, shape_, {MeshDim::dp_replicate, MeshDim::dp_shard}, "dp");
  dp_shard_cp_ = split_over(world, shape_, {MeshDim::dp_shard, MeshDim::cp}, "dp_shard_cp");
  make_tensor_groups();
}

Communicator* Mesh::make_tensor_group(Communicator& host) {
  if (device_.is_cpu()) return &host;
  if (host.size() == 1 && !nccl_for_one_rank_groups_) {
    if (auto* self = dynamic_cast<SelfCommunicator*>(&host)) return self;
    // A one-rank MPI group: MPI takes no device tensors.
    own_tensor_groups_.push_back(std::make_unique<SelfCommunicator>(host.name()));
    return own_tensor_groups_.back().get();
  }
#if TITAN_HAVE_NCCL
  use_device(device_);  // NcclCommunicator takes the current device
  own_tensor_groups_.push_back(nccl::make_communicator(host, host.name()));
  return own_tensor_groups_.back().get();
#else
  // The constructor's InputError covers this: without NCCL, a CUDA mesh has one rank.
  TITAN_FAIL() << "mesh group " << host.name() << " has " << host.size() << " ranks on "
               << device_ << " without NCCL";
#endif
}

void Mesh::make_tensor_groups() {
  // The dims of a group with a degree above 1, as bits: two groups with the same bits hold
  // the same ranks in the same order (the other dims are 1, every rank's coordinate 0).
  auto ranks_of = [&](std::initializer_list<MeshDim> dims) {
    unsigned bits = 0;
    for (MeshDim dim : dims) {
      if (shape_[dim] > 1) bits |= 1u << unsigned(dim);
    }
    return bits;
  };
  struct Slot {
    Communicator** tensor_group;
    Communicator* host_group;
    unsigned ranks;
  };
  auto dim_slot = [&](MeshDim dim) {
    return Slot{&tensor_groups_[size_t(dim)], groups_[size_t(dim)].get(), ranks_of({dim})};
  };
  // The order of the header; the same on every rank (each NCCL construction is collective).
  const Slot slots[] = {
      dim_slot(MeshDim::dp_shard),
      dim_slot(MeshDim::dp_replicate),
      Slot{&tensor_dp_, dp_.get(), ranks_of({MeshDim::dp_replicate, MeshDim::dp_shard})},
      Slot{&tensor_dp_shard_cp_, dp_shard_cp_.get(), ranks_of({MeshDim::dp_shard, MeshDim::cp})},
      dim_slot(MeshDim::pp),
      dim_slot(MeshDim::cp),
      dim_slot(MeshDim::tp),
  };
  // Groups of the same ranks share one NCCL communicator.
  std::map<unsigned, Communicator*> nccl_by_ranks;
  for (const Slot& slot : slots) {
    const bool nccl = device_.is_cuda() &&
                      (slot.host_group->size() > 1 || nccl_for_one_rank_groups_);
    if (auto made = nccl_by_ranks.find(slot.ranks); nccl && made != nccl_by_ranks.end()) {
      *slot.tensor_group = made->second;
      continue;
    }
    *slot.tensor_group = make_tensor_group(*slot.host_group);
    if (nccl) nccl_by_ranks[slot.ranks] = *slot.tensor_group;
  }
}

Mesh::~Mesh() = default;

void Mesh::make_expert_groups(int64_t ep, bool over_tp) {
  if (ep_ && ep_->size() == ep && (expert_base_ != nullptr) == over_tp) return;  // made already
  TITAN_CHECK(!ep_) << "expert groups of " << ep_->size() << " ranks exist; a mesh holds one "
                    << "expert-parallel layout";
  if (over_tp) {
    expert_base_ = split_over(world_, shape_, {MeshDim::dp_shard, MeshDim::cp, MeshDim::tp},
                              "dp_shard_cp_tp");
  }
  Communicator& group = over_tp ? *expert_base_ : *dp_shard_cp_;
  TITAN_CHECK(ep >= 1 && group.size() % ep == 0)
      << "expert parallelism of " << ep << " over " << group.size() << " ranks";
  if (ep == 1) return;
  const int index = group.rank();
  ep_ = group.split_known(int(index / ep), index, int(ep), int(index % ep), "ep");
  efsdp_ = group.split_known(int(index % ep), index, int(group.size() / ep), int(index / ep),
                             "efsdp");
  tensor_ep_ = make_tensor_group(*ep_);
  tensor_efsdp_ = make_tensor_group(*efsdp_);
}

nn::ParameterLayout Mesh::parameter_layout(Device device, DType compute_dtype) const {
  nn::ParameterLayout layout;
  const auto place = [](const Communicator& group) {
    return nn::GroupPlace{group.size(), group.rank()};
  };
  layout.tp = place(*groups_[size_t(MeshDim::tp)]);
  layout.fsdp = place(*dp_shard_cp_);
  layout.dp_replicate = place(*groups_[size_t(MeshDim::dp_replicate)]);
  if (ep_) {
    layout.ep = place(*ep_);
    layout.efsdp = place(*efsdp_);
  }
  layout.device = device;
  layout.compute_dtype = compute_dtype;
  return layout;
}

int64_t Mesh::dp_rank() const {
  return coordinate(MeshDim::dp_replicate) * shape_[MeshDim::dp_shard] + coordinate(MeshDim::dp_shard);
}

CommStats Mesh::total_stats() const {
  CommStats total;
  add_stats(total, world_.stats());
  for (const auto& group : groups_) add_stats(total, group->stats());
  add_stats(total, dp_->stats());
  add_stats(total, dp_shard_cp_->stats());
  if (ep_) {
    add_stats(total, ep_->stats());
    add_stats(total, efsdp_->stats());
  }
  for (const auto& group : own_tensor_groups_) add_stats(total, group->stats());
  return total;
}

void Mesh::reset_stats() {
  world_.reset_stats();
  for (auto& group : groups_) group->reset_stats();
  dp_->reset_stats();
  dp_shard_cp_->reset_stats();
  if (ep_) {
    ep_->reset_stats();
    efsdp_->reset_stats();
  }
  for (auto& group : own_tensor_groups_) group->reset_stats();
}

}  // namespace titan::distributed
