#include "titan/train/trainer.h"

#include <chrono>
#include <cmath>

#include "titan/core/logging.h"
#include "titan/core/threads.h"
#include "titan/data/sources.h"
#include "titan/ops/cross_entropy.h"

namespace titan::train {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

int64_t accumulation_steps_for(const config::JobConfig& config) {
  const config::TrainingSection& t = config.training;
  const int64_t dp_degree = 1;  // data parallelism lands with the mesh
  const int64_t per_microbatch = t.local_batch_size * dp_degree;
  const int64_t global = t.global_batch_size < 0 ? per_microbatch : t.global_batch_size;
  TITAN_CHECK_INPUT(global > 0 && global % per_microbatch == 0)
      << "training.global_batch_size: " << global << " is not a multiple of "
      << "training.local_batch_size x data-parallel degree = " << t.local_batch_size << " x "
      << dp_degree << "; use a multiple of " << per_microbatch;
  return global / per_microbatch;
}

Trainer::Trainer(const config::JobConfig& config)
    : config_(config),
      args_(models::llama3::model_args_from_config(config)),
      schedule_(LrSchedule::from_config(config)) {
  accumulation_steps_ = accumulation_steps_for(config);
  data_ = data::make_batch_source(config, args_.vocab_size);  // bad data fails before the model
  model_ = std::make_unique<models::llama3::Llama3Model>(args_);
  model_->initialize(config.debug.effective_seed());
  parameters_ = model_->parameters();
  optimizer_ = std::make_unique<AdamW>(AdamW::from_config(parameters_, config));
  logger_ = std::make_unique<metrics::StepLogger>(config.job.dump_folder);
  flops_per_token_ = models::llama3::flops_per_token(args_, config.training.seq_len);
  peak_tflops_ = config.metrics.peak_tflops ? *config.metrics.peak_tflops
                                            : measure_sgemm_gflops() / 1000.0;
  log_start();
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
  log::info("threads %d, OpenBLAS core %s, peak for MFU %.3f TFLOP/s (%s), %.4g FLOPs per token",
            thread_count(), blas_core_name().c_str(), peak_tflops_,
            config_.metrics.peak_tflops ? "metrics.peak_tflops" : "measured sgemm",
            flops_per_token_);
  if (const std::string warning = blas_core_warning(); !warning.empty()) log::warn("%s", warning.c_str());
  if (config_.training.mixed_precision_param != config::Precision::Float32) {
    log::info("the CPU backend computes in float32 (training.mixed_precision_param is for GPUs)");
  }
}

StepResult Trainer::train_step() {
  ++step_;
  StepResult result;
  result.step = step_;
  if (step_ == 1) {
    started_s_ = last_log_s_ = now_s();
    allocator_for(Device::cpu()).reset_peak();
  }
  // torchtitan fetches every microbatch first so that the loss is divided by the step's
  // whole count of valid tokens.
  std::vector<data::TokenBatch> batches;
  int64_t valid = 0;
  for (int64_t i = 0; i < accumulation_steps_; ++i) {
    batches.push_back(data_->next());
    valid += ops::cross_entropy_valid_tokens(batches.back().labels);
  }
  TITAN_CHECK_INPUT(valid > 0) << "step " << step_ << ": every label of the batch is ignored (-100)";
  const float grad_scale = float(1.0 / double(valid));
  zero_grads(parameters_);
  double loss_sum = 0;
  for (data::TokenBatch& batch : batches) {
    models::llama3::ModelRecord record;
    loss_sum += model_->forward(batch.inputs, batch.labels, record);
    model_->backward(record, grad_scale);
    tokens_seen_ += batch.inputs.numel();
  }
  result.loss = loss_sum / double(valid);
  result.grad_norm = grad_norm(parameters_);
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
    clip_grads(parameters_, config_.training.max_norm, result.grad_norm);
    optimizer_->step(result.lr);
  }
  if (step_ == 1 || step_ % config_.metrics.log_freq == 0) log_step(result);
  return result;
}

void Trainer::log_step(const StepResult& result) {
  const double now = now_s();
  metrics::StepMetrics m;
  m.step = result.step;
  m.loss = result.loss;
  m.grad_norm = result.grad_norm;
  m.lr = result.lr;
  const double interval = std::max(now - last_log_s_, 1e-9);
  m.tokens_per_second = double(tokens_seen_ - last_log_tokens_) / interval;
  m.tflops = metrics::achieved_tflops(flops_per_token_, m.tokens_per_second);
  m.mfu_percent = metrics::mfu_percent(m.tflops, peak_tflops_);
  Allocator& allocator = allocator_for(Device::cpu());
  m.memory_gib = double(allocator.stats().peak_bytes) / double(int64_t(1) << 30);
  allocator.reset_peak();
  m.tokens = tokens_seen_;
  m.elapsed_s = now - started_s_;
  logger_->log(m);
  last_log_s_ = now;
  last_log_tokens_ = tokens_seen_;
}

std::vector<StepResult> Trainer::train() {
  std::vector<StepResult> results;
  while (step_ < config_.training.steps) results.push_back(train_step());
  log::info("training done: %lld steps, %lld tokens", (long long)step_, (long long)tokens_seen_);
  return results;
}

}  // namespace titan::train
