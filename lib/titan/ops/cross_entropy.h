// Softmax cross-entropy over the vocabulary, fused with the output projection and chunked
// over tokens, so that the [N, V] logits (2 GiB at N = 4096, V = 128,256) never exist: at
// most one chunk of C tokens' logits is in memory, in a workspace the caller allocates.
//
//   logits[n, v] = sum_d h[n, d] * weight[v, d]          (the `output` linear, per chunk)
//   lse[n]       = log sum_v exp(logits[n, v])           (max-shifted)
//   loss_sum     = sum over valid n of lse[n] - logits[n, labels[n]]
//
// A token is valid unless its label is kIgnoreIndex (-100, torchtitan's and torch's
// default): ignored tokens add nothing to the loss and get zero gradients. Like torchtitan
// (reduction "sum"), the op returns the sum; the caller divides by the global count of
// valid tokens, once, by passing grad_scale = 1 / that count to the backward.
//
// Shapes (N tokens, D model dim, V vocab, C tokens per chunk):
//   h [N, D] f32 (final norm output), weight [V, D] f32, labels [N] i32 or i64,
//   loss_sum [1] f32 (accumulated in double), lse [N] f32, kept for the backward,
//   workspace [C, V] f32, C >= 1: one chunk of logits; its row count IS the chunk size.
// Backward (recomputes each chunk's logits with one GEMM, softmax from the kept lse):
//   dlogits = (softmax(logits) - onehot(label)) * grad_scale   (zero rows where ignored)
//   dh       = dlogits * weight      [N, D]   (= or += per Accumulate)
//   dweight += dlogits^T * h         [V, D]   (always +=, so microbatches accumulate)
// backward_input and backward_weight each recompute the logits (two GEMMs per chunk);
// backward does both from one recompute (three GEMMs per chunk).
// forward_backward is forward then backward for a caller that knows grad_scale before the
// forward (a training step): one logits GEMM per chunk serves both, so three GEMMs per
// chunk instead of four. Its loss_sum, lse, dh and dweight are bit for bit those of
// forward then backward (the same GEMMs on the same chunks, the same row arithmetic).
//
// Workspace: the ops never allocate. The caller allocates cross_entropy_workspace_bytes()
// through the counted allocator, as Tensor::empty(cross_entropy_workspace_shape(), F32),
// and passes it last, as every op does. Unlike attention's flat byte workspace, its shape
// is the chunk size: [C, V] with C = min(N, budget / (4 V)), at least 1. C does not depend
// on N once N >= C, so the loss's memory is flat in the batch; tests pass small C. The
// chunk size changes the order of dweight's float sums (the loss and dh are per token),
// so a run keeps it fixed to stay bitwise reproducible.
//
// cross_entropy_logits_* is the same loss on logits the caller already has ([N, V], no
// projection, no chunking): forward as above, backward writes dlogits (= or +=).
//
// cross_entropy_slice_* is the loss over a slice of the vocabulary (the vocab-parallel loss
// of tensor parallelism, nn/vocab_parallel.h): weight [V_s, D] holds the output rows
// [slice.first, slice.first + V_s) of a vocabulary of slice.vocab, and labels are ids of the
// whole vocabulary. The forward gives, per token, what the ranks combine into the lse:
//   row_max[n]      max over the slice of logits[n, v]
//   row_sum_exp[n]  sum over the slice of exp(logits[n, v] - row_max[n])
//   label_logit[n]  logits[n, labels[n]] when the label is in the slice, else 0
// and the backward, given the whole vocabulary's lse, the slice's part of the gradients:
// dh (= or +=; summed over the slices it is the whole dh) and dweight (+=) of the slice's
// rows; a null one is skipped. CPU only so far.
//
// Both backends: h and weight both f32 or both bf16 (the logits GEMM computes in f32 into
// the f32 workspace either way), loss_sum and lse f32; CUDA (ops/cuda/cross_entropy.cu)
// takes labels on the same device (copied to the host once per call to check the ids). dh and
// dweight are f32, or bf16 when h is. With bf16 inputs the backward rounds dlogits to
// bf16 for its two GEMMs (bf16 tensor-core GEMMs need both operands bf16). The loss is
// summed as on the CPU: per row in double, rows added in token order. The logits variants
// take f32 or bf16 logits and write f32 or bf16 dlogits.
#pragma once

#include <algorithm>

#include "titan/ops/checks.h"
#include "titan/ops/dispatch.h"

namespace titan::ops {

inline constexpr int64_t kIgnoreIndex = -100;
// Default logits budget: 32 MiB is 65 tokens at V = 128,256 and 262 at V = 32,000, enough
// rows for the GEMMs to run near full rate while the chunk is small beside activations.
inline constexpr int64_t kCrossEntropyChunkBudgetBytes = int64_t(32) << 20;

// [C, V]: the workspace for N tokens within budget_bytes of logits. Pass it to
// Tensor::empty(shape, DType::F32, device) and on to every cross_entropy_* call.
inline Shape cross_entropy_workspace_shape(int64_t tokens, int64_t vocab,
                                           int64_t budget_bytes = kCrossEntropyChunkBudgetBytes) {
  TITAN_CHECK(tokens >= 0 && vocab >= 1 && budget_bytes >= 0)
      << "cross_entropy_workspace_shape: tokens " << tokens << ", vocab " << vocab
      << ", budget " << budget_bytes;
  const int64_t chunk = budget_bytes / (vocab * int64_t(sizeof(float)));
  return {std::max<int64_t>(1, std::min(tokens, chunk)), vocab};
}
inline int64_t cross_entropy_workspace_bytes(int64_t tokens, int64_t vocab,
                                             int64_t budget_bytes = kCrossEntropyChunkBudgetBytes) {
  return shape_numel(cross_entropy_workspace_shape(tokens, vocab, budget_bytes)) *
         int64_t(sizeof(float));
}

// Labels that are not kIgnoreIndex; torchtitan sums this over the batch mesh to make
// grad_scale. Reads host labels (the data loader's), so it has no device variants.
int64_t cross_entropy_valid_tokens(const Tensor& labels);

// The checks both backends make first (ops/cross_entropy.cpp), given the backend's float
// dtypes: the shapes above; h and weight both of one accepted dtype, logits and dlogits
// each of one; labels i32 or i64; loss_sum, lse and the workspace f32; dh and dweight f32,
// or bf16 for bf16 inputs. The backward checks name `op`, and skip a null dh or dweight.
void check_cross_entropy_forward(const Tensor& h, const Tensor& weight, const Tensor& labels,
                                 const Tensor& loss_sum, const Tensor& lse,
                                 const Tensor& workspace, FloatDTypes accepted,
                                 const char* op = "cross_entropy_forward");
void check_cross_entropy_backward(const Tensor& h, const Tensor& weight, const Tensor& labels,
                                  const Tensor& lse, const Tensor* dh, const Tensor* dweight,
                                  const Tensor& workspace, FloatDTypes accepted, const char* op);
// forward_backward's: the forward's and the backward's, naming it.
void check_cross_entropy_forward_backward(const Tensor& h, const Tensor& weight,
                                          const Tensor& labels, const Tensor& loss_sum,
                                          const Tensor& lse, const Tensor& dh,
                                          const Tensor& dweight, const Tensor& workspace,
                                          FloatDTypes accepted);
void check_cross_entropy_logits_forward(const Tensor& logits, const Tensor& labels,
                                        const Tensor& loss_sum, const Tensor& lse,
                                        FloatDTypes accepted);
void check_cross_entropy_logits_backward(const Tensor& logits, const Tensor& labels,
                                         const Tensor& lse, const Tensor& dlogits,
                                         FloatDTypes accepted);
// Each label is a vocabulary index or kIgnoreIndex (an id outside the vocabulary would read
// past a logits row). The CPU checks every one with this before it computes; the GPU's
// record of a bad one ends here (raise_label_error, below).
void check_cross_entropy_label(int64_t label, int64_t token, int64_t vocab, const char* op);

// Rows [first, first + V_s) of a vocabulary of `vocab` ids.
struct VocabSlice {
  int64_t first = 0;
  int64_t vocab = 0;
};
// The slice ops' checks: the fused checks with weight [V_s, D] inside the vocabulary, and
// f32 [N] row statistics (forward) or lse (backward).
void check_cross_entropy_slice_forward(const Tensor& h, const Tensor& weight,
                                       const Tensor& labels, VocabSlice slice,
                                       const Tensor& row_max, const Tensor& row_sum_exp,
                                       const Tensor& label_logit, const Tensor& workspace,
                                       FloatDTypes accepted);
void check_cross_entropy_slice_backward(const Tensor& h, const Tensor& weight,
                                        const Tensor& labels, VocabSlice slice,
                                        const Tensor& lse, const Tensor* dh,
                                        const Tensor* dweight, const Tensor& workspace,
                                        FloatDTypes accepted);

namespace cpu {
void cross_entropy_forward(const Tensor& h, const Tensor& weight, const Tensor& labels,
                           Tensor& loss_sum, Tensor& lse, Tensor& workspace);
void cross_entropy_backward_input(const Tensor& h, const Tensor& weight, const Tensor& labels,
                                  const Tensor& lse, float grad_scale, Tensor& dh,
                                  Accumulate accumulate, Tensor& workspace);
void cross_entropy_backward_weight(const Tensor& h, const Tensor& weight, const Tensor& labels,
                                   const Tensor& lse, float grad_scale, Tensor& dweight,
                                   Tensor& workspace);
void cross_entropy_backward(const Tensor& h, const Tensor& weight, const Tensor& labels,
                            const Tensor& lse, float grad_scale, Tensor& dh, Tensor& dweight,
                            Accumulate accumulate_dh, Tensor& workspace);
void cross_entropy_forward_backward(const Tensor& h, const Tensor& weight, const Tensor& labels,
                                    float grad_scale, Tensor& loss_sum, Tensor& lse, Tensor& dh,
                                    Tensor& dweight, Accumulate accumulate_dh,
                                    Tensor& workspace);
void cross_entropy_logits_forward(const Tensor& logits, const Tensor& labels, Tensor& loss_sum,
                                  Tensor& lse);
void cross_entropy_logits_backward(const Tensor& logits, const Tensor& labels, const Tensor& lse,
                                   float grad_scale, Tensor& dlogits, Accumulate accumulate);
void cross_entropy_slice_forward(const Tensor& h, const Tensor& weight, const Tensor& labels,
                                 VocabSlice slice, Tensor& row_max, Tensor& row_sum_exp,
                                 Tensor& label_logit, Tensor& workspace);
void cross_entropy_slice_backward(const Tensor& h, const Tensor& weight, const Tensor& labels,
                                  VocabSlice slice, const Tensor& lse, float grad_scale,
                                  Tensor* dh, Tensor* dweight, Accumulate accumulate_dh,
                                  Tensor& workspace);
}  // namespace cpu
#if TITAN_HAVE_CUDA
namespace cuda {
void cross_entropy_forward(const Tensor& h, const Tensor& weight, const Tensor& labels,
                           Tensor& loss_sum, Tensor& lse, Tensor& workspace);
void cross_entropy_backward_input(const Tensor& h, const Tensor& weight, const Tensor& labels,
                                  const Tensor& lse, float grad_scale, Tensor& dh,
                                  Accumulate accumulate, Tensor& workspace);
void cross_entropy_backward_weight(const Tensor& h, const Tensor& weight, const Tensor& labels,
                                   const Tensor& lse, float grad_scale, Tensor& dweight,
                                   Tensor& workspace);
void cross_entropy_backward(const Tensor& h, const Tensor& weight, const Tensor& labels,
                            const Tensor& lse, float grad_scale, Tensor& dh, Tensor& dweight,
                            Accumulate accumulate_dh, Tensor& workspace);
void cross_entropy_forward_backward(const Tensor& h, const Tensor& weight, const Tensor& labels,
                                    float grad_scale, Tensor& loss_sum, Tensor& lse, Tensor& dh,
                                    Tensor& dweight, Accumulate accumulate_dh,
                                    Tensor& workspace);
void cross_entropy_logits_forward(const Tensor& logits, const Tensor& labels, Tensor& loss_sum,
                                  Tensor& lse);
void cross_entropy_logits_backward(const Tensor& logits, const Tensor& labels, const Tensor& lse,
                                   float grad_scale, Tensor& dlogits, Accumulate accumulate);
void raise_label_error(Device device);
}  // namespace cuda
#endif

// Labels outside the vocabulary on a GPU: the CUDA ops check their labels on the device, in
// stream order, and record the first bad one there rather than wait for the device in every
// call; this throws what the CPU's check would have thrown for it (Error) and clears the
// record. It waits for the device's queued work, so the loss readouts call it (nn/
// vocab_parallel.h: once per microbatch, where they wait anyway). Nothing on the CPU, whose
// ops check before they compute.
inline void raise_label_error(Device device) {
#if TITAN_HAVE_CUDA
  if (device.is_cuda()) cuda::raise_label_error(device);
#else
  (void)device;
#endif
}

inline void cross_entropy_forward(const Tensor& h, const Tensor& weight, const Tensor& labels,
                                  Tensor& loss_sum, Tensor& lse, Tensor& workspace) {
  TITAN_DISPATCH_CPU_CUDA(h, cross_entropy_forward, h, weight, labels, loss_sum, lse,
                          workspace);
}
inline void cross_entropy_backward_input(const Tensor& h, const Tensor& weight,
                                         const Tensor& labels, const Tensor& lse,
                                         float grad_scale, Tensor& dh, Accumulate accumulate,
                                         Tensor& workspace) {
  TITAN_DISPATCH_CPU_CUDA(h, cross_entropy_backward_input, h, weight, labels, lse, grad_scale,
                          dh, accumulate, workspace);
}
inline void cross_entropy_backward_weight(const Tensor& h, const Tensor& weight,
                                          const Tensor& labels, const Tensor& lse,
                                          float grad_scale, Tensor& dweight, Tensor& workspace) {
  TITAN_DISPATCH_CPU_CUDA(h, cross_entropy_backward_weight, h, weight, labels, lse, grad_scale,
                          dweight, workspace);
}
inline void cross_entropy_backward(const Tensor& h, const Tensor& weight, const Tensor& labels,
                                   const Tensor& lse, float grad_scale, Tensor& dh,
                                   Tensor& dweight, Accumulate accumulate_dh, Tensor& workspace) {
  TITAN_DISPATCH_CPU_CUDA(h, cross_entropy_backward, h, weight, labels, lse, grad_scale, dh,
                          dweight, accumulate_dh, workspace);
}
inline void cross_entropy_forward_backward(const Tensor& h, const Tensor& weight,
                                           const Tensor& labels, float grad_scale,
                                           Tensor& loss_sum, Tensor& lse, Tensor& dh,
                                           Tensor& dweight, Accumulate accumulate_dh,
                                           Tensor& workspace) {
  TITAN_DISPATCH_CPU_CUDA(h, cross_entropy_forward_backward, h, weight, labels, grad_scale,
                          loss_sum, lse, dh, dweight, accumulate_dh, workspace);
}
inline void cross_entropy_logits_forward(const Tensor& logits, const Tensor& labels,
                                         Tensor& loss_sum, Tensor& lse) {
  TITAN_DISPATCH_CPU_CUDA(logits, cross_entropy_logits_forward, logits, labels, loss_sum, lse);
}
inline void cross_entropy_logits_backward(const Tensor& logits, const Tensor& labels,
                                          const Tensor& lse, float grad_scale, Tensor& dlogits,
                                          Accumulate accumulate) {
  TITAN_DISPATCH_CPU_CUDA(logits, cross_entropy_logits_backward, logits, labels, lse,
                          grad_scale, dlogits, accumulate);
}

inline void cross_entropy_slice_forward(const Tensor& h, const Tensor& weight,
                                        const Tensor& labels, VocabSlice slice, Tensor& row_max,
                                        Tensor& row_sum_exp, Tensor& label_logit,
                                        Tensor& workspace) {
  TITAN_DISPATCH_CPU(h, cross_entropy_slice_forward, h, weight, labels, slice, row_max,
                     row_sum_exp, label_logit, workspace);
}
inline void cross_entropy_slice_backward(const Tensor& h, const Tensor& weight,
                                         const Tensor& labels, VocabSlice slice,
                                         const Tensor& lse, float grad_scale, Tensor* dh,
                                         Tensor* dweight, Accumulate accumulate_dh,
                                         Tensor& workspace) {
  TITAN_DISPATCH_CPU(h, cross_entropy_slice_backward, h, weight, labels, slice, lse, grad_scale,
                     dh, dweight, accumulate_dh, workspace);
}

}  // namespace titan::ops
