// Pipeline parallelism's executor: runs this rank's list of a schedule
// (distributed/pipeline_schedule.h) on the model's stages, whatever the schedule.
//
//   PipelineExecutor pipeline(schedule, pp_rank, model, pp_group, fsdp);
//   double loss_sum = pipeline.train(microbatches, 1.0f / valid_tokens);   // grads +=
//
// Per action, in the list's order:
//   F(s, i)   forward of microbatch i through stage s: its input is the received activation,
//             the previous stage's output when that stage is on this rank, or the tokens
//   B(s, i)   full backward; I(s, i) input gradients, W(s, i) weight gradients later
//   RECV_*    posted ahead: every receive up to the next compute action is posted before the
//             current one runs, and waited for just before the action that reads it
//   SEND_*    asynchronous; waited for at the end of the pass
//   UNSHARD(s)      starts the gathers of the stage's FSDP units (before its first action)
//   REDUCE_GRAD(s)  reduce-scatters their gradients, summed over the pass's microbatches,
//                   and frees them (after the stage's last B or W)
//   RESHARD(s)      frees them without reducing (a unit used again is gathered again)
// The last three do nothing without FSDP (distributed::add_data_parallel_actions puts them
// in the list; FullyShardedDataParallel::set_schedule_driven). Activations and gradients
// between two stages on one rank are handed over in memory. The last stage computes the
// loss: train() returns its sum over the microbatches there and 0 on the other ranks. Each
// compute action is a trace span, "pipeline 2F5", opened after its input has arrived.
//
// Tags: a transfer of stage s's output (or of the gradient at stage s's input) for
// microbatch i uses tag 1000 + 2 (i x stages + s) (+1 for gradients), so messages
// between two ranks pair up whatever order the two lists run them in.
#pragma once

#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "titan/data/batch_source.h"
#include "titan/distributed/communicator.h"
#include "titan/distributed/fsdp.h"
#include "titan/distributed/pipeline_schedule.h"
#include "titan/models/model.h"
#include "titan/models/pipeline_split.h"

namespace titan::train {

// The schedule a job with pipeline_parallel_degree > 1 runs, with its transfers and
// data-parallel actions, checked by simulate: the named generator, or
// pipeline_parallel_schedule_csv's file; microbatches = local_batch_size /
// pipeline_parallel_microbatch_size; stages per rank from pipeline_parallel_layers_per_stage
// (ceil((n_layers + first_less + last_less) / layers_per_stage) stages, a multiple of pp) or
// the schedule's default. InputError naming the key, the numbers and what would work.
distributed::Schedule pipeline_schedule_for(const config::JobConfig& config, int64_t n_layers);

// What titan-plan shows of a job on `world_size` ranks (nothing runs): its mesh, the
// schedule, the schedule's simulation and each stage's modules. InputError for a config,
// mesh or schedule the job would reject, and for pipeline_parallel_degree 1.
struct PipelinePlan {
  distributed::Schedule schedule;
  distributed::ScheduleReport report;
  std::vector<models::StageModules> stage_modules;  // per stage
};
PipelinePlan plan_pipeline(const config::JobConfig& config, int64_t world_size);
// The plan as text: the schedule (render_text), the textbook bubble beside the simulated
// one, and which rank holds which modules.
std::string describe_plan(const PipelinePlan& plan);

class PipelineExecutor {
 public:
  // `schedule`: any list, given its transfers and data-parallel actions here when it lacks
  // them, then checked by simulate (InputError). `rank`: its rank in it, the rank of
  // `pp_group`. `model` holds schedule.stages_of(rank) as its stages, in that order;
  // `fsdp` is the model's unit hooks, or null.
  PipelineExecutor(distributed::Schedule schedule, int rank, models::Model& model,
                   distributed::Communicator& pp_group,
                   distributed::FullyShardedDataParallel* fsdp);

  // One pass of the schedule over schedule().microbatches microbatches; gradients of
  // grad_scale x the loss sum are added into the parameters' grad() (FSDP: into the shard
  // gradients, reduced). Returns the loss sum of the last stage's rank, 0 elsewhere.
  double train(const std::vector<data::TokenBatch>& microbatches, float grad_scale);
  // Forward only (validation): each microbatch through the stages in order; same return.
  double evaluate(const std::vector<data::TokenBatch>& microbatches);

  const distributed::Schedule& schedule() const { return schedule_; }

 private:
  using Key = std::pair<int, int>;  // (stage, microbatch)
  int local_stage(int stage) const;  // its index among the model's stages
  int tag(int stage, int microbatch, bool gradient) const;
  Tensor activation_buffer(const data::TokenBatch& microbatch) const;
  void post_receives_before(size_t next_compute,
                            const std::vector<data::TokenBatch>& microbatches);
  Tensor take_received(const Key& key, bool gradient);
  void data_parallel_action(const distributed::Action& action);  // UNSHARD, REDUCE_GRAD, ...
  void send(const Tensor& t, int peer, int tag);
  void finish_sends();

  distributed::Schedule schedule_;
  int rank_;
  models::Model& model_;
  distributed::Communicator& pp_group_;
  distributed::FullyShardedDataParallel* fsdp_;
  std::vector<int> local_stages_;  // global stage ids, ascending: the model's stages
  // During a pass: posted receives, in-memory hand-overs, records, sends in flight.
  struct Receive {
    Tensor data;
    distributed::Work work;
  };
  std::map<Key, Receive> activations_in_, gradients_in_;
  std::map<Key, Tensor> handed_activations_, handed_gradients_;
  std::map<Key, std::unique_ptr<models::ActivationRecord>> records_;
  std::vector<std::pair<Tensor, distributed::Work>> sends_;
  size_t posted_ = 0;  // actions of the list whose receives are posted
};

}  // namespace titan::train
