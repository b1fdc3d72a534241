// Placements: which piece of a parameter's global tensor this rank holds, for every
// parallelism at once, as torchtitan's DTensor placements say it (docs/design.md,
// "Placements").
//
// A Placement lists, in the order they apply, the mesh dims that split or replicate a
// parameter, each with this rank's coordinate along it and what it does:
//   Shard(d)    the piece so far is cut along tensor dim d into size / replicas parts of
//               ceil(extent / parts) (torch.chunk's and FSDP2's rule: the last parts shorter
//               or empty); rank i of the dim holds part i / replicas
//   Replicate   every rank of the dim holds the piece so far whole
// Tensor parallelism splits first, then FSDP's Shard(0) splits the tensor-parallel piece
// (torchtitan's strided order). Examples, [rows, cols] offsets on a dp_shard 2 x tp 2 mesh:
//   wq [8, 4]  tp Shard(0), dp_shard_cp Shard(0)  tp rank 1, fsdp rank 0: rows [4, 6)
//   wo [4, 8]  tp Shard(1), dp_shard_cp Shard(0)  tp rank 1, fsdp rank 0: rows [0, 2),
//                                                 cols [4, 8)
//   norm [4]   tp Replicate, dp_shard_cp Shard(0) tp rank 1, fsdp rank 0: [0, 2)
//   wk [2 hd, D] with 2 kv heads on tp 4: tp Shard(0) with 2 replicas: tp ranks 0, 1 hold
//                head 0, ranks 2, 3 head 1 (Megatron's GQA rule when tp exceeds the kv heads)
//   experts [E, F, D] on ep 4 x efsdp 2: ep Shard(0) gives E/4 experts, efsdp Shard(0)
//                splits those (expert parallel and the FSDP of experts)
//
// Each split has a use:
//   Compute   the module computes with its piece (tensor and expert parallel): a
//             parameter's value() has the shape of compute_box()
//   Storage   the piece is stored split and gathered before use (FSDP): the gatherer
//             (distributed/fsdp.h) binds the whole compute piece as value()
// So a parameter has two boxes: placement_box() (what the rank stores: shard(), its
// gradient, optimizer state, its checkpoint hyperslab) and compute_box() (what value()
// holds). placement_box is the one function that initialization (Philox by global index),
// checkpoints (each rank's hyperslab) and FSDP's gathers use.
//
// Of the ranks holding the same piece (Replicate dims, replicas of a Shard) only the first
// writes it to a checkpoint (writes_checkpoint()); every rank reads its own.
//
// Which placement each parameter takes is the model's parallelization plan (ParameterPlan,
// per parameter name) applied to the rank's coordinates in the mesh's groups
// (ParameterLayout, from distributed::Mesh::parameter_layout()); a Placer does that for the
// modules, which ask it for each parameter they make.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "titan/core/tensor.h"
#include "titan/nn/context_parallel.h"
#include "titan/nn/expert_parallel.h"
#include "titan/nn/float8.h"
#include "titan/nn/tensor_parallel.h"

namespace titan::nn {

// This rank's piece of a global tensor: offset and extent per dim.
struct Box {
  Shape offset;
  Shape extent;
};

enum class SplitUse {
  Compute,  // modules compute with the piece (tensor parallel, expert parallel)
  Storage,  // stored split, gathered whole before use (FSDP)
};

// What one mesh dim does to a parameter, and this rank's coordinate along it.
struct MeshDimPlacement {
  std::string mesh_dim;           // "tp", "dp_shard_cp", "dp_replicate", "ep", "efsdp"
  int64_t size = 1;               // ranks along the dim
  int64_t index = 0;              // this rank's coordinate
  std::optional<int> shard_dim;   // Shard(d); none: Replicate
  int64_t replicas = 1;           // Shard: consecutive ranks holding the same part
  SplitUse use = SplitUse::Compute;

  static MeshDimPlacement shard(std::string mesh_dim, int64_t size, int64_t index, int tensor_dim,
                                SplitUse use, int64_t replicas = 1);
  static MeshDimPlacement replicate(std::string mesh_dim, int64_t size, int64_t index);
  int64_t parts() const { return shard_dim ? size / replicas : 1; }
  int64_t part() const { return shard_dim ? index / replicas : 0; }
  // First of the ranks along this dim that hold the same piece.
  bool first_holder() const { return shard_dim ? index % replicas == 0 : index == 0; }
  std::string describe() const;  // "tp Shard(1)", "dp_replicate Replicate", "tp Shard(0) x2"
};

// Where a parameter's pieces lie and where it computes. No dims: whole on every rank.
struct Placement {
  std::vector<MeshDimPlacement> dims;  // in the order they apply
  Device device = Device::cpu();       // of the piece and everything computed from it
  DType compute_dtype = DType::F32;    // of value() (f32, or bf16 on a GPU); the piece is f32

  // FSDP's split (the Storage one), or null when value() is the stored piece itself.
  const MeshDimPlacement* storage_split() const;
  bool sharded() const { return storage_split() != nullptr; }
  // Whether this rank writes its piece to a checkpoint (see the top).
  bool writes_checkpoint() const;
  std::string describe() const;        // "tp Shard(0), dp_shard_cp Shard(0)"; "whole"
};

// FSDP2's placement alone: shard `index` of `count` by rows over dp_shard_cp.
Placement fsdp_placement(int64_t index, int64_t count, Device device = Device::cpu(),
                         DType compute_dtype = DType::F32);

// ceil(rows / shards): the size of every part but the last ones, and the padded size of a
// piece in FSDP's flat buffers.
int64_t rows_per_shard(int64_t rows, int64_t shards);
// The piece this rank stores, every dim of the placement applied in order.
Box placement_box(const Shape& global_shape, const Placement& placement);
// The piece the modules compute with: the Compute dims only.
Box compute_box(const Shape& global_shape, const Placement& placement);

// Calls fn(global_offset, local_offset, length) for each contiguous run of a box's elements:
// offsets are flat row-major indices into the global tensor and into the box's own
// [extent] tensor. A box of whole trailing dims is one run.
void for_each_box_run(const Shape& global_shape, const Box& box,
                      const std::function<void(int64_t, int64_t, int64_t)>& fn);

// This rank's coordinate in a group of ranks.
struct GroupPlace {
  int64_t size = 1;
  int64_t index = 0;
};

// What a model needs to know of the mesh to place its parameters: the groups that split or
// replicate them with this rank's place in each (size 1 where a parallelism is off), the
// training device and the compute dtype.
struct ParameterLayout {
  GroupPlace tp;            // tensor parallel
  GroupPlace fsdp;          // FSDP: dp_shard x cp flattened
  GroupPlace dp_replicate;  // HSDP / DDP replicas
  GroupPlace ep;            // expert parallel (mixture-of-experts weights)
  GroupPlace efsdp;         // FSDP of the experts' pieces
  // parallelism.expert_tensor_parallel_degree = tp > 1: the experts' hidden dim is split over
  // tp (and ep leaves tp out); else experts are whole on the tp ranks (or ep spans them).
  bool expert_tensor_parallel = false;
  Device device = Device::cpu();
  DType compute_dtype = DType::F32;
  // How the modules exchange activations over tp (the mesh's, which outlives the model);
  // null: one rank.
  const TensorParallel* tensor_parallel = nullptr;
  // How attention reaches the other ranks' keys over cp (the trainer's, which outlives the
  // model); null: one rank. No parameter is placed over cp beyond FSDP's dp_shard x cp.
  const ContextParallel* context_parallel = nullptr;
  // How the mixture-of-experts layers move tokens to the ranks of ep (the mesh's); null: one
  // rank. Its size is ep.size.
  const ExpertParallel* expert_parallel = nullptr;
  // quantize.linear.float8 (the model's, which outlives its modules): the linears it converts
  // cast their GEMMs to float8, as torchtitan converts them before it parallelizes. Null: off.
  const Float8Training* float8 = nullptr;

  const TensorParallel& tp_group() const {
    return tensor_parallel ? *tensor_parallel : no_tensor_parallel();
  }
  const ContextParallel& cp_group() const {
    return context_parallel ? *context_parallel : no_context_parallel();
  }
  const ExpertParallel& ep_group() const {
    return expert_parallel ? *expert_parallel : no_expert_parallel();
  }

  // FSDP alone: shard `index` of `count`.
  static ParameterLayout fsdp_only(int64_t index, int64_t count, Device device = Device::cpu(),
                                   DType compute_dtype = DType::F32);
};

// How a model's parallelization plan treats one parameter (torchtitan's parallelize plans).
struct ParameterPlan {
  // Tensor parallel: Shard(0) for a column-parallel weight [out, in] and a vocab-parallel
  // embedding, Shard(1) for a row-parallel one; none (Replicate) for norms.
  std::optional<int> tp_shard_dim;
  int64_t tp_replicas = 1;  // tp ranks holding the same part (GQA: tp / kv heads)
  // An experts' weight [E, ...] under expert parallelism: ep splits dim 0, and the FSDP of
  // experts (efsdp) stores the piece split instead of fsdp. It takes a tensor-parallel split
  // only when tp_shard_dim is given (expert tensor parallelism); else the tp ranks are among
  // ep's, as torchtitan places experts without expert tensor parallelism.
  bool expert = false;
  int fsdp_dim = 0;         // the dim FSDP splits (FSDP2: 0)
};

// The placement `plan` gives on `layout`: tp (experts: ep) as Compute, then fsdp (experts:
// efsdp) Shard(fsdp_dim) as Storage, then dp_replicate Replicate; dims of size 1 left out.
Placement place_parameter(const ParameterLayout& layout, const ParameterPlan& plan);

// A model's plan, by fully qualified parameter name.
using ParallelPlan = std::function<ParameterPlan(const std::string& name)>;

// Gives each parameter its placement: the model's plan applied to this rank's layout.
// Default: one rank, every parameter whole on the CPU in f32.
class Placer {
 public:
  Placer() = default;
  Placer(ParameterLayout layout, ParallelPlan plan)
      : layout_(std::move(layout)), plan_(std::move(plan)) {}
  Placement operator()(const std::string& name) const;
  const ParameterLayout& layout() const { return layout_; }
  // The same placements for modules that take no part in tensor parallelism's exchanges:
  // they compute on the rows they are given with replicated weights (a mixture of experts'
  // shared experts), so their tp_group() is one rank.
  Placer without_tensor_parallel() const {
    Placer placer = *this;
    placer.layout_.tensor_parallel = nullptr;
    return placer;
  }
  const TensorParallel& tp_group() const { return layout_.tp_group(); }
  const ContextParallel& cp_group() const { return layout_.cp_group(); }

 private:
  ParameterLayout layout_;
  ParallelPlan plan_;  // none: every parameter replicated on tp
};

}  // namespace titan::nn
