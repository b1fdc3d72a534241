#include "titan/train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <thread>

#include "titan/core/device_select.h"
#include "titan/core/logging.h"
#include "titan/core/threads.h"
#include "titan/core/trace.h"
#include "titan/data/sources.h"
#include "titan/distributed/runtime.h"
#include "titan/metrics/memory_snapshot.h"
#include "titan/ops/cross_entropy.h"

namespace titan::train {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// One step's scalars under torchtitan's tag names (components/metrics.py); the comm share and
// validation perplexity are titan.cpp's, placed in torchtitan's groups.
void write_tensorboard(metrics::TensorBoardWriter& tensorboard, const metrics::StepMetrics& m) {
  tensorboard.add_scalar("loss_metrics/global_avg_loss", m.loss, m.step);
  tensorboard.add_scalar("grad_norm", m.grad_norm, m.step);
  tensorboard.add_scalar("lr", m.lr, m.step);
  tensorboard.add_scalar("n_tokens_seen", double(m.tokens), m.step);
  tensorboard.add_scalar("throughput(tps)", m.tokens_per_second, m.step);
  tensorboard.add_scalar("tflops", m.tflops, m.step);
  tensorboard.add_scalar("mfu(%)", m.mfu_percent, m.step);
  tensorboard.add_scalar("memory/max_active(GiB)", m.memory_gib, m.step);
  if (m.comm_percent) tensorboard.add_scalar("time_metrics/comm_wait(%)", *m.comm_percent, m.step);
  if (m.val_loss) tensorboard.add_scalar("validation_metrics/loss", *m.val_loss, m.step);
  if (m.val_perplexity) tensorboard.add_scalar("validation_metrics/perplexity", *m.val_perplexity, m.step);
  tensorboard.flush();
}

// The dtype the model computes in (the one place that decides it):
// training.mixed_precision_param on a GPU; f32 on the CPU, whose ops take f32 only
// (log_start says that the setting is ignored there). Master weights, gradients, their
// reduction and the optimizer state are f32 everywhere.
DType compute_dtype_for(const config::JobConfig& config, Device device) {
  const config::TrainingSection& t = config.training;
  TITAN_CHECK_INPUT(t.mixed_precision_reduce == config::Precision::Float32)
      << "training.mixed_precision_reduce: " << config::choice_name(t.mixed_precision_reduce)
      << " is not built; gradients are reduced in float32 (use float32)";
  if (device.is_cpu()) return DType::F32;
  TITAN_CHECK_INPUT(t.mixed_precision_param != config::Precision::Float16)
      << "training.mixed_precision_param: float16 is not built; use bfloat16 or float32";
  return t.mixed_precision_param == config::Precision::Bfloat16 ? DType::BF16 : DType::F32;
}

}  // namespace

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
    : config_(config),
      args_(models::llama3::model_args_from_config(config)),
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
  data_ = data::make_batch_source(config, args_.vocab_size, mesh_->dp_rank(), mesh_->dp_degree());
  if (config.profiling.enable_profiling) {
    const config::ProfilingSection& p = config.profiling;
    TITAN_CHECK_INPUT(p.profiler_warmup + p.profiler_active <= p.profile_freq)
        << "profiling: profiler_warmup " << p.profiler_warmup << " + profiler_active "
        << p.profiler_active << " exceed profile_freq " << p.profile_freq
        << "; raise profile_freq or lower the others";
  }
  if (config.validation.enable) {
    const config::ValidationSection& v = config.validation;
    TITAN_CHECK_INPUT(v.seq_len <= config.training.seq_len)
        << "validation.seq_len " << v.seq_len << " exceeds training.seq_len "
        << config.training.seq_len << " (the model's RoPE table); use at most that";
    int64_t windows = 0;
    data::make_validation_source(config, args_.vocab_size, mesh_->dp_rank(), mesh_->dp_degree(),
                                 &windows);
    const int64_t per_batch = v.local_batch_size * mesh_->dp_degree();
    validation_steps_ = v.steps > 0 ? v.steps : windows / per_batch;
    TITAN_CHECK_INPUT(validation_steps_ > 0)
        << "validation: the split has " << windows << " windows of " << v.seq_len + 1
        << " tokens, fewer than one global batch of " << per_batch
        << "; lower validation.local_batch_size or validation.seq_len";
  }
  distributed::Communicator& shard_group = mesh_->tensor_dp_shard_cp();
  model_ = std::make_unique<models::llama3::Llama3Model>(
      args_, nn::Placement{shard_group.rank(), shard_group.size(), device_,
                           compute_dtype_for(config, device_)});
  model_->initialize(config.debug.effective_seed());
  fsdp_ = std::make_unique<distributed::FullyShardedDataParallel>(
      model_->units(), shard_group, mesh_->tensor_dp_replicate(),
      config.parallelism.fsdp_reshard_after_forward);
  model_->set_unit_hooks(fsdp_.get());
  parameters_ = model_->parameters();
  optimizer_ = std::make_unique<AdamW>(AdamW::from_config(parameters_, config));
  if (mesh_->world().rank() == 0) logger_ = std::make_unique<metrics::StepLogger>(config.job.dump_folder);
  if (config.metrics.enable_tensorboard &&
      (mesh_->world().rank() == 0 || config.metrics.save_for_all_ranks)) {
    // torchtitan's layout, less its per-launch date folder: a resumed run's new file
    // continues the same curves.
    std::filesystem::path folder =
        std::filesystem::path(config.job.dump_folder) / config.metrics.save_tb_folder;
    if (config.metrics.save_for_all_ranks) folder /= "rank_" + std::to_string(mesh_->world().rank());
    tensorboard_ = std::make_unique<metrics::TensorBoardWriter>(folder);
  }
  flops_per_token_ = models::llama3::flops_per_token(args_, config.training.seq_len);
  // Without metrics.peak_tflops: on a GPU its datasheet bf16 peak when known, on the CPU the
  // measured sgemm rate (the CPU's rate says nothing about a GPU).
  if (config.metrics.peak_tflops) {
    peak_tflops_ = *config.metrics.peak_tflops;
  } else if (device_.is_cuda()) {
    peak_tflops_ = known_bf16_peak_tflops(device_name(device_));
    TITAN_CHECK_INPUT(peak_tflops_ > 0)
        << "metrics.peak_tflops: no known bf16 peak for " << device_name(device_)
        << "; set it to the GPU's dense bf16 TFLOP/s for MFU";
  } else {
    peak_tflops_ = measure_sgemm_gflops() / 1000.0;
  }
  log_start();
  if (config.checkpoint.enable) {
    checkpoint_io_ = mesh_->world().split(0, mesh_->world().rank(), "checkpoint");
    load_at_start();
    if (config.checkpoint.async_mode != config::AsyncMode::Disabled) {
      TITAN_CHECK_INPUT(distributed::threads_may_communicate())
          << "checkpoint.async_mode: " << config::choice_name(config.checkpoint.async_mode)
          << " needs MPI_THREAD_MULTIPLE, which this MPI does not grant; use disabled";
      async_writer_ = std::make_unique<ckpt::AsyncCheckpointWriter>();
    }
  }
}

Trainer::~Trainer() = default;

void Trainer::log_start() const {
  const models::llama3::ParameterCounts counts = models::llama3::count_parameters(args_);
  log::info("model: llama3 %s, %lld parameters (dim %lld, %lld layers, %lld heads, %lld kv heads, "
            "ffn %lld, vocab %lld%s)",
            config_.model.flavor.c_str(), (long long)counts.total, (long long)args_.dim,
            (long long)args_.n_layers, (long long)args_.n_heads, (long long)args_.n_kv_heads,
            (long long)args_.hidden_dim(), (long long)args_.vocab_size,
            args_.weight_tying ? ", output tied to the embedding" : "");
  log::info("batch: %lld x %lld tokens per microbatch, %lld accumulation steps; data: %s",
            (long long)config_.training.local_batch_size, (long long)config_.training.seq_len,
            (long long)accumulation_steps_, data_->describe().c_str());
  if (mesh_->world().size() > 1) {
    const char* mode = fsdp_->sharded() ? (mesh_->dp_replicate().size() > 1 ? "HSDP" : "FSDP")
                                        : "DDP";
    int64_t shard_bytes = 0;
    for (int u = 0; u < fsdp_->unit_count(); ++u) shard_bytes += fsdp_->shard_buffer_bytes(u);
    log::info("mesh: %s (%s); %d units, %.1f MiB of parameters per rank, reshard after forward: %s",
              mesh_->shape().describe().c_str(), mode, fsdp_->unit_count(),
              double(shard_bytes) / double(1 << 20),
              std::string(config::choice_name(config_.parallelism.fsdp_reshard_after_forward)).c_str());
  }
  log::info("threads %d, OpenBLAS core %s, peak for MFU %.3f TFLOP/s (%s), %.4g FLOPs per token",
            thread_count(), blas_core_name().c_str(), peak_tflops_,
            config_.metrics.peak_tflops ? "metrics.peak_tflops"
            : device_.is_cuda()         ? "the GPU's datasheet"
                                        : "measured sgemm",
            flops_per_token_);
  if (const std::string warning = blas_core_warning(); !warning.empty()) log::warn("%s", warning.c_str());
  {
    std::ostringstream where;
    where << device_;
    log::info("device: %s (%s)", where.str().c_str(), device_name(device_).c_str());
  }
  if (model_->compute_dtype() != DType::F32) {
    log::info("mixed precision: weights and activations in %s, float32 master weights, "
              "gradients and optimizer state (training.mixed_precision_param)",
              std::string(dtype_name(model_->compute_dtype())).c_str());
  } else if (config_.training.mixed_precision_param != config::Precision::Float32) {
    log::info("the CPU backend computes in float32 (training.mixed_precision_param is for GPUs)");
  }
}

// profiling.*: torchtitan's schedule. Each cycle of profile_freq steps waits, warms up
// (profiler_warmup steps), then records profiler_active steps; the trace of those is written
// to <dump>/<save_traces_folder>/iteration_<last recorded step>/rank<r>_trace.json.
bool Trainer::profiled(int64_t step) const {
  const config::ProfilingSection& p = config_.profiling;
  return p.enable_profiling && (step - 1) % p.profile_freq >= p.profile_freq - p.profiler_active;
}

StepResult Trainer::train_step() {
  const int64_t step = step_ + 1;
  TraceRecorder& recorder = trace_recorder();
  if (profiled(step) && !recorder.recording()) recorder.start();
  StepResult result;
  try {
    TraceSpan span("step " + std::to_string(step));
    result = run_step();
  } catch (const OutOfMemoryError&) {
    // torchtitan's name for the snapshot of a step that ran out of memory.
    if (config_.profiling.enable_memory_snapshot) {
      write_memory_snapshot(std::to_string(step - 1) + "_exit", "out_of_memory");
    }
    throw;
  }
  if (recorder.recording() && !profiled(step + 1)) {
    recorder.stop();
    const std::filesystem::path file = std::filesystem::path(config_.job.dump_folder) /
                                       config_.profiling.save_traces_folder /
                                       ("iteration_" + std::to_string(step)) /
                                       ("rank" + std::to_string(mesh_->world().rank()) + "_trace.json");
    recorder.write(file.string(), mesh_->world().rank());
    if (mesh_->world().rank() == 0) log::info("trace of step %lld in %s", (long long)step, file.c_str());
  }
  return result;
}

StepResult Trainer::run_step() {
  ++step_;
  StepResult result;
  result.step = step_;
  // The first step of this run (a resumed run starts after the checkpoint's step).
  const bool first_of_run = steps_this_run_++ == 0;
  if (first_of_run) {
    started_s_ = last_log_s_ = now_s();
    last_log_tokens_ = tokens_seen_;
    last_log_step_ = step_ - 1;
    allocator_for(device_).reset_peak();
  }
  inject_test_fault();
  // torchtitan fetches every microbatch first so that the loss is divided by the step's
  // whole count of valid tokens, over every data-parallel rank.
  std::vector<data::TokenBatch> batches;
  int64_t valid = 0;
  for (int64_t i = 0; i < accumulation_steps_; ++i) {
    const MemoryTagScope tag("data");
    batches.push_back(data_->next());
    valid += ops::cross_entropy_valid_tokens(batches.back().labels);
  }
  valid = distributed::all_reduce_scalar(mesh_->dp(), valid);
  TITAN_CHECK_INPUT(valid > 0) << "step " << step_ << ": every label of the batch is ignored (-100)";
  const float grad_scale = float(1.0 / double(valid));
  zero_grads(parameters_);
  double loss_sum = 0;
  for (data::TokenBatch& batch : batches) {
    models::llama3::ModelRecord record;
    {
      TraceSpan span("forward");
      loss_sum += model_->forward(batch.inputs, batch.labels, record);
    }
    {
      TraceSpan span("backward");
      model_->backward(record, grad_scale);
    }
    tokens_seen_ += batch.inputs.numel() * mesh_->dp_degree();
  }
  {
    TraceSpan span("reduce_gradients");
    fsdp_->reduce_gradients();
  }
  loss_sum = distributed::all_reduce_scalar(mesh_->dp(), loss_sum);
  result.loss = loss_sum / double(valid);
  // Replicas hold equal shards: the norm sums over the shard group only.
  result.grad_norm = std::sqrt(
      distributed::all_reduce_scalar(mesh_->dp_shard_cp(), grad_sum_of_squares(parameters_)));
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
    clip_grads(parameters_, config_.training.max_norm, result.grad_norm);
    optimizer_->step(result.lr);
    model_->update_compute_copies();
  }
  std::optional<ValidationResult> validation;
  if (config_.validation.enable && step_ % config_.validation.freq == 0) {
    validation = validate();
    result.val_loss = validation->loss;
  }
  // Before the step line, which starts a new peak window.
  if (config_.profiling.enable_memory_snapshot && step_ % config_.profiling.profile_freq == 0) {
    write_memory_snapshot(std::to_string(step_), "profile_freq");
  }
  if (first_of_run || step_ % config_.metrics.log_freq == 0 || validation) log_step(result, validation);
  maybe_save_checkpoint();
  if (first_of_run) distributed::set_comm_timeout(double(config_.comm.train_timeout_seconds));
  return result;
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
      << "TITAN_TEST_FAULT=" << fault << ": expected <throw|hang|oom>:<rank>:<step>";
  if (rank != mesh_->world().rank() || step != step_) return;
  if (std::string(kind) == "throw") {
    TITAN_FAIL() << "test fault injected at step " << step_;
  }
  if (std::string(kind) == "oom") {
    Allocator& allocator = allocator_for(device_);
    allocator.set_limit_for_testing(allocator.stats().current_bytes);
    return;
  }
  std::this_thread::sleep_for(std::chrono::hours(1));
}

// profiling.enable_memory_snapshot: <dump>/<folder>/iteration_<name>/rank<r>_memory_snapshot.json
// (metrics/memory_snapshot.h), describing the peak since the last step line.
void Trainer::write_memory_snapshot(const std::string& iteration, const std::string& reason) const {
  metrics::MemorySnapshotInfo info;
  info.rank = mesh_->world().rank();
  info.step = step_;
  info.reason = reason;
  info.peak_first_step = last_log_step_ + 1;
  info.peak_last_step = step_;
  const std::filesystem::path file = std::filesystem::path(config_.job.dump_folder) /
                                     config_.profiling.save_memory_snapshot_folder /
                                     ("iteration_" + iteration) /
                                     ("rank" + std::to_string(info.rank) + "_memory_snapshot.json");
  metrics::write_memory_snapshot(file.string(), allocator_for(device_), info);
  if (info.rank == 0) log::info("memory snapshot of step %lld in %s", (long long)step_, file.c_str());
}

ValidationResult Trainer::validate() {
  TITAN_CHECK(validation_steps_ > 0) << "validate: validation.enable is off";
  std::unique_ptr<data::BatchSource> source = data::make_validation_source(
      config_, args_.vocab_size, mesh_->dp_rank(), mesh_->dp_degree(), nullptr);
  double loss_sum = 0;
  int64_t valid = 0;
  for (int64_t i = 0; i < validation_steps_; ++i) {
    const data::TokenBatch batch = source->next();
    models::llama3::ModelRecord record;  // forward only: dropped at once
    loss_sum += model_->forward(batch.inputs, batch.labels, record);
    valid += ops::cross_entropy_valid_tokens(batch.labels);
  }
  ValidationResult v;
  v.tokens = distributed::all_reduce_scalar(mesh_->dp(), valid);
  v.loss = distributed::all_reduce_scalar(mesh_->dp(), loss_sum) /
           double(std::max<int64_t>(v.tokens, 1));
  v.perplexity = std::exp(v.loss);
  return v;
}

void Trainer::log_step(const StepResult& result, const std::optional<ValidationResult>& validation) {
  const double now = now_s();
  metrics::StepMetrics m;
  m.step = result.step;
  m.loss = result.loss;
  m.grad_norm = result.grad_norm;
  m.lr = result.lr;
  if (validation) {
    m.val_loss = validation->loss;
    m.val_perplexity = validation->perplexity;
  }
  const double interval = std::max(now - last_log_s_, 1e-9);
  const int64_t devices = mesh_->world().size();
  m.tokens_per_second = double(tokens_seen_ - last_log_tokens_) / double(devices) / interval;
  m.tflops = metrics::achieved_tflops(flops_per_token_, m.tokens_per_second);
  m.mfu_percent = metrics::mfu_percent(m.tflops, peak_tflops_);
  Allocator& allocator = allocator_for(device_);
  // Every rank takes part: the line shows the largest memory and communication share.
  m.memory_gib = distributed::all_reduce_scalar(mesh_->world(),
                                                double(allocator.stats().peak_bytes),
                                                distributed::ReduceOp::Max) /
                 double(int64_t(1) << 30);
  allocator.reset_peak();
  const double comm_wait_s = mesh_->total_stats().wait_seconds;
  if (devices > 1) {
    m.comm_percent = distributed::all_reduce_scalar(
        mesh_->world(), 100.0 * (comm_wait_s - last_log_comm_wait_s_) / interval,
        distributed::ReduceOp::Max);
  }
  last_log_comm_wait_s_ = comm_wait_s;
  m.tokens = tokens_seen_;
  const int64_t steps_since = result.step - last_log_step_;
  if (steps_since > 0 && result.step < config_.training.steps) {
    m.eta_s = interval / double(steps_since) * double(config_.training.steps - result.step);
  }
  last_log_step_ = result.step;
  m.elapsed_s = now - started_s_;
  if (logger_) logger_->log(m);
  if (tensorboard_) write_tensorboard(*tensorboard_, m);
  last_log_s_ = now;
  last_log_tokens_ = tokens_seen_;
}

std::vector<StepResult> Trainer::train() {
  std::vector<StepResult> results;
  while (step_ < config_.training.steps) results.push_back(train_step());
  if (async_writer_) async_writer_->wait();
  log::info("training done: %lld steps, %lld tokens", (long long)step_, (long long)tokens_seen_);
  return results;
}

}  // namespace titan::train
