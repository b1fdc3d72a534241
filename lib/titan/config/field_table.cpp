// The rows of the field table: one per config key (docs/config.md lists the same keys;
// a test keeps the two in step). Types and defaults come from JobConfig's members; a row
// adds the name, what it means, the values it allows and the feature a value needs.
#include <type_traits>
#include <utility>

#include "titan/config/fields.h"
#include "titan/core/error.h"

namespace titan::config {
namespace {

// How a member's C++ type maps onto a FieldValue.
template <class T>
struct Traits;

template <class T, FieldKind field_kind>
struct PlainTraits {
  static constexpr FieldKind kind = field_kind;
  static constexpr bool optional = false;
  static std::vector<std::string> choices() { return {}; }
  static FieldValue get(const T& member) { return member; }
  static void set(T& member, const FieldValue& value) { member = std::get<T>(value); }
};

template <> struct Traits<bool> : PlainTraits<bool, FieldKind::Bool> {};
template <> struct Traits<int64_t> : PlainTraits<int64_t, FieldKind::Int> {};
template <> struct Traits<double> : PlainTraits<double, FieldKind::Float> {};
template <> struct Traits<std::string> : PlainTraits<std::string, FieldKind::String> {};
template <> struct Traits<StringList> : PlainTraits<StringList, FieldKind::StringList> {};
template <>
struct Traits<std::vector<StringList>>
    : PlainTraits<std::vector<StringList>, FieldKind::StringListList> {};

template <class E>
  requires std::is_enum_v<E>
struct Traits<E> {
  static constexpr FieldKind kind = FieldKind::Choice;
  static constexpr bool optional = false;
  static std::vector<std::string> choices() {
    return {ChoiceNames<E>::names.begin(), ChoiceNames<E>::names.end()};
  }
  static FieldValue get(const E& member) { return std::string(choice_name(member)); }
  static void set(E& member, const FieldValue& value) {
    const std::string& name = std::get<std::string>(value);
    const auto& names = ChoiceNames<E>::names;
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] == name) {
        member = static_cast<E>(i);
        return;
      }
    }
    TITAN_FAIL() << "'" << name << "' is not a choice; parse_text should have refused it";
  }
};

template <class T>
struct Traits<std::optional<T>> {
  static constexpr FieldKind kind = Traits<T>::kind;
  static constexpr bool optional = true;
  static std::vector<std::string> choices() { return Traits<T>::choices(); }
  static FieldValue get(const std::optional<T>& member) {
    return member ? Traits<T>::get(*member) : FieldValue();
  }
  static void set(std::optional<T>& member, const FieldValue& value) {
    if (std::holds_alternative<std::monostate>(value)) {
      member.reset();
      return;
    }
    T inner{};
    Traits<T>::set(inner, value);
    member = std::move(inner);
  }
};

// `access` is a generic lambda returning the member, for a const or a mutable JobConfig.
template <class Access>
Field make_field(const char* name, const char* help, Access access) {
  using T = std::remove_cvref_t<decltype(access(std::declval<JobConfig&>()))>;
  Field field;
  field.name = name;
  field.help = help;
  field.kind = Traits<T>::kind;
  field.optional = Traits<T>::optional;
  field.choices = Traits<T>::choices();
  field.get = [access](const JobConfig& config) { return Traits<T>::get(access(config)); };
  field.set = [access](JobConfig& config, const FieldValue& value) {
    Traits<T>::set(access(config), value);
  };
  return field;
}

// The key's name is the member's path, written once.
#define FIELD(path, help) make_field(#path, help, [](auto& c) -> auto& { return c.path; })

bool is_op_or_count(const std::string& text) {
  if (text == "op") return true;
  if (text.empty()) return false;
  for (const char ch : text) {
    if (ch < '0' || ch > '9') return false;
  }
  return true;
}

const StringList kConverters = {"quantize.linear.float8", "quantize.linear.mx",
                                "quantize.grouped_mm.float8", "quantize.grouped_mm.mx"};
const StringList kStateKeys = {"model", "optimizer", "lr_scheduler", "dataloader", "train_state"};

std::vector<Field> build_table() {
  std::vector<Field> t;
  // job
  t.push_back(FIELD(job.config_file, "YAML file to load (same as --config)")
                  .from_command_line_only());
  t.push_back(FIELD(job.dump_folder,
                    "root folder for all outputs (checkpoints, traces, TensorBoard)"));
  t.push_back(FIELD(job.description, "free text describing the job"));
  t.push_back(FIELD(job.print_config, "log the merged config at start-up"));
  t.push_back(FIELD(job.save_config_file, "write the merged config (rank 0) under dump_folder"));
  t.push_back(FIELD(job.custom_config_module,
                    "torchtitan: Python module extending the config; stored only"));
  // profiling
  t.push_back(FIELD(profiling.enable_profiling, "write trace-event profiles")
                  .needs(Feature::Profiling));
  t.push_back(FIELD(profiling.save_traces_folder, "trace folder under dump_folder"));
  t.push_back(FIELD(profiling.profile_freq, "profiling cycle length in steps").at_least(1));
  t.push_back(FIELD(profiling.profiler_active, "active steps per cycle").at_least(1));
  t.push_back(FIELD(profiling.profiler_warmup, "warmup steps per cycle").at_least(0));
  t.push_back(FIELD(profiling.enable_memory_snapshot,
                    "allocator snapshots every profile_freq steps and on out-of-memory")
                  .needs(Feature::MemorySnapshot));
  t.push_back(FIELD(profiling.save_memory_snapshot_folder, "snapshot folder under dump_folder"));
  // metrics
  t.push_back(FIELD(metrics.log_freq, "log at step 1 and every multiple of this").at_least(1));
  t.push_back(FIELD(metrics.enable_tensorboard, "write TensorBoard event files")
                  .needs(Feature::TensorBoard));
  t.push_back(FIELD(metrics.disable_color_printing, "plain console logs"));
  t.push_back(FIELD(metrics.save_tb_folder, "TensorBoard folder under dump_folder"));
  t.push_back(FIELD(metrics.save_for_all_ranks, "every rank writes metrics, not only rank 0"));
  t.push_back(FIELD(metrics.enable_wandb, "Weights & Biases logging").needs(Feature::Wandb));
  t.push_back(FIELD(metrics.peak_tflops,
                    "titan.cpp: peak TFLOP/s per device for MFU; unset: the device's table value, "
                    "or measured sgemm on CPU")
                  .above(0));
  // model
  t.push_back(FIELD(model.name, "model family: llama3 or deepseek_v3"));
  t.push_back(FIELD(model.flavor, "size within the family (llama3: debugmodel, 8B, 70B, 405B, "
                                  "...; deepseek_v3: debugmodel, 16B, 236B, 671B, ...)"));
  t.push_back(FIELD(model.hf_assets_path,
                    "folder with tokenizer.json and optionally HF config and safetensors"));
  t.push_back(FIELD(model.tokenizer_path, "deprecated alias of hf_assets_path"));
  t.push_back(FIELD(model.converters, "model converters to apply, by registered name")
                  .only(kConverters)
                  .needs_beyond(Feature::ModelConverters, {"quantize.linear.float8"}));
  t.push_back(FIELD(model.print_after_conversion, "print the model after converters"));
  t.push_back(FIELD(model.dim, "titan.cpp: model width; unset: the flavor's").at_least(1));
  t.push_back(FIELD(model.n_layers, "titan.cpp: number of transformer blocks; unset: the flavor's")
                  .at_least(1));
  t.push_back(FIELD(model.n_heads, "titan.cpp: attention heads; unset: the flavor's").at_least(1));
  t.push_back(FIELD(model.n_kv_heads, "titan.cpp: key/value heads (GQA); unset: the flavor's")
                  .at_least(1));
  t.push_back(FIELD(model.ffn_dim, "titan.cpp: feed-forward hidden size; unset: the flavor's rule")
                  .at_least(1));
  t.push_back(FIELD(model.vocab_size, "titan.cpp: vocabulary size; unset: the flavor's")
                  .at_least(1));
  t.push_back(FIELD(model.rope_theta, "titan.cpp: RoPE base; unset: the flavor's").above(0));
  t.push_back(FIELD(model.norm_eps, "titan.cpp: RMSNorm epsilon; unset: the flavor's").above(0));
  t.push_back(FIELD(model.enable_weight_tying,
                    "titan.cpp: share the embedding and output weights"));
  t.push_back(FIELD(model.attn_mask_type,
                    "titan.cpp: torchtitan's model arg: causal, or block_causal (a token sees "
                    "its own document only; documents end at the data's EOS id); unset: the "
                    "flavor's"));
  // optimizer
  t.push_back(FIELD(optimizer.name, "optimizer"));
  t.push_back(FIELD(optimizer.lr, "peak learning rate").above(0));
  t.push_back(FIELD(optimizer.beta1, "Adam beta1").at_least(0).below(1));
  t.push_back(FIELD(optimizer.beta2, "Adam beta2").at_least(0).below(1));
  t.push_back(FIELD(optimizer.eps, "Adam epsilon").above(0));
  t.push_back(FIELD(optimizer.weight_decay, "decoupled weight decay, on every parameter")
                  .at_least(0));
  t.push_back(FIELD(optimizer.implementation, "kernel choice (a hint on CPU)"));
  t.push_back(FIELD(optimizer.early_step_in_backward, "step each parameter inside backward")
                  .needs(Feature::OptimizerInBackward));
  // lr_scheduler
  t.push_back(FIELD(lr_scheduler.warmup_steps, "linear warmup length (clamped to the total)")
                  .at_least(0));
  t.push_back(FIELD(lr_scheduler.total_steps, "schedule length; unset: training.steps")
                  .at_least(1));
  t.push_back(FIELD(lr_scheduler.decay_ratio,
                    "unset: decay right after warmup; x: only the last round(total*x) steps decay")
                  .at_least(0).at_most(1));
  t.push_back(FIELD(lr_scheduler.decay_type, "decay curve"));
  t.push_back(FIELD(lr_scheduler.min_lr_factor, "learning-rate floor as a fraction of optimizer.lr")
                  .at_least(0).at_most(1));
  // training
  t.push_back(FIELD(training.dataset, "dataset name"));
  t.push_back(FIELD(training.dataset_path, "load the dataset from this path"));
  t.push_back(FIELD(training.local_batch_size, "sequences per data-parallel rank per microbatch")
                  .at_least(1));
  t.push_back(FIELD(training.global_batch_size,
                    "sequences per optimizer step over all data-parallel ranks; -1: local x degree")
                  .at_least(1).or_value(-1));
  t.push_back(FIELD(training.seq_len, "tokens per sequence").at_least(1));
  t.push_back(FIELD(training.max_norm, "global L2 gradient-clipping norm").above(0));
  t.push_back(FIELD(training.steps, "number of optimizer steps").at_least(1));
  t.push_back(FIELD(training.enable_cpu_offload,
                    "offload parameters, gradients and optimizer state to the host")
                  .needs(Feature::CpuOffload));
  t.push_back(FIELD(training.dtype, "dtype of stored parameters, gradients and optimizer state")
                  .only({"bfloat16", "float32"}));
  t.push_back(FIELD(training.mixed_precision_param,
                    "compute dtype: bf16 weight copies and activations over float32 masters; "
                    "a CPU keeps float32 unless the key is given (then it needs AVX512_BF16)")
                  .only({"bfloat16", "float32"}));
  t.push_back(FIELD(training.mixed_precision_reduce, "gradient-reduction dtype")
                  .only({"bfloat16", "float32"})
                  .needs(Feature::ReducedPrecisionReduction));
  t.push_back(FIELD(training.gc_freq, "torchtitan: Python GC period; stored only").at_least(1));
  t.push_back(FIELD(training.gc_debug, "torchtitan: GC every step; stored only"));
  t.push_back(FIELD(training.skip_nonfinite_steps,
                    "titan.cpp: skip a step whose loss or gradient norm is not finite instead of "
                    "stopping with exit 3"));
  t.push_back(FIELD(training.dataloader.num_workers, "loader worker threads").at_least(0));
  t.push_back(FIELD(training.dataloader.persistent_workers, "keep workers alive between epochs"));
  t.push_back(FIELD(training.dataloader.pin_memory, "pinned host buffers"));
  t.push_back(FIELD(training.dataloader.prefetch_factor, "batches prefetched per worker")
                  .at_least(1));
  // parallelism
  t.push_back(FIELD(parallelism.data_parallel_replicate_degree,
                    "replicated data-parallel degree (DDP, or HSDP with sharding)")
                  .at_least(1).needs_above_one(Feature::ReplicatedDataParallel));
  t.push_back(FIELD(parallelism.data_parallel_shard_degree,
                    "FSDP degree; -1: the rest of the world")
                  .at_least(1).or_value(-1).needs_above_one(Feature::ShardedDataParallel));
  t.push_back(FIELD(parallelism.fsdp_reshard_after_forward,
                    "free gathered parameters after forward"));
  t.push_back(FIELD(parallelism.tensor_parallel_degree, "tensor-parallel degree")
                  .at_least(1).needs_above_one(Feature::TensorParallel));
  t.push_back(FIELD(parallelism.disable_loss_parallel,
                    "with TP: compute the loss on gathered logits"));
  t.push_back(FIELD(parallelism.enable_async_tensor_parallel,
                    "overlap TP communication with matmuls")
                  .needs(Feature::AsyncTensorParallel));
  t.push_back(FIELD(parallelism.enable_sequence_parallel,
                    "with TP: norms and residuals on seq_len / tp rows per rank"));
  t.push_back(FIELD(parallelism.pipeline_parallel_degree, "pipeline-parallel degree")
                  .at_least(1).needs_above_one(Feature::PipelineParallel));
  t.push_back(FIELD(parallelism.module_fqns_per_model_part,
                    "explicit module names per pipeline stage (CLI: a,b;c,d)"));
  t.push_back(FIELD(parallelism.pipeline_parallel_first_stage_less_layers,
                    "layers taken off the first stage")
                  .at_least(0));
  t.push_back(FIELD(parallelism.pipeline_parallel_last_stage_less_layers,
                    "layers taken off the last stage")
                  .at_least(0));
  t.push_back(FIELD(parallelism.pipeline_parallel_layers_per_stage,
                    "fixed layers per (virtual) stage")
                  .at_least(1));
  t.push_back(FIELD(parallelism.pipeline_parallel_schedule, "pipeline schedule"));
  t.push_back(FIELD(parallelism.pipeline_parallel_schedule_csv, "custom schedule from a CSV file"));
  t.push_back(FIELD(parallelism.pipeline_parallel_microbatch_size, "pipeline microbatch size")
                  .at_least(1));
  t.push_back(FIELD(parallelism.pipeline_parallel_expert_parallel_overlap,
                    "DualPipeV + EP overlap (MoE)"));
  t.push_back(FIELD(parallelism.context_parallel_degree, "context-parallel degree")
                  .at_least(1).needs_above_one(Feature::ContextParallel));
  t.push_back(FIELD(parallelism.context_parallel_load_balancer, "sequence load balancer"));
  t.push_back(FIELD(parallelism.context_parallel_rotate_method, "K/V exchange collective"));
  t.push_back(FIELD(parallelism.expert_parallel_degree, "expert-parallel degree (MoE)")
                  .at_least(1).needs_above_one(Feature::ExpertParallel));
  t.push_back(FIELD(parallelism.expert_tensor_parallel_degree,
                    "TP degree on experts: 1 or tensor_parallel_degree (MoE)")
                  .at_least(1).needs_above_one(Feature::ExpertTensorParallel));
  t.push_back(FIELD(parallelism.expert_parallel_comm_backend, "all-to-all backend (MoE)"));
  // checkpoint
  t.push_back(FIELD(checkpoint.enable, "save and load checkpoints").needs(Feature::Checkpointing));
  t.push_back(FIELD(checkpoint.enable_ft_dataloader_checkpoints,
                    "torchft: save the data-loader position"));
  t.push_back(FIELD(checkpoint.folder, "checkpoint folder under dump_folder"));
  t.push_back(FIELD(checkpoint.interval, "save every this many steps (and at the last)")
                  .at_least(1));
  t.push_back(FIELD(checkpoint.initial_load_path,
                    "load from here unless the folder has a checkpoint"));
  t.push_back(FIELD(checkpoint.initial_load_model_only, "the initial load takes only the model"));
  t.push_back(FIELD(checkpoint.initial_load_in_hf, "the initial load is HF safetensors"));
  t.push_back(FIELD(checkpoint.initial_load_in_hf_quantized, "HF safetensors with quantized keys"));
  t.push_back(FIELD(checkpoint.last_save_model_only, "the final save holds the model only"));
  t.push_back(FIELD(checkpoint.last_save_in_hf, "the final save is HF safetensors"));
  t.push_back(FIELD(checkpoint.export_dtype, "dtype of the final model-only save"));
  t.push_back(FIELD(checkpoint.async_mode, "asynchronous saving")
                  .needs(Feature::AsyncCheckpointing));
  t.push_back(FIELD(checkpoint.keep_latest_k, "keep the newest k checkpoints; 0: all")
                  .at_least(0).except(1));
  t.push_back(FIELD(checkpoint.load_step, "step to load; -1: the newest").at_least(0).or_value(-1));
  t.push_back(FIELD(checkpoint.exclude_from_loading, "state keys to skip when loading")
                  .only(kStateKeys));
  t.push_back(FIELD(checkpoint.enable_first_step_checkpoint, "also save right after step 1"));
  t.push_back(FIELD(checkpoint.create_seed_checkpoint, "save step 0 and stop")
                  .needs(Feature::SeedCheckpoint));
  t.push_back(FIELD(checkpoint.load_only, "load but never save"));
  // activation_checkpoint
  t.push_back(FIELD(activation_checkpoint.mode, "activation checkpointing policy")
                  .needs_unless(Feature::ActivationCheckpointing, std::string("none")));
  t.push_back(FIELD(activation_checkpoint.selective_ac_option,
                    "N: checkpoint every N-th block (0: all); op: per-op policy")
                  .rule(is_op_or_count, "a count >= 0 or op"));
  t.push_back(FIELD(activation_checkpoint.per_op_sac_force_recompute_mm_shapes_by_fqns,
                    "matmuls always recomputed under op"));
  t.push_back(FIELD(activation_checkpoint.early_stop,
                    "stop recomputing once all needed activations exist"));
  t.push_back(FIELD(activation_checkpoint.memory_budget, "budget for mode memory_budget")
                  .at_least(0).at_most(1));
  t.push_back(FIELD(activation_checkpoint.visualize_memory_budget_pareto,
                    "torchtitan: dump the budget's Pareto curve"));
  t.push_back(FIELD(activation_checkpoint.preserve_rng_state,
                    "replay random numbers in recompute"));
  t.push_back(FIELD(activation_checkpoint.determinism_check, "torch checkpoint determinism check"));
  t.push_back(FIELD(activation_checkpoint.debug, "checkpoint debug output"));
  // compile
  t.push_back(FIELD(compile.enable, "compile the model and loss").needs(Feature::Compile));
  t.push_back(FIELD(compile.components, "what to compile").only({"model", "loss"}));
  t.push_back(FIELD(compile.backend, "compile backend"));
  // quantize: takes effect only when named in model.converters
  t.push_back(FIELD(quantize.linear.float8.enable_fsdp_float8_all_gather,
                    "FSDP all-gathers the converted weights in e4m3 (tensorwise recipe only)"));
  t.push_back(FIELD(quantize.linear.float8.precompute_float8_dynamic_scale_for_fsdp,
                    "one all-reduce for all float8 scales per step (with the float8 all-gather; "
                    "tensorwise only)"));
  t.push_back(FIELD(quantize.linear.float8.recipe_name,
                    "float8 scaling recipe; unset: tensorwise (docs/float8.md)"));
  t.push_back(FIELD(quantize.linear.float8.filter_fqns,
                    "Linear modules kept out of float8 (a substring of the name); the entry "
                    "auto_filter_small_kn also keeps out those too small to gain"));
  t.push_back(FIELD(quantize.linear.float8.emulate,
                    "emulated float8 GEMMs on a GPU (CPU ranks always emulate)"));
  t.push_back(FIELD(quantize.linear.mx.mxfp8_dim1_cast_kernel_choice, "MX cast kernel"));
  t.push_back(FIELD(quantize.linear.mx.recipe_name, "MX recipe"));
  t.push_back(FIELD(quantize.linear.mx.filter_fqns, "Linear modules kept out of MX"));
  t.push_back(FIELD(quantize.grouped_mm.float8.fqns, "MoE modules with float8 grouped GEMMs"));
  t.push_back(FIELD(quantize.grouped_mm.mx.recipe_name, "grouped-GEMM MX recipe"));
  t.push_back(FIELD(quantize.grouped_mm.mx.fqns, "MoE modules with MXFP8 grouped GEMMs"));
  // comm
  t.push_back(FIELD(comm.init_timeout_seconds, "collective timeout until the first step is done")
                  .at_least(1));
  t.push_back(FIELD(comm.train_timeout_seconds, "collective timeout afterwards").at_least(1));
  t.push_back(FIELD(comm.trace_buf_size, "flight-recorder entries; 0: off").at_least(0));
  t.push_back(FIELD(comm.save_traces_folder, "flight-recorder dump folder"));
  t.push_back(FIELD(comm.save_traces_file_prefix, "flight-recorder file prefix"));
  t.push_back(FIELD(comm.mode, "real, fake (a dry run of one rank) or one-process simulated "
                               "communication")
                  .needs_for(Feature::LocalTensorMode, std::string("local_tensor"),
                             "default or fake_backend"));
  t.push_back(FIELD(comm.fake_world_size, "fake_backend: the world one process plays a rank of")
                  .at_least(1));
  t.push_back(FIELD(comm.fake_rank, "fake_backend: the rank it plays").at_least(0));
  // memory_estimation
  t.push_back(FIELD(memory_estimation.enable, "log one rank's memory plan before training"));
  t.push_back(FIELD(memory_estimation.disable_fake_mode, "ignored: the plan uses no tensors"));
  // fault_tolerance
  t.push_back(FIELD(fault_tolerance.enable, "torchft-style fault tolerance")
                  .needs(Feature::FaultTolerance));
  t.push_back(FIELD(fault_tolerance.process_group, "fault-tolerant process group backend"));
  t.push_back(FIELD(fault_tolerance.process_group_timeout_ms, "abort timeout").at_least(1));
  t.push_back(FIELD(fault_tolerance.replica_id, "this replica group's id").at_least(0));
  t.push_back(FIELD(fault_tolerance.group_size, "number of replica groups").at_least(0));
  t.push_back(FIELD(fault_tolerance.min_replica_size, "replicas required per step").at_least(1));
  t.push_back(FIELD(fault_tolerance.semi_sync_method, "semi-synchronous training method"));
  // experimental
  t.push_back(FIELD(experimental.custom_import, "torchtitan: module to import; stored only"));
  t.push_back(FIELD(experimental.custom_args_module,
                    "torchtitan: deprecated alias of job.custom_config_module; stored only"));
  // validation
  t.push_back(FIELD(validation.enable, "run validation").needs(Feature::Validation));
  t.push_back(FIELD(validation.dataset, "validation dataset name"));
  t.push_back(FIELD(validation.dataset_path, "load the validation dataset from this path"));
  t.push_back(FIELD(validation.local_batch_size, "sequences per rank").at_least(1));
  t.push_back(FIELD(validation.seq_len, "tokens per sequence").at_least(1));
  t.push_back(FIELD(validation.freq, "validate at step 1 and every multiple of this").at_least(1));
  t.push_back(FIELD(validation.steps, "batches per validation; -1: the whole set")
                  .at_least(1).or_value(-1));
  t.push_back(FIELD(validation.dataloader.num_workers, "loader worker threads").at_least(0));
  t.push_back(FIELD(validation.dataloader.persistent_workers, "keep workers alive between epochs"));
  t.push_back(FIELD(validation.dataloader.pin_memory, "pinned host buffers"));
  t.push_back(FIELD(validation.dataloader.prefetch_factor, "batches prefetched per worker")
                  .at_least(1));
  // debug
  t.push_back(FIELD(debug.seed, "base seed; unset means 0").at_least(0));
  t.push_back(FIELD(debug.deterministic, "deterministic algorithms only"));
  t.push_back(FIELD(debug.deterministic_warn_only, "warn, not fail, on non-deterministic ops"));
  t.push_back(FIELD(debug.moe_force_load_balance,
                    "round-robin tokens to experts (MoE debug; deepseek_v3's router)"));
  return t;
}

#undef FIELD

}  // namespace

const std::vector<Field>& job_config_fields() {
  static const std::vector<Field> table = build_table();
  return table;
}

}  // namespace titan::config
