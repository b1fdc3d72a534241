#include "titan/nn/linear.h"

#include "titan/ops/matmul.h"
#include "titan/ops/rmsnorm.h"

namespace titan::nn {

Linear::Linear(const std::string& prefix, int64_t in_features, int64_t out_features, InitRule init,
               const Placer& placer)
    : weight_(prefix + ".weight", {out_features, in_features}, init,
              placer(prefix + ".weight")) {}

void Linear::forward(const Tensor& x, Tensor& y) const { ops::linear_forward(x, weight_.value(), y); }

void Linear::backward_input(const Tensor& dy, Tensor& dx, ops::Accumulate accumulate) const {
  ops::linear_backward_input(dy, weight_.value(), dx, accumulate);
}

void Linear::backward_weight(const Tensor& dy, const Tensor& x) {
  ops::linear_backward_weight(dy, x, weight_.grad());
}

RmsNorm::RmsNorm(const std::string& prefix, int64_t dim, double eps, const Placer& placer)
    : weight_(prefix + ".weight", {dim}, InitRule{InitKind::Ones}, placer(prefix + ".weight")),
      eps_(float(eps)) {}

void RmsNorm::forward(const Tensor& x, Tensor& y, Tensor& rstd) const {
  ops::rmsnorm_forward(x, weight_.value(), eps_, y, rstd);
}

void RmsNorm::backward_input(const Tensor& dy, const Tensor& x, const Tensor& rstd, Tensor& dx,
                             ops::Accumulate accumulate) const {
  ops::rmsnorm_backward_input(dy, x, weight_.value(), rstd, dx, accumulate);
}

void RmsNorm::backward_weight(const Tensor& dy, const Tensor& x, const Tensor& rstd) {
  ops::rmsnorm_backward_weight(dy, x, rstd, weight_.grad());
}

}  // namespace titan::nn
