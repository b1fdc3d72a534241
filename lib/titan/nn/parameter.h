// Parameter: a trainable tensor with a fully qualified name in torchtitan's spelling
// ("layers.3.attention.wq.weight"), its global shape, how it is initialized, and this
// rank's piece of it (its local box, nn/placement.h) with the matching gradient.
//
// Initialization is a pure function of (seed, name, global element index) through Philox
// (core/philox.h), so a rank fills its box without seeing the rest and the model is the
// same on every mesh (docs/design.md, "Placements").
//
// Two views of a parameter:
//   shard(), shard_grad()   this rank's box (placement_box): the fp32 master weights and
//                           their gradient, which the optimizer, the grad norm and
//                           checkpoints work on;
//   value(), grad()         the piece the modules compute with (compute_box: the whole
//                           tensor, or its tensor-parallel piece).
// Unsharded (no FSDP split) they are the same tensors. Sharded (FSDP), value() and grad()
// exist only while whoever gathers the parameter (distributed/fsdp.h) has bound them.
//
// Mixed precision (training.mixed_precision_param): value() is in the placement's compute
// dtype, shard() and every gradient stay f32. Unsharded with a compute dtype other than f32,
// value() is a separate copy (memory tag "parameters.compute"), filled from shard() by
// update_compute_copy() (initialize() does it; whoever changes shard() afterwards, the
// optimizer step or a checkpoint load, calls it again). grad() stays the f32 shard gradient:
// weight gradients accumulate in f32 from compute-dtype activations. Sharded, the gatherer
// casts the shards as it gathers them.
//
// Device: a parameter lives on its placement's device (the training device), shard, gradient
// and bound whole tensors alike. Modules allocate their activations on the device of their
// input, so a model built with Placement::device = cuda:0 computes there from end to end.
#pragma once

#include <cstdint>
#include <string>

#include "titan/core/tensor.h"
#include "titan/nn/placement.h"

namespace titan::nn {

enum class InitKind { Ones, Normal, TruncatedNormal };

// torchtitan's init_weights rules: normal(0, std), or trunc_normal_(0, std, -cutoff, cutoff)
// (absolute cut points, as torch's a and b), or ones for norm weights.
struct InitRule {
  InitKind kind = InitKind::Ones;
  double std = 0.0;
  double cutoff = 0.0;
};

class Parameter {
 public:
  // Allocates the local box (zeros) and its gradient on placement.device; nothing of the
  // size of the whole.
  Parameter(std::string name, Shape global_shape, InitRule init, Placement placement = {});

  const std::string& name() const { return name_; }
  const Shape& global_shape() const { return global_shape_; }
  const InitRule& init_rule() const { return init_; }
  const Placement& placement() const { return placement_; }
  Device device() const { return placement_.device; }
  DType compute_dtype() const { return placement_.compute_dtype; }
  Box local_box() const { return placement_box(global_shape_, placement_); }
  // The shape of value() and grad(): the compute piece (compute_box) of the global shape.
  const Shape& value_shape() const { return value_shape_; }

  Tensor& shard() { return shard_; }
  const Tensor& shard() const { return shard_; }
  Tensor& shard_grad() { return shard_grad_; }
  const Tensor& shard_grad() const { return shard_grad_; }

  // The compute piece; a sharded parameter must be gathered (bound) first.
  const Tensor& value() const;
  Tensor& value();
  const Tensor& grad() const;
  Tensor& grad();
  bool has_value() const { return value_.defined(); }
  bool has_grad() const { return grad_.defined(); }

  // For the gatherer of a sharded parameter: the compute piece and its gradient (either may be
  // undefined: a backward that needs no weights binds only the gradient), then release.
  void bind_full(Tensor value, Tensor grad);
  void release_full();
  // The weight of a linear converted to Float8 (nn/float8.h): what FSDP's float8 all-gather
  // sends in e4m3.
  bool float8() const { return float8_; }
  void set_float8(bool converted) { float8_ = converted; }
  // The gatherer's mark that the bound value() is already a tensorwise e4m3 round trip of the
  // whole (FSDP's float8 all-gather, nn/float8.h); release_full clears it.
  bool float8_precast() const { return float8_precast_; }
  void set_float8_precast(bool precast) { float8_precast_ = precast; }

  // Fills the local box from Philox stream philox_stream_key(name) under `seed` (on the
  // host; a device parameter gets the values copied over), and the compute copy from it.
  void initialize(uint64_t seed);
  // value() = shard() cast to the compute dtype, when value() is a copy of its own
  // (unsharded, compute dtype not f32); nothing otherwise.
  void update_compute_copy();
  void zero_grad() { shard_grad_.zero_(); }

 private:
  std::string name_;
  Shape global_shape_;
  Shape value_shape_;
  InitRule init_;
  Placement placement_;
  Tensor shard_, shard_grad_;
  Tensor value_, grad_;
  bool float8_ = false;
  bool float8_precast_ = false;
};

}  // namespace titan::nn
