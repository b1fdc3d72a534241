// The training loop, with torchtitan's semantics, on one rank or on every rank of a mesh
// (distributed/mesh.h; data parallelism: FSDP, HSDP, DDP), for any model family
// (models/family.h: model.name picks it):
//
//   for step = 1 .. training.steps:
//     fetch this rank's slice of the step's microbatches (global batch / (local batch x dp)
//       of them)
//     count the valid labels over all dp ranks; each microbatch backpropagates
//       loss_sum / count, so the gradients are those of the global token-mean loss
//     FSDP gathers each unit's parameters around its use and reduce-scatters its gradients
//       (distributed/fsdp.h); replicas all-reduce their shard gradients once per step
//     with pipeline parallelism each batch is cut into microbatches that this rank's stages
//       run in the schedule's order (train/pipeline.h); the last stage has the loss
//     grad_norm = global L2 norm over every shard (logged before clipping); stop with exit 3
//       when the loss or the norm is not finite, unless training.skip_nonfinite_steps
//     clip to training.max_norm; AdamW at the scheduled lr
//     validate at step 1 and every validation.freq steps (validation.enable)
//     report: the step line, metrics.jsonl, TensorBoard, memory snapshots and traces, each
//       when due (metrics/metrics_processor.h)
//     save a checkpoint when due (docs/checkpoints.md)
//
// The config is validated again here (config::validate: every key's rules and the rules
// between keys), so a Trainer built by a test or a tool meets the same checks as a job.
//
// Device: the model, its gradients, FSDP's buffers and the optimizer's state live on one
// training device, given to the constructor or, when not, default_training_device()
// (core/device_select.h: the GPU distributed::Runtime picked on a CUDA build with one, else
// the CPU; TITAN_DEVICE overrides). Batches come from the data loader on the host and are
// copied over once per microbatch; the loss and the grad norm come back as host scalars.
// The step line's memory is the training device's allocator.
//
// Precision: on a GPU the model computes in training.mixed_precision_param (bfloat16: bf16
// weights and activations) over f32 master weights, gradients and AdamW state, refreshing
// the bf16 weights after each optimizer step and checkpoint load; a CPU does the same when
// the key is given explicitly (compute_dtype_for), f32 otherwise. Gradients are reduced in
// f32 (training.mixed_precision_reduce).
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <vector>

#include "titan/ckpt/async_writer.h"
#include "titan/ckpt/checkpoint_file.h"
#include "titan/config/job_config.h"
#include "titan/data/batch_source.h"
#include "titan/distributed/context_parallel.h"
#include "titan/distributed/expert_parallel.h"
#include "titan/distributed/fsdp.h"
#include "titan/distributed/mesh.h"
#include "titan/distributed/tensor_parallel.h"
#include "titan/metrics/metrics_processor.h"
#include "titan/models/family.h"
#include "titan/train/lr_schedule.h"
#include "titan/train/optimizer.h"
#include "titan/train/pipeline.h"

namespace titan::train {

// Microbatches per optimizer step: global batch / (local batch x data-parallel degree);
// a global batch that does not divide is an InputError. A global batch of -1 means one
// microbatch on every dp rank.
int64_t accumulation_steps_for(const config::JobConfig& config, int64_t dp_degree = 1);

// The dtype the model computes in (the one place that decides it):
// training.mixed_precision_param on a GPU. On a CPU the key's default (bfloat16, torchtitan's,
// meant for GPUs) leaves it f32, the reference; bfloat16 given in the config file or on the
// command line (JobConfig::given) computes in bf16 where the CPU has AVX512_BF16, and is an
// InputError (exit 2) naming the missing ISA where it has not. A dry run (counting mode,
// train/dry_run.h) counts what a GPU would hold. Master weights, gradients, their reduction
// and the optimizer state are f32 everywhere.
DType compute_dtype_for(const config::JobConfig& config, Device device);
// The same choice without the check of this CPU's ISA: what a memory plan counts, which may
// be made on another machine than the one that trains.
DType requested_compute_dtype(const config::JobConfig& config, Device device);

// quantize.linear.float8 as the model's linears apply it (nn::ParameterLayout::float8), when
// model.converters names it; none otherwise. CPU ranks always emulate the fp8 GEMMs (exactly:
// ops/float8.h); a GPU multiplies on its fp8 tensor cores (cuBLASLt), or emulates when
// quantize.linear.float8.emulate asks; one without fp8 tensor cores must ask (exit 2).
std::optional<nn::Float8Training> float8_training_for(const config::JobConfig& config,
                                                      Device device);

struct StepResult {
  int64_t step = 0;
  double loss = 0;       // global token-mean loss
  double grad_norm = 0;  // before clipping
  double lr = 0;
  bool skipped = false;  // non-finite and training.skip_nonfinite_steps
  std::optional<double> val_loss;  // at validation steps
  // Mixture-of-experts models: the most picks an expert received over the mean, in the
  // worst MoE layer of the step (1 is perfect balance), and that layer's global index.
  std::optional<double> moe_load_imbalance;
  int64_t moe_worst_layer = -1;
};

struct ValidationResult {
  double loss = 0;        // token-mean over the validation batches of every dp rank
  double perplexity = 0;  // exp(loss)
  int64_t tokens = 0;     // valid tokens counted, all ranks
};

class Trainer {
 public:
  // Builds the model of model.name's family (each rank initializes its shards from
  // debug.seed), optimizer, schedule and data sources. Without a mesh the trainer runs
  // alone (a one-rank mesh of its own); with one, every rank of mesh->world() must construct
  // and step its Trainer together. Bad input (a config that fails validation, an unknown
  // model, batch sizes that do not divide, missing data) throws InputError.
  // `device`: where to train (see above); none: default_training_device().
  explicit Trainer(const config::JobConfig& config, distributed::Mesh* mesh = nullptr,
                   std::optional<Device> device = std::nullopt);
  ~Trainer();

  // Runs the remaining steps up to training.steps (and waits for an asynchronous
  // checkpoint still being written); returns every step's result. With titan-train's
  // preemption handlers installed (train/preemption.h) the ranks agree after each step
  // whether one was signalled; then training stops there, after a checkpoint of that step.
  std::vector<StepResult> train();
  // The signal training stopped on (SIGUSR1, SIGTERM), or 0.
  int stopped_on_signal() const { return stopped_on_signal_; }
  // One optimizer step (the next one); throws DivergedError on a non-finite loss or norm.
  StepResult train_step();

  // validation.steps batches (the whole split when -1) of the validation data, forward only
  // (collective over the mesh). Every pass reads the same windows; a mesh with the same
  // global validation batch (local x dp) gets the one-rank numbers.
  ValidationResult validate();

  models::Model& model() { return *model_; }
  distributed::Mesh& mesh() { return *mesh_; }
  AdamW& optimizer() { return *optimizer_; }
  const metrics::MetricsProcessor& metrics() const { return *metrics_; }
  int64_t step() const { return step_; }
  Device device() const { return device_; }
  int64_t accumulation_steps() const { return accumulation_steps_; }

 private:
  void log_start() const;
  void inject_test_fault() const;
  StepResult run_step();  // train_step without the per-step reporting around it
  double global_grad_norm() const;  // of the reduced shard gradients, every piece once
  // Mixture-of-experts load balancing (models/model.h): the step's expert load summed over
  // the data-parallel and context-parallel ranks, the routing update, the imbalance metric.
  void update_routing(StepResult& result);
  // The total of every pipeline stage's part of a sum (the loss is the last stage's alone).
  double sum_over_stages(double value) const;
  // A batch's loss sum: the last stage's, over every cp rank's tokens.
  double loss_over_model(double loss_sum) const;
  // A batch's pipeline microbatches (pipeline_parallel_microbatch_size rows each).
  std::vector<data::TokenBatch> pipeline_microbatches(const data::TokenBatch& batch) const;
  // This step's microbatches for this rank; `valid` gets the valid labels over every dp rank.
  std::vector<data::TokenBatch> fetch_microbatches(int64_t& valid);
  // Checkpoints (docs/checkpoints.md): this rank's boxes of the model (and optimizer), as
  // host tensors: the training tensors themselves on the CPU, host copies of them when
  // training on a device (`device_targets` then gets, piece by piece, the device tensor a
  // loaded piece is copied back into; undefined where the piece is the tensor itself).
  std::vector<ckpt::TensorPiece> checkpoint_pieces(bool with_optimizer, DType model_dtype,
                                                   std::vector<Tensor>* device_targets = nullptr);
  void load_at_start();  // resume from the folder, or checkpoint.initial_load_path
  void load_checkpoint(const std::string& path, bool model_only);
  void load_hf_folder(const std::string& hf_dir, const std::filesystem::path& folder);
  void maybe_save_checkpoint();
  // Writes step_'s checkpoint; in the background when the writer exists and `background`.
  void save_checkpoint(bool model_only, bool background);
  void check_free_space(const std::filesystem::path& folder, bool model_only,
                        DType model_dtype) const;
  // After a step: the stop signal any rank received (max over the world), or 0.
  int agreed_stop_signal();
  void stop_for_signal(int signal);

  const config::JobConfig config_;  // validated
  const models::ModelFamily& family_;
  const models::ModelSummary summary_;
  Device device_;
  std::unique_ptr<distributed::Communicator> own_world_;  // when running alone
  std::unique_ptr<distributed::Mesh> own_mesh_;
  distributed::Mesh* mesh_ = nullptr;
  // Tensor parallelism's collectives (tp > 1), which the model's modules use.
  std::unique_ptr<distributed::TensorParallelGroup> tensor_parallel_;
  // Context parallelism's attention (cp > 1), which the model's attention modules use.
  std::unique_ptr<distributed::ContextParallelGroup> context_parallel_;
  std::unique_ptr<distributed::ExpertParallelGroup> expert_parallel_;
  // quantize.linear.float8 when model.converters names it, which the model's linears read.
  std::optional<nn::Float8Training> float8_;
  std::unique_ptr<models::Model> model_;
  std::unique_ptr<distributed::FullyShardedDataParallel> fsdp_;  // the model's unit hooks
  // Pipeline parallelism (pp > 1): runs this rank's stages of each batch's microbatches.
  std::unique_ptr<PipelineExecutor> pipeline_;
  std::vector<nn::Parameter*> parameters_;
  std::unique_ptr<AdamW> optimizer_;
  LrSchedule schedule_;
  std::unique_ptr<data::BatchSource> data_;
  std::unique_ptr<data::BatchSource> validation_data_;  // validation.enable; rewound per pass
  std::unique_ptr<metrics::MetricsProcessor> metrics_;
  std::unique_ptr<distributed::Communicator> checkpoint_io_;  // a split of the world, for HDF5
  std::unique_ptr<ckpt::AsyncCheckpointWriter> async_writer_;  // checkpoint.async_mode: async
  // The state's copies an asynchronous save writes from, on CPU ranks: made (and their pages
  // touched) at start, so that no save pays for that, then reused.
  std::vector<Tensor> checkpoint_staging_;
  int64_t last_saved_step_ = -1;  // the step of the newest checkpoint this run started
  int stopped_on_signal_ = 0;
  int64_t accumulation_steps_ = 1;
  int64_t validation_steps_ = 0;  // batches per validation pass
  int64_t step_ = 0;
  int64_t steps_this_run_ = 0;
  int64_t tokens_seen_ = 0;
  double peak_tflops_ = 0;        // the MFU denominator
};

}  // namespace titan::train
