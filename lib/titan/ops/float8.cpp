// Device-independent parts of ops/float8.h: the scale rule and the argument checks.
#include "titan/ops/float8.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "titan/ops/checks.h"

namespace titan::ops {

const char* float8_axis_name(Float8Axis axis) {
  switch (axis) {
    case Float8Axis::Tensor: return "tensor";
    case Float8Axis::Rows: return "rows";
    case Float8Axis::Columns: return "columns";
  }
  return "?";
}

float float8_max(DType format) {
  switch (format) {
    case DType::F8E4M3: return 448.0f;
    case DType::F8E5M2: return 57344.0f;
    default: TITAN_FAIL() << "float8: " << dtype_name(format) << " is not a float8 format";
  }
}

float float8_scale(float amax, DType format, bool power_of_two) {
  constexpr double kMinAmax = 1e-12;  // an all-zero group still gets a finite scale
  float scale = float(double(float8_max(format)) / std::max(double(amax), kMinAmax));
  if (power_of_two) {  // round down: keep sign and exponent, clear the mantissa
    uint32_t bits;
    std::memcpy(&bits, &scale, sizeof bits);
    bits &= 0xff800000u;
    std::memcpy(&scale, &bits, sizeof bits);
  }
  return scale;
}

int64_t float8_scale_count(const Tensor& x, Float8Axis axis) {
  const int64_t cols = x.dim() == 0 ? 1 : x.size(x.dim() - 1);
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  switch (axis) {
    case Float8Axis::Tensor: return 1;
    case Float8Axis::Rows: return rows;
    case Float8Axis::Columns: return cols;
  }
  return 0;
}

void check_float8_amax(const Tensor& x, Float8Axis axis, const Tensor& amax) {
  TITAN_CHECK(x.defined() && x.dim() >= 1) << "float8_amax: x must have a dim";
  check_shape(amax, {float8_scale_count(x, axis)}, "float8_amax", "amax");
  TITAN_CHECK(amax.dtype() == DType::F32 && amax.device() == x.device())
      << "float8_amax: amax must be f32 on " << x.device();
}

void check_float8_cast(const Tensor& x, const Tensor& scale, Float8Axis axis, const Tensor& out) {
  TITAN_CHECK(x.defined() && x.dim() >= 1) << "float8 cast: x must have a dim";
  check_shape(out, x.shape(), "float8 cast", "out");
  check_shape(scale, {float8_scale_count(x, axis)}, "float8 cast", "scale");
  TITAN_CHECK(scale.dtype() == DType::F32) << "float8 cast: scale must be f32";
  TITAN_CHECK(scale.device() == x.device() && out.device() == x.device())
      << "float8 cast: x, scale and out must share a device";
}

}  // namespace titan::ops
