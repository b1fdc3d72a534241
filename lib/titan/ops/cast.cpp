// Device-independent parts of ops/cast.h: the argument checks both backends make.
#include "titan/ops/cast.h"

namespace titan::ops {

void check_cast(const Tensor& src, const Tensor& dst) {
  TITAN_CHECK(src.defined()) << "cast: src is undefined";
  check_shape(dst, src.shape(), "cast", "dst");
  TITAN_CHECK(dst.device() == src.device())
      << "cast: src is on " << src.device() << ", dst on " << dst.device();
  TITAN_CHECK(dtype_is_float(src.dtype()) && dtype_is_float(dst.dtype()))
      << "cast: casts between float dtypes only, got " << dtype_name(src.dtype()) << " -> "
      << dtype_name(dst.dtype());
}

}  // namespace titan::ops
