#include "titan/train/memory_plan.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "titan/config/load.h"
#include "titan/core/allocator.h"
#include "titan/core/device_select.h"
#include "titan/core/error.h"
#include "titan/models/activation_checkpoint.h"
#include "titan/models/registry.h"
#include "titan/train/pipeline.h"
#include "titan/train/trainer.h"

namespace titan::train {
namespace {

using distributed::MeshDim;

// "12.34 GiB", or "335.1 MiB" below a GiB.
std::string gib(double bytes) {
  char text[32];
  if (bytes < kGiB) {
    std::snprintf(text, sizeof text, "%.1f MiB", bytes / (1024.0 * 1024.0));
  } else {
    std::snprintf(text, sizeof text, "%.2f GiB", bytes / kGiB);
  }
  return text;
}

// What a list of tensors takes as the allocator's blocks.
int64_t blocks(Device device, const std::vector<int64_t>& tensors) {
  int64_t total = 0;
  for (const int64_t bytes : tensors) total += allocator_block_bytes(device, bytes);
  return total;
}

// One FSDP unit of the rank's stages: its parameters' bytes as the rank stores them (f32) and
// as they compute (the compute dtype, gathered whole).
struct UnitBytes {
  int64_t shard_f32 = 0;     // padded rows: the flat shard buffer
  int64_t compute = 0;       // the gathered buffer
  int64_t whole_f32 = 0;     // the whole gradient
};

// The rank's pipeline stages (their module names) and its schedule's actions; one stage of
// every module and [F, B] without pipeline parallelism.
struct RankStages {
  std::vector<models::StageModules> modules;  // per local stage
  std::vector<int> global_stage;              // parallel to modules
  std::vector<distributed::Action> actions;
  std::string schedule;
};

RankStages stages_of_rank(const config::JobConfig& config, const models::ModelFamily& family,
                          const distributed::MeshShape& shape, int64_t layers, int pp_rank) {
  RankStages r;
  if (shape[MeshDim::pp] == 1) {
    r.modules = family.pipeline_stages(config, 1);
    r.global_stage = {0};
    r.actions = {{distributed::ActionKind::Forward, 0, 0},
                 {distributed::ActionKind::Backward, 0, 0}};
    r.schedule = "one microbatch at a time";
    return r;
  }
  const distributed::Schedule schedule = pipeline_schedule_for(config, layers);
  const std::vector<models::StageModules> all = family.pipeline_stages(config, schedule.stages);
  for (const int s : schedule.stages_of(pp_rank)) {
    r.modules.push_back(all[size_t(s)]);
    r.global_stage.push_back(s);
  }
  r.actions = schedule.ranks[size_t(pp_rank)];
  r.schedule = schedule.name + ", " + std::to_string(schedule.microbatches) + " microbatches";
  return r;
}

// The module of a stage a parameter belongs to: its name is the module's name or starts with
// it and a dot ("layers.3" holds "layers.3.attention.wq.weight").
bool in_modules(const models::StageModules& modules, const std::string& parameter) {
  for (const std::string& m : modules) {
    if (parameter == m || parameter.compare(0, m.size() + 1, m + ".") == 0) return true;
  }
  return false;
}

// "layers.<i>" -> i, else -1.
int layer_index(const std::string& module) {
  if (module.rfind("layers.", 0) != 0) return -1;
  return std::atoi(module.c_str() + 7);
}

// One microbatch's activations on a local stage: what it keeps from its forward to its
// backward, the most its backward adds while it runs, and what a split backward keeps from
// I to W.
struct StageActivations {
  int64_t kept = 0, backward = 0, split = 0;
};

std::vector<StageActivations> stage_activations(const config::JobConfig& config,
                                                const RankStages& rank,
                                                const models::ActivationMemory& m,
                                                Device device) {
  std::vector<int> layer_ids;
  for (const models::StageModules& modules : rank.modules) {
    for (const std::string& module : modules) {
      if (const int i = layer_index(module); i >= 0) layer_ids.push_back(i);
    }
  }
  const std::vector<nn::Recompute> recompute =
      models::activation_checkpoint_plan(config.activation_checkpoint, layer_ids);
  const int64_t residual = blocks(device, m.embedding_kept);
  const int64_t kept_none = blocks(device, m.block_kept[0]);
  const int64_t weight_inputs = blocks(device, m.block_weight_inputs);
  std::vector<StageActivations> stages;
  size_t block = 0;
  for (const models::StageModules& modules : rank.modules) {
    StageActivations a;
    // The stage's input: the embedding's output, or the activation received from the
    // stage before (a communication buffer each microbatch keeps until its backward).
    a.kept = residual;
    for (const std::string& module : modules) {
      if (layer_index(module) < 0) continue;
      const int64_t mode_kept = blocks(device, m.block_kept[int(recompute[block++])]);
      a.kept += mode_kept;
      a.split += weight_inputs;
      // A recomputing block remakes what it dropped before its backward runs.
      a.backward = std::max(a.backward, blocks(device, m.block_backward) + kept_none - mode_kept);
    }
    const bool head = in_modules(modules, "output") || in_modules(modules, "norm");
    if (head) {  // the loss's backward, or a block's with the head's dhn still held
      a.kept += blocks(device, m.head_kept);
      a.backward = std::max(a.backward + blocks(device, {m.head_backward.front()}),
                            blocks(device, m.head_backward));
    }
    // The embedding's weight gradient reads the gradient at its output; the final norm's,
    // the one at its own.
    if (head || in_modules(modules, "tok_embeddings")) a.split += residual;
    stages.push_back(a);
  }
  return stages;
}

// The most the rank's microbatches in flight hold at once, walking its compute actions: F
// keeps a microbatch's activations, B frees them, I keeps the weights' inputs until W frees
// everything; a backward's temporaries sit on top while it runs. `most_in_flight` gets the
// most microbatches between their F and their last backward.
int64_t walk_schedule(const std::vector<distributed::Action>& actions,
                      const std::map<int, size_t>& local,
                      const std::vector<StageActivations>& stages, int64_t& most_in_flight) {
  int64_t live = 0, peak = 0, in_flight = 0;
  most_in_flight = 0;
  for (const distributed::Action& a : actions) {
    if (!distributed::is_compute(a.kind)) continue;
    const StageActivations& stage = stages[local.at(a.stage)];
    switch (a.kind) {
      case distributed::ActionKind::Forward:
        live += stage.kept;
        most_in_flight = std::max(most_in_flight, ++in_flight);
        peak = std::max(peak, live);
        break;
      case distributed::ActionKind::Backward:
        peak = std::max(peak, live + stage.backward);
        live -= stage.kept;
        --in_flight;
        break;
      case distributed::ActionKind::BackwardInput:
        peak = std::max(peak, live + stage.backward);
        live += stage.split;
        break;
      case distributed::ActionKind::BackwardWeight:
        live -= stage.kept + stage.split;
        --in_flight;
        break;
      default:
        break;
    }
  }
  return peak;
}

struct StagePlan {
  std::vector<MemoryItem> items;
  int64_t allocator_bytes = 0;
};

StagePlan plan_stage_rank(const config::JobConfig& config, const distributed::MeshShape& shape,
                          const MemoryTarget& target, int pp_rank) {
  const models::ModelFamily& family = models::model_family(config.model.name);
  const models::ModelSummary summary = family.summarize(config);
  const Device device = target.device;
  const DType compute = requested_compute_dtype(config, device);
  const int64_t act_bytes = dtype_bytes(compute);
  const config::ParallelismSection& p = config.parallelism;
  const RankStages rank = stages_of_rank(config, family, shape, summary.layers, pp_rank);

  // Every parameter of the rank's stages, placed as the first rank of each group places it.
  nn::ParameterLayout layout;
  layout.tp = {shape[MeshDim::tp], 0};
  layout.fsdp = {shape[MeshDim::dp_shard] * shape[MeshDim::cp], 0};
  layout.dp_replicate = {shape[MeshDim::dp_replicate], 0};
  layout.expert_tensor_parallel =
      layout.tp.size > 1 && p.expert_tensor_parallel_degree == layout.tp.size;
  if (const int64_t ep = p.expert_parallel_degree; ep > 1) {  // the experts' own groups
    // EP spans tp unless the experts split over it.
    const int64_t ranks = layout.fsdp.size * (layout.expert_tensor_parallel ? 1 : layout.tp.size);
    TITAN_CHECK_INPUT(ranks % ep == 0)
        << "parallelism.expert_parallel_degree " << ep << ": the expert-parallel groups are "
        << "formed from the " << ranks << " dp_shard x context_parallel"
        << (layout.expert_tensor_parallel ? "" : " x tensor_parallel") << " ranks, which " << ep
        << " does not divide";
    layout.ep = {ep, 0};
    layout.efsdp = {ranks / ep, 0};
  }
  layout.device = device;
  layout.compute_dtype = compute;
  const nn::ParallelPlan parallel_plan = family.parallel_plan(config, layout);
  std::vector<int64_t> stored, compute_copies;
  std::map<std::string, UnitBytes> units;
  bool sharded = false;
  for (const models::ParameterShape& param : family.parameter_shapes(config)) {
    bool mine = false;
    for (const models::StageModules& modules : rank.modules) {
      mine |= in_modules(modules, param.name);
    }
    if (!mine) continue;
    const nn::Placement placement = nn::place_parameter(layout, parallel_plan(param.name));
    const int64_t piece = shape_numel(nn::placement_box(param.shape, placement).extent);
    const int64_t computed = shape_numel(nn::compute_box(param.shape, placement).extent);
    stored.push_back(piece * 4);
    sharded = placement.sharded();
    if (!sharded && compute != DType::F32) compute_copies.push_back(computed * act_bytes);
    UnitBytes& unit = units[family.fsdp_unit_of(config, param.name)];
    unit.shard_f32 += piece * 4;
    unit.compute += computed * act_bytes;
    unit.whole_f32 += computed * 4;
  }
  StagePlan plan;
  auto add = [&](const std::string& tag, int64_t bytes, const std::string& what) {
    if (bytes == 0) return;
    plan.allocator_bytes += bytes;
    for (MemoryItem& item : plan.items) {
      if (item.tag != tag) continue;
      item.bytes += bytes;
      item.what += "; " + what;
      return;
    }
    plan.items.push_back({tag, bytes, what});
  };
  const int64_t pieces = int64_t(stored.size());
  const std::string of_pieces = std::to_string(pieces) + " f32 pieces";
  add("parameters", blocks(device, stored), of_pieces);
  add("gradients", blocks(device, stored), of_pieces);
  add("optimizer", 2 * blocks(device, stored), "AdamW's two moments");
  add("parameters.compute", blocks(device, compute_copies), "bf16 copies");
  // An asynchronous save writes from copies of the state, kept for the run (host memory:
  // CPU ranks only).
  const config::CheckpointSection& c = config.checkpoint;
  if (device.is_cpu() && c.enable && c.async_mode != config::AsyncMode::Disabled) {
    add("checkpoint", 3 * blocks(device, stored), "an asynchronous save's copy of the state");
  }

  const bool pipelined = shape[MeshDim::pp] > 1;
  // Under PP the reductions run after a stage's last backward, when its activations are
  // gone: their buffers are not part of the peak.
  if (sharded) {
    std::vector<UnitBytes> by_size;
    for (const auto& [name, unit] : units) by_size.push_back(unit);
    std::sort(by_size.begin(), by_size.end(),
              [](const UnitBytes& a, const UnitBytes& b) { return a.compute > b.compute; });
    const std::string dtype = std::string(dtype_name(compute));
    const bool all_gathered =
        pipelined ? p.fsdp_reshard_after_forward != config::ReshardAfterForward::Always
                  : p.fsdp_reshard_after_forward == config::ReshardAfterForward::Never;
    const size_t gathered = all_gathered ? by_size.size() : std::min<size_t>(2, by_size.size());
    std::vector<int64_t> values, grads;
    for (size_t u = 0; u < gathered; ++u) values.push_back(by_size[u].compute);
    for (size_t u = 0; u < (pipelined ? by_size.size() : 1); ++u) {
      grads.push_back(by_size[u].whole_f32);
    }
    const std::string of_units = " of " + std::to_string(by_size.size()) + " units";
    add("parameters.unsharded", blocks(device, values),
        std::to_string(values.size()) + of_units + ", " + dtype);
    add("gradients.unsharded", blocks(device, grads), std::to_string(grads.size()) + of_units);
    const UnitBytes& largest = by_size.front();
    const int64_t gather_input = largest.shard_f32 / 4 * act_bytes;
    if (!pipelined) {
      add("communication",
          blocks(device, {largest.whole_f32, largest.shard_f32, gather_input, gather_input}),
          "the largest unit's reduce-scatter and gathers");
    }
  }

  // Activations: each local stage's lists for one microbatch, then the rank's schedule.
  const int64_t rows = pipelined ? p.pipeline_parallel_microbatch_size
                                 : config.training.local_batch_size;
  models::ActivationShape as;
  as.batch = rows;
  as.seq_len = config.training.seq_len;
  as.tp = shape[MeshDim::tp];
  as.cp = shape[MeshDim::cp];
  as.sequence_parallel = as.tp > 1 && p.enable_sequence_parallel;
  as.dtype = compute;
  const models::ActivationMemory m = family.activation_memory(config, as);
  const int64_t residual = m.embedding_kept.empty() ? 0 : blocks(device, m.embedding_kept);
  const std::vector<StageActivations> stages = stage_activations(config, rank, m, device);
  std::map<int, size_t> local;  // global stage -> local index
  for (size_t s = 0; s < rank.global_stage.size(); ++s) local[rank.global_stage[s]] = s;
  int64_t most_in_flight = 0;
  const int64_t peak = walk_schedule(rank.actions, local, stages, most_in_flight);
  add("activations", peak,
      rank.schedule + (pipelined ? ", at most " + std::to_string(most_in_flight) + " in flight"
                                 : std::string()) +
          ", activation_checkpoint.mode " +
          std::string(config::choice_name(config.activation_checkpoint.mode)));
  if (pipelined) add("communication", 2 * residual, "a posted receive, a pending send");
  const int64_t tokens = rows * config.training.seq_len;
  add("data", blocks(device, {tokens * 4, tokens * 4}), "token ids and labels");
  add("buffers", blocks(device, m.buffers), "the RoPE table");
  return plan;
}

// The plan without advice: the stage rank's items (the largest one's when pp_rank < 0),
// and the runtime's share.
MemoryPlan plan_layout(const config::JobConfig& config, int64_t world_size,
                       const MemoryTarget& target, int pp_rank = -1) {
  config::validate(config);
  MemoryPlan plan;
  plan.shape = distributed::mesh_shape_from_config(config.parallelism, world_size);
  plan.target = target;
  TITAN_CHECK(pp_rank < plan.shape[MeshDim::pp]) << "plan_memory: no pipeline rank " << pp_rank;
  for (int r = 0; r < int(plan.shape[MeshDim::pp]); ++r) {
    if (pp_rank >= 0 && r != pp_rank) continue;
    StagePlan stage = plan_stage_rank(config, plan.shape, target, r);
    if (pp_rank < 0 && r > 0 && stage.allocator_bytes <= plan.allocator_bytes) continue;
    plan.pp_rank = r;
    plan.items = std::move(stage.items);
    plan.allocator_bytes = stage.allocator_bytes;
  }
  const bool cpu = target.device.is_cpu();
  const int64_t runtime = cpu ? int64_t(kGiB / 4) : int64_t(2 * kGiB);
  plan.items.push_back({"runtime", runtime, cpu ? "the process and MPI (estimate)"
                                                : "CUDA context, cuBLAS, NCCL (estimate)"});
  plan.total_bytes = plan.allocator_bytes + runtime;
  return plan;
}

// The first of these that fits, each on top of the ones before: full activation
// checkpointing; halving the local batch (the pipeline microbatch under PP) down to one
// sequence; doubling the ranks (FSDP takes them) up to 64 times.
std::string advice_for(const config::JobConfig& config, int64_t world_size,
                       const MemoryTarget& target) {
  config::JobConfig changed = config;
  std::vector<std::string> overrides;
  auto verdict = [&](int64_t world) -> std::string {
    const MemoryPlan plan = plan_layout(changed, world, target);
    if (!plan.fits()) return "";
    std::string text = "fits with";
    for (const std::string& o : overrides) text += " " + o;
    return text + " (" + gib(double(plan.total_bytes)) + ")";
  };
  try {
    if (changed.activation_checkpoint.mode != config::ActivationCheckpointMode::Full) {
      changed.activation_checkpoint.mode = config::ActivationCheckpointMode::Full;
      overrides.push_back("--activation_checkpoint.mode full");
      if (std::string v = verdict(world_size); !v.empty()) return v;
    }
    const bool pipelined = config.parallelism.pipeline_parallel_degree > 1;
    int64_t& batch = pipelined ? changed.parallelism.pipeline_parallel_microbatch_size
                               : changed.training.local_batch_size;
    const char* key = pipelined ? "--parallelism.pipeline_parallel_microbatch_size"
                                : "--training.local_batch_size";
    const size_t batch_override = overrides.size();
    while (batch > 1) {
      batch /= 2;
      overrides.resize(batch_override);
      overrides.push_back(std::string(key) + " " + std::to_string(batch));
      if (std::string v = verdict(world_size); !v.empty()) return v;
    }
    changed.parallelism.data_parallel_shard_degree = -1;
    for (int64_t world = world_size * 2; world <= world_size * 64; world *= 2) {
      overrides.resize(batch_override + 1);
      const distributed::MeshShape shape =
          distributed::mesh_shape_from_config(changed.parallelism, world);
      std::string ranks = "on " + std::to_string(world) + " ranks (dp_shard " +
                          std::to_string(shape[MeshDim::dp_shard]) + ")";
      if (target.device.is_cpu()) {  // the ranks of one host share its memory
        const int64_t hosts = (world + target.ranks_per_host - 1) / target.ranks_per_host;
        ranks += " over " + std::to_string(hosts) + " hosts like this one";
      }
      overrides.push_back(ranks);
      if (std::string v = verdict(world); !v.empty()) return v;
    }
  } catch (const InputError&) {
    // A change the job would reject: no advice from it.
  }
  return "";
}

}  // namespace

MemoryTarget MemoryTarget::gpu(double bytes) {
  return {Device::cuda(), int64_t(bytes), 1, gib(bytes) + " per GPU"};
}

MemoryTarget MemoryTarget::cpu(double host_bytes, int64_t ranks_per_host) {
  ranks_per_host = std::max<int64_t>(1, ranks_per_host);
  return {Device::cpu(), int64_t(host_bytes / double(ranks_per_host)), ranks_per_host,
          gib(host_bytes) + " on the host / " + std::to_string(ranks_per_host) + " rank" +
              (ranks_per_host > 1 ? "s" : "")};
}

MemoryPlan plan_memory(const config::JobConfig& config, int64_t world_size,
                       const MemoryTarget& target, int pp_rank) {
  MemoryPlan plan = plan_layout(config, world_size, target, pp_rank);
  if (!plan.fits()) plan.advice = advice_for(config, world_size, target);
  return plan;
}

std::string describe_memory_plan(const MemoryPlan& plan) {
  std::ostringstream text;
  const distributed::MeshShape& shape = plan.shape;
  text << "layout: " << shape.describe() << " (" << shape.world_size() << " ranks), "
       << (plan.target.device.is_cpu() ? "CPU ranks" : "GPU ranks");
  if (shape[MeshDim::pp] > 1) text << "; pipeline rank " << plan.pp_rank << " holds the most";
  text << "\n";
  for (const MemoryItem& item : plan.items) {
    char line[200];
    std::snprintf(line, sizeof line, "  %-22s %11s  %s\n", item.tag.c_str(),
                  gib(double(item.bytes)).c_str(), item.what.c_str());
    text << line;
  }
  char line[200];
  const std::string total = gib(double(plan.total_bytes));
  std::snprintf(line, sizeof line, "  %-22s %11s\n", "total", total.c_str());
  text << line;
  if (plan.fits()) {
    text << "fits: " << gib(double(plan.total_bytes)) << " of " << plan.target.available << "\n";
  } else {
    text << "does not fit: " << gib(double(plan.total_bytes)) << " needed, "
         << plan.target.available << "; "
         << (plan.advice.empty() ? "no change tried fits (full activation checkpointing, a "
                                   "batch of one, 64x the ranks): raise "
                                   "parallelism.tensor_parallel_degree or "
                                   "pipeline_parallel_degree"
                                 : plan.advice)
         << "\n";
  }
  return text.str();
}

MemoryTarget memory_target_for(Device device, int64_t ranks_on_host) {
  if (const char* forced = std::getenv("TITAN_TEST_AVAILABLE_MEMORY")) {
    const double bytes = std::strtod(forced, nullptr);
    return device.is_cpu() ? MemoryTarget::cpu(bytes * double(ranks_on_host), ranks_on_host)
                           : MemoryTarget::gpu(bytes);
  }
  if (device.is_cuda()) {
    MemoryTarget target = MemoryTarget::gpu(double(free_device_memory_bytes(device)));
    target.device = device;
    target.available = gib(double(target.available_bytes)) + " free on " + device_name(device);
    return target;
  }
  // MemAvailable: what the kernel can hand out without swapping.
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  double kib = 0;
  while (meminfo >> key >> kib) {
    if (key == "MemAvailable:") break;
    meminfo.ignore(256, '\n');
  }
  MemoryTarget target = MemoryTarget::cpu(kib * 1024.0, ranks_on_host);
  target.available = gib(kib * 1024.0) + " available on this host / " +
                     std::to_string(ranks_on_host) + " rank" + (ranks_on_host > 1 ? "s" : "");
  return target;
}

void check_memory_fits(const config::JobConfig& config, int64_t world_size,
                       const MemoryTarget& target) {
  const MemoryPlan plan = plan_memory(config, world_size, target);
  TITAN_CHECK_INPUT(plan.fits())
      << "out of memory before starting: each rank needs " << gib(double(plan.total_bytes))
      << " (titan-plan memory lists it), " << gib(double(target.available_bytes))
      << " per rank is available (" << target.available << "); "
      << (plan.advice.empty() ? "raise parallelism.tensor_parallel_degree or "
                                "pipeline_parallel_degree, or use more ranks"
                              : plan.advice);
}

}  // namespace titan::train
