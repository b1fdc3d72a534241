// Device-independent parts of ops/embedding.h: the argument checks both backends make.
#include "titan/ops/embedding.h"

namespace titan::ops {
namespace {

void check_ids(const Tensor& ids, const char* op) {
  TITAN_CHECK(ids.defined()) << op << ": ids is undefined";
  TITAN_CHECK(ids.dtype() == DType::I32 || ids.dtype() == DType::I64)
      << op << ": ids must be i32 or i64, got " << dtype_name(ids.dtype());
  TITAN_CHECK(ids.dim() == 1) << op << ": ids must be [N], got " << shape_string(ids.shape());
}

}  // namespace

void check_embedding_forward(const Tensor& ids, const Tensor& table, const Tensor& out,
                             FloatDTypes accepted) {
  const char* op = "embedding_forward";
  check_float_dtype(table, accepted, op, "table");
  TITAN_CHECK(table.dim() == 2) << op << ": table must be [V, D], got "
                                << shape_string(table.shape());
  check_ids(ids, op);
  check_shape(out, {ids.numel(), table.size(1)}, op, "out");
  check_dtype(out, table.dtype(), op, "out");
}

void check_embedding_backward_weight(const Tensor& ids, const Tensor& dout,
                                     const Tensor& dtable, FloatDTypes accepted) {
  const char* op = "embedding_backward_weight";
  check_float_dtype(dtable, accepted, op, "dtable");
  TITAN_CHECK(dtable.dim() == 2) << op << ": dtable must be [V, D], got "
                                 << shape_string(dtable.shape());
  check_ids(ids, op);
  check_float_dtype(dout, accepted, op, "dout");
  check_shape(dout, {ids.numel(), dtable.size(1)}, op, "dout");
}

}  // namespace titan::ops
