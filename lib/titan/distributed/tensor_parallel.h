// Tensor parallelism over the mesh's tp group: the collectives the modules ask for
// (nn/tensor_parallel.h), synchronous or asynchronous, and the gradient reductions that the
// tp placements need (docs/parallelism.md, "Tensor parallelism").
//
//   TensorParallelGroup tp(mesh.tensor_group(MeshDim::tp), options);
//   layout.tensor_parallel = &tp;            // the model's modules use it
//   ... backward, FSDP's reduction ...
//   tp.reduce_partial_gradients(params);     // once per step, on the shard gradients
//
// Synchronous: gather_rows is one all_gather, then the compute; reduce_rows is the compute,
// then one reduce_scatter (sequence parallel) or all_reduce.
// Asynchronous (parallelism.enable_async_tensor_parallel, with sequence parallelism):
// torchtitan's micro-pipelined collectives, built from send/recv around the ring:
//   gather_rows   tp steps; in step s each rank sends the block it got in step s - 1 to the
//                 next rank and receives one from the previous, while use() computes on
//                 the block it already has (its own first).
//   reduce_rows   tp steps; a running sum for each block travels the ring and ends at the
//                 block's owner: each rank computes its partial of the block arriving next
//                 while the running sum is in flight, then adds and passes it on.
// Neither is bitwise the synchronous form: the async reduce adds the ranks' partials in ring
// order rather than the reduce_scatter's, and both run each GEMM on one block of rows at a
// time, whose results the GEMM library's blocking may round differently from the whole's.
// They agree to float rounding (the tests hold async TP's losses to 1e-6 of sync TP's).
//
// Partial gradients. A parameter that several tp ranks hold computes a partial gradient on
// each where the ranks saw different activations, and the pieces are summed over them:
//   tp Replicate with sequence parallelism   the norms: each rank saw its own rows
//   tp Shard with replicas > 1               kv heads shared by tp / n_kv_heads ranks, each
//                                            with its own q heads (Megatron's GQA rule)
// Without sequence parallelism a replicated parameter saw the same rows on every rank, and
// its gradient is already whole.
#pragma once

#include <map>
#include <memory>
#include <vector>

#include "titan/distributed/communicator.h"
#include "titan/nn/parameter.h"
#include "titan/nn/tensor_parallel.h"

namespace titan::distributed {

struct TensorParallelOptions {
  bool sequence_parallel = true;  // parallelism.enable_sequence_parallel
  bool loss_parallel = true;      // not parallelism.disable_loss_parallel
  bool async = false;             // parallelism.enable_async_tensor_parallel
};

class TensorParallelGroup final : public nn::TensorParallel {
 public:
  // `group` (the mesh's tp tensor group) must outlive this object.
  TensorParallelGroup(Communicator& group, TensorParallelOptions options);
  ~TensorParallelGroup() override;

  int64_t size() const override { return group_.size(); }
  int64_t rank() const override { return group_.rank(); }
  bool sequence_parallel() const override { return options_.sequence_parallel && size() > 1; }
  bool loss_parallel() const override { return options_.loss_parallel; }
  bool async() const { return options_.async && sequence_parallel(); }

  void gather_rows(const Tensor& x, Tensor& full, const nn::UseRows& use) const override;
  void reduce_rows(Tensor& y, int64_t rows, const nn::PartialRows& partial) const override;
  void all_reduce(Tensor& data, nn::RowReduce op) const override;
  void gather_columns(const Tensor& piece, Tensor& whole) const override;

  // Sums each partial shard gradient (see the top) over the ranks that hold its piece;
  // collective over the tp group, every rank passing the same parameters in one order.
  void reduce_partial_gradients(const std::vector<nn::Parameter*>& parameters);
  // Whether this rank adds p's shard to the global grad norm: the first of the tp ranks
  // holding its piece does, so every piece counts once.
  static bool counts_in_grad_norm(const nn::Parameter& p);

  Communicator& group() const { return group_; }

 private:
  void ring_gather_rows(const Tensor& x, Tensor& full, const nn::UseRows& use) const;
  void ring_reduce_rows(Tensor& y, int64_t rows, const nn::PartialRows& partial) const;
  // The ranks of tp holding the same replicated piece: consecutive runs of `replicas`.
  Communicator& replica_group(int64_t replicas);

  Communicator& group_;
  TensorParallelOptions options_;
  std::map<int64_t, std::unique_ptr<Communicator>> replica_groups_;  // by replicas
};

}  // namespace titan::distributed
