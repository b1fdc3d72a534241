// Device-independent parts of ops/elementwise.h: the argument checks both backends make.
#include "titan/ops/elementwise.h"

namespace titan::ops {

void check_elementwise_output(const Tensor& y, FloatDTypes accepted, const char* op) {
  check_float_dtype(y, accepted, op, "y");
}

void check_elementwise_input(const Tensor& x, const Tensor& y, FloatDTypes accepted,
                             const char* op, const char* arg) {
  check_float_dtype(x, accepted, op, arg);
  // The dispatch looked at the output's device only.
  TITAN_CHECK(x.device() == y.device())
      << op << ": " << arg << " is on " << x.device() << ", the output on " << y.device();
  TITAN_CHECK(x.numel() == y.numel()) << op << ": " << arg << " has shape "
                                      << shape_string(x.shape()) << ", output "
                                      << shape_string(y.shape());
}

}  // namespace titan::ops
