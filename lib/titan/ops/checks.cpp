// The helpers of ops/checks.h.
#include "titan/ops/checks.h"

namespace titan::ops {

bool accepts(FloatDTypes accepted, DType dtype) {
  return dtype == DType::F32 || (dtype == DType::BF16 && accepted == FloatDTypes::F32OrBF16);
}

const char* float_dtypes_name(FloatDTypes accepted) {
  return accepted == FloatDTypes::F32OrBF16 ? "f32 or bf16" : "f32";
}

void check_float_dtype(const Tensor& t, FloatDTypes accepted, const char* op, const char* arg) {
  TITAN_CHECK(t.defined()) << op << ": " << arg << " is undefined";
  TITAN_CHECK(accepts(accepted, t.dtype())) << op << ": " << arg << " is " << dtype_name(t.dtype())
                                            << ", expected " << float_dtypes_name(accepted);
}

}  // namespace titan::ops
