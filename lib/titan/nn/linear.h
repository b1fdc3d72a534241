// Modules: the layers of a transformer as explicit forward and split backward (docs/design.md,
// "Execution model"). A module owns its Parameters and knows nothing of meshes beyond the
// Placer it is given, which places each parameter it makes (nn/placement.h); what its
// forward keeps for the backward lives in a record the caller owns, one per microbatch.
//
// Linear: y = x W^T, W [out, in] named "<prefix>.weight". Its record is its input x, which
// the caller already keeps, so Linear has no record type of its own.
#pragma once

#include <string>

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

  void forward(const Tensor& x, Tensor& y) const;                        // [N, in] -> [N, out]
  void backward_input(const Tensor& dy, Tensor& dx, ops::Accumulate accumulate) const;
  void backward_weight(const Tensor& dy, const Tensor& x);               // weight.grad +=

 private:
  Parameter weight_;
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
