// Fully sharded data parallelism (ZeRO-3, FSDP2's layout) over a model's parameter units,
// with HSDP/DDP replication on top (docs/design.md, "Parallelism").
//
// Every parameter of a unit is split by rows over the shard group (nn::Placement); a rank
// holds only its rows, their gradient, master weights and optimizer state. Per unit, per
// microbatch:
//
//   before_forward    all_gather the unit's flat shard buffer (prefetched: the gather of
//                     the next unit in forward order starts as soon as this one is done)
//                     and bind each parameter's whole value to a view of it
//   after_forward     free it, per parallelism.fsdp_reshard_after_forward:
//                       default  every unit but the one whose backward comes first
//                       always   every unit
//                       never    none: gathered from forward until their backward is done
//   before_backward   gather again if freed and its backward reads weights; bind a zeroed
//                     whole gradient
//   after_backward    reduce_scatter the whole gradient into the shard gradient (+=, so
//                     microbatches accumulate) and free value and gradient: no unsharded
//                     gradient outlives its unit
//
// Flat shard buffer of a unit: for each parameter in order, ceil(rows / n) rows; a rank's
// last rows may be padding (zeros; never read back). The gathered buffer is these n buffers
// one after the other, so each parameter's whole tensor is copied out of it (FSDP2's
// copy-out) and each whole gradient is copied into the reduce-scatter's input (chunk_cat).
//
// reduce_gradients(), once per step after the last microbatch's backward, waits for the
// reduce-scatters and, when there are replicas (dp_replicate > 1), all-reduces each unit's
// shard gradients across them once: HSDP, or DDP when the shard group is one rank.
// Device: every buffer (gather input and output, whole values and gradients, reduce-scatter
// buffers) is on the parameters' device (they must all share one); the communicators
// take tensors on that device (MPI: the host, NCCL: the GPU).
// Precision (training.mixed_precision_param, nn/parameter.h): the gather casts the f32
// shards into a gather input of the parameters' compute dtype (they must all share one), so
// the all-gather and the whole values are in it (bf16 on a GPU); whole gradients, the
// reduce-scatter and the replicas' all-reduce stay f32 (training.mixed_precision_reduce).
//
// Collectives per microbatch on the shard group (n > 1): one reduce_scatter per unit;
// all_gathers: one per unit in forward, plus one in backward for each unit that was freed
// and whose backward reads weights. The gradients are sums: the trainer scales the loss.
#pragma once

#include <deque>
#include <memory>
#include <vector>

#include "titan/config/job_config.h"
#include "titan/distributed/communicator.h"
#include "titan/nn/parameter_unit.h"

namespace titan::distributed {

class FullyShardedDataParallel final : public nn::UnitHooks {
 public:
  // Every parameter must be placed as shard shard_group.rank() of shard_group.size(). The
  // groups must outlive this object.
  FullyShardedDataParallel(std::vector<nn::ParameterUnit> units, Communicator& shard_group,
                           Communicator& replicate_group, config::ReshardAfterForward policy);
  ~FullyShardedDataParallel() override;

  void before_forward(int unit) override;
  void after_forward(int unit) override;
  void before_backward(int unit) override;
  void after_backward(int unit) override;

  // Pipeline parallelism: the schedule decides when a stage's units are gathered, freed and
  // reduced (PyTorch's UNSHARD, RESHARD and REDUCE_GRAD actions), so from
  // set_schedule_driven on the hooks gather and bind but reduce nothing: a unit's whole
  // gradient accumulates over the step's microbatches until reduce_and_reshard. Its values
  // stay gathered from its first use in the step until then too (torchtitan's default under
  // PP), unless the policy is `always`: then after_forward frees them as reshard does. No
  // prefetching by the hooks (a unit gathered ahead could outlive the optimizer step): the
  // schedule's unshard starts a stage's gathers early instead.
  void set_schedule_driven() {
    schedule_driven_ = true;
    if (experts_) experts_->set_schedule_driven();
  }
  void unshard(int unit);             // starts the unit's gather; its first use waits for it
  void reduce_and_reshard(int unit);  // reduce-scatters the whole gradient, frees both
  void reshard(int unit);             // frees the values, keeps the whole gradient

  // Completes every gradient reduction of the step (see above).
  void reduce_gradients();

  // Float8 all-gather (quantize.linear.float8.enable_fsdp_float8_all_gather): the weights of
  // Float8 linears (Parameter::float8) travel as e4m3 bytes, a quarter of f32, each with the
  // tensorwise scale of the whole weight (its amax: a max over the shard group), and are
  // bound dequantized and marked precast, so the linear casts nothing again: the same values
  // as gathering in high precision and casting after. Scales come from one all-reduce per
  // gather, or, with precompute_scales, from one all-reduce for every such weight per step
  // (precompute_float8_scales, called before the step's first gather). Under tensor
  // parallelism a gathered weight is the rank's tp piece: `tp_group` (else null) takes the
  // amaxes' max over the tp ranks too, so the scale is the whole weight's.
  void use_float8_all_gather(bool precompute_scales, Communicator* tp_group = nullptr);
  void precompute_float8_scales();
  int64_t float8_weight_count() const;

  // Expert parallelism: the experts' weights are sharded over a group of their own (efsdp),
  // so they are a second FSDP over the same unit indices, each of its units holding the
  // unit's expert weights only (none for most). Every hook, schedule action and step call
  // here passes on to it after this one's; a unit without parameters does nothing.
  void set_experts(std::unique_ptr<FullyShardedDataParallel> experts) {
    experts_ = std::move(experts);
  }

  bool sharded() const { return shard_group_.size() > 1; }
  Device device() const { return device_; }
  int unit_count() const { return int(units_.size()); }
  // Bytes of one rank's flat shard buffer for unit u (padding included).
  int64_t shard_buffer_bytes(int unit) const;

 private:
  enum class Status { Sharded, Gathering, Gathered };
  struct Unit {
    nn::ParameterUnit spec;
    bool reshard_after_forward = true;
    std::vector<int64_t> segment_offsets;  // each parameter's start in a rank's flat shard
    std::vector<int64_t> full_offsets;     // ... and in the whole flat buffer
    // [parameter][rank]: each rank's rows of the parameter's compute piece, worked out once
    // here rather than per microbatch.
    std::vector<std::vector<nn::Box>> rank_rows;
    int64_t segment_numel = 0;             // one rank's flat shard, padded
    int64_t full_numel = 0;                // the whole unit, unpadded
    // The all-gather's layout: per parameter, its stream (0: the compute dtype; 1: e4m3, a
    // Float8 linear's weight under the float8 all-gather) and its offset in a rank's part of
    // that stream; and per stream the numel of a rank's part. Without the float8 all-gather
    // it is the flat shard's layout, one stream.
    std::vector<int> stream;
    std::vector<int64_t> gather_offsets;
    int64_t gather_numel[2] = {0, 0};
    std::vector<int64_t> float8_index;     // per parameter: its scale's index, or -1
    int64_t float8_count = 0;
    Tensor float8_scales;                  // [float8_count] f32, valid from the gather on
    Tensor gather_input8, gathered8;       // stream 1's buffers while gathering
    Work gather8;
    Status status = Status::Sharded;
    Tensor gather_input, gathered;         // [segment_numel], [n * segment_numel] while gathering
    Work gather;
    Tensor full, full_grad;                // whole values and gradients, flat
    int backwards_open = 0;                // before_backward calls not yet closed
  };
  struct Reduction {
    int unit = 0;
    Tensor input, output;
    Work work;
  };

  // The hooks and actions above for this FSDP's own parameters.
  void own_before_forward(int unit);
  void own_after_forward(int unit);
  void own_before_backward(int unit);
  void own_after_backward(int unit);
  void own_unshard(int unit);
  void own_reduce_and_reshard(int unit);
  void own_reshard(int unit);
  void start_gather(Unit& unit);
  void finish_gather(Unit& unit);
  void ensure_gathered(Unit& unit);
  void bind(Unit& unit);
  void release(Unit& unit);
  void release_values(Unit& unit);  // the whole values only; a whole gradient stays bound
  void prefetch_after(const std::vector<int>& order, int unit, bool backward);
  void reduce_scatter_and_release(int unit);
  void complete_reduction(Reduction& reduction);
  static void record(std::vector<int>& order, int unit);
  // The e4m3 scales of the float8 weights of `units` from one all-reduce of their amaxes.
  void compute_float8_scales(const std::vector<Unit*>& units);

  std::vector<Unit> units_;
  Communicator& shard_group_;
  Communicator& replicate_group_;
  Device device_ = Device::cpu();  // the parameters' device
  DType compute_dtype_ = DType::F32;  // and the dtype of their whole values
  // The orders units were used in during the first microbatch: what prefetching follows.
  std::vector<int> forward_order_, backward_order_;
  std::deque<Reduction> reductions_;  // reduce-scatters in flight, oldest first
  bool schedule_driven_ = false;
  bool precompute_float8_scales_ = false;
  Communicator* float8_tp_group_ = nullptr;
  config::ReshardAfterForward policy_;
  std::unique_ptr<FullyShardedDataParallel> experts_;
};

// The whole value of a parameter sharded over `shard_group` (collective over the group), on
// the parameter's device: for tests, generation and exports, not for training.
Tensor gather_parameter(const nn::Parameter& parameter, Communicator& shard_group);

}  // namespace titan::distributed
