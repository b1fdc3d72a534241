#include "titan/nn/linear.h"

#include "titan/ops/matmul.h"
#include "titan/ops/rmsnorm.h"

namespace titan::nn {

namespace {

TensorParallelRole role_of(const Parameter& w) {
  if (w.value_shape()[0] < w.global_shape()[0]) return TensorParallelRole::Column;
  if (w.value_shape()[1] < w.global_shape()[1]) return TensorParallelRole::Row;
  return TensorParallelRole::Replicated;
}

}  // namespace

Linear::Linear(const std::string& prefix, int64_t in_features, int64_t out_features, InitRule init,
               const Placer& placer)
    : weight_(prefix + ".weight", {out_features, in_features}, init,
              placer(prefix + ".weight")) {
  const Float8Training* f8 = placer.layout().float8;
  if (f8 != nullptr && f8->converts(prefix, out_features, in_features)) {
    const bool tensor_cores = weight_.device().is_cuda() && !f8->emulate;
    float8_.emplace(f8->recipe, role_of(weight_), placer.tp_group(), placer.cp_group(),
                    tensor_cores);
    weight_.set_float8(true);
  }
}

GemmOperand Linear::forward_weight() const {
  const Tensor& w = weight_.value();
  return float8_ ? float8_->forward_weight(w, weight_.float8_precast()) : GemmOperand{w, {}, {}};
}

GemmOperand Linear::grad_input_weight() const {
  const Tensor& w = weight_.value();
  return float8_ ? float8_->grad_input_weight(w, weight_.float8_precast())
                 : GemmOperand{w, {}, {}};
}

Float8Scales Linear::input_scales(const Tensor& x_piece) const {
  return float8_ ? float8_->input_scales(x_piece) : Float8Scales{};
}

Float8Scales Linear::grad_output_scales(const Tensor& dy_piece) const {
  return float8_ ? float8_->grad_output_scales(dy_piece) : Float8Scales{};
}

void Linear::forward(const Tensor& x, const Float8Scales& x_scales, const GemmOperand& weight,
                     Tensor& y) const {
  gemm_forward(float8_ ? float8_->cast_input(x, x_scales) : GemmOperand{x, {}, {}}, weight, y);
}

void Linear::backward_input(const Tensor& dy, const Float8Scales& dy_scales,
                            const GemmOperand& weight, Tensor& dx,
                            ops::Accumulate accumulate) const {
  gemm_backward_input(float8_ ? float8_->cast_grad_output(dy, dy_scales) : GemmOperand{dy, {}, {}},
                      weight, dx, accumulate);
}

void Linear::backward_weight(const Tensor& dy, const Tensor& x) {
  if (!float8_) return ops::linear_backward_weight(dy, x, weight_.grad());
  gemm_backward_weight(float8_->grad_weight_output(dy), float8_->grad_weight_input(x),
                       weight_.grad());
}

void Linear::forward(const Tensor& x, Tensor& y) const {
  forward(x, input_scales(x), forward_weight(), y);
}

void Linear::backward_input(const Tensor& dy, Tensor& dx, ops::Accumulate accumulate) const {
  backward_input(dy, grad_output_scales(dy), grad_input_weight(), dx, accumulate);
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
