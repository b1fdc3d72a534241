// Tensor parallelism as the modules see it: the two ways activations cross the ranks of a
// tp group (Megatron's mappings), with the compute that uses them handed in, so that an
// implementation may overlap the two (docs/parallelism.md, "Tensor parallelism").
//
// Activations are row tensors [N, ...] of the N = B x T tokens of a microbatch. Inside a
// tensor-parallel region (between a column-parallel linear and the row-parallel one that
// ends it) every rank computes on all N rows with its slice of the heads or of the hidden
// dim. Outside it the residual stream is, per rank:
//   sequence parallel on    this rank's n = N / tp rows, rank r holding rows [r n, r n + n)
//                           (the token rows in order: the sequence when B = 1)
//   sequence parallel off   all N rows, the same on every rank
//
//   gather_rows(x, full, use)    enter a region. On: all-gather the rows; off: full = x.
//                                use(rows, first) runs on the rows [first, first + k) of
//                                full as they become available (the whole at once, or one
//                                rank's block at a time when asynchronous).
//   reduce_rows(y, N, partial)   leave it: each rank's partial sums over all N rows, added
//                                over the group. On: y gets this rank's rows
//                                (reduce-scatter); off: y gets all of them (all-reduce).
//                                partial(first, k, out) writes the rows [first, first + k)
//                                of this rank's partial sums into out [k, ...].
// Each is the other's backward: the gradient of gather_rows is reduce_rows and the
// gradient of reduce_rows is gather_rows (Megatron's f/g and g-bar/f-bar pairs, the same
// pairs with sequence parallelism off). One rank: gather_rows is use(x, 0) and reduce_rows
// is partial(0, N, y).
//
// Implementations: the one-rank one here (no_tensor_parallel()) and the mesh's tp group
// (distributed/tensor_parallel.h), synchronous or asynchronous (the ring decomposition
// that overlaps each block's transfer with the previous block's GEMMs).
#pragma once

#include <cstdint>
#include <functional>

#include "titan/core/tensor.h"
#include "titan/ops/dispatch.h"

namespace titan::nn {

// use(rows, first): compute with rows [first, first + rows.size(0)) of a gathered tensor.
using UseRows = std::function<void(const Tensor& rows, int64_t first)>;
// partial(first, count, out): this rank's partial sums of rows [first, first + count) into
// out (=).
using PartialRows = std::function<void(int64_t first, int64_t count, Tensor& out)>;

enum class RowReduce { Sum, Max };

class TensorParallel {
 public:
  virtual ~TensorParallel() = default;

  virtual int64_t size() const = 0;
  virtual int64_t rank() const = 0;
  // parallelism.enable_sequence_parallel (with tp > 1).
  virtual bool sequence_parallel() const = 0;
  // Not parallelism.disable_loss_parallel: the loss reads vocab-sharded logits.
  virtual bool loss_parallel() const = 0;

  // Rows of the residual stream on this rank for `rows` token rows.
  int64_t local_rows(int64_t rows) const { return sequence_parallel() ? rows / size() : rows; }

  // See the top. full is set to the [N, ...] rows: x itself when nothing is gathered, else a
  // new tensor on x's device.
  virtual void gather_rows(const Tensor& x, Tensor& full, const UseRows& use) const = 0;
  // rows: N. y: [local_rows(N), ...].
  virtual void reduce_rows(Tensor& y, int64_t rows, const PartialRows& partial) const = 0;

  // data <- sum (or max) of data over the group, in place (loss statistics).
  virtual void all_reduce(Tensor& data, RowReduce op) const = 0;
  // [rows, cols] pieces, rank r's the columns [r cols, r cols + cols): whole [rows, tp cols].
  virtual void gather_columns(const Tensor& piece, Tensor& whole) const = 0;
};

// tp = 1: every call computes locally.
const TensorParallel& no_tensor_parallel();

// reduce_rows into y with = or += (a residual-stream gradient); += reduces into a temporary.
void reduce_rows_into(const TensorParallel& tp, Tensor& y, int64_t rows,
                      ops::Accumulate accumulate, const PartialRows& partial);

}  // namespace titan::nn
