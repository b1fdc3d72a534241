// Parameter: a trainable tensor with a fully qualified name in torchtitan's spelling
// ("layers.3.attention.wq.weight"), its global shape, how it is initialized, and this
// rank's piece of it (its local box) with the matching gradient.
//
// Initialization is a pure function of (seed, name, global element index) through Philox
// (core/philox.h), so a rank fills its box without seeing the rest and the model is the
// same on every mesh (DESIGN.md, "Tensors and placements"). Until placements land with
// the mesh, every rank holds the whole tensor: local_box() is the global shape.
#pragma once

#include <cstdint>
#include <string>

#include "titan/core/tensor.h"

namespace titan::nn {

enum class InitKind { Ones, Normal, TruncatedNormal };

// torchtitan's init_weights rules: normal(0, std), or trunc_normal_(0, std, -cutoff, cutoff)
// (absolute cut points, as torch's a and b), or ones for norm weights.
struct InitRule {
  InitKind kind = InitKind::Ones;
  double std = 0.0;
  double cutoff = 0.0;
};

// This rank's piece of a global tensor: offset and extent per dim.
struct Box {
  Shape offset;
  Shape extent;
};

class Parameter {
 public:
  Parameter(std::string name, Shape global_shape, InitRule init);

  const std::string& name() const { return name_; }
  const Shape& global_shape() const { return global_shape_; }
  const InitRule& init_rule() const { return init_; }
  Box local_box() const;

  const Tensor& value() const { return value_; }
  Tensor& value() { return value_; }
  const Tensor& grad() const { return grad_; }
  Tensor& grad() { return grad_; }

  // Fills the local box from Philox stream philox_stream_key(name) under `seed`.
  void initialize(uint64_t seed);
  void zero_grad() { grad_.zero_(); }

 private:
  std::string name_;
  Shape global_shape_;
  InitRule init_;
  Tensor value_;
  Tensor grad_;
};

}  // namespace titan::nn
