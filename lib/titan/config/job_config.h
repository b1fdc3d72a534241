// JobConfig: every setting of a training job, typed, with torchtitan's TOML-era section
// and key names and defaults (torchtitan's config/job_config.py; docs/config.md).
//
// Other modules read it as plain data:
//
//   const titan::config::JobConfig& config = ...;
//   int64_t steps = config.training.steps;                      // 10000 unless set
//   const std::string& flavor = config.model.flavor;            // "debugmodel"
//   if (config.activation_checkpoint.mode == ActivationCheckpointMode::Full) ...
//   int64_t dim = config.model.dim.value_or(flavor_dim);        // optional: unset = flavor's
//   uint64_t seed = config.debug.effective_seed();              // unset seed means 0
//
// The default of each key is the initializer below, and nowhere else. What a key is called,
// which values it allows and which unbuilt feature a value would need live in one table of
// field descriptors (config/fields.h); loading, command-line overrides, validation, printing
// and the docs check all read that table, so a new key is one member here and one row there.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace titan::config {

using StringList = std::vector<std::string>;

// A choice field's names, in the order of its enum's values. Specialized below per enum;
// the generic code (fields.h) turns names into values and back.
template <class E>
struct ChoiceNames;

#define TITAN_CONFIG_CHOICE(Enum, ...)                                   \
  template <>                                                            \
  struct ChoiceNames<Enum> {                                             \
    static constexpr std::array names = std::to_array<std::string_view>( \
        {__VA_ARGS__});                                                  \
  }

// The spelling of a choice value in YAML and on the command line.
template <class E>
constexpr std::string_view choice_name(E value) {
  return ChoiceNames<E>::names[static_cast<size_t>(value)];
}

// A floating-point format named by a dtype key. Each key allows its own subset.
enum class Precision { Float16, Bfloat16, Float32 };
TITAN_CONFIG_CHOICE(Precision, "float16", "bfloat16", "float32");

enum class OptimizerName { Adam, AdamW };
TITAN_CONFIG_CHOICE(OptimizerName, "Adam", "AdamW");
enum class OptimizerImplementation { ForLoop, Foreach, Fused };
TITAN_CONFIG_CHOICE(OptimizerImplementation, "for-loop", "foreach", "fused");

enum class DecayType { Linear, Sqrt, Cosine };
TITAN_CONFIG_CHOICE(DecayType, "linear", "sqrt", "cosine");

enum class ReshardAfterForward { Default, Always, Never };
TITAN_CONFIG_CHOICE(ReshardAfterForward, "default", "always", "never");
// PipelineScheduleSingle and PipelineScheduleMulti name a schedule read from
// pipeline_parallel_schedule_csv (one, or two or more, stages per rank).
enum class PipelineSchedule { GPipe, OneForwardOneBackward, Interleaved1F1B, LoopedBFS,
                              InterleavedZeroBubble, ZBVZeroBubble, DualPipeV,
                              PipelineScheduleSingle, PipelineScheduleMulti };
TITAN_CONFIG_CHOICE(PipelineSchedule, "GPipe", "1F1B", "Interleaved1F1B", "LoopedBFS",
                    "InterleavedZeroBubble", "ZBVZeroBubble", "DualPipeV",
                    "PipelineScheduleSingle", "PipelineScheduleMulti");
enum class AttentionMaskType { Causal, BlockCausal };
TITAN_CONFIG_CHOICE(AttentionMaskType, "causal", "block_causal");
enum class ContextParallelLoadBalancer { HeadTail, Ptrr };
TITAN_CONFIG_CHOICE(ContextParallelLoadBalancer, "headtail", "ptrr");
enum class ContextParallelRotateMethod { AllGather, AllToAll };
TITAN_CONFIG_CHOICE(ContextParallelRotateMethod, "allgather", "alltoall");
enum class ExpertParallelCommBackend { Standard, DeepEp };
TITAN_CONFIG_CHOICE(ExpertParallelCommBackend, "standard", "deepep");

enum class AsyncMode { Disabled, Async, AsyncWithPinnedMemory };
TITAN_CONFIG_CHOICE(AsyncMode, "disabled", "async", "async_with_pinned_mem");

enum class ActivationCheckpointMode { Selective, Full, MemoryBudget, None };
TITAN_CONFIG_CHOICE(ActivationCheckpointMode, "selective", "full", "memory_budget", "none");

enum class Float8Recipe { Tensorwise, Rowwise, RowwiseWithGwHp };
TITAN_CONFIG_CHOICE(Float8Recipe, "tensorwise", "rowwise", "rowwise_with_gw_hp");
enum class MxCastKernel { Triton, Cuda, Torch };
TITAN_CONFIG_CHOICE(MxCastKernel, "triton", "cuda", "torch");
enum class GroupedMmMxRecipe { Mxfp8 };
TITAN_CONFIG_CHOICE(GroupedMmMxRecipe, "mxfp8");

enum class CommMode { Default, FakeBackend, LocalTensor };
TITAN_CONFIG_CHOICE(CommMode, "default", "fake_backend", "local_tensor");

enum class FaultToleranceProcessGroup { Gloo, Nccl };
TITAN_CONFIG_CHOICE(FaultToleranceProcessGroup, "gloo", "nccl");
enum class SemiSyncMethod { LocalSgd, Diloco };
TITAN_CONFIG_CHOICE(SemiSyncMethod, "local_sgd", "diloco");
#undef TITAN_CONFIG_CHOICE

struct JobSection {
  std::optional<std::string> config_file;  // set from --config; never read from a file
  std::string dump_folder = "./outputs";
  std::string description = "default job";
  bool print_config = false;
  std::optional<std::string> save_config_file;
  std::string custom_config_module;
};

struct ProfilingSection {
  bool enable_profiling = false;
  std::string save_traces_folder = "profile_traces";
  int64_t profile_freq = 10;
  int64_t profiler_active = 1;
  int64_t profiler_warmup = 3;
  bool enable_memory_snapshot = false;
  std::string save_memory_snapshot_folder = "memory_snapshot";
};

struct MetricsSection {
  int64_t log_freq = 10;
  bool enable_tensorboard = false;
  bool disable_color_printing = false;
  std::string save_tb_folder = "tb";
  bool save_for_all_ranks = false;
  bool enable_wandb = false;
  std::optional<double> peak_tflops;  // titan.cpp: the MFU denominator; unset = measured
};

struct ModelSection {
  std::string name = "llama3";
  std::string flavor = "debugmodel";
  std::string hf_assets_path = "./tests/assets/tokenizer";
  std::optional<std::string> tokenizer_path;
  StringList converters;
  bool print_after_conversion = false;
  // titan.cpp additions: overrides of the flavor's dimensions; unset = the flavor's value.
  std::optional<int64_t> dim;
  std::optional<int64_t> n_layers;
  std::optional<int64_t> n_heads;
  std::optional<int64_t> n_kv_heads;
  std::optional<int64_t> ffn_dim;
  std::optional<int64_t> vocab_size;
  std::optional<double> rope_theta;
  std::optional<double> norm_eps;
  bool enable_weight_tying = false;
  // torchtitan's model arg attn_mask_type; unset = the flavor's (block_causal for the
  // *_flex_attn / *_varlen_attn / *_flex / *_varlen flavors, causal otherwise).
  std::optional<AttentionMaskType> attn_mask_type;
};

struct OptimizerSection {
  OptimizerName name = OptimizerName::AdamW;
  double lr = 8e-4;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  OptimizerImplementation implementation = OptimizerImplementation::Fused;
  bool early_step_in_backward = false;
};

struct LrSchedulerSection {
  int64_t warmup_steps = 200;
  std::optional<int64_t> total_steps;  // unset: training.steps
  std::optional<double> decay_ratio;   // unset: decay right after warmup
  DecayType decay_type = DecayType::Linear;
  double min_lr_factor = 0.0;
};

struct DataloaderSection {
  int64_t num_workers = 0;
  bool persistent_workers = false;
  bool pin_memory = false;
  std::optional<int64_t> prefetch_factor;
};

struct TrainingSection {
  std::string dataset = "c4_test";
  std::optional<std::string> dataset_path;
  int64_t local_batch_size = 8;
  int64_t global_batch_size = -1;  // -1: local_batch_size x data-parallel degree
  int64_t seq_len = 2048;
  double max_norm = 1.0;
  int64_t steps = 10000;
  bool enable_cpu_offload = false;
  Precision dtype = Precision::Float32;
  Precision mixed_precision_param = Precision::Bfloat16;
  Precision mixed_precision_reduce = Precision::Float32;
  int64_t gc_freq = 50;
  bool gc_debug = false;
  bool skip_nonfinite_steps = false;  // titan.cpp: skip a step whose loss or norm is not finite
  DataloaderSection dataloader;
};

struct ParallelismSection {
  int64_t data_parallel_replicate_degree = 1;
  int64_t data_parallel_shard_degree = -1;  // -1: the rest of the world
  ReshardAfterForward fsdp_reshard_after_forward = ReshardAfterForward::Default;
  int64_t tensor_parallel_degree = 1;
  bool disable_loss_parallel = false;
  bool enable_async_tensor_parallel = false;
  bool enable_sequence_parallel = true;  // torchtitan's key after the pinned list
  int64_t pipeline_parallel_degree = 1;
  std::optional<std::vector<StringList>> module_fqns_per_model_part;
  int64_t pipeline_parallel_first_stage_less_layers = 1;
  int64_t pipeline_parallel_last_stage_less_layers = 1;
  std::optional<int64_t> pipeline_parallel_layers_per_stage;
  PipelineSchedule pipeline_parallel_schedule = PipelineSchedule::OneForwardOneBackward;
  std::optional<std::string> pipeline_parallel_schedule_csv = "";
  int64_t pipeline_parallel_microbatch_size = 1;
  bool pipeline_parallel_expert_parallel_overlap = true;
  int64_t context_parallel_degree = 1;
  std::optional<ContextParallelLoadBalancer> context_parallel_load_balancer =
      ContextParallelLoadBalancer::HeadTail;
  ContextParallelRotateMethod context_parallel_rotate_method =
      ContextParallelRotateMethod::AllGather;
  int64_t expert_parallel_degree = 1;
  int64_t expert_tensor_parallel_degree = 1;
  ExpertParallelCommBackend expert_parallel_comm_backend = ExpertParallelCommBackend::Standard;
};

struct CheckpointSection {
  bool enable = false;
  bool enable_ft_dataloader_checkpoints = true;
  std::string folder = "checkpoint";
  int64_t interval = 500;
  std::optional<std::string> initial_load_path;
  bool initial_load_model_only = true;
  bool initial_load_in_hf = false;
  bool initial_load_in_hf_quantized = false;
  bool last_save_model_only = true;
  bool last_save_in_hf = false;
  Precision export_dtype = Precision::Float32;
  AsyncMode async_mode = AsyncMode::Disabled;
  int64_t keep_latest_k = 10;
  int64_t load_step = -1;
  StringList exclude_from_loading;
  bool enable_first_step_checkpoint = false;
  bool create_seed_checkpoint = false;
  bool load_only = false;
};

struct ActivationCheckpointSection {
  ActivationCheckpointMode mode = ActivationCheckpointMode::Selective;
  std::string selective_ac_option = "2";
  StringList per_op_sac_force_recompute_mm_shapes_by_fqns = {"moe.router.gate"};
  bool early_stop = false;
  double memory_budget = 0.5;
  bool visualize_memory_budget_pareto = false;
  bool preserve_rng_state = true;
  std::string determinism_check = "default";
  bool debug = false;
};

struct CompileSection {
  bool enable = false;
  StringList components = {"model", "loss"};
  std::string backend = "inductor";
};

// The filter_fqns entry that turns on torchao's size filter (linears too small to gain).
inline constexpr const char* kAutoFilterSmallKn = "auto_filter_small_kn";

struct LinearFloat8Section {
  bool enable_fsdp_float8_all_gather = false;
  bool precompute_float8_dynamic_scale_for_fsdp = false;
  std::optional<Float8Recipe> recipe_name;
  StringList filter_fqns;
  bool emulate = false;
};

struct LinearMxSection {
  MxCastKernel mxfp8_dim1_cast_kernel_choice = MxCastKernel::Triton;
  std::string recipe_name = "mxfp8_cublas";
  StringList filter_fqns = {"output"};
};

struct GroupedMmFloat8Section {
  StringList fqns;
};

struct GroupedMmMxSection {
  GroupedMmMxRecipe recipe_name = GroupedMmMxRecipe::Mxfp8;
  StringList fqns;
};

struct QuantizeSection {
  struct {
    LinearFloat8Section float8;
    LinearMxSection mx;
  } linear;
  struct {
    GroupedMmFloat8Section float8;
    GroupedMmMxSection mx;
  } grouped_mm;
};

struct CommSection {
  int64_t init_timeout_seconds = 300;
  int64_t train_timeout_seconds = 100;
  int64_t trace_buf_size = 20000;
  std::string save_traces_folder = "comm_traces";
  std::string save_traces_file_prefix = "rank_";
  CommMode mode = CommMode::Default;
  // fake_backend (a dry run, train/dry_run.h): the world one process plays a rank of, and
  // which rank (titan.cpp's keys; torchtitan reads them from its launcher).
  int64_t fake_world_size = 1;
  int64_t fake_rank = 0;
};

struct MemoryEstimationSection {
  bool enable = false;
  bool disable_fake_mode = false;
};

struct FaultToleranceSection {
  bool enable = false;
  FaultToleranceProcessGroup process_group = FaultToleranceProcessGroup::Gloo;
  int64_t process_group_timeout_ms = 10000;
  int64_t replica_id = 0;
  int64_t group_size = 0;
  int64_t min_replica_size = 1;
  std::optional<SemiSyncMethod> semi_sync_method;
};

struct ExperimentalSection {
  std::string custom_import;
  std::string custom_args_module;
};

struct ValidationSection {
  bool enable = false;
  std::string dataset = "c4_validation";
  std::optional<std::string> dataset_path;
  int64_t local_batch_size = 8;
  int64_t seq_len = 2048;
  int64_t freq = 10;
  int64_t steps = -1;  // -1: the whole set
  DataloaderSection dataloader;
};

struct DebugSection {
  std::optional<int64_t> seed;
  bool deterministic = false;
  bool deterministic_warn_only = false;
  bool moe_force_load_balance = false;

  // docs/design.md: an unset seed means 0, so two runs of one config are the same run.
  uint64_t effective_seed() const { return uint64_t(seed.value_or(0)); }
};

struct JobConfig {
  JobSection job;
  ProfilingSection profiling;
  MetricsSection metrics;
  ModelSection model;
  OptimizerSection optimizer;
  LrSchedulerSection lr_scheduler;
  TrainingSection training;
  ParallelismSection parallelism;
  CheckpointSection checkpoint;
  ActivationCheckpointSection activation_checkpoint;
  CompileSection compile;
  QuantizeSection quantize;
  CommSection comm;
  MemoryEstimationSection memory_estimation;
  FaultToleranceSection fault_tolerance;
  ExperimentalSection experimental;
  ValidationSection validation;
  DebugSection debug;

  // The keys a config file or the command line gave, whatever their values: the one rule
  // that tells a default from a choice reads it (a CPU computes in bf16 only when
  // training.mixed_precision_param is given, train::compute_dtype_for). Neither printed
  // nor loaded as a key; code that builds a config sets what it means to have given.
  std::set<std::string> given_keys;
  bool given(const std::string& key) const { return given_keys.count(key) != 0; }
};

}  // namespace titan::config
