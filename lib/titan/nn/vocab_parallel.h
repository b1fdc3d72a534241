// The vocabulary-parallel embedding and loss of tensor parallelism (Megatron's
// VocabParallelEmbedding and vocab-parallel cross-entropy; docs/parallelism.md): each tp
// rank holds the rows [slice.first, slice.first + V_s) of the [V, D] embedding table and
// of the output weight. With one rank these are the plain ops.
//
// Embedding: each rank looks up the tokens its rows hold (zero rows for the others) for
// all N token rows, and reduce_rows sums the pieces into the rank's rows of x0 [n, D].
// Its backward gathers dx0's rows and adds into the rows of the table the rank holds.
//
// Loss (the output projection fused with the cross-entropy, chunked as ops/cross_entropy.h):
//   loss parallel (the default)   each rank makes the logits of its vocabulary slice for
//       all N rows, chunk by chunk, and keeps per row the slice's max, sum of exponentials
//       and the label's logit; the ranks combine those [N] vectors (an all-reduce max, one
//       sum of 2N values) into the lse and the loss. No rank ever holds [N, V] logits.
//   parallelism.disable_loss_parallel   the [N, V / tp] logits are gathered whole on every
//       rank and the plain loss runs on them (torchtitan's layout without loss parallel).
// Backward, from the combined lse: each rank's slice of dlogits gives its dweight rows and a
// partial dh over all N rows, which reduce_rows sums into the rank's rows.
// h (the final norm's output) is the rank's rows [n, D]; the loss is gathered over them.
#pragma once

#include "titan/nn/tensor_parallel.h"
#include "titan/ops/cross_entropy.h"

namespace titan::nn {

// ids [N] (the whole microbatch's); x0 [local_rows(N), D] (=).
void vocab_parallel_embedding_forward(const TensorParallel& tp, const Tensor& ids,
                                      const Tensor& table, ops::VocabSlice slice, Tensor& x0);
// dtable += from dx0 [local_rows(N), D].
void vocab_parallel_embedding_backward(const TensorParallel& tp, const Tensor& ids,
                                       const Tensor& dx0, ops::VocabSlice slice, Tensor& dtable);

// The logits [N, V] of all N rows h [N, D] over the whole vocabulary, gathered from the
// slices (generation, tests, and the loss without loss parallel).
Tensor vocab_parallel_logits(const TensorParallel& tp, const Tensor& h, const Tensor& weight,
                             ops::VocabSlice slice);

// What the loss keeps for its backward.
struct VocabParallelLossRecord {
  Tensor h;    // all N rows of the final norm's output (h itself on one rank or without SP)
  bool h_gathered = false;  // h is a gathered copy (sequence parallel), not the input
  Tensor lse;  // [N], over the whole vocabulary
  int64_t bytes() const;
};

// Sum over valid tokens of the token losses (the same on every tp rank); fills the record.
// labels [N] on h's device.
double vocab_parallel_loss_forward(const TensorParallel& tp, const Tensor& h,
                                   const Tensor& weight, ops::VocabSlice slice,
                                   const Tensor& labels, VocabParallelLossRecord& record);
// Gradients of grad_scale x the loss: dh [local_rows(N), D] (=) and dweight (+=) of the
// slice's rows; a null one is skipped.
void vocab_parallel_loss_backward(const TensorParallel& tp, const VocabParallelLossRecord& record,
                                  const Tensor& weight, ops::VocabSlice slice,
                                  const Tensor& labels, float grad_scale, Tensor* dh,
                                  Tensor* dweight);

// Forward then backward at once, for a caller that knows grad_scale before the forward
// (a training step): the loss sum, as the forward returns it, and the backward's dh and
// dweight (both required). Without tensor parallelism one logits GEMM per chunk serves
// both halves (ops::cross_entropy_forward_backward); over tp ranks the loss needs the
// whole vocabulary's lse before any dlogits, so it is the forward then the backward.
double vocab_parallel_loss_forward_backward(const TensorParallel& tp, const Tensor& h,
                                            const Tensor& weight, ops::VocabSlice slice,
                                            const Tensor& labels, float grad_scale, Tensor& dh,
                                            Tensor& dweight);

}  // namespace titan::nn
