#include "titan/nn/placement.h"

#include <algorithm>

#include "titan/core/error.h"

namespace titan::nn {

MeshDimPlacement MeshDimPlacement::shard(std::string mesh_dim, int64_t size, int64_t index,
                                         int tensor_dim, SplitUse use, int64_t replicas) {
  MeshDimPlacement p;
  p.mesh_dim = std::move(mesh_dim);
  p.size = size;
  p.index = index;
  p.shard_dim = tensor_dim;
  p.replicas = replicas;
  p.use = use;
  return p;
}

MeshDimPlacement MeshDimPlacement::replicate(std::string mesh_dim, int64_t size, int64_t index) {
  MeshDimPlacement p;
  p.mesh_dim = std::move(mesh_dim);
  p.size = size;
  p.index = index;
  return p;
}

std::string MeshDimPlacement::describe() const {
  if (!shard_dim) return mesh_dim + " Replicate";
  std::string text = mesh_dim + " Shard(" + std::to_string(*shard_dim) + ")";
  if (replicas > 1) text += " x" + std::to_string(replicas);
  return text;
}

const MeshDimPlacement* Placement::storage_split() const {
  for (const MeshDimPlacement& d : dims) {
    if (d.shard_dim && d.use == SplitUse::Storage) return &d;
  }
  return nullptr;
}

bool Placement::writes_checkpoint() const {
  return std::all_of(dims.begin(), dims.end(),
                     [](const MeshDimPlacement& d) { return d.first_holder(); });
}

std::string Placement::describe() const {
  if (dims.empty()) return "whole";
  std::string text;
  for (const MeshDimPlacement& d : dims) text += (text.empty() ? "" : ", ") + d.describe();
  return text;
}

Placement fsdp_placement(int64_t index, int64_t count, Device device, DType compute_dtype) {
  return place_parameter(ParameterLayout::fsdp_only(index, count, device, compute_dtype),
                         ParameterPlan{});
}

int64_t rows_per_shard(int64_t rows, int64_t shards) { return (rows + shards - 1) / shards; }

namespace {

Box apply(const Shape& global_shape, const Placement& placement, bool compute_only) {
  TITAN_CHECK(!global_shape.empty()) << "placement_box: a scalar has no dims to split";
  Box box{Shape(global_shape.size(), 0), global_shape};
  for (const MeshDimPlacement& d : placement.dims) {
    TITAN_CHECK(d.size >= 1 && d.index >= 0 && d.index < d.size)
        << "placement: " << d.mesh_dim << " coordinate " << d.index << " of " << d.size;
    if (!d.shard_dim || (compute_only && d.use == SplitUse::Storage)) continue;
    const int dim = *d.shard_dim;
    TITAN_CHECK(dim >= 0 && size_t(dim) < global_shape.size())
        << "placement: " << d.describe() << " of a tensor of " << global_shape.size() << " dims";
    TITAN_CHECK(d.replicas >= 1 && d.size % d.replicas == 0)
        << "placement: " << d.describe() << ": " << d.replicas << " replicas do not divide "
        << d.size << " ranks";
    const int64_t extent = box.extent[size_t(dim)];
    const int64_t per = rows_per_shard(extent, d.parts());
    const int64_t first = std::min(extent, d.part() * per);
    box.offset[size_t(dim)] += first;
    box.extent[size_t(dim)] = std::min(extent, first + per) - first;
  }
  return box;
}

}  // namespace

Box placement_box(const Shape& global_shape, const Placement& placement) {
  return apply(global_shape, placement, false);
}

Box compute_box(const Shape& global_shape, const Placement& placement) {
  return apply(global_shape, placement, true);
}

void for_each_box_run(const Shape& global_shape, const Box& box,
                      const std::function<void(int64_t, int64_t, int64_t)>& fn) {
  const size_t rank = global_shape.size();
  TITAN_CHECK(box.offset.size() == rank && box.extent.size() == rank)
      << "for_each_box_run: a box of " << box.extent.size() << " dims in a tensor of " << rank;
  if (shape_numel(box.extent) == 0) return;
  // The runs: the innermost dim the box cuts, with every whole dim inside it.
  size_t cut = rank - 1;
  while (cut > 0 && box.extent[cut] == global_shape[cut]) --cut;
  int64_t length = 1;
  for (size_t k = cut; k < rank; ++k) length *= box.extent[k];
  Shape global_stride(rank, 1);
  for (size_t k = rank - 1; k > 0; --k) global_stride[k - 1] = global_stride[k] * global_shape[k];
  // Walk the outer dims [0, cut) of the box like an odometer.
  Shape at(cut, 0);
  for (int64_t local = 0;; local += length) {
    int64_t global = box.offset[cut] * global_stride[cut];
    for (size_t k = 0; k < cut; ++k) global += (box.offset[k] + at[k]) * global_stride[k];
    fn(global, local, length);
    size_t k = cut;
    while (k > 0 && ++at[k - 1] == box.extent[k - 1]) at[--k] = 0;
    if (k == 0) return;
  }
}

ParameterLayout ParameterLayout::fsdp_only(int64_t index, int64_t count, Device device,
                                           DType compute_dtype) {
  ParameterLayout layout;
  layout.fsdp = {count, index};
  layout.device = device;
  layout.compute_dtype = compute_dtype;
  return layout;
}

Placement place_parameter(const ParameterLayout& layout, const ParameterPlan& plan) {
  Placement p;
  p.device = layout.device;
  p.compute_dtype = layout.compute_dtype;
  if (plan.expert && layout.ep.size > 1) {
    p.dims.push_back(MeshDimPlacement::shard("ep", layout.ep.size, layout.ep.index, 0,
                                             SplitUse::Compute));
  }
  // Experts under EP take a tensor-parallel split only with expert tensor parallelism;
  // without it the tp ranks are among expert parallel's.
  if (layout.tp.size > 1 && !(plan.expert && !plan.tp_shard_dim)) {
    p.dims.push_back(plan.tp_shard_dim
                         ? MeshDimPlacement::shard("tp", layout.tp.size, layout.tp.index,
                                                   *plan.tp_shard_dim, SplitUse::Compute,
                                                   plan.tp_replicas)
                         : MeshDimPlacement::replicate("tp", layout.tp.size, layout.tp.index));
  }
  const GroupPlace& fsdp = plan.expert ? layout.efsdp : layout.fsdp;
  if (fsdp.size > 1) {
    p.dims.push_back(MeshDimPlacement::shard(plan.expert ? "efsdp" : "dp_shard_cp", fsdp.size,
                                             fsdp.index, plan.fsdp_dim, SplitUse::Storage));
  }
  if (layout.dp_replicate.size > 1) {
    p.dims.push_back(MeshDimPlacement::replicate("dp_replicate", layout.dp_replicate.size,
                                                 layout.dp_replicate.index));
  }
  return p;
}

Placement Placer::operator()(const std::string& name) const {
  return place_parameter(layout_, plan_ ? plan_(name) : ParameterPlan{});
}

}  // namespace titan::nn
