#include "titan/train/pipeline.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "titan/config/load.h"
#include "titan/core/trace.h"
#include "titan/distributed/mesh.h"
#include "titan/models/registry.h"

namespace titan::train {
namespace {

using distributed::Action;
using distributed::ActionKind;

// A transfer's MPI tag (pipeline.h, "Tags"). MPI guarantees tags up to 32767 (MPI_TAG_UB
// may be larger, never smaller); those below 1000 are left to other users of the group.
constexpr int kTagBase = 1000, kLargestTag = 32767;
int transfer_tag(int stages, int stage, int microbatch, bool gradient) {
  return kTagBase + 2 * (microbatch * stages + stage) + (gradient ? 1 : 0);
}

template <class Map>
auto take(Map& map, const typename Map::key_type& key, const char* what) {
  auto at = map.find(key);
  TITAN_CHECK(at != map.end()) << "pipeline: no " << what << " for stage " << key.first
                               << ", microbatch " << key.second;
  auto value = std::move(at->second);
  map.erase(at);
  return value;
}

}  // namespace

distributed::Schedule pipeline_schedule_for(const config::JobConfig& config, int64_t n_layers) {
  const config::ParallelismSection& p = config.parallelism;
  const int pp = int(p.pipeline_parallel_degree);
  const int64_t local = config.training.local_batch_size;
  const int64_t size = p.pipeline_parallel_microbatch_size;
  TITAN_CHECK_INPUT(local % size == 0)
      << "parallelism.pipeline_parallel_microbatch_size: " << size << " does not divide "
      << "training.local_batch_size " << local << "; use a divisor of " << local;
  const int microbatches = int(local / size);
  const config::PipelineSchedule kind = p.pipeline_parallel_schedule;
  const std::string name(config::choice_name(kind));
  int stages_per_rank = distributed::default_stages_per_rank(kind);
  if (p.pipeline_parallel_layers_per_stage) {
    const int64_t per_stage = *p.pipeline_parallel_layers_per_stage;
    const int64_t effective = n_layers + p.pipeline_parallel_first_stage_less_layers +
                              p.pipeline_parallel_last_stage_less_layers;
    const int64_t stages = (effective + per_stage - 1) / per_stage;
    TITAN_CHECK_INPUT(stages % pp == 0)
        << "parallelism.pipeline_parallel_layers_per_stage: " << per_stage << " makes " << stages
        << " stages of " << n_layers << " layers + the embedding and output's weights, not a "
        << "multiple of pipeline_parallel_degree " << pp
        << "; pick a value that makes a multiple of " << pp << " stages";
    stages_per_rank = int(stages / pp);
    const bool single = distributed::is_single_stage(kind);
    const bool v_shaped = kind == config::PipelineSchedule::ZBVZeroBubble ||
                          kind == config::PipelineSchedule::DualPipeV;
    TITAN_CHECK_INPUT(single   ? stages_per_rank == 1
                      : v_shaped ? stages_per_rank == 2
                                 : stages_per_rank >= 2)
        << "parallelism.pipeline_parallel_layers_per_stage: " << per_stage << " makes "
        << stages_per_rank << " stages per rank; " << name << " runs "
        << (single ? "exactly 1" : v_shaped ? "exactly 2" : "2 or more")
        << (stages_per_rank < (single ? 1 : 2) ? " (lower it)" : " (raise it)");
  }
  TITAN_CHECK_INPUT(transfer_tag(pp * stages_per_rank, pp * stages_per_rank - 1,
                                 microbatches - 1, true) <= kLargestTag)
      << "parallelism.pipeline_parallel_microbatch_size: " << size << " makes " << microbatches
      << " microbatches of " << pp * stages_per_rank << " stages, more transfers per step "
      << "than MPI tags tell apart; raise it";
  const std::optional<std::string>& csv = p.pipeline_parallel_schedule_csv;
  distributed::Schedule schedule;
  if (csv && !csv->empty()) {
    std::ifstream file(*csv);
    TITAN_CHECK_INPUT(file.good()) << "parallelism.pipeline_parallel_schedule_csv: cannot read "
                                   << *csv;
    std::stringstream text;
    text << file.rdbuf();
    schedule = distributed::read_schedule_csv(text.str(), *csv, pp, stages_per_rank, microbatches);
  } else {
    schedule = distributed::generate_schedule(kind, pp, stages_per_rank, microbatches);
  }
  distributed::add_communication(schedule);
  distributed::add_data_parallel_actions(schedule);
  distributed::simulate(schedule);
  return schedule;
}

PipelinePlan plan_pipeline(const config::JobConfig& config, int64_t world_size) {
  config::validate(config);
  const distributed::MeshShape shape =
      distributed::mesh_shape_from_config(config.parallelism, world_size);
  TITAN_CHECK_INPUT(shape[distributed::MeshDim::pp] > 1)
      << "parallelism.pipeline_parallel_degree is 1: no pipeline to plan; set it above 1";
  const models::ModelFamily& family = models::model_family(config.model.name);
  const models::ModelSummary summary = family.summarize(config);
  PipelinePlan plan;
  plan.schedule = pipeline_schedule_for(config, summary.layers);
  plan.report = distributed::simulate(plan.schedule);
  plan.stage_modules = family.pipeline_stages(config, plan.schedule.stages);
  return plan;
}

std::string describe_plan(const PipelinePlan& plan) {
  const distributed::Schedule& s = plan.schedule;
  std::ostringstream text;
  text << distributed::render_text(s, plan.report);
  char line[160];
  std::snprintf(line, sizeof line,
                "bubble: %.1f%% simulated (F = I = W = 1, B = 2); "
                "textbook (p-1)/(m+p-1) = %.1f%%\n",
                100 * plan.report.bubble_fraction,
                100 * distributed::textbook_bubble(s.pp, s.microbatches));
  text << line;
  for (int stage = 0; stage < s.stages; ++stage) {
    text << "stage " << stage << " on rank " << s.rank_of(stage) << ": "
         << models::describe_stage(plan.stage_modules[size_t(stage)]) << "\n";
  }
  return text.str();
}

PipelineExecutor::PipelineExecutor(distributed::Schedule schedule, int rank,
                                   models::Model& model, distributed::Communicator& pp_group,
                                   distributed::FullyShardedDataParallel* fsdp)
    : schedule_(std::move(schedule)),
      rank_(rank),
      model_(model),
      pp_group_(pp_group),
      fsdp_(fsdp),
      local_stages_(schedule_.stages_of(rank)) {
  distributed::add_communication(schedule_);
  distributed::add_data_parallel_actions(schedule_);
  distributed::simulate(schedule_);
  TITAN_CHECK(pp_group.size() == schedule_.pp && pp_group.rank() == rank)
      << "pipeline: rank " << rank << " of a " << schedule_.pp << "-rank schedule on "
      << pp_group.name() << " (rank " << pp_group.rank() << " of " << pp_group.size() << ")";
  TITAN_CHECK(model.stage_count() == int(local_stages_.size()))
      << "pipeline: the model holds " << model.stage_count() << " stages, rank " << rank
      << " runs " << local_stages_.size();
  TITAN_CHECK(tag(schedule_.stages - 1, schedule_.microbatches - 1, true) <= kLargestTag)
      << "pipeline: " << schedule_.microbatches << " microbatches x " << schedule_.stages
      << " stages need more MPI tags than there are (pipeline_schedule_for checks it)";
}

int PipelineExecutor::local_stage(int stage) const {
  const auto at = std::find(local_stages_.begin(), local_stages_.end(), stage);
  TITAN_CHECK(at != local_stages_.end()) << "pipeline: rank " << rank_ << " holds no stage "
                                         << stage;
  return int(at - local_stages_.begin());
}

int PipelineExecutor::tag(int stage, int microbatch, bool gradient) const {
  return transfer_tag(schedule_.stages, stage, microbatch, gradient);
}

Tensor PipelineExecutor::activation_buffer(const data::TokenBatch& microbatch) const {
  const MemoryTagScope tag("communication");
  return Tensor::empty(
      model_.stage_activation_shape(microbatch.inputs.size(0), microbatch.inputs.size(1)),
      model_.compute_dtype(), model_.device());
}

void PipelineExecutor::post_receives_before(size_t next_compute,
                                            const std::vector<data::TokenBatch>& microbatches) {
  const std::vector<Action>& actions = schedule_.ranks[size_t(rank_)];
  for (; posted_ < next_compute && posted_ < actions.size(); ++posted_) {
    const Action& a = actions[posted_];
    const Key key{a.stage, a.microbatch};
    if (a.kind == ActionKind::RecvActivation) {
      Receive& r = activations_in_[key];
      r.data = activation_buffer(microbatches[size_t(a.microbatch)]);
      r.work = pp_group_.recv(r.data, schedule_.rank_of(a.stage - 1),
                              tag(a.stage - 1, a.microbatch, false));
    } else if (a.kind == ActionKind::RecvGradient) {
      Receive& r = gradients_in_[key];
      r.data = activation_buffer(microbatches[size_t(a.microbatch)]);
      r.work = pp_group_.recv(r.data, schedule_.rank_of(a.stage + 1),
                              tag(a.stage + 1, a.microbatch, true));
    }
  }
}

Tensor PipelineExecutor::take_received(const Key& key, bool gradient) {
  Receive r = take(gradient ? gradients_in_ : activations_in_, key,
                   gradient ? "received gradient" : "received activation");
  r.work.wait();
  return r.data;
}

void PipelineExecutor::data_parallel_action(const distributed::Action& a) {
  if (!fsdp_) return;
  TraceSpan span("pipeline " + distributed::action_name(a));
  for (const int unit : model_.stage_units(local_stage(a.stage))) {
    switch (a.kind) {
      case ActionKind::Unshard: fsdp_->unshard(unit); break;
      case ActionKind::ReduceGrad: fsdp_->reduce_and_reshard(unit); break;
      case ActionKind::Reshard: fsdp_->reshard(unit); break;
      default: TITAN_FAIL() << "pipeline: " << distributed::action_name(a) << " is no FSDP action";
    }
  }
}

void PipelineExecutor::send(const Tensor& t, int peer, int tag) {
  // Sends that completed let go of their tensors now: kept to the step's end, every
  // microbatch's stage output and input gradient would stay alive for the whole step.
  std::erase_if(sends_, [](std::pair<Tensor, distributed::Work>& s) { return s.second.done(); });
  sends_.emplace_back(t, pp_group_.send(t, peer, tag));
}

void PipelineExecutor::finish_sends() {
  for (auto& [tensor, work] : sends_) work.wait();
  sends_.clear();
}

double PipelineExecutor::train(const std::vector<data::TokenBatch>& microbatches,
                               float grad_scale) {
  TITAN_CHECK(int(microbatches.size()) == schedule_.microbatches)
      << "pipeline: " << microbatches.size() << " microbatches for a schedule of "
      << schedule_.microbatches;
  const std::vector<Action>& actions = schedule_.ranks[size_t(rank_)];
  const int last = schedule_.stages - 1;
  std::map<Key, Tensor> outgoing_activations, outgoing_gradients;
  // The last stage's microbatches whose backward runs whole (not split into input and
  // weight halves): their loss waits for it (StageTensors::defer_loss, one logits GEMM).
  std::set<Key> whole_backward;
  for (const Action& a : actions) {
    if (a.kind == ActionKind::Backward && a.stage == last) {
      whole_backward.insert({a.stage, a.microbatch});
    }
  }
  double loss_sum = 0;
  posted_ = 0;
  for (size_t i = 0; i < actions.size(); ++i) {
    const Action& a = actions[i];
    const Key key{a.stage, a.microbatch};
    switch (a.kind) {
      case ActionKind::RecvActivation:
      case ActionKind::RecvGradient:
        continue;  // posted ahead, below
      case ActionKind::SendActivation:
        send(take(outgoing_activations, key, "activation to send"),
             schedule_.rank_of(a.stage + 1), tag(a.stage, a.microbatch, false));
        continue;
      case ActionKind::SendGradient:
        send(take(outgoing_gradients, key, "gradient to send"), schedule_.rank_of(a.stage - 1),
             tag(a.stage, a.microbatch, true));
        continue;
      case ActionKind::Unshard:
      case ActionKind::ReduceGrad:
      case ActionKind::Reshard:
        data_parallel_action(a);
        continue;
      default:
        break;
    }
    size_t next_compute = i + 1;
    while (next_compute < actions.size() && !distributed::is_compute(actions[next_compute].kind)) {
      ++next_compute;
    }
    post_receives_before(next_compute, microbatches);
    // What the action reads from a neighbouring stage, had before its span opens: a trace's
    // compute spans hold compute alone (a receive's wait has its own span).
    Tensor arriving;
    if (a.kind == ActionKind::Forward && a.stage > 0) {
      arriving = schedule_.rank_of(a.stage - 1) == rank_
                     ? take(handed_activations_, key, "handed-over activation")
                     : take_received(key, false);
    } else if (a.kind != ActionKind::Forward && a.kind != ActionKind::BackwardWeight &&
               a.stage < last) {
      arriving = schedule_.rank_of(a.stage + 1) == rank_
                     ? take(handed_gradients_, key, "handed-over gradient")
                     : take_received(key, true);
    }
    TraceSpan span("pipeline " + distributed::action_name(a));
    const data::TokenBatch& batch = microbatches[size_t(a.microbatch)];
    if (a.kind == ActionKind::Forward) {
      std::unique_ptr<models::ActivationRecord> record = model_.new_record();
      record->pipeline.stage = local_stage(a.stage);
      record->pipeline.input = arriving;
      record->pipeline.defer_loss = whole_backward.count(key) > 0;
      loss_sum += model_.forward(batch.inputs, batch.labels, *record);
      if (a.stage < last) {
        Tensor out = std::move(record->pipeline.output);
        if (schedule_.rank_of(a.stage + 1) == rank_) {
          handed_activations_[{a.stage + 1, a.microbatch}] = out;
        } else {
          outgoing_activations[key] = out;
        }
      }
      records_[key] = std::move(record);
      continue;
    }
    models::ActivationRecord& record = *records_.at(key);
    if (a.kind != ActionKind::BackwardWeight) {
      record.pipeline.output_grad = arriving;
      if (a.kind == ActionKind::Backward) {
        model_.backward(record, grad_scale);
        loss_sum += record.pipeline.deferred_loss;
      } else {
        model_.backward_input(record, grad_scale);
      }
      if (a.stage > 0) {
        Tensor grad = std::move(record.pipeline.input_grad);
        if (schedule_.rank_of(a.stage - 1) == rank_) {
          handed_gradients_[{a.stage - 1, a.microbatch}] = grad;
        } else {
          outgoing_gradients[key] = grad;
        }
      }
    } else {
      model_.backward_weight(record, grad_scale);
    }
    if (a.kind != ActionKind::BackwardInput) records_.erase(key);
  }
  finish_sends();
  TITAN_CHECK(records_.empty() && activations_in_.empty() && gradients_in_.empty() &&
              handed_activations_.empty() && handed_gradients_.empty())
      << "pipeline: rank " << rank_ << "'s schedule left work undone";
  return loss_sum;
}

double PipelineExecutor::evaluate(const std::vector<data::TokenBatch>& microbatches) {
  const int last = schedule_.stages - 1;
  double loss_sum = 0;
  for (size_t i = 0; i < microbatches.size(); ++i) {
    const int microbatch = int(i);
    for (const int stage : local_stages_) {
      std::unique_ptr<models::ActivationRecord> record = model_.new_record();
      record->pipeline.stage = local_stage(stage);
      if (stage > 0) {
        if (schedule_.rank_of(stage - 1) == rank_) {
          record->pipeline.input = take(handed_activations_, {stage, microbatch}, "activation");
        } else {
          Tensor input = activation_buffer(microbatches[i]);
          pp_group_.recv(input, schedule_.rank_of(stage - 1), tag(stage - 1, microbatch, false))
              .wait();
          record->pipeline.input = input;
        }
      }
      loss_sum += model_.forward(microbatches[i].inputs, microbatches[i].labels, *record);
      if (stage == last) continue;
      if (schedule_.rank_of(stage + 1) == rank_) {
        handed_activations_[{stage + 1, microbatch}] = record->pipeline.output;
      } else {
        send(record->pipeline.output, schedule_.rank_of(stage + 1),
             tag(stage, microbatch, false));
      }
    }
  }
  finish_sends();
  if (fsdp_) {
    for (size_t s = 0; s < local_stages_.size(); ++s) {
      for (const int unit : model_.stage_units(int(s))) fsdp_->reshard(unit);
    }
  }
  return loss_sum;
}

}  // namespace titan::train
