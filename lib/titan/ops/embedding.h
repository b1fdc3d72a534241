// Token embedding: a row lookup.
//   forward:          out[n, :] = table[ids[n], :]
//   backward_weight:  dtable[ids[n], :] += dout[n, :]   (always +=; no input gradient)
// Shapes: ids [N] (i32 or i64, each in [0, V)); table, dtable [V, D]; out, dout [N, D].
// Ids out of range are a bug here: the data loader rejects such tokens first.
#pragma once

#include "titan/ops/dispatch.h"

namespace titan::ops {
namespace cpu {
void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out);
void embedding_backward_weight(const Tensor& ids, const Tensor& dout, Tensor& dtable);
}  // namespace cpu

inline void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out) {
  TITAN_DISPATCH_CPU(table, embedding_forward, ids, table, out);
}
inline void embedding_backward_weight(const Tensor& ids, const Tensor& dout, Tensor& dtable) {
  TITAN_DISPATCH_CPU(dtable, embedding_backward_weight, ids, dout, dtable);
}

}  // namespace titan::ops
