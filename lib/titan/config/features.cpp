#include "titan/config/features.h"

#include "titan/build_config.h"
#include "titan/core/error.h"

namespace titan::config {

// The one list of what is built. Today: training with data, tensor, pipeline and context
// parallelism, activation checkpointing and Float8 linears (quantize.linear.float8, the
// one converter built: model.converters' rule). A later issue that lands a feature sets its
// `built` to true here (and the config tests follow on their own: they derive the
// rejections they run from this list).
const std::vector<FeatureInfo>& all_features() {
  static const std::string no_hdf5 =
      "this build lacks (no parallel HDF5: TITAN_HDF5=OFF, or libhdf5-openmpi-dev was missing; "
      "tools/setup.sh installs it, then rebuild)";
  static const std::vector<FeatureInfo> features = {
      {Feature::Checkpointing, "checkpointing", TITAN_HAVE_HDF5 != 0, WhenMissing::Reject, "",
       no_hdf5},
      {Feature::AsyncCheckpointing, "asynchronous checkpointing", TITAN_HAVE_HDF5 != 0,
       WhenMissing::Reject, "", no_hdf5},
      {Feature::SeedCheckpoint, "seed checkpoints", false, WhenMissing::Reject, ""},
      {Feature::ReplicatedDataParallel, "replicated data parallelism (DDP/HSDP)", true,
       WhenMissing::Reject, ""},
      {Feature::ShardedDataParallel, "sharded data parallelism (FSDP)", true,
       WhenMissing::Reject, ""},
      {Feature::TensorParallel, "tensor parallelism", true, WhenMissing::Reject, ""},
      {Feature::AsyncTensorParallel, "asynchronous tensor parallelism", true,
       WhenMissing::Reject, ""},
      {Feature::PipelineParallel, "pipeline parallelism", true, WhenMissing::Reject, ""},
      {Feature::ContextParallel, "context parallelism", true, WhenMissing::Reject, ""},
      {Feature::ExpertParallel, "expert parallelism", true, WhenMissing::Reject, ""},
      {Feature::ExpertTensorParallel, "expert tensor parallelism", true, WhenMissing::Reject,
       ""},
      {Feature::ModelConverters, "the MX and grouped-GEMM converters (MXFP8, Float8 MoE)", false,
       WhenMissing::Reject, ""},
      {Feature::Compile, "compilation", false, WhenMissing::Reject, ""},
      {Feature::Validation, "validation", true, WhenMissing::Reject, ""},
      {Feature::TensorBoard, "TensorBoard logging", true, WhenMissing::Reject, ""},
      {Feature::Wandb, "Weights & Biases logging", false, WhenMissing::Reject, ""},
      {Feature::Profiling, "profiling", true, WhenMissing::Reject, ""},
      {Feature::MemorySnapshot, "memory snapshots", true, WhenMissing::Reject, ""},
      {Feature::FaultTolerance, "fault tolerance", false, WhenMissing::Reject, ""},
      {Feature::CpuOffload, "CPU offload", false, WhenMissing::Reject, ""},
      {Feature::OptimizerInBackward, "optimizer steps inside backward", false,
       WhenMissing::Reject, ""},
      {Feature::LocalTensorMode, "the local-tensor communication mode", false,
       WhenMissing::Reject, ""},
      {Feature::ReducedPrecisionReduction, "gradient reduction in bfloat16", false,
       WhenMissing::Reject, ""},
      // Recomputing activations changes memory, not results: were it missing, a job (and
      // torchtitan's default, selective) would run without it.
      {Feature::ActivationCheckpointing, "activation checkpointing", true,
       WhenMissing::RunWithoutIt,
       "activation checkpointing is not built; running without it (same results, more "
       "memory)"},
  };
  return features;
}

const FeatureInfo& feature_info(Feature feature) {
  for (const FeatureInfo& info : all_features()) {
    if (info.feature == feature) return info;
  }
  TITAN_FAIL() << "feature " << int(feature) << " is missing from all_features()";
}

}  // namespace titan::config
