// Device-independent parts of ops/rmsnorm.h: the argument checks both backends make.
#include "titan/ops/rmsnorm.h"

namespace titan::ops {
namespace {

// x [N, D] in an accepted dtype, weight [D] of x's dtype.
void check_rows(const Tensor& x, const Tensor& weight, FloatDTypes accepted, const char* op) {
  check_float_dtype(x, accepted, op, "x");
  TITAN_CHECK(x.dim() == 2) << op << ": x must be [N, D], got " << shape_string(x.shape());
  check_shape(weight, {x.size(1)}, op, "weight");
  check_dtype(weight, x.dtype(), op, "weight");
}

// rstd [N] f32, whatever the activations' dtype.
void check_rstd(const Tensor& rstd, const Tensor& x, const char* op) {
  check_shape(rstd, {x.size(0)}, op, "rstd");
  check_dtype(rstd, DType::F32, op, "rstd");
}

}  // namespace

void check_rmsnorm_forward(const Tensor& x, const Tensor& weight, const Tensor& y,
                           const Tensor& rstd, FloatDTypes accepted) {
  const char* op = "rmsnorm_forward";
  check_rows(x, weight, accepted, op);
  check_shape(y, x.shape(), op, "y");
  check_dtype(y, x.dtype(), op, "y");
  check_rstd(rstd, x, op);
}

void check_rmsnorm_backward_input(const Tensor& dy, const Tensor& x, const Tensor& weight,
                                  const Tensor& rstd, const Tensor& dx, FloatDTypes accepted) {
  const char* op = "rmsnorm_backward_input";
  check_rows(x, weight, accepted, op);
  check_shape(dy, x.shape(), op, "dy");
  check_dtype(dy, x.dtype(), op, "dy");
  check_shape(dx, x.shape(), op, "dx");
  check_dtype(dx, x.dtype(), op, "dx");
  check_rstd(rstd, x, op);
}

void check_rmsnorm_backward_weight(const Tensor& dy, const Tensor& x, const Tensor& rstd,
                                   const Tensor& dweight, FloatDTypes accepted) {
  const char* op = "rmsnorm_backward_weight";
  check_float_dtype(x, accepted, op, "x");
  TITAN_CHECK(x.dim() == 2) << op << ": x must be [N, D], got " << shape_string(x.shape());
  check_shape(dy, x.shape(), op, "dy");
  check_dtype(dy, x.dtype(), op, "dy");
  check_rstd(rstd, x, op);
  check_shape(dweight, {x.size(1)}, op, "dweight");
  TITAN_CHECK(dweight.dtype() == DType::F32 || dweight.dtype() == x.dtype())
      << op << ": dweight is " << dtype_name(dweight.dtype()) << ", expected f32"
      << (x.dtype() == DType::F32 ? "" : " or x's bf16");
}

}  // namespace titan::ops
