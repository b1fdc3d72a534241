// Token embedding: a row lookup.
//   forward:          out[n, :] = table[ids[n], :]
//   backward_weight:  dtable[ids[n], :] += dout[n, :]   (always +=; no input gradient)
// Shapes: ids [N] (i32 or i64, each in [0, V)); table, dtable [V, D]; out, dout [N, D].
// Ids out of range are a bug here: the data loader rejects such tokens first.
// Both backends take table and out both f32 or both bf16, dout f32 or bf16, dtable f32 or
// bf16 (f32 keeps long accumulations exact to f32), ids on the same device. The CPU
// checks every id (throwing on one out of range). The GPU cannot check ids on
// the host without copying them back and waiting, so it never reads or writes outside the
// table instead: an out-of-range id gives a row of NaN in out (the loss then shows it)
// and adds nothing to dtable. Its backward is deterministic without atomics: each table
// row is summed by one thread block, token by token in order, as the CPU sums it.
//
// embedding_slice_* is the lookup in a slice of the table (the vocab-parallel embedding of
// tensor parallelism): table [V_s, D] holds the rows [first_id, first_id + V_s); an id
// outside them gives a zero row in out and adds nothing to dtable. Summed over the slices,
// out is the whole table's lookup. CPU only so far.
#pragma once

#include "titan/ops/checks.h"
#include "titan/ops/dispatch.h"

namespace titan::ops {

// The checks both backends make first (ops/embedding.cpp): ids [N] i32 or i64, the table
// and the gradients in the backend's float dtypes, out of the table's dtype, shapes as
// above. The ids' values are each backend's: the CPU rejects one out of range.
void check_embedding_forward(const Tensor& ids, const Tensor& table, const Tensor& out,
                             FloatDTypes accepted);
void check_embedding_backward_weight(const Tensor& ids, const Tensor& dout,
                                     const Tensor& dtable, FloatDTypes accepted);

namespace cpu {
void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out);
void embedding_backward_weight(const Tensor& ids, const Tensor& dout, Tensor& dtable);
void embedding_slice_forward(const Tensor& ids, const Tensor& table, int64_t first_id,
                             Tensor& out);
void embedding_slice_backward_weight(const Tensor& ids, const Tensor& dout, int64_t first_id,
                                     Tensor& dtable);
}  // namespace cpu
#if TITAN_HAVE_CUDA
namespace cuda {
void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out);
void embedding_backward_weight(const Tensor& ids, const Tensor& dout, Tensor& dtable);
}  // namespace cuda
#endif

inline void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& out) {
  TITAN_DISPATCH_CPU_CUDA(table, embedding_forward, ids, table, out);
}
inline void embedding_backward_weight(const Tensor& ids, const Tensor& dout, Tensor& dtable) {
  TITAN_DISPATCH_CPU_CUDA(dtable, embedding_backward_weight, ids, dout, dtable);
}

inline void embedding_slice_forward(const Tensor& ids, const Tensor& table, int64_t first_id,
                                    Tensor& out) {
  TITAN_DISPATCH_CPU(table, embedding_slice_forward, ids, table, first_id, out);
}
inline void embedding_slice_backward_weight(const Tensor& ids, const Tensor& dout,
                                            int64_t first_id, Tensor& dtable) {
  TITAN_DISPATCH_CPU(dtable, embedding_slice_backward_weight, ids, dout, first_id, dtable);
}

}  // namespace titan::ops
