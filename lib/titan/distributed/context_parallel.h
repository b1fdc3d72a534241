// Context parallelism over the mesh's cp group: the attention that the modules ask for
// (nn/context_parallel.h), this rank's queries against every rank's keys and values, with
// either of torchtitan's rotate methods (parallelism.context_parallel_rotate_method):
//
//   allgather   K and V are all-gathered once (the whole sequence's, on every rank), then
//               each rank's block is computed and merged; the backward gathers them again,
//               computes every block's dK and dV, and reduce-scatters them to their owners.
//   alltoall    the ring: in step s this rank holds the K and V of rank r - s and passes
//               them on to r + 1 while it computes with them, so no rank ever holds more than
//               two ranks' K and V. The backward passes K, V and a running dK, dV sum around
//               the ring; after cp steps each sum is back at its owner.
//
// Both visit the key blocks in the same order (this rank's own first, then r - 1, r - 2,
// ...) and merge the partial outputs by their log-sum-exp (ops::attention_merge); the
// backward of each block uses the merged out and lse, so every block's gradients are exact.
// The two differ only in the order dK and dV are summed, within float rounding. Buffers are
// tagged "context_parallel" in the allocator. CPU ranks only so far (the ops take masks with
// positions on the CPU).
#pragma once

#include "titan/distributed/communicator.h"
#include "titan/nn/context_parallel.h"

namespace titan::distributed {

enum class RotateMethod { AllGather, AllToAll };

class ContextParallelGroup final : public nn::ContextParallel {
 public:
  // `group` (the mesh's cp group) must outlive this object.
  ContextParallelGroup(Communicator& group, nn::SequenceSplit split, RotateMethod rotate);

  int64_t size() const override { return group_.size(); }
  int64_t rank() const override { return group_.rank(); }
  nn::SequenceSplit split() const override { return split_; }
  RotateMethod rotate_method() const { return rotate_; }

  void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                         const nn::SequenceLayout& seq, Tensor& out, Tensor& lse) const override;
  void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& out, const Tensor& lse, float scale,
                          const nn::SequenceLayout& seq, Tensor& dq, Tensor& dk,
                          Tensor& dv) const override;
  void all_reduce_max(Tensor& data) const override;

 private:
  Communicator& group_;
  nn::SequenceSplit split_;
  RotateMethod rotate_;
};

}  // namespace titan::distributed
