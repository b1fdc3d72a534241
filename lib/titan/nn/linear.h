// Modules: the layers of a transformer as explicit forward and split backward (docs/design.md,
// "Execution model"). A module owns its Parameters and knows nothing of meshes beyond the
// Placer it is given, which places each parameter it makes (nn/placement.h); what its
// forward keeps for the backward lives in a record the caller owns, one per microbatch.
//
// Linear: y = x W^T, W [out, in] named "<prefix>.weight". Its record is its input x, which
// the caller already keeps, so Linear has no record type of its own.
//
// Float8 (nn/float8.h): a linear the placer's Float8Training converts casts its GEMMs'
// operands (on a GPU with fp8 tensor cores, unless emulating, it multiplies fp8 bytes). The
// caller prepares what needs the other ranks once per GEMM, before any row block runs: the
// weight as the GEMM reads it (forward_weight, grad_input_weight) and the activation's scales
// (input_scales, grad_output_scales, from the caller's piece before a gather); forward and
// backward_input then take row blocks. An unconverted linear gives its weight and empty
// scales, so callers are written once.
#pragma once

#include <optional>
#include <string>

#include "titan/nn/float8.h"
#include "titan/nn/parameter.h"
#include "titan/ops/dispatch.h"

namespace titan::nn {

class Linear {
 public:
  Linear(const std::string& prefix, int64_t in_features, int64_t out_features, InitRule init,
         const Placer& placer = {});

  Parameter& weight() { return weight_; }
  const Parameter& weight() const { return weight_; }
  int64_t in_features() const { return weight_.global_shape()[1]; }
  int64_t out_features() const { return weight_.global_shape()[0]; }
  bool float8() const { return float8_.has_value(); }

  GemmOperand forward_weight() const;
  GemmOperand grad_input_weight() const;
  Float8Scales input_scales(const Tensor& x_piece) const;
  Float8Scales grad_output_scales(const Tensor& dy_piece) const;

  // [n, in] -> [n, out]: rows of the input with their scales (Float8Scales::rows).
  void forward(const Tensor& x, const Float8Scales& x_scales, const GemmOperand& weight,
               Tensor& y) const;
  void backward_input(const Tensor& dy, const Float8Scales& dy_scales, const GemmOperand& weight,
                      Tensor& dx, ops::Accumulate accumulate) const;
  // weight.grad += dy^T x over all rows of the microbatch (a converted linear's casts may
  // reduce over the cp and tp ranks: every rank calls it).
  void backward_weight(const Tensor& dy, const Tensor& x);

  // Without Float8 or row blocks: the whole GEMM.
  void forward(const Tensor& x, Tensor& y) const;
  void backward_input(const Tensor& dy, Tensor& dx, ops::Accumulate accumulate) const;

 private:
  Parameter weight_;
  std::optional<Float8Linear> float8_;
};

// RMSNorm with a learned scale "<prefix>.weight" [D], initialized to ones.
class RmsNorm {
 public:
  RmsNorm(const std::string& prefix, int64_t dim, double eps, const Placer& placer = {});
  Parameter& weight() { return weight_; }

  void forward(const Tensor& x, Tensor& y, Tensor& rstd) const;          // rstd [N] is the record
  void backward_input(const Tensor& dy, const Tensor& x, const Tensor& rstd, Tensor& dx,
                      ops::Accumulate accumulate) const;
  void backward_weight(const Tensor& dy, const Tensor& x, const Tensor& rstd);

 private:
  Parameter weight_;
  float eps_;
};

}  // namespace titan::nn
