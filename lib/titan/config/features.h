// Features a config value can switch on, and which of them this codebase has built.
//
// A value that would switch on a feature not built yet is rejected, saying which feature is
// missing; every other value is stored and printed (docs/config.md). The field table
// (fields.cpp) says which feature each key needs; features.cpp holds the one list of what
// is built. When a feature lands, its row there flips to built and nothing else changes.
#pragma once

#include <string>
#include <vector>

namespace titan::config {

enum class Feature {
  Checkpointing,
  AsyncCheckpointing,
  SeedCheckpoint,
  ReplicatedDataParallel,
  ShardedDataParallel,
  TensorParallel,
  AsyncTensorParallel,
  PipelineParallel,
  ContextParallel,
  ExpertParallel,
  ExpertTensorParallel,
  ModelConverters,
  Compile,
  Validation,
  TensorBoard,
  Wandb,
  Profiling,
  MemorySnapshot,
  FaultTolerance,
  CpuOffload,
  OptimizerInBackward,
  LocalTensorMode,
  ReducedPrecisionReduction,
  ActivationCheckpointing,
};

// What a job does when it asks for a feature that is not built.
enum class WhenMissing {
  Reject,            // exit 2, naming the feature
  RunWithoutIt,      // results are the same without it: warn once and go on
};

struct FeatureInfo {
  Feature feature;
  std::string name;     // as a user reads it: "tensor parallelism"
  bool built;
  WhenMissing when_missing;
  std::string warning;  // RunWithoutIt only: what the job says once
  // For a feature titan.cpp has that this build lacks: "this build lacks (why; the fix)",
  // read after "needs <name>, which". Empty: the feature is not built yet at all.
  std::string missing_from_build = "";
};

const std::vector<FeatureInfo>& all_features();
const FeatureInfo& feature_info(Feature feature);

}  // namespace titan::config
