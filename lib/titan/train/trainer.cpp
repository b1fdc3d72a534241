#include "titan/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <thread>

#include "titan/config/load.h"
#include "titan/core/device_select.h"
#include "titan/core/logging.h"
#include "titan/core/threads.h"
#include "titan/core/trace.h"
#include "titan/data/sources.h"
#include "titan/distributed/runtime.h"
#include "titan/models/registry.h"
#include "titan/ops/cpu/kernel_isa.h"
#include "titan/ops/cross_entropy.h"
#include "titan/ops/float8_gemm.h"
#include "titan/ops/matmul.h"
#include "titan/train/memory_plan.h"
#include "titan/train/preemption.h"

namespace titan::train {
namespace {

// Without metrics.peak_tflops: on a GPU its datasheet bf16 peak when known, on the CPU the
// measured sgemm rate (the CPU's rate says nothing about a GPU).
double peak_tflops_for(const config::JobConfig& config, Device device) {
  if (config.metrics.peak_tflops) return *config.metrics.peak_tflops;
  if (!device.is_cuda()) return ops::measure_sgemm_gflops() / 1000.0;
  const double peak = known_bf16_peak_tflops(device_name(device));
  TITAN_CHECK_INPUT(peak > 0) << "metrics.peak_tflops: no known bf16 peak for "
                              << device_name(device)
                              << "; set it to the GPU's dense bf16 TFLOP/s for MFU";
  return peak;
}

const config::JobConfig& validated(const config::JobConfig& config) {
  config::validate(config);
  return config;
}

}  // namespace

DType requested_compute_dtype(const config::JobConfig& config, Device device) {
  const bool bf16 = config.training.mixed_precision_param == config::Precision::Bfloat16;
  // The key's default is for GPUs: a CPU that trains takes it only when it was given.
  const bool cpu_default = device.is_cpu() && !counting_mode() &&
                           !config.given("training.mixed_precision_param");
  return bf16 && !cpu_default ? DType::BF16 : DType::F32;
}

DType compute_dtype_for(const config::JobConfig& config, Device device) {
  const DType dtype = requested_compute_dtype(config, device);
  // A dry run counts a GPU's bf16 on CPU "devices": only a CPU that trains needs the ISA.
  const bool trains_on_cpu = device.is_cpu() && !counting_mode();
  TITAN_CHECK_INPUT(!trains_on_cpu || dtype != DType::BF16 || cpu_has_bf16())
      << "training.mixed_precision_param bfloat16 on the CPU needs AVX512_BF16 (bf16 dot "
      << "products in hardware), which this CPU lacks; leave the key unset or set it to "
      << "float32 to train in float32";
  return dtype;
}

std::optional<nn::Float8Training> float8_training_for(const config::JobConfig& config,
                                                      Device device) {
  const config::StringList& converters = config.model.converters;
  if (std::find(converters.begin(), converters.end(), "quantize.linear.float8") ==
      converters.end()) {
    return std::nullopt;
  }
  const config::LinearFloat8Section& f = config.quantize.linear.float8;
  TITAN_CHECK_INPUT(device.is_cpu() || f.emulate || ops::float8_gemm_supported(device))
      << "model.converters quantize.linear.float8: " << device << " has no fp8 tensor cores "
      << "(compute capability 8.9 or more); set quantize.linear.float8.emulate true (the "
      << "exact emulation, not faster) or drop the converter";
  nn::Float8Training training;
  training.emulate = device.is_cpu() || f.emulate;
  training.recipe = nn::float8_recipe_named(
      std::string(config::choice_name(f.recipe_name.value_or(config::Float8Recipe::Tensorwise))));
  for (const std::string& fqn : f.filter_fqns) {
    if (fqn == config::kAutoFilterSmallKn) {
      training.auto_filter_small_kn = true;
    } else {
      training.filter_fqns.push_back(fqn);
    }
  }
  return training;
}

int64_t accumulation_steps_for(const config::JobConfig& config, int64_t dp_degree) {
  const config::TrainingSection& t = config.training;
  const int64_t per_microbatch = t.local_batch_size * dp_degree;
  const int64_t global = t.global_batch_size < 0 ? per_microbatch : t.global_batch_size;
  TITAN_CHECK_INPUT(global > 0 && global % per_microbatch == 0)
      << "training.global_batch_size: " << global << " is not a multiple of "
      << "training.local_batch_size x data-parallel degree = " << t.local_batch_size << " x "
      << dp_degree << "; use a multiple of " << per_microbatch;
  return global / per_microbatch;
}

Trainer::Trainer(const config::JobConfig& config, distributed::Mesh* mesh,
                 std::optional<Device> device)
    : config_(validated(config)),
      family_(models::model_family(config.model.name)),
      summary_(family_.summarize(config)),
      device_(device ? *device : default_training_device()),
      mesh_(mesh),
      schedule_(LrSchedule::from_config(config)) {
  use_device(device_);  // ops launch on the current device
  distributed::set_comm_timeout(double(config.comm.init_timeout_seconds));
  if (!mesh_) {
    own_world_ = std::make_unique<distributed::SelfCommunicator>("world");
    own_mesh_ = std::make_unique<distributed::Mesh>(
        distributed::mesh_shape_from_config(config.parallelism, 1), *own_world_, device_);
    mesh_ = own_mesh_.get();
  }
  // FSDP's collectives carry tensors on the training device: the mesh's tensor groups
  // (NCCL on a GPU) must be for that device.
  TITAN_CHECK(mesh_->device() == device_ || mesh_->world().size() == 1)
      << "the mesh was built for " << mesh_->device() << ", the trainer trains on " << device_;
  accumulation_steps_ = accumulation_steps_for(config, mesh_->dp_degree());
  // Bad data fails before the model is built.
  const int64_t vocab = summary_.vocab_size;
  data_ = data::make_batch_source(config, vocab, mesh_->dp_rank(), mesh_->dp_degree());
  if (config.validation.enable) {
    int64_t windows = 0;
    validation_data_ = data::make_validation_source(config, vocab, mesh_->dp_rank(),
                                                    mesh_->dp_degree(), &windows);
    const config::ValidationSection& v = config.validation;
    const int64_t per_batch = v.local_batch_size * mesh_->dp_degree();
    validation_steps_ = v.steps > 0 ? v.steps : windows / per_batch;
    TITAN_CHECK_INPUT(validation_steps_ > 0)
        << "validation: the split has " << windows << " windows of " << v.seq_len + 1
        << " tokens, fewer than one global batch of " << per_batch
        << "; lower validation.local_batch_size or validation.seq_len";
  }
  std::optional<int32_t> document_end;
  if (summary_.masks_documents) {
    document_end = data_->document_end();
    TITAN_CHECK_INPUT(document_end.has_value())
        << "model.attn_mask_type block_causal (flavor " << config.model.flavor << "): masks "
        << "attention at the tokenizer's EOS id, and the training data (" << data_->describe()
        << ") has none; train on a tokenized dataset (training.dataset_path) or set "
        << "model.attn_mask_type causal";
  }
  // Expert parallelism borrows the dp_shard x cp ranks (it does not multiply into the world).
  const int64_t tp = mesh_->shape()[distributed::MeshDim::tp];
  const bool expert_tensor_parallel =
      tp > 1 && config.parallelism.expert_tensor_parallel_degree == tp;
  if (const int64_t ep = config.parallelism.expert_parallel_degree; ep > 1) {
    // torchtitan's EP without expert tensor parallelism spans the tp ranks too.
    const int64_t ranks = mesh_->dp_shard_cp().size() * (expert_tensor_parallel ? 1 : tp);
    TITAN_CHECK_INPUT(ranks % ep == 0)
        << "parallelism.expert_parallel_degree " << ep << ": the expert-parallel groups are "
        << "formed from the " << ranks << " dp_shard x context_parallel"
        << (tp > 1 && !expert_tensor_parallel ? " x tensor_parallel" : "") << " ranks, which "
        << ep << " does not divide; use a divisor of " << ranks;
    mesh_->make_expert_groups(ep, tp > 1 && !expert_tensor_parallel);
    expert_parallel_ = std::make_unique<distributed::ExpertParallelGroup>(mesh_->tensor_ep());
  }
  nn::ParameterLayout layout = mesh_->parameter_layout(device_, compute_dtype_for(config, device_));
  if (expert_parallel_) layout.expert_parallel = expert_parallel_.get();
  layout.expert_tensor_parallel = expert_tensor_parallel;
  if (const int64_t cp = mesh_->shape()[distributed::MeshDim::cp]; cp > 1) {
    TITAN_CHECK_INPUT(device_.is_cpu())
        << "parallelism.context_parallel_degree " << cp << ": context parallelism runs on CPU "
        << "ranks so far (its masked attention kernels are the CPU's); train on the CPU "
        << "(TITAN_DEVICE=cpu) or set it to 1";
    const config::ParallelismSection& p = config.parallelism;
    context_parallel_ = std::make_unique<distributed::ContextParallelGroup>(
        mesh_->group(distributed::MeshDim::cp),
        p.context_parallel_load_balancer ? nn::SequenceSplit::HeadTail
                                         : nn::SequenceSplit::Contiguous,
        p.context_parallel_rotate_method == config::ContextParallelRotateMethod::AllToAll
            ? distributed::RotateMethod::AllToAll
            : distributed::RotateMethod::AllGather);
    layout.context_parallel = context_parallel_.get();
  }
  float8_ = float8_training_for(config, device_);
  if (float8_) layout.float8 = &*float8_;
  if (layout.tp.size > 1) {
    // The vocab-parallel embedding and loss have CPU kernels only so far.
    TITAN_CHECK_INPUT(device_.is_cpu())
        << "parallelism.tensor_parallel_degree " << layout.tp.size << ": tensor parallelism "
        << "runs on CPU ranks so far (its vocab-parallel embedding and loss have no CUDA "
        << "kernels yet); train on the CPU (TITAN_DEVICE=cpu) or set it to 1";
    const config::ParallelismSection& p = config.parallelism;
    tensor_parallel_ = std::make_unique<distributed::TensorParallelGroup>(
        mesh_->tensor_group(distributed::MeshDim::tp),
        distributed::TensorParallelOptions{p.enable_sequence_parallel, !p.disable_loss_parallel,
                                           p.enable_async_tensor_parallel});
    layout.tensor_parallel = tensor_parallel_.get();
  }
  // Pipeline parallelism: this rank builds only the modules of its stages.
  std::optional<distributed::Schedule> schedule;
  std::vector<models::StageModules> stages;
  const int pp_rank = int(mesh_->coordinate(distributed::MeshDim::pp));
  if (mesh_->shape()[distributed::MeshDim::pp] > 1) {
    TITAN_CHECK_INPUT(device_.is_cpu())
        << "parallelism.pipeline_parallel_degree " << mesh_->shape()[distributed::MeshDim::pp]
        << ": pipeline parallelism runs on CPU ranks so far (its transfers need matched "
        << "NCCL send/recv order); train on the CPU (TITAN_DEVICE=cpu) or set it to 1";
    schedule = pipeline_schedule_for(config, summary_.layers);
    const std::vector<models::StageModules> all = family_.pipeline_stages(config, schedule->stages);
    for (const int s : schedule->stages_of(pp_rank)) stages.push_back(all[size_t(s)]);
  }
  // The plan's need against the device's (or this host's share of) memory, before the
  // model allocates anything: exit 2 with a layout that fits rather than the kernel's kill.
  // A dry run (counting mode) reports its rank's memory instead. memory_estimation.enable
  // logs the plan (torchtitan's estimate before training).
  const MemoryTarget target = memory_target_for(
      device_, device_.is_cpu() ? distributed::ranks_on_this_host() : 1);
  if (config.memory_estimation.enable && mesh_->world().rank() == 0) {
    log::info("memory plan (memory_estimation.enable):\n%s",
              describe_memory_plan(plan_memory(config, mesh_->world().size(), target)).c_str());
  }
  if (!counting_mode()) check_memory_fits(config, mesh_->world().size(), target);
  model_ = family_.build(config, layout, stages);
  if (document_end) model_->set_document_end(*document_end);
  model_->initialize(config.debug.effective_seed());
  // Under expert parallelism the experts' weights are sharded over efsdp: a second FSDP
  // over the same units, holding those weights (placed over "ep") only.
  std::vector<nn::ParameterUnit> units = model_->units(), expert_units = units;
  for (size_t u = 0; u < units.size(); ++u) {
    auto is_expert = [](const nn::Parameter* p) {
      const std::vector<nn::MeshDimPlacement>& dims = p->placement().dims;
      return std::any_of(dims.begin(), dims.end(),
                         [](const nn::MeshDimPlacement& d) { return d.mesh_dim == "ep"; });
    };
    std::vector<nn::Parameter*>& dense = units[u].parameters;
    std::vector<nn::Parameter*>& experts = expert_units[u].parameters;
    dense.erase(std::remove_if(dense.begin(), dense.end(), is_expert), dense.end());
    experts.erase(std::remove_if(experts.begin(), experts.end(),
                                 [&](const nn::Parameter* p) { return !is_expert(p); }),
                  experts.end());
  }
  fsdp_ = std::make_unique<distributed::FullyShardedDataParallel>(
      units, mesh_->tensor_dp_shard_cp(), mesh_->tensor_dp_replicate(),
      config.parallelism.fsdp_reshard_after_forward);
  if (expert_parallel_) {
    fsdp_->set_experts(std::make_unique<distributed::FullyShardedDataParallel>(
        expert_units, mesh_->tensor_efsdp(), mesh_->tensor_dp_replicate(),
        config.parallelism.fsdp_reshard_after_forward));
  }
  if (const config::LinearFloat8Section& f = config.quantize.linear.float8;
      float8_ && f.enable_fsdp_float8_all_gather) {
    fsdp_->use_float8_all_gather(f.precompute_float8_dynamic_scale_for_fsdp,
                                 &mesh_->tensor_group(distributed::MeshDim::tp));
  }
  model_->set_unit_hooks(fsdp_.get());
  if (schedule) {
    fsdp_->set_schedule_driven();
    pipeline_ = std::make_unique<PipelineExecutor>(std::move(*schedule), pp_rank, *model_,
                                                   mesh_->group(distributed::MeshDim::pp),
                                                   fsdp_.get());
  }
  parameters_ = model_->parameters();
  optimizer_ = std::make_unique<AdamW>(AdamW::from_config(parameters_, config));
  peak_tflops_ = peak_tflops_for(config, device_);
  distributed::Communicator& world = mesh_->world();
  metrics::RunInfo run{world.rank(), world.size(), summary_.flops_per_token, peak_tflops_, {}};
  run.describe_rank = [shape = mesh_->shape()](int64_t rank) {
    return distributed::describe_rank(shape, rank);
  };
  metrics_ = std::make_unique<metrics::MetricsProcessor>(
      config, run, allocator_for(device_),
      [&world](double value) {
        return distributed::all_reduce_scalar(world, value, distributed::ReduceOp::Max);
      },
      [&world](double value) {  // each rank fills its slot of a sum
        Tensor all = Tensor::zeros({world.size()}, DType::F32);
        all.mutable_data<float>()[world.rank()] = float(value);
        world.all_reduce(all).wait();
        return std::vector<double>(all.data<float>(), all.data<float>() + world.size());
      });
  log_start();
  if (config.checkpoint.enable) {
    checkpoint_io_ = world.split(0, world.rank(), "checkpoint");
    load_at_start();
    if (config.checkpoint.async_mode != config::AsyncMode::Disabled) {
      TITAN_CHECK_INPUT(distributed::threads_may_communicate())
          << "checkpoint.async_mode: " << config::choice_name(config.checkpoint.async_mode)
          << " needs MPI_THREAD_MULTIPLE, which this MPI does not grant; use disabled";
      async_writer_ = std::make_unique<ckpt::AsyncCheckpointWriter>();
      // A device's pieces are host copies already: staging is for CPU ranks (asking for the
      // pieces there would copy the whole state to the host at start).
      const MemoryTagScope tag("checkpoint");
      for (const ckpt::TensorPiece& piece :
           device_.is_cpu() ? checkpoint_pieces(true, DType::F32)
                            : std::vector<ckpt::TensorPiece>{}) {
        checkpoint_staging_.push_back(Tensor::zeros(piece.local.shape(), DType::F32));
      }
    }
  }
}

Trainer::~Trainer() = default;

void Trainer::log_start() const {
  log::info("model: %s", summary_.description.c_str());
  log::info("batch: %lld x %lld tokens per microbatch, %lld accumulation steps; data: %s",
            (long long)config_.training.local_batch_size, (long long)config_.training.seq_len,
            (long long)accumulation_steps_, data_->describe().c_str());
  if (mesh_->world().size() > 1) {
    std::string mode = fsdp_->sharded() ? (mesh_->dp_replicate().size() > 1 ? "HSDP" : "FSDP")
                       : mesh_->dp_replicate().size() > 1 ? "DDP"
                                                          : "";
    if (pipeline_) {
      const distributed::Schedule& schedule = pipeline_->schedule();
      mode += std::string(mode.empty() ? "" : " x ") + "PP " + schedule.name + ", " +
              std::to_string(schedule.stages) + " stages, " +
              std::to_string(schedule.microbatches) + " microbatches";
    }
    if (tensor_parallel_) {
      mode += std::string(mode.empty() ? "" : " x ") + "TP" +
              (tensor_parallel_->sequence_parallel() ? " with sequence parallel" : "") +
              (tensor_parallel_->loss_parallel() ? ", loss parallel" : ", gathered logits") +
              (tensor_parallel_->async() ? ", async" : "");
    }
    if (context_parallel_) {
      mode += std::string(mode.empty() ? "" : " x ") + "CP " +
              (context_parallel_->split() == nn::SequenceSplit::HeadTail ? "head-tail"
                                                                          : "contiguous") +
              ", " +
              (context_parallel_->rotate_method() == distributed::RotateMethod::AllToAll
                   ? "ring (alltoall)"
                   : "allgather");
    }
    if (expert_parallel_) {
      mode += std::string(mode.empty() ? "" : " x ") + "EP " +
              std::to_string(mesh_->ep().size()) + " (the experts' FSDP over " +
              std::to_string(mesh_->efsdp().size()) + ")";
    }
    int64_t shard_bytes = 0;
    for (int u = 0; u < fsdp_->unit_count(); ++u) shard_bytes += fsdp_->shard_buffer_bytes(u);
    log::info("mesh: %s (%s); %d units, %.1f MiB of parameters per rank, reshard after forward: %s",
              mesh_->shape().describe().c_str(), mode.c_str(), fsdp_->unit_count(),
              double(shard_bytes) / double(1 << 20),
              std::string(config::choice_name(config_.parallelism.fsdp_reshard_after_forward)).c_str());
  }
  log::info("threads %d, CPU GEMMs %s, CPU kernels %s, peak for MFU %.3f TFLOP/s (%s), "
            "%.4g FLOPs per token",
            thread_count(), ops::cpu::gemm_library_name(), ops::cpu::kernel_isa_name(),
            peak_tflops_,
            config_.metrics.peak_tflops ? "metrics.peak_tflops"
            : device_.is_cuda()         ? "the GPU's datasheet"
                                        : "measured sgemm",
            summary_.flops_per_token);
  if (const std::string warning = ops::cpu_gemm_warning(); !warning.empty()) {
    log::warn("%s", warning.c_str());
  }
  {
    std::ostringstream where;
    where << device_;
    log::info("device: %s (%s)", where.str().c_str(), device_name(device_).c_str());
  }
  if (float8_) {
    int64_t converted = 0;
    for (const nn::Parameter* p : parameters_) converted += p->float8() ? 1 : 0;
    const bool gathered = fsdp_->sharded() && fsdp_->float8_weight_count() > 0;
    log::info("Float8: %s recipe (%s), %lld linear weights of this rank's "
              "layers converted; the output projection stays in high precision (fused with "
              "the loss)%s",
              float8_->recipe.name,
              float8_->emulate ? "emulated: cast, dequantize, GEMM" : "fp8 tensor cores",
              (long long)converted,
              !gathered ? ""
              : config_.quantize.linear.float8.precompute_float8_dynamic_scale_for_fsdp
                  ? "; FSDP all-gathers them in float8, scales precomputed once per step"
                  : "; FSDP all-gathers them in float8");
    if (config_.model.print_after_conversion) {  // torchtitan prints the converted model
      for (const nn::Parameter* p : parameters_) {
        if (p->global_shape().size() != 2) continue;
        log::info("  %s [%lld, %lld]: %s", p->name().c_str(), (long long)p->global_shape()[0],
                  (long long)p->global_shape()[1],
                  p->float8() ? float8_->recipe.name : "high precision");
      }
    }
  }
  if (model_->compute_dtype() != DType::F32) {
    const std::string gemms =
        device_.is_cpu() ? std::string("; bf16 GEMMs ") + ops::cpu::bf16_gemm_name() : "";
    log::info("mixed precision: weights and activations in %s, float32 master weights, "
              "gradients and optimizer state (training.mixed_precision_param)%s",
              std::string(dtype_name(model_->compute_dtype())).c_str(), gemms.c_str());
  } else if (config_.training.mixed_precision_param != config::Precision::Float32) {
    log::info("the CPU computes in float32 (training.mixed_precision_param's default is for "
              "GPUs; give it explicitly to compute in bfloat16 on a CPU with AVX512_BF16)");
  }
}

// This rank's communication so far, over every group of the mesh.
static metrics::CommTotals comm_totals(const distributed::Mesh& mesh) {
  const distributed::CommStats comm = mesh.total_stats();
  metrics::CommTotals totals{comm.wait_seconds, 0};
  for (const distributed::CollectiveCount& c : comm.collectives) totals.bytes += c.bytes;
  return totals;
}

StepResult Trainer::train_step() {
  const int64_t step = step_ + 1;
  metrics_->begin_step(step, tokens_seen_, comm_totals(*mesh_));
  StepResult result;
  try {
    TraceSpan span("step " + std::to_string(step));
    result = run_step();
  } catch (const OutOfMemoryError&) {
    metrics_->out_of_memory(step);
    throw;
  }
  metrics_->end_step(step);
  return result;
}

StepResult Trainer::run_step() {
  // The first step of this run (a resumed run starts after the checkpoint's step).
  const bool first_of_run = steps_this_run_++ == 0;
  ++step_;
  StepResult result;
  result.step = step_;
  inject_test_fault();
  int64_t valid = 0;
  std::vector<data::TokenBatch> batches = fetch_microbatches(valid);
  const float grad_scale = float(1.0 / double(valid));

  zero_grads(parameters_);
  fsdp_->precompute_float8_scales();  // the float8 all-gather's scales of this step's weights
  double loss_sum = 0;
  for (data::TokenBatch& batch : batches) {
    tokens_seen_ += batch.inputs.numel() * mesh_->dp_degree();
    if (pipeline_) {
      TraceSpan span("pipeline");
      loss_sum += pipeline_->train(pipeline_microbatches(batch), grad_scale);
      continue;
    }
    std::unique_ptr<models::ActivationRecord> record = model_->new_record();
    record->pipeline.defer_loss = true;  // grad_scale is known: one logits GEMM, not two
    {
      TraceSpan span("forward");
      loss_sum += model_->forward(batch.inputs, batch.labels, *record);  // 0: deferred
    }
    {
      TraceSpan span("backward");
      model_->backward(*record, grad_scale);
    }
    loss_sum += record->pipeline.deferred_loss;
  }
  {
    TraceSpan span("reduce_gradients");
    fsdp_->reduce_gradients();
    if (tensor_parallel_) tensor_parallel_->reduce_partial_gradients(parameters_);
  }
  result.loss = distributed::all_reduce_scalar(mesh_->dp(), loss_over_model(loss_sum)) /
                double(valid);
  result.grad_norm = global_grad_norm();
  result.lr = schedule_.lr(step_);

  if (!std::isfinite(result.loss) || !std::isfinite(result.grad_norm)) {
    if (!config_.training.skip_nonfinite_steps) {
      throw DivergedError("training diverged at step " + std::to_string(step_) + ": loss " +
                          std::to_string(result.loss) + ", grad norm " +
                          std::to_string(result.grad_norm) +
                          " (lower optimizer.lr, or set training.skip_nonfinite_steps)");
    }
    log::warn("step %lld: loss %g, grad norm %g: not finite, step skipped "
              "(training.skip_nonfinite_steps)", (long long)step_, result.loss, result.grad_norm);
    result.skipped = true;
    zero_grads(parameters_);
  } else {
    TraceSpan span("optimizer");
    update_routing(result);
    clip_grads(parameters_, config_.training.max_norm, result.grad_norm);
    optimizer_->step(result.lr);
    model_->update_compute_copies();
  }

  const metrics::CommTotals comm = comm_totals(*mesh_);
  metrics::StepValues report{step_,        result.loss, result.grad_norm, result.lr,
                             tokens_seen_, comm.wait_s, comm.bytes};
  report.moe_load_imbalance = result.moe_load_imbalance;
  report.moe_worst_layer = result.moe_worst_layer;
  // torchtitan's should_validate: step 1 and every validation.freq steps.
  if (config_.validation.enable && (step_ == 1 || step_ % config_.validation.freq == 0)) {
    const ValidationResult validation = validate();
    result.val_loss = report.val_loss = validation.loss;
    report.val_perplexity = validation.perplexity;
  }
  metrics_->report_step(report);
  maybe_save_checkpoint();
  // Start-up collectives (the first gathers, NCCL's connections) had the longer timeout.
  if (first_of_run) distributed::set_comm_timeout(double(config_.comm.train_timeout_seconds));
  return result;
}

void Trainer::update_routing(StepResult& result) {
  if (summary_.routed_experts == 0) return;  // a dense model: nothing to route
  Tensor load = model_->expert_load();
  const bool has_experts = load.defined();
  // Every pipeline stage takes part in the metric's reductions, with or without experts.
  double worst = 0;
  int64_t worst_layer = -1;
  if (has_experts) {
    // Each dp rank saw other sequences, each cp rank other tokens of them, and under
    // sequence parallelism each tp rank other rows.
    mesh_->dp().all_reduce(load).wait();
    if (context_parallel_) mesh_->group(distributed::MeshDim::cp).all_reduce(load).wait();
    if (tensor_parallel_ && tensor_parallel_->sequence_parallel()) {
      mesh_->group(distributed::MeshDim::tp).all_reduce(load).wait();
    }
    const std::vector<int> layer_ids = model_->expert_layer_ids();
    const int64_t layers = load.size(0), experts = load.size(1);
    const float* counts = load.data<float>();
    for (int64_t l = 0; l < layers; ++l) {
      double sum = 0, most = 0;
      for (int64_t e = 0; e < experts; ++e) {
        sum += counts[l * experts + e];
        most = std::max(most, double(counts[l * experts + e]));
      }
      const double imbalance = sum > 0 ? most / (sum / double(experts)) : 0;
      if (imbalance > worst) {
        worst = imbalance;
        worst_layer = layer_ids.at(size_t(l));
      }
    }
    model_->update_routing(load);
  }
  if (pipeline_) {
    auto& pp = mesh_->group(distributed::MeshDim::pp);
    const double most = distributed::all_reduce_scalar(pp, worst, distributed::ReduceOp::Max);
    // The lowest layer of those at the most, as one rank picks (a rank without experts
    // proposes none).
    const int64_t none = std::numeric_limits<int64_t>::max();
    const int64_t proposed = most == worst && worst_layer >= 0 ? worst_layer : none;
    worst_layer = distributed::all_reduce_scalar(pp, proposed, distributed::ReduceOp::Min);
    if (worst_layer == none) worst_layer = -1;
    worst = most;
  } else if (!has_experts) {
    return;
  }
  if (worst_layer < 0) return;  // a model without experts on any stage
  result.moe_load_imbalance = worst;
  result.moe_worst_layer = worst_layer;
}

// Replicas hold equal shards, and so do the tp ranks that share a piece: each piece counts
// once, summed over the shard group and the tp group.
double Trainer::global_grad_norm() const {
  std::vector<nn::Parameter*> counted;
  for (nn::Parameter* p : parameters_) {
    if (distributed::TensorParallelGroup::counts_in_grad_norm(*p)) counted.push_back(p);
  }
  double sum = grad_sum_of_squares(counted);
  if (tensor_parallel_) {
    sum = distributed::all_reduce_scalar(mesh_->group(distributed::MeshDim::tp), sum);
  }
  return std::sqrt(distributed::all_reduce_scalar(mesh_->dp_shard_cp(), sum_over_stages(sum)));
}

double Trainer::sum_over_stages(double value) const {
  return pipeline_ ? distributed::all_reduce_scalar(mesh_->group(distributed::MeshDim::pp), value)
                   : value;
}

double Trainer::loss_over_model(double loss_sum) const {
  const double stages = sum_over_stages(loss_sum);
  return context_parallel_
             ? distributed::all_reduce_scalar(mesh_->group(distributed::MeshDim::cp), stages)
             : stages;
}

std::vector<data::TokenBatch> Trainer::pipeline_microbatches(const data::TokenBatch& batch) const {
  const int64_t size = config_.parallelism.pipeline_parallel_microbatch_size;
  std::vector<data::TokenBatch> microbatches;
  for (int64_t row = 0; row < batch.inputs.size(0); row += size) {
    microbatches.push_back({batch.inputs.narrow(row, size), batch.labels.narrow(row, size)});
  }
  return microbatches;
}

// torchtitan fetches every microbatch first, so that the loss is divided by the step's whole
// count of valid tokens over every data-parallel rank.
std::vector<data::TokenBatch> Trainer::fetch_microbatches(int64_t& valid) {
  std::vector<data::TokenBatch> batches;
  valid = 0;
  for (int64_t i = 0; i < accumulation_steps_; ++i) {
    const MemoryTagScope tag("data");
    batches.push_back(data_->next());
    valid += ops::cross_entropy_valid_tokens(batches.back().labels);
  }
  valid = distributed::all_reduce_scalar(mesh_->dp(), valid);
  TITAN_CHECK_INPUT(valid > 0) << "step " << step_
                               << ": every label of the batch is ignored (-100)";
  return batches;
}

// Test-only: TITAN_TEST_FAULT="<throw|hang|oom>:<rank>:<step>" makes world rank <rank> throw,
// stop answering for an hour, or run out of memory (no allocation beyond what it holds), at
// the start of step <step>, so that tests can show that the other ranks fail with exit 1
// instead of hanging, and what an out-of-memory step leaves behind.
void Trainer::inject_test_fault() const {
  const char* fault = std::getenv("TITAN_TEST_FAULT");
  if (!fault) return;
  char kind[16] = {};
  int rank = -1;
  long long step = -1;
  TITAN_CHECK(std::sscanf(fault, "%15[a-z]:%d:%lld", kind, &rank, &step) == 3)
      << "TITAN_TEST_FAULT=" << fault << ": expected <throw|hang|oom|slow|signal>:<rank>:<step>";
  if (rank != mesh_->world().rank() || step != step_) return;
  if (std::string(kind) == "throw") {
    TITAN_FAIL() << "test fault injected at step " << step_;
  }
  if (std::string(kind) == "slow") {  // a straggler: this rank computes 0.5 s longer
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    return;
  }
  if (std::string(kind) == "signal") {  // SIGUSR1 to this rank alone, held until taken
    TITAN_CHECK(stop_signals_held())
        << "TITAN_TEST_FAULT=signal needs titan-train, which holds the stop signals";
    std::raise(SIGUSR1);
    return;
  }
  if (std::string(kind) == "oom") {
    Allocator& allocator = allocator_for(device_);
    allocator.set_limit_for_testing(allocator.stats().current_bytes);
    return;
  }
  std::this_thread::sleep_for(std::chrono::hours(1));
}

int Trainer::agreed_stop_signal() {
  if (!stop_signals_held()) return 0;
  return int(distributed::all_reduce_scalar(mesh_->world(), double(pending_stop_signal()),
                                            distributed::ReduceOp::Max));
}

ValidationResult Trainer::validate() {
  TITAN_CHECK(validation_data_) << "validate: validation.enable is off";
  validation_data_->seek(0);  // every pass reads the same windows
  fsdp_->precompute_float8_scales();  // the weights changed since the step's
  double loss_sum = 0;
  int64_t valid = 0;
  for (int64_t i = 0; i < validation_steps_; ++i) {
    const data::TokenBatch batch = validation_data_->next();
    if (pipeline_) {
      loss_sum += pipeline_->evaluate({batch});
    } else {
      std::unique_ptr<models::ActivationRecord> record = model_->new_record();  // forward only
      loss_sum += model_->forward(batch.inputs, batch.labels, *record);
    }
    valid += ops::cross_entropy_valid_tokens(batch.labels);
  }
  loss_sum = loss_over_model(loss_sum);
  ValidationResult v;
  v.tokens = distributed::all_reduce_scalar(mesh_->dp(), valid);
  v.loss = distributed::all_reduce_scalar(mesh_->dp(), loss_sum) /
           double(std::max<int64_t>(v.tokens, 1));
  v.perplexity = std::exp(v.loss);
  return v;
}

std::vector<StepResult> Trainer::train() {
  std::vector<StepResult> results;
  while (step_ < config_.training.steps) {
    results.push_back(train_step());
    if (step_ == config_.training.steps) break;  // done: nothing to stop
    if (const int signal = agreed_stop_signal(); signal != 0) {
      stop_for_signal(signal);
      return results;
    }
  }
  if (async_writer_) async_writer_->wait();
  log::info("training done: %lld steps, %lld tokens", (long long)step_, (long long)tokens_seen_);
  return results;
}

}  // namespace titan::train
