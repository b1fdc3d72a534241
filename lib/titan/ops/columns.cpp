// Device-independent parts of ops/columns.h: the argument checks.
#include "titan/ops/columns.h"

namespace titan::ops {
namespace {

int64_t columns(const Tensor& t) { return t.dim() == 0 ? 1 : t.size(t.dim() - 1); }
int64_t rows(const Tensor& t) { return t.numel() / std::max<int64_t>(columns(t), 1); }

}  // namespace

void check_copy_columns(const Tensor& src, int64_t src_col, const Tensor& dst, int64_t dst_col,
                        int64_t width, FloatDTypes accepted) {
  check_float_dtype(src, accepted, "copy_columns", "src");
  check_float_dtype(dst, accepted, "copy_columns", "dst");
  TITAN_CHECK(src.dtype() == dst.dtype() && src.device() == dst.device())
      << "copy_columns: src and dst differ in dtype or device";
  TITAN_CHECK(rows(src) == rows(dst))
      << "copy_columns: " << rows(src) << " source rows for " << rows(dst) << " destination rows";
  TITAN_CHECK(width >= 0 && src_col >= 0 && dst_col >= 0 && src_col + width <= columns(src) &&
              dst_col + width <= columns(dst))
      << "copy_columns: columns [" << src_col << ", " << src_col + width << ") of "
      << shape_string(src.shape()) << " to [" << dst_col << ", " << dst_col + width << ") of "
      << shape_string(dst.shape());
}

void check_broadcast_columns(const Tensor& src, const Tensor& dst, int64_t dst_col,
                             FloatDTypes accepted, const char* op) {
  check_float_dtype(src, accepted, op, "src");
  check_float_dtype(dst, accepted, op, "dst");
  TITAN_CHECK(src.dtype() == dst.dtype() && src.device() == dst.device())
      << op << ": src and dst differ in dtype or device";
  const int64_t r = rows(src);
  TITAN_CHECK(r > 0 && rows(dst) % r == 0)
      << op << ": " << rows(dst) << " grouped rows are no multiple of " << r << " rows";
  TITAN_CHECK(dst_col >= 0 && dst_col + columns(src) <= columns(dst))
      << op << ": columns [" << dst_col << ", " << dst_col + columns(src) << ") of "
      << shape_string(dst.shape());
}

}  // namespace titan::ops
