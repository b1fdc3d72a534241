// The shipped configs/: the debug job loads and runs cleanly; the big presets carry
// torchtitan's values and are refused today only for the features they need.
#include <gtest/gtest.h>

#include "titan/build_config.h"
#include "titan/config/load.h"
#include "titan/core/error.h"
#include "support/train_process.h"

namespace titan::testing {
namespace {

using namespace titan::config;

TEST(ShippedConfigs, DebugLoadsCleanlyAndTrainsSmall) {
  const std::string path = source_path("configs/llama3_debug.yaml");
  const JobConfig config = load_job_config(path);
  EXPECT_EQ(config.model.flavor, "debugmodel");
  EXPECT_EQ(config.training.seq_len, 256);
  EXPECT_EQ(config.training.local_batch_size, 8);
  EXPECT_EQ(config.training.steps, 10);
  EXPECT_EQ(config.training.dataset, "sotu");
  EXPECT_EQ(config.model.hf_assets_path, "./assets/tokenizer/sotu-2k");
  EXPECT_EQ(config.activation_checkpoint.mode, ActivationCheckpointMode::None);
  EXPECT_EQ(config.lr_scheduler.warmup_steps, 2);
  EXPECT_EQ(config.lr_scheduler.decay_ratio, 0.8);
  EXPECT_EQ(config.parallelism.pipeline_parallel_schedule, PipelineSchedule::Interleaved1F1B);
  EXPECT_TRUE(config_warnings(config).empty());

  // The shards are named relative to the current directory (the repository root for a
  // user); the test runs in the build folder, so it names the folder (fetched by
  // tools/fetch_assets.sh, which run_tests.sh calls).
  const ProcessResult run = run_titan_train(
      {"--config", path, "--training.dataset_path", source_path("assets/data/sotu"),
       "--training.steps", "5", "--lr_scheduler.warmup_steps", "1", "--training.local_batch_size", "2"});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.err.find("warning"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("token shards"), std::string::npos) << run.err;
}

TEST(ShippedConfigs, Llama8bLoadsAsTorchtitansPreset) {
  const std::string path = source_path("configs/llama3_8b.yaml");
  const ProcessResult run = run_titan_train({"--config", path, "--print-config"});
  EXPECT_EQ(run.exit_code, 0) << run.err;  // profiling and TensorBoard are built

  const CommandLine cli = parse_command_line(std::vector<std::string>{"--config", path});
  EXPECT_TRUE(cli.config.profiling.enable_profiling);
  EXPECT_TRUE(cli.config.metrics.enable_tensorboard);
  EXPECT_EQ(cli.config.model.flavor, "8B");
  EXPECT_EQ(cli.config.optimizer.lr, 3e-4);
  EXPECT_EQ(cli.config.training.seq_len, 8192);
  EXPECT_EQ(cli.config.training.local_batch_size, 1);
  EXPECT_EQ(cli.config.training.steps, 1000);
  EXPECT_EQ(cli.config.activation_checkpoint.selective_ac_option, "op");
  EXPECT_EQ(cli.config.validation.steps, 1200);
}

// The 70B and 405B presets use TP 8 (the 512-GPU one PP 8 and FSDP 8 too): on one rank the
// mesh says how many ranks they need.
TEST(ShippedConfigs, Llama70bAnd405bAskForTheirTensorParallelRanks) {
  if (!TITAN_HAVE_HDF5) GTEST_SKIP() << "the presets enable checkpoints: this build has no HDF5";
  struct Preset {
    const char* file;
    const char* flavor;
    double lr;
    int64_t local_batch_size, steps, warmup_steps;
    std::vector<std::string> refusal;  // in the one-rank launch's error
  };
  const Preset presets[] = {
      {"configs/llama3_70b.yaml", "70B", 1.5e-4, 8, 1000, 200,
       {"tensor_parallel_degree 8", "world of 1 rank", "multiple of 8 ranks"}},
      {"configs/llama3_405b.yaml", "405B", 8e-5, 2, 3000, 600,
       {"tensor_parallel_degree 8", "world of 1 rank", "multiple of 8 ranks"}},
      {"configs/llama3_405b_512gpu.yaml", "405B", 8e-5, 16, 3000, 600, {"512", "1 rank"}},
  };
  for (const Preset& preset : presets) {
    SCOPED_TRACE(preset.file);
    const std::string path = source_path(preset.file);
    const ProcessResult run = run_titan_train({"--config", path});
    EXPECT_EQ(run.exit_code, 2);
    for (const std::string& part : preset.refusal) {
      EXPECT_NE(run.err.find(part), std::string::npos) << run.err;
    }
    const CommandLine cli = parse_command_line({"--config", path});
    EXPECT_EQ(cli.config.model.flavor, preset.flavor);
    EXPECT_EQ(cli.config.optimizer.lr, preset.lr);
    EXPECT_EQ(cli.config.training.local_batch_size, preset.local_batch_size);
    EXPECT_EQ(cli.config.training.seq_len, 8192);
    EXPECT_EQ(cli.config.training.steps, preset.steps);
    EXPECT_EQ(cli.config.lr_scheduler.warmup_steps, preset.warmup_steps);
    EXPECT_EQ(cli.config.activation_checkpoint.mode, ActivationCheckpointMode::Full);
  }
  JobConfig config;
  apply_yaml_file(config, source_path("configs/llama3_405b.yaml"));
  EXPECT_EQ(config.model.converters, StringList{"quantize.linear.float8"});
  EXPECT_EQ(config.parallelism.tensor_parallel_degree, 8);
}

}  // namespace
}  // namespace titan::testing
